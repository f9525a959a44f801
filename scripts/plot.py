"""Several runs' curves on one figure: ``python scripts/plot.py RUN [RUN…] [--category C] [--out DIR]``."""

import sys

from anomalib_lite.reporting.plots import main

if __name__ == "__main__":
    sys.exit(main())
