"""The library as a user installs it: the wheel holds the configs and the command, and in a fresh virtual
environment the ``anomalib-lite`` command and the Python API train, evaluate, predict and export from an empty
folder (not from the clone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalib_lite.cli.main import SUMMARY, main
from anomalib_lite.configs import CONFIG_DIR

from conftest import REPO

# The fastest run that still trains and evaluates: HFR, one synthetic category, 64 px, one epoch, a few images.
TINY = ["category=brick", "model.epochs=1", "data.image_size=64", "data.n_train=8", "data.n_test_good=4"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from the clone without its dependencies."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("anomalib_lite-*.whl")
    return path


def test_the_wheel_ships_every_config_and_the_command(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"anomalib_lite/configs/{p.relative_to(CONFIG_DIR)}" for p in CONFIG_DIR.rglob("*.yaml")}
    assert len(configs) > 40
    assert configs <= names, sorted(configs - names)[:5]
    assert {f"anomalib_lite/models/{f}/paper_tables.yaml" for f in ("hfr", "igd", "msfi", "utad")} <= names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "anomalib-lite = anomalib_lite.cli.main:main" in text


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed; the dependencies come from this interpreter's
    site-packages (nothing is downloaded), the project itself only from the wheel."""
    root = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(root)], check=True)
    pip = [str(root / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--force-reinstall"]
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True)
    return root


def in_venv(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``args`` (a program of the environment and its arguments) in ``cwd``, without the clone on the path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    result = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


@pytest.mark.e2e
def test_the_command_works_from_an_empty_folder_of_a_fresh_environment(venv, tmp_path):
    where = in_venv(venv, tmp_path, "python", "-c", "import anomalib_lite; print(anomalib_lite.__file__)")
    assert Path(where.stdout.strip()).is_relative_to(venv), "the package must come from the wheel, not the clone"

    in_venv(venv, tmp_path, "anomalib-lite", "train", *TINY, "hydra.run.dir=outputs/run")
    run = tmp_path / "outputs" / "run"
    metrics = json.loads((run / "metrics.json").read_text())["categories"]["brick"]
    assert 0.0 <= metrics["image_auroc"] <= 1.0
    checkpoint = run / "checkpoints" / "brick" / "last.pt"

    in_venv(venv, tmp_path, "anomalib-lite", "eval", f"ckpt_path={checkpoint}", "hydra.run.dir=outputs/eval")
    again = json.loads((tmp_path / "outputs" / "eval" / "metrics.json").read_text())["categories"]["brick"]
    assert again["image_auroc"] == pytest.approx(metrics["image_auroc"])

    images = tmp_path / "new"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(images / f"{i}.png")
    in_venv(venv, tmp_path, "anomalib-lite", "predict", f"ckpt_path={checkpoint}", f"input={images}", "hydra.run.dir=p")
    assert len((tmp_path / "p" / "scores.csv").read_text().splitlines()) == 4

    in_venv(
        venv, tmp_path, "anomalib-lite", "export", f"ckpt_path={checkpoint}", "format=torchscript", "hydra.run.dir=x"
    )
    assert (tmp_path / "x" / "model.pt").is_file()
    assert not (REPO / "outputs" / "run").exists()


API_SCRIPT = """
import json, sys
import numpy as np
from anomalib_lite import api

run = api.train({tiny!r})
detector = api.load(run.checkpoint())
images = np.random.default_rng(0).integers(0, 256, (3, detector.size, detector.size, 3), dtype=np.uint8)
found = detector.predict(images)
exported = api.export(run.checkpoint(), "torchscript")
again = api.load(exported).predict(images)
metrics = api.evaluate(run.checkpoint())
print(json.dumps({{
    "folder": str(run.folder), "trained": run.metrics["categories"]["brick"]["image_auroc"],
    "evaluated": metrics["categories"]["brick"]["image_auroc"], "maps": list(found.maps.shape),
    "scores": found.scores.tolist(), "exported_scores": again.scores.tolist(), "exported": str(exported),
}}))
"""


@pytest.mark.e2e
def test_the_python_api_trains_evaluates_predicts_and_exports_in_a_fresh_environment(venv, tmp_path):
    (tmp_path / "script.py").write_text(API_SCRIPT.format(tiny=TINY))
    out = json.loads(in_venv(venv, tmp_path, "python", "script.py").stdout.strip().splitlines()[-1])
    assert Path(out["folder"]).parts[:2] == ("outputs", "hfr_synthetic")
    assert (tmp_path / out["folder"] / "train.log").stat().st_size > 0
    assert out["evaluated"] == pytest.approx(out["trained"])
    assert out["maps"] == [3, 64, 64]
    np.testing.assert_allclose(out["exported_scores"], out["scores"], rtol=1e-4, atol=1e-5)
    assert Path(out["exported"]).name == "model.pt"


def test_the_command_lists_its_subcommands_and_refuses_an_unknown_one(capsys):
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(f"  {name} " in listed for name in SUMMARY)
    assert main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err
    assert main([]) == 2


def test_the_api_refuses_a_folder_that_holds_an_earlier_run_before_any_work(tmp_path):
    from anomalib_lite import api
    from anomalib_lite.errors import ConfigError

    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError, match="already holds a run"):
        api.train(TINY, folder=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_the_api_detector_refuses_images_of_the_wrong_shape(tmp_path):
    from anomalib_lite import api
    from anomalib_lite.errors import ConfigError

    detector = api.Detector.__new__(api.Detector)
    detector.size, detector.threshold = 64, None
    with pytest.raises(ConfigError, match="expected N×64×64×3 uint8"):
        detector.predict(np.zeros((2, 32, 32, 3), np.uint8))
