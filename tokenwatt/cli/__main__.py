"""`python -m tokenwatt.cli`: the command line."""

import sys

from tokenwatt.cli import main

sys.exit(main())
