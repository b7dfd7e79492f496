"""`python -m fastlb` is the `fastlb` command."""

import sys

from fastlb.cli import main

sys.exit(main())
