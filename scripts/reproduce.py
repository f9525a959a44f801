"""Reproduce a paper's headline table: ``python scripts/reproduce.py TABLE`` (see ``--help``)."""

import sys
from pathlib import Path

from anomalib_lite.research.reproduce.command import main

if __name__ == "__main__":
    sys.exit(main(repo=Path(__file__).resolve().parents[1]))
