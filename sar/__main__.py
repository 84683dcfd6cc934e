"""``python -m sar``: the same as the ``sar`` command (what background jobs and PythonSlicer run)."""

import sys

from .cli import main

sys.exit(main())
