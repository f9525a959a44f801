"""Speed figures: ``python scripts/benchmark.py evaluator|model|inference|export|peer`` (see ``--help``)."""

import sys

from anomalib_lite.research.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
