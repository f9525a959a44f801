"""Sweeps that scale out: the joblib launcher runs jobs in parallel; the SLURM preset asks one GPU per job."""

from __future__ import annotations

import json

import pytest
import yaml

from anomalib_lite.engine.device import job_device

from conftest import TINY, run_entry


@pytest.mark.parametrize(
    ("device", "job", "gpus", "expected"),
    [
        ("auto", 3, 2, "cuda:1"),
        ("auto", 2, 4, "cuda:2"),
        ("auto", None, 4, "auto"),
        ("auto", 5, 1, "auto"),
        ("cpu", 1, 4, "cpu"),
        ("cuda:0", 1, 4, "cuda:0"),
    ],
)
def test_each_parallel_job_gets_its_own_gpu(device, job, gpus, expected):
    assert job_device(device, job, gpus) == expected


def test_the_parallel_launcher_runs_a_sweep(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="optional extra: pip install -e '.[parallel]'")
    sweep = tmp_path / "sweep"
    result = run_entry(
        "train.py",
        "-m",
        "hydra/launcher=parallel",
        *TINY,
        "category=brick,grass",
        f"data.root={tmp_path / 'data'}",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Joblib" in result.stdout + result.stderr  # Hydra names the launcher it used
    for category in ("brick", "grass"):
        (job,) = sweep.glob(f"category={category},*")
        metrics = json.loads((job / "metrics.json").read_text())
        assert list(metrics["categories"]) == [category]


def test_the_slurm_preset_asks_one_gpu_per_job():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="optional extra: pip install -e '.[slurm]'")
    result = run_entry("train.py", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra")
    assert result.returncode == 0, result.stderr[-2000:]
    launcher = yaml.safe_load(result.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["gpus_per_node"] == 1 and launcher["tasks_per_node"] == 1 and launcher["partition"] == "gpu"
