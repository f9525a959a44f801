"""Writing a file atomically: readers see the old file or the complete new one, never a partial one."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on ``path.partial-<pid>`` (opened for binary writing), then move it onto ``path``.

    When anything fails (e.g. ``OSError`` ENOSPC on a full disk) the partial file is removed and the
    error raised again: ``path`` keeps its earlier content and no ``.partial-*`` file is left.
    """
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    try:
        with partial.open("wb") as file:
            write(file)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
