"""Test support: loopback servers that stand in for external services (never the internet)."""
