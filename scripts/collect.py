"""Turn a sweep folder into one table: ``python scripts/collect.py outputs/<task>/multirun/<time>``."""

import sys

from anomalib_lite.research.collect import main

if __name__ == "__main__":
    sys.exit(main())
