"""``python -m lsmap``: the command line."""

import sys

from lsmap.cli import main

sys.exit(main())
