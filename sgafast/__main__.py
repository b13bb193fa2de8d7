"""``python -m sgafast``: the command line (so ``torchrun … -m sgafast refine …`` works)."""

import sys

from .cli import main

sys.exit(main())
