"""Dataset download code, exercised with local ``file://`` URLs only (never a live URL)."""

from __future__ import annotations

import http.client
import io
import shutil
import tarfile
import urllib.request

import numpy as np
import pytest

from anomalib_lite.data import one_class
from anomalib_lite.data.download import MVTEC_DOWNLOAD, download, file_md5, prepare_dataset
from anomalib_lite.data.one_class import DownloadFile, OneClassDataset
from anomalib_lite.errors import DataError

from conftest import cifar_batch_bytes, cifar_images, cifar_meta_bytes, run_entry, write_mvtec_category


def test_published_md5s_are_the_official_ones_and_checked(mnist_files, tmp_path):
    """prepare_data's checksums are those published for the real files (torchvision holds the same ones),
    and a download is checked against them: a file in the right format but not the published one is refused."""
    from torchvision.datasets import CIFAR10, MNIST, FashionMNIST

    for name, official in (("mnist", MNIST.resources), ("fashion_mnist", FashionMNIST.resources)):
        assert [(f.name, f.md5) for f in one_class.ONE_CLASS_DATASETS[name].downloads] == [tuple(r) for r in official]
    (cifar,) = one_class.ONE_CLASS_DATASETS["cifar10"].downloads
    assert (cifar.name, cifar.md5) == (CIFAR10.filename, CIFAR10.tgz_md5)
    spec = {f.name: f for f in one_class.ONE_CLASS_DATASETS["mnist"].downloads}
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        made, dest = mnist_files.root / name, tmp_path / name
        with pytest.raises(DataError, match=f"md5 {file_md5(made)} differs from the expected {spec[name].md5}"):
            download(made.as_uri(), dest, spec[name].md5, progress=False)
        assert not list(tmp_path.glob(f"{name}*"))  # nothing kept, not even a partial file
        assert download(made.as_uri(), dest, file_md5(made), progress=False).read_bytes() == made.read_bytes()


def test_prepare_mnist_from_a_mirror_then_train_loads_it(mnist_files, tmp_path, monkeypatch):
    mirror = mnist_files.root
    files = [
        DownloadFile(f.name, f"https://invalid.example/{f.name}", file_md5(mirror / f.name))
        for f in one_class.ONE_CLASS_DATASETS["mnist"].downloads
    ]
    spec = OneClassDataset(tuple("0123456789"), "test layout", tuple(files))
    monkeypatch.setitem(one_class.ONE_CLASS_DATASETS, "mnist", spec)
    root = tmp_path / "mnist"
    summary = prepare_dataset("mnist", root, mirror=mirror.as_uri(), progress=False)
    n_train, n_test = len(mnist_files.train_labels), len(mnist_files.test_labels)
    assert summary == f"mnist: {n_train} training and {n_test} test images under {root}"
    images, labels = one_class.load_split("mnist", root, train=False)
    assert np.array_equal(images, mnist_files.test_images)
    assert np.array_equal(labels, mnist_files.test_labels)


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
    labels = np.arange(26) % 10
    images = cifar_images(labels)
    members = {"batches.meta": cifar_meta_bytes(4), "test_batch": cifar_batch_bytes(images[20:], labels[20:], "x")}
    for i in range(1, 6):
        members[f"data_batch_{i}"] = cifar_batch_bytes(images[4 * i - 4 : 4 * i], labels[4 * i - 4 : 4 * i], "x")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, payload in members.items():
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
    loaded = one_class.load_split("cifar10", root, train=False)
    assert np.array_equal(loaded[0], images[20:]) and loaded[1].tolist() == labels[20:].tolist()


def test_prepare_data_script_names_a_failed_download(tmp_path):
    shutil.rmtree(tmp_path, ignore_errors=True)
    result = run_entry(
        "scripts/prepare_data.py",
        "mnist",
        "--root",
        str(tmp_path / "m"),
        "--mirror",
        (tmp_path / "nowhere").as_uri(),
        "--no-progress",
    )
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
