"""Reproduce a paper's headline table: ``python scripts/reproduce.py TABLE`` (see ``--help``)."""

import sys

from anomalib_lite.research.reproduce.command import main

if __name__ == "__main__":
    sys.exit(main())
