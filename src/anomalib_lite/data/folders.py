"""Putting a completely written dataset folder in place, so that readers never see a half-written one."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path


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
