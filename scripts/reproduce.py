"""Reproduce a paper's headline table: ``python scripts/reproduce.py TABLE`` (see ``--help``)."""

import sys

from anomalib_lite.cli.reproduce import main

if __name__ == "__main__":
    sys.exit(main())
