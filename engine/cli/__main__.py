"""`python -m engine.cli`: the `skiplock` command."""

import sys

from .main import main

sys.exit(main())
