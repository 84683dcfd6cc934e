"""``python -m sarseg``: the same as the ``sarseg`` command (what background jobs and PythonSlicer run)."""

import sys

from .cli import main

sys.exit(main())
