"""Fetching datasets where the internet is reachable: ``python scripts/prepare_data.py NAME``.

Never used at run time: training reads what is on disk and, when a dataset is missing,
says to run this. Every file is written under a temporary name, checked against its
md5 and sha256 when known, then renamed, and archives are unpacked into a temporary folder
whose entries are renamed into place when complete, so an interrupted or corrupt download
or extraction leaves nothing that looks complete. A local copy of an archive (``--archive``)
is checked the same way and used in place of a download.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import lzma
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from anomalib_lite.data.conversion import (
    CHECKSUM_SOURCE,
    CONVERTED_DATASETS,
    STAMP,
    check_not_foreign,
    convert_archive,
)
from anomalib_lite.data.images import IMAGE_SUFFIXES
from anomalib_lite.data.kolektor import KSDD2_DOWNLOAD, KSDD2_HOW_TO_GET, KSDD2_SPLITS
from anomalib_lite.data.mvtec import MPDD_CATEGORIES, MPDD_DOWNLOAD, MPDD_HOW_TO_GET, categories_in
from anomalib_lite.data.mvtec_ad2 import MVTEC_AD2_CATEGORIES, MVTEC_AD2_DOWNLOAD, MVTEC_AD2_HOW_TO_GET
from anomalib_lite.data.mvtec_loco import LOCO_CATEGORIES, LOCO_DOWNLOAD, LOCO_HOW_TO_GET
from anomalib_lite.data.one_class import ONE_CLASS_DATASETS, DownloadFile, load_split
from anomalib_lite.data.realiad import REALIAD_CATEGORIES, RealIADConfig, realiad_categories_in
from anomalib_lite.data.registry import categories, dataset_config_class
from anomalib_lite.errors import DataError
from anomalib_lite.files import install_folder

log = logging.getLogger(__name__)

MVTEC_DOWNLOAD = DownloadFile(
    "mvtec_anomaly_detection.tar.xz",
    "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/420938113-1629952094/"
    "mvtec_anomaly_detection.tar.xz",
    "",  # not published by MVTec; the computed md5 is logged
)


def _recorded_md5(dest: Path) -> Path:
    """The file recording the md5 of a complete download of ``dest`` whose checksums are not published."""
    return dest.with_name(f"{dest.name}.md5")


def _verified(dest: Path, md5: str, sha256: str = "") -> bool:
    """Whether ``dest`` is a complete download: its md5 and sha256 are those given, or (none known) its md5 is
    the one recorded."""
    if not dest.is_file():
        return False
    if md5 or sha256:
        return not _mismatches(file_digests(dest), md5, sha256)
    record = _recorded_md5(dest)
    return record.is_file() and file_md5(dest) == record.read_text().strip()


def _mismatches(digests: dict[str, str], md5: str, sha256: str) -> list[str]:
    """``"<algorithm> <got> differs from the expected <wanted>"`` for each given checksum that ``digests`` miss."""
    wanted = {"md5": md5, "sha256": sha256}
    return [
        f"{name} {digests[name]} differs from the expected {value}"
        for name, value in wanted.items()
        if value and digests[name] != value
    ]


def download(url: str, dest: Path, md5: str = "", progress: bool = True, md5_note: str = "", sha256: str = "") -> Path:
    """Fetch ``url`` (``http(s)://`` or ``file://``) to ``dest``, checking its md5 and sha256 when given.

    The file is written as ``<dest>.partial-<pid>``, removed on any failure or interruption, and
    renamed to ``dest`` once complete and checked. Without a known checksum, the computed md5 is
    recorded in ``<dest>.md5``. ``md5_note`` (where the expected checksums come from) ends a mismatch's message.

    Returns:
        ``dest``. An existing ``dest`` whose checksums match (those given, or the md5 recorded) is kept
        without fetching.
    Raises:
        DataError: naming the URL, when it cannot be fetched or a checksum differs.
    """
    if _verified(dest, md5, sha256):
        log.info("%s: already downloaded and verified", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f"{dest.name}.partial-{os.getpid()}")
    digests = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}
    try:
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    for digest in digests.values():
                        digest.update(chunk)
                    bar.update(len(chunk))
        got = {name: digest.hexdigest() for name, digest in digests.items()}
        mismatches = _mismatches(got, md5, sha256)
        if mismatches:
            raise DataError(f"{url}: {'; '.join(mismatches)}; nothing was kept. {md5_note}".strip())
        if not (md5 or sha256):  # recorded first: a record without its file (or with an older one) verifies nothing
            log.info("%s: md5 %s", dest.name, got["md5"])
            _recorded_md5(dest).write_text(got["md5"])
        os.replace(partial, dest)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise DataError(f"cannot download {url}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return dest


def file_digests(path: Path, names: tuple[str, ...] = ("md5", "sha256")) -> dict[str, str]:
    """Hex digests of a file, by algorithm name (``hashlib``'s): ``{"md5": …, "sha256": …}``, read once."""
    digests = {name: hashlib.new(name) for name in names}
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            for digest in digests.values():
                digest.update(chunk)
    return {name: digest.hexdigest() for name, digest in digests.items()}


def file_md5(path: Path) -> str:
    """md5 hex digest of a file."""
    return file_digests(path, ("md5",))["md5"]


def unpack(archive: Path, folder: Path) -> None:
    """Unpack a ``.zip`` (by its name) or ``.tar``/``.tar.gz``/``.tar.xz`` archive into ``folder`` (members that
    would land outside it, links out of it and special files are refused).

    Raises:
        DataError: naming the archive, when it cannot be unpacked.
    """
    try:
        if archive.suffix.lower() == ".zip":
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(folder)  # zipfile drops absolute and ".." parts of member names
        else:
            with tarfile.open(archive) as tar:
                tar.extractall(folder, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise DataError(
            f"cannot unpack {archive}: {exc}; nothing was unpacked. If the file is damaged, delete it to "
            "download it again."
        ) from exc


def extract(archive: Path, dest: Path) -> None:
    """Unpack an archive into ``dest`` (see :func:`unpack`).

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
        unpack(archive, unpacked)
        for entry in sorted(unpacked.iterdir()):
            if (dest / entry.name).exists():
                (dest / entry.name).rename(work / f"replaced-{entry.name}")
            entry.rename(dest / entry.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _source(file: DownloadFile, mirror: str | None) -> str:
    return f"{mirror.rstrip('/')}/{file.name}" if mirror else file.url


@dataclass(frozen=True)
class PublishedDataset:
    """A dataset whose published archive is used as it is, once unpacked (no conversion).

    Attributes:
        download: the archive: its name, URL (empty: none is public, see ``how_to_get``) and checksums.
        folders: what it holds, each installed as ``<root>/<folder>`` (the categories, or KolektorSDD2's splits).
        marker: a path inside each folder by which it is recognised (``train/good``; empty: the folder alone).
        checksum_source: where the checksums come from (ends a mismatch's message).
        how_to_get: where to get the archive (shown when there is no URL).
    """

    download: DownloadFile
    folders: tuple[str, ...]
    marker: str
    checksum_source: str
    how_to_get: str


ANOMALIB_CHECKSUM = (
    "The expected checksum is the one open-edge-platform/anomalib records for this file; the dataset's authors "
    "publish none. A different one means a damaged download or a file the host has since replaced."
)
PUBLISHED_DATASETS = {
    "mvtec_ad2": PublishedDataset(
        MVTEC_AD2_DOWNLOAD, tuple(MVTEC_AD2_CATEGORIES), "train/good", ANOMALIB_CHECKSUM, MVTEC_AD2_HOW_TO_GET
    ),
    "mvtec_loco": PublishedDataset(
        LOCO_DOWNLOAD, tuple(LOCO_CATEGORIES), "train/good", ANOMALIB_CHECKSUM, LOCO_HOW_TO_GET
    ),
    "mpdd": PublishedDataset(MPDD_DOWNLOAD, tuple(MPDD_CATEGORIES), "train/good", "", MPDD_HOW_TO_GET),
    "ksdd2": PublishedDataset(
        KSDD2_DOWNLOAD,
        KSDD2_SPLITS,
        "",
        "The expected sha256 is one a third party recorded on GitHub; the dataset's authors publish none. A "
        "different one means a damaged download, a file the host has since replaced, or a wrong record.",
        KSDD2_HOW_TO_GET,
    ),
}
DATASETS = (*ONE_CLASS_DATASETS, "mvtec", *CONVERTED_DATASETS, *PUBLISHED_DATASETS, "realiad")


def _find_folders(unpacked: Path, spec: PublishedDataset, archive: Path) -> Path:
    """The folder of the unpacked archive (its top or deeper, the shallowest) holding every one of
    ``spec.folders`` (each with ``spec.marker`` inside).

    Raises:
        DataError: naming the archive and the folders found nowhere.
    """
    places = sorted((Path(d) for d, _, _ in os.walk(unpacked)), key=lambda d: (len(d.parts), str(d)))
    for place in places:
        if all((place / folder / spec.marker).is_dir() for folder in spec.folders):
            return place
    found = {p.name for p in places if p.name in spec.folders and (p / spec.marker).is_dir()}
    missing = [folder for folder in spec.folders if folder not in found]
    what = f" (each with {spec.marker}/)" if spec.marker else ""
    raise DataError(
        f"{archive}: no folder holds all of {', '.join(spec.folders)}{what}; missing: "
        f"{', '.join(missing) or 'none alone, but not side by side'}. It is incomplete or not the dataset's archive; "
        "nothing was installed."
    )


def install_published(name: str, archive: Path, root: Path) -> str:
    """Unpack dataset ``name``'s (:data:`PUBLISHED_DATASETS`) ``archive`` and install each of its folders as
    ``<root>/<folder>`` (stamped with :data:`~anomalib_lite.data.conversion.STAMP`), then check that it loads.

    The archive is unpacked into a hidden folder under ``root`` first; nothing is installed unless every folder
    is in it, and a folder under ``root`` that ``prepare_data.py`` did not write is never replaced.

    Returns:
        A one-line summary: the folders and their image counts.
    Raises:
        DataError: an unreadable or wrong archive, a foreign folder under ``root``, or a result that does not load.
    """
    spec = PUBLISHED_DATASETS[name]
    root.mkdir(parents=True, exist_ok=True)
    for folder in spec.folders:
        check_not_foreign(root / folder)
    work = Path(tempfile.mkdtemp(dir=root, prefix=f".{archive.name}.extract-"))
    try:
        unpack(archive, work / "unpacked")
        base = _find_folders(work / "unpacked", spec, archive)
        for folder in spec.folders:
            (base / folder / STAMP).write_text(json.dumps({"dataset": name, "archive": archive.name}))
        for folder in spec.folders:
            install_folder(base / folder, root / folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    categories(dataset_config_class(name)(name=name, root=str(root), category="all"))  # loads, or says why not
    counts = [f"{folder} ({_count_images(root / folder)} images)" for folder in spec.folders]
    return f"{name}: {', '.join(counts)} under {root}"


def _count_images(folder: Path) -> int:
    return sum(1 for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)


def _archive(
    name: str,
    file: DownloadFile,
    root: Path,
    mirror: str | None,
    archive: Path | None,
    note: str,
    progress: bool,
    how_to_get: str = "",
) -> Path:
    """Dataset ``name``'s archive: ``archive`` (a local copy, checked against the known checksums), else downloaded
    (from ``mirror`` or ``file.url``) into ``root``.

    Raises:
        DataError: no such local copy, a checksum that differs, a failed download, or no URL and no copy given.
    """
    if archive is not None:
        if not archive.is_file():
            raise DataError(f"--archive {archive}: no such file")
        if file.md5 or file.sha256:
            mismatches = _mismatches(file_digests(archive), file.md5, file.sha256)
            if mismatches:
                raise DataError(f"{archive}: {'; '.join(mismatches)}; it is not the published {file.name}. {note}")
        return archive
    if not (file.url or mirror):
        raise DataError(f"{name}: no public URL to download it from. {how_to_get}")
    return download(_source(file, mirror), root / file.name, file.md5, progress, note, file.sha256)


def prepare_dataset(
    name: str, root: Path, mirror: str | None = None, progress: bool = True, archive: Path | None = None
) -> str:
    """Download and unpack dataset ``name`` (see :data:`DATASETS`) under ``root``, then check it loads.

    VisA and BTAD are converted from their archive into the MVTec AD layout (:mod:`.conversion`); MVTec AD 2,
    MVTec LOCO AD, MPDD and KolektorSDD2 are used in their own layout (:func:`install_published`); Real-IAD,
    which needs its authors' approval, is only checked.

    Args:
        mirror: a base URL holding the same file names (e.g. ``file:///mnt/datasets``), used instead
            of the published locations.
        archive: a local copy of the dataset's archive, used instead of downloading it (checked against the
            known checksums); the only way for MPDD.
    Returns:
        A one-line summary of what is now there.
    Raises:
        DataError: a failed download, a wrong checksum, or a result that does not load.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choices: {', '.join(DATASETS)}")
    if archive is not None and name in (*ONE_CLASS_DATASETS, "realiad"):
        raise DataError(f"--archive: {name} is not published as one archive")
    if name == "mvtec":
        path = _archive(name, MVTEC_DOWNLOAD, root, mirror, archive, "", progress)
        extract(path, root)
        found = categories_in(root)
        if not found:
            raise DataError(f"{path} unpacked into {root}, but no category in the MVTec AD layout was found")
        return f"mvtec: {len(found)} categories under {root}: {', '.join(found)}"
    if name in CONVERTED_DATASETS:
        file = CONVERTED_DATASETS[name].download
        return convert_archive(
            name, _archive(name, file, root, mirror, archive, CHECKSUM_SOURCE, progress), root, progress
        )
    if name in PUBLISHED_DATASETS:
        spec = PUBLISHED_DATASETS[name]
        path = _archive(name, spec.download, root, mirror, archive, spec.checksum_source, progress, spec.how_to_get)
        return install_published(name, path, root)
    if name == "realiad":
        found = realiad_categories_in(RealIADConfig(root=str(root)))
        return f"realiad: {len(found)} of {len(REALIAD_CATEGORIES)} categories under {root}: {', '.join(found)}"
    for file in ONE_CLASS_DATASETS[name].downloads:
        path = download(_source(file, mirror), root / file.name, file.md5, progress)
        if file.name.endswith((".tar.gz", ".tar.xz", ".tar")):
            extract(path, root)
    sizes = [len(load_split(name, root, train)[1]) for train in (True, False)]
    return f"{name}: {sizes[0]} training and {sizes[1]} test images under {root}"
