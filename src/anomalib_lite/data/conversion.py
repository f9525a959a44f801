"""VisA and BTAD: their published archives converted into the MVTec AD layout (``data=visa``, ``data=btad``).

Read straight from the archive (no unpacked copy), every category is written into a hidden folder
next to its final place and renamed into place when complete, with a ``conversion.json`` stamp:

```
<root>/<category>/train/good/*            normal training images (bytes copied unchanged)
<root>/<category>/test/good/*             normal test images
<root>/<category>/test/bad/*              anomalous test images
<root>/<category>/ground_truth/bad/<image name>_mask.png   binarised: 0 or 255
```

- **VisA** (``VisA_20220922.tar``): the split is the official 1-class split file inside the archive,
  ``split_csv/1cls.csv`` (columns ``object,split,label,image,mask``, from amazon-science/spot-diff);
  a mask pixel is a defect when it is non-zero (ref-code: spot-diff's ``utils/prepare_data.py``; VisA's
  masks are label images of small class ids). ``bad`` is the defect folder name spot-diff uses.
- **BTAD** (``btad.zip``, top folder ``BTech_Dataset_transformed``): already split as
  ``<category>/{train/ok,test/ok,test/ko,ground_truth/ko}`` with ``.bmp``/``.png`` files; ``ok`` becomes
  ``good``, ``ko`` becomes ``bad``; masks are binarised with the rule the loader applies to any mask
  (:func:`~anomalib_lite.data.images.mask_foreground`; *choice*: BTAD states none).

Before anything is written, the archive's structure is checked: every file the split names is in it,
every category of the dataset is there and nothing else claims the output folders.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import lzma
import re
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from tqdm import tqdm

from anomalib_lite.data.images import mask_foreground, mask_values
from anomalib_lite.data.one_class import DownloadFile
from anomalib_lite.errors import DataError
from anomalib_lite.files import install_folder

log = logging.getLogger(__name__)

VISA_CATEGORIES = [
    "candle",
    "capsules",
    "cashew",
    "chewinggum",
    "fryum",
    "macaroni1",
    "macaroni2",
    "pcb1",
    "pcb2",
    "pcb3",
    "pcb4",
    "pipe_fryum",
]
BTAD_CATEGORIES = ["01", "02", "03"]
DEFECT = "bad"
STAMP = "conversion.json"  # written last into a converted category
VISA_SPLIT = "split_csv/1cls.csv"
VISA_SPLIT_COLUMNS = ["object", "split", "label", "image", "mask"]
# The md5s are the ones openvinotoolkit/anomalib records for these URLs (src/anomalib/data/image/visa.py and
# src/anomalib/data/btech.py; its later versions record sha256 2eb8690c…f362 and 461c9387…0d2a). The datasets'
# authors publish none, and they could not be checked here (no network): a mismatch stops with CHECKSUM_SOURCE.
CHECKSUM_SOURCE = (
    "The expected md5 is the one openvinotoolkit/anomalib records for this file; the dataset's authors publish "
    "none. A different md5 means a damaged download or a file the host has since replaced: nothing was kept."
)
VISA_DOWNLOAD = DownloadFile(
    "VisA_20220922.tar",
    "https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/VisA_20220922.tar",
    "ef908989b6dc701fc218f643c127a4de",
)
BTAD_DOWNLOAD = DownloadFile(
    "btad.zip", "https://avires.dimi.uniud.it/papers/btad/btad.zip", "c1fa4d56ac50dd50908ce04e81037a8e"
)
VISA_HOW_TO_GET = (
    "VisA: `python scripts/prepare_data.py visa --root <root>` downloads it (from "
    f"{VISA_DOWNLOAD.url}) and converts it with its 1-class split into this layout; or point data.root at a "
    "copy converted the same way."
)
BTAD_HOW_TO_GET = (
    f"BTAD: `python scripts/prepare_data.py btad --root <root>` downloads it (from {BTAD_DOWNLOAD.url}) and "
    "converts it into this layout; or point data.root at a copy converted the same way."
)


@dataclass(frozen=True)
class Entry:
    """One file of the converted dataset.

    Attributes:
        source: the archive member it is read from. category: its category.
        target: its path inside the category folder (``test/bad/000.JPG``).
        is_mask: a mask, binarised on the way; otherwise an image, copied byte for byte.
    """

    source: str
    category: str
    target: str
    is_mask: bool = False


class ArchiveReader:
    """The files of a ``.zip`` archive (by its name) or a ``.tar``/``.tar.gz``/``.tar.xz`` one, read by name
    without unpacking it.

    Raises (from every method):
        DataError: naming the archive (and the member), when it cannot be read.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            if path.suffix.lower() == ".zip":
                self._zip: zipfile.ZipFile | None = zipfile.ZipFile(path)
                self._members = {_normal(n): n for n in self._zip.namelist() if not n.endswith("/")}
            else:
                self._zip = None
                self._tar = tarfile.open(path)  # noqa: SIM115 (kept open for reads; closed by __exit__)
                self._members = {_normal(m.name): m for m in self._tar.getmembers() if m.isfile()}
        except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
            raise self._error(exc) from exc

    def _error(self, exc: BaseException, member: str = "") -> DataError:
        where = f"{self.path}: {member}" if member else str(self.path)
        return DataError(
            f"cannot read {where} ({type(exc).__name__}: {exc}); no half-converted category was left. If the "
            "archive is damaged, delete it to download it again."
        )

    def names(self) -> set[str]:
        """Every file's name (without a leading ``./``)."""
        return set(self._members)

    def read(self, name: str) -> bytes:
        """The bytes of file ``name``."""
        try:
            if self._zip is not None:
                return self._zip.read(self._members[name])
            handle = self._tar.extractfile(self._members[name])
            return handle.read() if handle else b""
        except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
            raise self._error(exc, name) from exc

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc: object) -> None:
        (self._zip or self._tar).close()


def _normal(name: str) -> str:
    return name[2:] if name.startswith("./") else name


def _mask_target(image_target: str) -> str:
    """``test/bad/000.JPG`` → ``ground_truth/bad/000_mask.png`` (the MVTec AD mask name)."""
    return f"ground_truth/{DEFECT}/{PurePosixPath(image_target).stem}_mask.png"


def visa_entries(archive: ArchiveReader) -> list[Entry]:
    """The files of VisA's 1-class split (:data:`VISA_SPLIT`, read from the archive), and where each goes.

    Raises:
        DataError: the archive has no split file, or a row of it is malformed (naming the line).
    """
    split = next((n for n in sorted(archive.names()) if n == VISA_SPLIT or n.endswith(f"/{VISA_SPLIT}")), None)
    if split is None:
        raise DataError(
            f"{archive.path} holds no {VISA_SPLIT}: it is incomplete or not the VisA archive ({VISA_DOWNLOAD.name}). "
            "Delete it to download it again."
        )
    prefix = split[: -len(VISA_SPLIT)]  # the archive's top folder, if it has one
    rows = list(csv.reader(io.StringIO(archive.read(split).decode("utf-8-sig"))))
    if not rows or [c.strip() for c in rows[0]] != VISA_SPLIT_COLUMNS:
        raise DataError(f"{archive.path}: {split} does not start with the header {','.join(VISA_SPLIT_COLUMNS)}")
    entries = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(VISA_SPLIT_COLUMNS):
            raise DataError(f"{archive.path}: {split} line {line}: {len(row)} columns, expected 5")
        category, subset, label, image, mask = (cell.strip() for cell in row)
        folder = {("train", "normal"): "train/good", ("test", "normal"): "test/good", ("test", "anomaly"): "test/bad"}
        if category not in VISA_CATEGORIES or (subset, label) not in folder or (label == "anomaly") != bool(mask):
            raise DataError(
                f"{archive.path}: {split} line {line}: {','.join(row)!r} is not a VisA 1-class row (object one of "
                f"{', '.join(VISA_CATEGORIES)}; train/normal, test/normal or test/anomaly with a mask)"
            )
        target = f"{folder[subset, label]}/{PurePosixPath(image).name}"
        entries.append(Entry(prefix + image, category, target))
        if mask:
            entries.append(Entry(prefix + mask, category, _mask_target(target), is_mask=True))
    return entries


_BTAD_FILE = re.compile(
    r"^(?P<prefix>(?:[^/]+/)*)(?P<category>\d\d)/(?P<where>train/ok|test/ok|test/ko|ground_truth/ko)/"
    r"(?P<name>[^/]+\.(?:bmp|png))$",
    re.IGNORECASE,
)
_BTAD_FOLDERS = {"train/ok": "train/good", "test/ok": "test/good", "test/ko": f"test/{DEFECT}"}


def btad_entries(archive: ArchiveReader) -> list[Entry]:
    """BTAD's files (``<category>/{train/ok,test/ok,test/ko,ground_truth/ko}``), and where each goes.

    A ``ko`` image's mask is ``ground_truth/ko/<image stem>.<png|bmp>``.

    Raises:
        DataError: a ``ko`` image without its mask (naming it).
    """
    files = [m for n in sorted(archive.names()) if (m := _BTAD_FILE.match(n)) and "__MACOSX" not in n]
    files = [m for m in files if not m["name"].startswith(".")]
    masks = {
        (m["prefix"], m["category"], PurePosixPath(m["name"]).stem): m.string
        for m in files
        if m["where"].lower() == "ground_truth/ko"
    }
    entries = []
    for m in files:
        where = m["where"].lower()
        if where == "ground_truth/ko":
            continue
        target = f"{_BTAD_FOLDERS[where]}/{m['name']}"
        entries.append(Entry(m.string, m["category"], target))
        if where == "test/ko":
            mask = masks.get((m["prefix"], m["category"], PurePosixPath(m["name"]).stem))
            if mask is None:
                raise DataError(
                    f"{archive.path}: {m.string} has no mask in {m['prefix']}{m['category']}/ground_truth/ko"
                )
            entries.append(Entry(mask, m["category"], _mask_target(target), is_mask=True))
    return entries


def _binary_mask(data: bytes, foreground: Callable[[np.ndarray], np.ndarray]) -> Image.Image:
    values = mask_values(Image.open(io.BytesIO(data)))
    return Image.fromarray(foreground(values).astype(np.uint8) * 255)


def _check_entries(archive: ArchiveReader, entries: list[Entry], known: list[str], dataset: str) -> None:
    """Fail unless every entry's file is in the archive, the categories are ``known``'s and targets are unique."""
    names = archive.names()
    missing = [e.source for e in entries if e.source not in names]
    if missing:
        raise DataError(
            f"{archive.path}: {len(missing)} of the {len(entries)} files of {dataset} are not in the archive (first: "
            f"{', '.join(missing[:3])}); it is incomplete or not {dataset}'s. Delete it to download it again."
        )
    found = sorted({e.category for e in entries})
    if found != sorted(known):
        raise DataError(
            f"{archive.path}: holds the {dataset} categories {', '.join(found) or 'none'}; {dataset} has "
            f"{', '.join(known)}. It is incomplete or not {dataset}'s archive."
        )
    seen: dict[tuple[str, str], str] = {}
    for e in entries:
        if (e.category, e.target) in seen:
            raise DataError(f"{archive.path}: {seen[e.category, e.target]} and {e.source} would both be {e.target}")
        seen[e.category, e.target] = e.source


def check_not_foreign(folder: Path) -> None:
    """Refuse to replace ``folder`` unless it is absent, empty, or was written by ``prepare_data.py`` (it holds
    :data:`STAMP`).

    Raises:
        DataError: naming the folder.
    """
    if folder.exists() and not (folder / STAMP).is_file() and (not folder.is_dir() or any(folder.iterdir())):
        raise DataError(
            f"{folder} exists but was not written by this conversion (it has no {STAMP}); it is left untouched. "
            "Move it elsewhere, or choose another --root."
        )


@dataclass(frozen=True)
class ConvertedDataset:
    """A dataset prepared by conversion: its archive, categories, how its files map and how masks binarise."""

    download: DownloadFile
    categories: list[str]
    entries: Callable[[ArchiveReader], list[Entry]]
    foreground: Callable[[np.ndarray], np.ndarray]


CONVERTED_DATASETS = {
    "visa": ConvertedDataset(VISA_DOWNLOAD, VISA_CATEGORIES, visa_entries, lambda values: values != 0),
    "btad": ConvertedDataset(BTAD_DOWNLOAD, BTAD_CATEGORIES, btad_entries, mask_foreground),
}


def convert_archive(name: str, archive: Path, root: Path, progress: bool = True) -> str:
    """Convert dataset ``name``'s (:data:`CONVERTED_DATASETS`) ``archive`` into the MVTec AD layout under ``root``.

    Every check runs before anything is written; each category then appears complete or not at all
    (an earlier conversion of it is replaced).

    Returns:
        A one-line summary: categories and image counts.
    Raises:
        DataError: an unreadable or wrong archive, an unreadable mask, or a folder under ``root`` that this
            conversion did not write, naming it.
    """
    spec = CONVERTED_DATASETS[name]
    root.mkdir(parents=True, exist_ok=True)
    counts = {"train/good": 0, "test/good": 0, f"test/{DEFECT}": 0, "masks": 0}
    with ArchiveReader(archive) as reader:
        entries = spec.entries(reader)
        _check_entries(reader, entries, spec.categories, name)
        for category in spec.categories:
            check_not_foreign(root / category)
        bar = tqdm(total=len(entries), desc=f"convert {archive.name}", unit="file", disable=not progress)
        for category in spec.categories:
            partial = Path(tempfile.mkdtemp(dir=root, prefix=f".{category}.partial-"))
            try:
                for entry in (e for e in entries if e.category == category):
                    path = partial / entry.target
                    path.parent.mkdir(parents=True, exist_ok=True)
                    data = reader.read(entry.source)
                    if entry.is_mask:
                        try:
                            _binary_mask(data, spec.foreground).save(path)
                        except Exception as exc:  # Pillow fails with many types; each means this mask is unreadable
                            raise DataError(f"{archive}: {entry.source}: cannot read mask ({exc})") from exc
                        counts["masks"] += 1
                    else:
                        path.write_bytes(data)
                        counts[str(PurePosixPath(entry.target).parent)] += 1
                    bar.update()
                (partial / STAMP).write_text(json.dumps({"dataset": name, "archive": archive.name}))
                install_folder(partial, root / category)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
        bar.close()
    return (
        f"{name}: {len(spec.categories)} categories under {root} ({counts['train/good']} training, "
        f"{counts['test/good']} normal and {counts[f'test/{DEFECT}']} anomalous test images, {counts['masks']} masks): "
        f"{', '.join(spec.categories)}"
    )
