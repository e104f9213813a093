"""``python -m vsalmonn``: the same command line as the ``vsalmonn`` script."""

import sys

from vsalmonn.cli import main

sys.exit(main())
