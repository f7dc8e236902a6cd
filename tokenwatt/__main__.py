"""`python -m tokenwatt`: the command line."""

import sys

from tokenwatt.cli import main

sys.exit(main())
