"""Allows ``python -m tunelab ...`` (and ``torchrun -m tunelab ...``)."""

import sys

from tunelab.cli.commands import main

sys.exit(main())
