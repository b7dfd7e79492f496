"""`python -m replica` is `fastlb-replica`, so a replica starts without an installed script."""

import sys

from replica.server import main

sys.exit(main())
