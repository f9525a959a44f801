"""Fetch a dataset or backbone weights: ``python scripts/prepare_data.py NAME`` (``--help`` lists the names)."""

import sys

from anomalib_lite.cli.prepare import main

if __name__ == "__main__":
    sys.exit(main())
