"""``python -m quantumtrade``: the same command line as ``quantumtrade``."""

import sys

from quantumtrade.cli import main

sys.exit(main())
