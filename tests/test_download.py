"""Dataset download code, exercised with local ``file://`` URLs only (never a live URL)."""

from __future__ import annotations

import gzip
import http.client
import io
import pickle
import shutil
import tarfile
import urllib.request

import numpy as np
import pytest

from anomalib_lite.data import one_class
from anomalib_lite.data.download import MVTEC_DOWNLOAD, download, file_md5, prepare_dataset
from anomalib_lite.data.one_class import DownloadFile, OneClassDataset
from anomalib_lite.errors import DataError

from conftest import SHARED_DATA, run_entry, write_mvtec_category

MNIST = SHARED_DATA / "mnist-t10k"


@pytest.mark.skipif(not MNIST.is_dir(), reason=f"{MNIST} (real MNIST test split) is absent")
def test_published_md5s_match_the_real_test_files(tmp_path):
    """The checksums prepare_data uses for the MNIST test files are those of the real files."""
    spec = {f.name: f for f in one_class.ONE_CLASS_DATASETS["mnist"].downloads}
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        got = download((MNIST / name).as_uri(), tmp_path / name, spec[name].md5, progress=False)
        assert file_md5(got) == spec[name].md5


def _idx(array: np.ndarray) -> bytes:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return gzip.compress(header + array.tobytes())


def test_prepare_mnist_from_a_mirror_then_train_loads_it(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": np.arange(30, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": np.arange(20, dtype=np.uint8) % 10,
    }
    files = []
    for name, array in arrays.items():
        (mirror / name).write_bytes(_idx(array))
        files.append(DownloadFile(name, f"https://invalid.example/{name}", file_md5(mirror / name)))
    spec = OneClassDataset(tuple("0123456789"), "test layout", tuple(files))
    monkeypatch.setitem(one_class.ONE_CLASS_DATASETS, "mnist", spec)
    root = tmp_path / "mnist"
    summary = prepare_dataset("mnist", root, mirror=mirror.as_uri(), progress=False)
    assert summary == f"mnist: 30 training and 20 test images under {root}"
    images, labels = one_class.load_split("mnist", root, train=False)
    assert np.array_equal(images, arrays["t10k-images-idx3-ubyte.gz"])
    assert np.array_equal(labels, arrays["t10k-labels-idx1-ubyte.gz"])


def test_a_corrupt_or_absent_download_keeps_nothing(tmp_path):
    source = tmp_path / "file.bin"
    source.write_bytes(b"payload")
    dest = tmp_path / "out" / "file.bin"
    with pytest.raises(DataError, match="md5 .* differs"):
        download(source.as_uri(), dest, md5="0" * 32, progress=False)
    with pytest.raises(DataError, match="cannot download"):
        download((tmp_path / "absent.bin").as_uri(), dest, progress=False)
    assert list(dest.parent.iterdir()) == []
    assert download(source.as_uri(), dest, file_md5(source), progress=False).read_bytes() == b"payload"


def test_prepare_cifar10_unpacks_the_archive(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, n in [*((f"data_batch_{i}", 4) for i in range(1, 6)), ("test_batch", 6)]:
            payload = pickle.dumps({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [3] * n})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(buffer.getvalue())
    files = (DownloadFile(archive.name, archive.as_uri(), file_md5(archive)),)
    monkeypatch.setitem(one_class.ONE_CLASS_DATASETS, "cifar10", OneClassDataset(tuple("0123456789"), "x", files))
    root = tmp_path / "cifar10"
    assert prepare_dataset("cifar10", root, progress=False) == f"cifar10: 20 training and 6 test images under {root}"
    assert (root / "cifar-10-batches-py" / "test_batch").is_file()


def test_prepare_data_script_names_a_failed_download(tmp_path):
    shutil.rmtree(tmp_path, ignore_errors=True)
    result = run_entry("scripts/prepare_data.py", "mnist", "--root", str(tmp_path / "m"), "--mirror",
                       (tmp_path / "nowhere").as_uri(), "--no-progress")  # fmt: skip
    assert result.returncode == 1
    assert "cannot download file://" in result.stdout and "train-images-idx3-ubyte.gz" in result.stdout


class _CutStream(io.BytesIO):
    """A response that sends some bytes, then fails like a dropped connection (or the user's Ctrl-C)."""

    headers: dict = {}

    def __init__(self, error: BaseException) -> None:
        super().__init__(b"x" * 1000)
        self.error = error

    def read(self, size: int = -1) -> bytes:
        if self.tell():
            raise self.error
        return super().read(100)


@pytest.mark.parametrize("error", [http.client.IncompleteRead(b"x" * 100, 900), KeyboardInterrupt()])
def test_an_interrupted_download_leaves_no_file(tmp_path, monkeypatch, error):
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: _CutStream(error))
    dest = tmp_path / "out" / "archive.tar.xz"
    url = "https://invalid.example/archive.tar.xz"
    with pytest.raises(DataError if isinstance(error, Exception) else KeyboardInterrupt) as raised:
        download(url, dest, progress=False)
    if isinstance(error, Exception):
        assert url in str(raised.value)
    assert list(dest.parent.iterdir()) == []


def _mvtec_archive(tmp_path, path) -> None:
    """A tiny MVTec AD archive: categories ``widget`` and ``zwidget`` at its top level."""
    staging = tmp_path / "staging"
    for category in ("widget", "zwidget"):
        for sub in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
            (staging / category / sub).mkdir(parents=True)
        write_mvtec_category(staging, category, np.random.default_rng(0))
    with tarfile.open(path, "w:xz") as tar:
        for category in ("widget", "zwidget"):
            tar.add(staging / category, arcname=category)


def test_a_failed_extraction_leaves_no_half_category(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    archive = mirror / MVTEC_DOWNLOAD.name
    _mvtec_archive(tmp_path, archive)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size * 3 // 4])  # widget whole, zwidget cut
    root = tmp_path / "mvtec"
    with pytest.raises(DataError, match=rf"cannot unpack {root / MVTEC_DOWNLOAD.name}"):
        prepare_dataset("mvtec", root, mirror=mirror.as_uri(), progress=False)
    assert sorted(p.name for p in root.iterdir()) == [MVTEC_DOWNLOAD.name, f"{MVTEC_DOWNLOAD.name}.md5"]


def test_a_verified_archive_is_not_fetched_again(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _mvtec_archive(tmp_path, mirror / MVTEC_DOWNLOAD.name)
    root = tmp_path / "mvtec"
    expected = f"mvtec: 2 categories under {root}: widget, zwidget"
    assert prepare_dataset("mvtec", root, mirror=mirror.as_uri(), progress=False) == expected
    fetched, urlopen = [], urllib.request.urlopen
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: fetched.append(url) or urlopen(url, timeout))
    assert prepare_dataset("mvtec", root, mirror=mirror.as_uri(), progress=False) == expected
    assert fetched == []  # md5 published by nobody: the one recorded at the first download verified it
    archive = root / MVTEC_DOWNLOAD.name
    archive.write_bytes(archive.read_bytes()[:-10])  # damaged since: fetched again
    assert prepare_dataset("mvtec", root, mirror=mirror.as_uri(), progress=False) == expected
    assert len(fetched) == 1
    assert archive.read_bytes() == (mirror / MVTEC_DOWNLOAD.name).read_bytes()
