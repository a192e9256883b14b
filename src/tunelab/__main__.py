"""Allows ``python -m tunelab ...`` (and ``torchrun -m tunelab ...``)."""

import sys

from tunelab.cli import main

sys.exit(main())
