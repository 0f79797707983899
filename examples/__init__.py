"""Example user strategies: load one with ``[strategy] name = "examples.<module>:<Class>"``."""
