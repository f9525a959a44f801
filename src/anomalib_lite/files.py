"""Atomic writes: readers see the old file (or folder) or the complete new one, never a partial one."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on ``path.partial-<pid>`` (opened for binary writing), then move it onto ``path``.

    When anything fails (e.g. ``OSError`` ENOSPC on a full disk) the partial file is removed and the
    error raised again (an ``OSError`` naming ``path`` when it named no file, or the partial one): ``path``
    keeps its earlier content and no ``.partial-*`` file is left.
    """
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    try:
        with partial.open("wb") as file:
            write(file)
        os.replace(partial, path)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename in (None, str(partial)):
            exc.filename = str(path)
        raise


def install_folder(partial: Path, final: Path) -> None:
    """Put the complete ``partial`` folder at ``final`` by renames.

    An absent or empty ``final`` is replaced in one step; a non-empty one (an earlier result, which the
    caller has checked is its own to replace) is first moved into a hidden folder next to it, then deleted.
    """
    if final.is_dir() and any(final.iterdir()):
        stale = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.stale-"))
        final.rename(stale / final.name)
        partial.rename(final)
        shutil.rmtree(stale)
    else:
        partial.rename(final)
