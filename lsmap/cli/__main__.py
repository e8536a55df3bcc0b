"""``python -m lsmap.cli``: the command line (torchrun uses this form)."""

import sys

from lsmap.cli import main

sys.exit(main())
