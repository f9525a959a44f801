"""Fetch a dataset or backbone weights: ``python scripts/prepare_data.py mnist|fashion_mnist|cifar10|mvtec|weights``."""

import sys

from anomalib_lite.cli.prepare import main

if __name__ == "__main__":
    sys.exit(main())
