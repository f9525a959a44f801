"""Do two runs differ beyond chance? ``python scripts/compare.py RUN_A RUN_B`` (see ``--help``)."""

import sys

from anomalib_lite.research.compare import main

if __name__ == "__main__":
    sys.exit(main())
