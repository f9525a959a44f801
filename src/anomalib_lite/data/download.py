"""Fetching datasets where the internet is reachable: ``python scripts/prepare_data.py NAME``.

Never used at run time: training reads what is on disk and, when a dataset is missing,
says to run this. Every file is written under a temporary name, checked against its
md5 when one is known, then renamed, and archives are unpacked into a temporary folder
whose entries are renamed into place when complete, so an interrupted or corrupt download
or extraction leaves nothing that looks complete.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import lzma
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from tqdm import tqdm

from anomalib_lite.data.conversion import CHECKSUM_SOURCE, CONVERTED_DATASETS, convert_archive
from anomalib_lite.data.mvtec import categories_in
from anomalib_lite.data.one_class import ONE_CLASS_DATASETS, DownloadFile, load_split
from anomalib_lite.errors import DataError

log = logging.getLogger(__name__)

MVTEC_DOWNLOAD = DownloadFile(
    "mvtec_anomaly_detection.tar.xz",
    "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/420938113-1629952094/"
    "mvtec_anomaly_detection.tar.xz",
    "",  # not published by MVTec; the computed md5 is logged
)
DATASETS = (*ONE_CLASS_DATASETS, "mvtec", *CONVERTED_DATASETS)


def _recorded_md5(dest: Path) -> Path:
    """The file recording the md5 of a complete download of ``dest`` whose md5 is not published."""
    return dest.with_name(f"{dest.name}.md5")


def _verified(dest: Path, md5: str) -> bool:
    """Whether ``dest`` is a complete download: its md5 is ``md5``, or (none published) the one recorded."""
    record = _recorded_md5(dest)
    expected = md5 or (record.read_text().strip() if record.is_file() else "")
    return bool(expected) and dest.is_file() and file_md5(dest) == expected


def download(url: str, dest: Path, md5: str = "", progress: bool = True, md5_note: str = "") -> Path:
    """Fetch ``url`` (``http(s)://`` or ``file://``) to ``dest``, checking its md5 when given.

    The file is written as ``<dest>.partial-<pid>``, removed on any failure or interruption, and
    renamed to ``dest`` once complete and checked. Without a published md5, the computed one is
    recorded in ``<dest>.md5``. ``md5_note`` (where the expected md5 comes from) ends a mismatch's message.

    Returns:
        ``dest``. An existing ``dest`` whose md5 matches (the given one, or the one recorded) is kept
        without fetching.
    Raises:
        DataError: naming the URL, when it cannot be fetched or its md5 differs.
    """
    if _verified(dest, md5):
        log.info("%s: already downloaded and verified", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f"{dest.name}.partial-{os.getpid()}")
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if md5 and digest.hexdigest() != md5:
            raise DataError(
                f"{url}: md5 {digest.hexdigest()} differs from the expected {md5}; nothing was kept. {md5_note}".strip()
            )
        if not md5:  # recorded first: a record without its file (or with an older one) verifies nothing
            log.info("%s: md5 %s", dest.name, digest.hexdigest())
            _recorded_md5(dest).write_text(digest.hexdigest())
        os.replace(partial, dest)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise DataError(f"cannot download {url}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return dest


def file_md5(path: Path) -> str:
    """md5 hex digest of a file."""
    digest = hashlib.md5()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def extract(archive: Path, dest: Path) -> None:
    """Unpack a ``.tar``/``.tar.gz``/``.tar.xz`` archive into ``dest`` (members outside it are refused).

    The archive is unpacked into a hidden folder inside ``dest`` first; only when that is complete is
    each of its top-level entries renamed into ``dest`` (replacing an entry of the same name from an
    earlier extraction), so a failure or interruption leaves no half-unpacked category.

    Raises:
        DataError: naming the archive, when it cannot be unpacked.
    """
    dest.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=dest, prefix=f".{archive.name}.extract-"))
    try:
        unpacked = work / "unpacked"
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(unpacked, filter="data")
        except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
            raise DataError(
                f"cannot unpack {archive}: {exc}; nothing was unpacked. If the file is damaged, delete it to "
                "download it again."
            ) from exc
        for entry in sorted(unpacked.iterdir()):
            if (dest / entry.name).exists():
                (dest / entry.name).rename(work / f"replaced-{entry.name}")
            entry.rename(dest / entry.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _source(file: DownloadFile, mirror: str | None) -> str:
    return f"{mirror.rstrip('/')}/{file.name}" if mirror else file.url


def prepare_dataset(name: str, root: Path, mirror: str | None = None, progress: bool = True) -> str:
    """Download and unpack dataset ``name`` (see :data:`DATASETS`) under ``root``, then check it loads.

    VisA and BTAD are converted from their archive into the MVTec AD layout (:mod:`.conversion`).

    Args:
        mirror: a base URL holding the same file names (e.g. ``file:///mnt/datasets``), used instead
            of the published locations.
    Returns:
        A one-line summary of what is now there.
    Raises:
        DataError: a failed download, a wrong checksum, or a result that does not load.
    """
    if name == "mvtec":
        archive = download(_source(MVTEC_DOWNLOAD, mirror), root / MVTEC_DOWNLOAD.name, progress=progress)
        extract(archive, root)
        found = categories_in(root)
        if not found:
            raise DataError(f"{archive} unpacked into {root}, but no category in the MVTec AD layout was found")
        return f"mvtec: {len(found)} categories under {root}: {', '.join(found)}"
    if name in CONVERTED_DATASETS:
        file = CONVERTED_DATASETS[name].download
        archive = download(_source(file, mirror), root / file.name, file.md5, progress, md5_note=CHECKSUM_SOURCE)
        return convert_archive(name, archive, root, progress)
    if name not in ONE_CLASS_DATASETS:
        raise DataError(f"unknown dataset {name!r}; choices: {', '.join(DATASETS)}")
    for file in ONE_CLASS_DATASETS[name].downloads:
        path = download(_source(file, mirror), root / file.name, file.md5, progress)
        if file.name.endswith((".tar.gz", ".tar.xz", ".tar")):
            extract(path, root)
    sizes = [len(load_split(name, root, train)[1]) for train in (True, False)]
    return f"{name}: {sizes[0]} training and {sizes[1]} test images under {root}"
