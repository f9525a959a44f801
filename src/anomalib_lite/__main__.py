"""``python -m anomalib_lite COMMAND ...``: the ``anomalib-lite`` command (see :mod:`anomalib_lite.cli.main`)."""

import sys

from anomalib_lite.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
