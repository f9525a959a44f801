"""Outputs on a full disk or a read-only folder: one clear message, no partial file, metrics first."""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from anomalib_lite.cli.run_folders import check_writable
from anomalib_lite.engine import trainer
from anomalib_lite.engine.checkpoint import save_checkpoint
from anomalib_lite.errors import ConfigError
from anomalib_lite.metrics.ranks import RankCurve
from anomalib_lite.pipeline import evaluation as evaluation_outputs
from anomalib_lite.pipeline.evaluation import write_json
from anomalib_lite.reporting.curves import write_curves
from anomalib_lite.reporting.overlays import save_overlays, save_stages
from anomalib_lite.reporting.plots import plot_curves
from anomalib_lite.reporting.run_report import write_report

from conftest import REPO, TINY, run_entry

DISK_FULL = OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("failing", ["write", "replace"])
def test_a_failed_write_leaves_the_earlier_file_and_no_partial_one(tmp_path, monkeypatch, failing):
    metrics, checkpoint = tmp_path / "metrics.json", tmp_path / "last.pt"
    write_json({"a": 1}, metrics)
    save_checkpoint({"epoch": 1}, checkpoint)
    before = metrics.read_bytes(), checkpoint.read_bytes()

    def fill_the_disk(*args, **kwargs):
        for arg in args:  # half a file written into the target given (a path or an open file), then a full disk
            if isinstance(arg, (str, os.PathLike)):
                Path(arg).write_bytes(b"half a file")
            elif hasattr(arg, "write"):
                arg.write(b"half a file")
        raise DISK_FULL

    if failing == "write":
        monkeypatch.setattr(evaluation_outputs.json, "dumps", fill_the_disk)
        monkeypatch.setattr(trainer.torch, "save", fill_the_disk)
    else:
        monkeypatch.setattr(os, "replace", lambda *args: fill_the_disk())
    with pytest.raises(OSError, match="No space left"):
        write_json({"a": 2}, metrics)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint({"epoch": 2}, checkpoint)
    assert (metrics.read_bytes(), checkpoint.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "metrics.json"]


class FillingDisk:
    """A file opened for writing on a disk that fills after ``room`` bytes: that much is written, then ENOSPC."""

    def __init__(self, file, room: int) -> None:
        self.file, self.room = file, room

    def write(self, data):
        if len(data) > self.room:
            self.file.write(data[: self.room])
            self.file.flush()
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.file.close()


def _write_output(kind: str, folder: Path) -> Path:
    """One of the run outputs written in ``folder``; returns its path."""
    rng = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8, generator=rng)
    maps = torch.rand(2, 8, 8, generator=rng)
    if kind == "map":
        masks = torch.zeros(2, 32, 32, dtype=torch.bool)
        return save_overlays(images, maps, masks, ["good/000.png", "hole/001.png"], [0], folder)[0]
    if kind == "stages":
        stages = {"input": images.permute(0, 3, 1, 2).float() / 255}
        return save_stages(stages, maps, ["good/000.png", "hole/001.png"], folder)[0]
    fpr = torch.linspace(0, 1, 60, dtype=torch.float64)
    if kind == "curve":
        return write_curves({"pixel_roc": RankCurve(fpr, fpr.sqrt(), 1 - fpr)}, folder)[0]
    if kind == "figure":
        return plot_curves({"run": {"pixel_roc": (fpr.numpy(), fpr.sqrt().numpy())}}, folder / "curves.png")
    if not (folder / "metrics.json").exists():
        write_json(
            {"model": "hfr", "data": "synthetic", "categories": {"brick": {"image_auroc": 0.5}}},
            folder / "metrics.json",
        )
    return write_report(folder, {"model": {"name": "hfr"}})


@pytest.mark.parametrize("kind", ["map", "stages", "curve", "figure", "report"])
def test_a_full_disk_midway_through_an_output_keeps_the_earlier_file_whole(tmp_path, monkeypatch, kind):
    """Map PNGs, curve CSVs, the curve figure and report.html: never a truncated file under the final name."""
    folder = tmp_path / "run"
    folder.mkdir()
    path = _write_output(kind, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert len(before[path.name]) > 200
    real_open = builtins.open

    def opening(file, mode="r", *args, **kwargs):  # every write under the run folder fills the disk at 100 bytes
        handle = real_open(file, mode, *args, **kwargs)
        writes = any(flag in mode for flag in "wax+")
        return FillingDisk(handle, 100) if writes and str(file).startswith(str(folder)) else handle

    monkeypatch.setattr(builtins, "open", opening)
    monkeypatch.setattr(io, "open", opening)
    with pytest.raises(OSError, match="No space left on device") as raised:
        _write_output(kind, folder)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no partial file, the earlier one whole
    assert raised.value.filename == str(path)  # the message names the file, not its partial copy


def test_a_read_only_run_folder_is_named_before_any_work(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("tempfile.TemporaryFile", read_only)
    with pytest.raises(ConfigError, match=f"Cannot write into the run folder {tmp_path / 'run'}: Read-only"):
        check_writable(tmp_path / "run")


def _permissions_bind() -> bool:
    """Whether a read-only folder stops this process (it does not stop root, as CI runs)."""
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o555)
        try:
            os.mkdir(os.path.join(folder, "probe"))
        except PermissionError:
            return True
        finally:
            os.chmod(folder, 0o755)
        return False


# Folders train.py cannot write into, and the reason it gives. The first two refuse every user, root included;
# permissions alone do not stop root, so the read-only folder is tried where they bind (not a skip: the
# same promise is held by the first two).
UNWRITABLE = {
    "parent is a file": "Not a directory",
    "read-only file system": "Read-only file system",
    **({"read-only folder": "Permission denied"} if _permissions_bind() else {}),
}


@pytest.mark.parametrize("unwritable", UNWRITABLE)
def test_train_into_a_folder_it_cannot_write_gives_one_message(tmp_path, unwritable):
    """Refused before any work with one message naming the run folder and why; nothing written, nothing lost."""
    (tmp_path / "earlier.txt").write_text("an earlier file")
    run = tmp_path / "earlier.txt" / "run" if unwritable == "parent is a file" else tmp_path / "run"
    overrides = [*TINY, "category=brick", f"hydra.run.dir={run}"]
    if unwritable == "read-only file system":  # every folder made under tmp_path fails as on a read-only mount
        read_only_mount = (
            "import errno, os, runpy, sys\n"
            "mkdir = os.mkdir\n"
            "def read_only(path, *args, **kwargs):\n"
            f"    if str(path).startswith({str(tmp_path)!r}):\n"
            "        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)\n"
            "    return mkdir(path, *args, **kwargs)\n"
            "os.mkdir = read_only\n"
            f"sys.argv = {['train.py', *overrides]!r}\n"
            f"runpy.run_path({str(REPO / 'train.py')!r}, run_name='__main__')\n"
        )
        result = subprocess.run([sys.executable, "-c", read_only_mount], cwd=REPO, capture_output=True, text=True)
    elif unwritable == "read-only folder":
        tmp_path.chmod(0o555)
        try:
            result = run_entry("train.py", *overrides)
        finally:
            tmp_path.chmod(0o755)
    else:
        result = run_entry("train.py", *overrides)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-2000:]
    assert f"Cannot write into the run folder {run}: {UNWRITABLE[unwritable]}" in output
    assert "Traceback" not in output
    assert [p.name for p in tmp_path.iterdir()] == ["earlier.txt"]
    assert (tmp_path / "earlier.txt").read_text() == "an earlier file"


def test_a_full_disk_while_drawing_the_maps_keeps_the_metrics(tmp_path):
    run = tmp_path / "run"
    # train.py, with every PNG write into the run folder failing as on a full disk (the maps come after metrics.json).
    argv = ["train.py", *TINY, "category=brick", f"data.root={tmp_path / 'data'}", f"hydra.run.dir={run}"]
    fill_png_writes = (
        "import errno, runpy, sys; from PIL import Image\n"
        "save = Image.Image.save\n"
        "def full(image, target, *args, **kwargs):\n"  # target: a path, or the file it is written into
        f"    if str(getattr(target, 'name', target)).startswith({str(run)!r}):\n"
        "        raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "    save(image, target, *args, **kwargs)\n"
        "Image.Image.save = full\n"
        f"sys.argv = {argv!r}\n"
        f"runpy.run_path({str(REPO / 'train.py')!r}, run_name='__main__')\n"
    )
    result = subprocess.run([sys.executable, "-c", fill_png_writes], cwd=REPO, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-2000:]
    assert "No space left on device" in output and str(run / "maps" / "brick") in output
    assert "Traceback" not in output
    assert json.loads((run / "metrics.json").read_text())["categories"]["brick"]["n_images"] == 12
    assert torch.load(run / "checkpoints" / "brick" / "last.pt", weights_only=True)["finished"]
    assert not [p for p in run.rglob("*") if ".partial-" in p.name]


def test_a_run_folder_that_cannot_be_made_is_named_without_a_traceback(tmp_path):
    (tmp_path / "file").write_text("a file where the run folder's parent should be")
    for run_dir in (f"{tmp_path / 'file' / 'run'}", f"${{fresh_dir:{tmp_path / 'file' / 'run'}}}"):
        result = run_entry("eval.py", "ckpt_path=absent.pt", f"hydra.run.dir={run_dir}")
        output = result.stdout + result.stderr
        assert result.returncode == 1 and "Cannot " in output and str(tmp_path / "file") in output
        assert "Traceback" not in output
