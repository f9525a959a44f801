"""End to end through the entry points, in subprocesses, on tiny generated data."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, TINY, run_entry


def metrics_of(folder):
    return json.loads((folder / "metrics.json").read_text())


def assert_same_metrics(a: dict, b: dict) -> None:
    for key in ("image_auroc", "pixel_auroc", "aupro", "image_f1_max"):
        assert a[key] == pytest.approx(b[key], abs=1e-6), key


def test_train_writes_the_run_folder_and_eval_reproduces_it(tmp_path):
    run_dir = tmp_path / "run"
    result = run_entry(
        "train.py", *TINY, "category=brick", f"data.root={tmp_path / 'data'}", f"hydra.run.dir={run_dir}"
    )
    assert result.returncode == 0, result.stderr
    assert "| brick |" in result.stdout
    results = metrics_of(run_dir)
    brick = results["categories"]["brick"]
    assert brick["n_images"] == 4 + 4 * 2 and brick["n_anomalous"] == 8
    assert 0 <= brick["aupro"] <= 1 and 0 <= brick["pixel_auroc"] <= 1
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "train.log").is_file()
    assert len(list((run_dir / "maps" / "brick").glob("*.png"))) == 2
    assert list((run_dir / "tensorboard" / "brick").glob("events.out.tfevents.*"))
    checkpoint = run_dir / "checkpoints" / "brick" / "last.pt"
    state = torch.load(checkpoint, weights_only=True)
    assert state["finished"] and state["config"]["category"] == "brick"
    assert "encoder" in state["frozen"] and not [k for k in state["model"] if k.startswith("encoder.")]  # lean

    eval_dir = tmp_path / "eval"
    result = run_entry("eval.py", f"ckpt_path={checkpoint}", "progress=false", f"data.root={tmp_path / 'data'}",
                       "eval.n_maps=1", f"hydra.run.dir={eval_dir}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert_same_metrics(metrics_of(eval_dir)["categories"]["brick"], brick)
    assert len(list((eval_dir / "maps" / "brick").glob("*.png"))) == 1


def test_an_existing_run_is_never_overwritten(tmp_path):
    run_dir = tmp_path / "run"
    common = [*TINY, "category=grass", f"data.root={tmp_path / 'data'}", f"hydra.run.dir={run_dir}"]
    assert run_entry("train.py", *common).returncode == 0
    before = (run_dir / "metrics.json").read_bytes(), (run_dir / "checkpoints" / "grass" / "last.pt").read_bytes()
    result = run_entry("train.py", *common, "model.lr=0.1")
    assert result.returncode == 1 and "already holds a run" in result.stderr + result.stdout
    after = (run_dir / "metrics.json").read_bytes(), (run_dir / "checkpoints" / "grass" / "last.pt").read_bytes()
    assert before == after


def test_missing_mvtec_gives_one_clear_message(tmp_path):
    run_dir = tmp_path / "run"
    result = run_entry("train.py", "model=hfr", "data=mvtec", "category=screw",
                       f"data.root={tmp_path / 'mvtec'}", f"hydra.run.dir={run_dir}")  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Dataset not found: looked for" in output and "screw" in output
    assert "<root>/<category>/train/good" in output and "mvtec.com" in output
    assert "Traceback" not in output and not run_dir.exists()


def test_a_small_mvtec_layout_folder_trains_and_evaluates(tmp_path, mvtec_root):
    run_dir = tmp_path / "run"
    result = run_entry("train.py", "data=mvtec", f"data.root={mvtec_root}", "category=widget",
                       "data.image_size=64", "trainer.max_epochs=2", "trainer.progress=false",
                       f"hydra.run.dir={run_dir}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    widget = metrics_of(run_dir)["categories"]["widget"]
    assert widget["n_images"] == 6 and widget["n_pixel_images"] == 5
    assert "pixel metrics over the 5 of 6 images" in widget["note"]
    assert widget["pixel_auroc"] is not None


@pytest.mark.slow
def test_multirun_makes_one_folder_per_category(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_entry("train.py", "-m", "category=brick,grass", *TINY, f"data.root={tmp_path / 'data'}",
                       f"hydra.sweep.dir={sweep}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    folders = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    assert len(folders) == 2 and all(name.startswith("category=") for name in folders)
    assert {next(iter(metrics_of(sweep / f)["categories"])) for f in folders} == {"brick", "grass"}


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_result(tmp_path):
    args = [
        *TINY,
        "trainer.max_epochs=40",
        "trainer.checkpoint_every=1",
        "category=gravel",
        f"data.root={tmp_path / 'data'}",
    ]
    straight = tmp_path / "straight"
    assert run_entry("train.py", *args, f"hydra.run.dir={straight}").returncode == 0

    run_dir = tmp_path / "interrupted"
    checkpoint = run_dir / "checkpoints" / "gravel" / "last.pt"
    process = subprocess.Popen([sys.executable, str(REPO / "train.py"), *args, f"hydra.run.dir={run_dir}"],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    epoch = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= epoch < 40 and not (run_dir / "metrics.json").exists()

    result = run_entry("train.py", *args, "trainer.resume=true", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    assert torch.load(checkpoint, weights_only=True)["finished"]
    assert_same_metrics(metrics_of(run_dir)["categories"]["gravel"], metrics_of(straight)["categories"]["gravel"])
