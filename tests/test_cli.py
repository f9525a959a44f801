"""End to end through the entry points, in subprocesses, on tiny generated data."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from omegaconf import OmegaConf
from PIL import Image

from anomalib_lite.cli.run_folders import (  # the import registers fresh_dir
    CLAIM_FILE,
    FolderInUseError,
    claim_run_folder,
    fresh_dir,
    hydra_error_message,
    keep_swept_keys_in_names,
    release_run_folder,
)
from anomalib_lite.configs import CONFIG_DIR
from anomalib_lite.research.collect import collect_sweep

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
    assert overlays(run_dir / "maps" / "brick") == gallery_files(run_dir / "maps" / "brick")
    assert list((run_dir / "tensorboard" / "brick").glob("events.out.tfevents.*"))
    checkpoint = run_dir / "checkpoints" / "brick" / "last.pt"
    state = torch.load(checkpoint, weights_only=True)
    assert state["finished"] and state["config"]["category"] == "brick"
    assert "encoder" in state["frozen"] and not [k for k in state["model"] if k.startswith("encoder.")]  # lean

    eval_dir = tmp_path / "eval"
    result = run_entry(
        "eval.py",
        f"ckpt_path={checkpoint}",
        "progress=false",
        f"data.root={tmp_path / 'data'}",
        "eval.n_maps=1",
        f"hydra.run.dir={eval_dir}",
    )
    assert result.returncode == 0, result.stderr
    assert_same_metrics(metrics_of(eval_dir)["categories"]["brick"], brick)
    assert overlays(eval_dir / "maps" / "brick") == gallery_files(eval_dir / "maps" / "brick")


def overlays(folder: Path) -> set[str]:
    """The overlay PNGs of a category's maps folder (not its colour bar)."""
    return {p.name for p in folder.glob("*.png")} - {"colorbar.png"}


def gallery_files(folder: Path) -> set[str]:
    """The overlays the report's gallery lists (worst cases and the sample), non-empty."""
    groups = json.loads((folder / "gallery.json").read_text())["groups"]
    files = {entry["file"] for entries in groups.values() for entry in entries}
    assert files
    return files


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny run on the synthetic grass category: (run folder, its train.py arguments)."""
    base = tmp_path_factory.mktemp("finished")
    args = [*TINY, "category=grass", f"data.root={base / 'data'}", f"hydra.run.dir={base / 'run'}"]
    result = run_entry("train.py", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    return base / "run", args


def snapshot(folder):
    """Every file under ``folder`` (``.hydra/``, the log, checkpoints…) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_existing_run_is_never_overwritten_not_even_its_hydra_files(finished_run, tmp_path):
    run_dir, args = finished_run
    checkpoint = run_dir / "checkpoints" / "grass" / "last.pt"
    before = snapshot(run_dir)
    assert {".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml", "train.log"} <= set(before)
    for script, extra in (
        ("train.py", [*args, "model.lr=0.1"]),
        ("eval.py", [f"ckpt_path={checkpoint}", f"hydra.run.dir={run_dir}"]),
        ("predict.py", [f"ckpt_path={checkpoint}", f"input={checkpoint.parent}", f"hydra.run.dir={run_dir}"]),
    ):
        result = run_entry(script, *extra)
        output = result.stderr + result.stdout
        assert result.returncode == 1 and "already holds a run" in output and str(run_dir) in output, script
        assert "Traceback" not in output
        assert snapshot(run_dir) == before, f"{script} changed the earlier run"


def test_resume_refuses_options_that_change_training(finished_run):
    run_dir, args = finished_run
    before = snapshot(run_dir)
    result = run_entry("train.py", *args, "trainer.resume=true", "model.lr=0.1", "seed=3", "trainer.max_epochs=2")
    output = result.stderr + result.stdout
    assert result.returncode == 1 and "trainer.resume=true but the command changes" in output
    for change in ("model.lr (0.4 → 0.1)", "seed (0 → 3)", "trainer.max_epochs (1 → 2)"):
        assert change in output
    assert snapshot(run_dir) == before
    # Where the data is, the device and the progress bars change nothing that was trained.
    result = run_entry("train.py", *args, "trainer.resume=true", "trainer.device=cpu", "trainer.progress=true")
    assert result.returncode == 0, result.stderr[-2000:]


def test_runs_started_in_the_same_second_get_their_own_folders(finished_run, tmp_path):
    run_dir, _ = finished_run
    checkpoint = run_dir / "checkpoints" / "grass" / "last.pt"
    # Both runs name the same dated folder, as two runs started in the same second do.
    same = f"hydra.run.dir=${{fresh_dir:{tmp_path / 'outputs' / '2026-01-01_00-00-00'}}}"
    image = tmp_path / "new.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(image)
    command = [
        sys.executable,
        str(REPO / "predict.py"),
        f"ckpt_path={checkpoint}",
        f"input={image}",
        "progress=false",
        same,
    ]
    runs = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    outputs = [run.communicate(timeout=300)[0].decode() for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    folders = sorted(p.name for p in (tmp_path / "outputs").iterdir())
    assert folders == ["2026-01-01_00-00-00", "2026-01-01_00-00-00_2"]
    assert all((tmp_path / "outputs" / name / "scores.csv").is_file() for name in folders)


# train.py with its folder check held until both racing processes have passed it (a file per process in a
# gate folder), as two runs started together do: both find the folder empty, then both go on.
RACE = """
import os, runpy, sys, time
from pathlib import Path
from anomalib_lite.cli import run_folders

check_writable, gate = run_folders.check_writable, Path(sys.argv.pop(1))

def together(folder):
    check_writable(folder)
    (gate / str(os.getpid())).touch()
    deadline = time.time() + 120
    while len(list(gate.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.01)

run_folders.check_writable = together
sys.argv[0] = {script!r}
runpy.run_path({script!r}, run_name="__main__")
"""


@pytest.mark.parametrize("mode", ["run", "multirun"])
def test_two_runs_started_together_into_one_folder_one_is_refused(finished_run, tmp_path, mode):
    _, args = finished_run
    folder, gate = tmp_path / "shared", tmp_path / "gate"
    gate.mkdir()
    flags, key = (["-m"], "hydra.sweep.dir") if mode == "multirun" else ([], "hydra.run.dir")
    command = [sys.executable, "-c", RACE.format(script=str(REPO / "train.py")), str(gate), *flags, *args[:-1]]
    command.append(f"{key}={folder}")
    runs = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert len(list(gate.iterdir())) == 2, outputs  # both passed the folder check before either went on
    codes = [run.returncode for run in runs]
    assert sorted(codes) == [0, 1], outputs
    won_out, lost_out = (outputs[codes.index(code)][0].decode() for code in (0, 1))
    lost = [line for line in lost_out.splitlines() + outputs[codes.index(1)][1].decode().splitlines() if line.strip()]
    assert len(lost) == 1 and f"Run folder {folder} is in use by another run" in lost[0], lost
    run_dir = next(folder.glob("*/metrics.json")).parent if mode == "multirun" else folder
    # The folder holds the winner's run only: the metrics it printed, one run in its log.
    grass = metrics_of(run_dir)["categories"]["grass"]
    assert f"| grass | {grass['image_auroc']:.4f} |" in won_out
    assert (run_dir / "train.log").read_text().count(": training hfr on ") == 1
    # The run has ended: a resumed run claims the folder (its lock file is still there, held by nobody).
    assert (folder / CLAIM_FILE).is_file()
    resumed = run_entry("train.py", *flags, *args[:-1], "trainer.resume=true", f"{key}={folder}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert metrics_of(run_dir)["categories"]["grass"] == grass


HOLD = """
import sys, time
from pathlib import Path
from anomalib_lite.cli.run_folders import claim_run_folder
claim_run_folder(Path(sys.argv[1]))
print("claimed", flush=True)
time.sleep(600)
"""


def test_a_claim_is_held_by_one_process_and_dies_with_it(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        with pytest.raises(FolderInUseError, match=f"Run folder {folder} is in use by another run"):
            claim_run_folder(folder)
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: no clean-up runs
        holder.wait()
    assert (folder / CLAIM_FILE).is_file()  # a stale file, but the lock died with its process
    try:
        assert claim_run_folder(folder)
        assert not claim_run_folder(folder)  # already this process's
    finally:
        release_run_folder(folder)


def test_fresh_dir_claims_a_new_folder_once_per_config(tmp_path):
    base = tmp_path / "outputs" / "2026-01-01_00-00-00"
    (base).mkdir(parents=True)  # an earlier run
    assert fresh_dir(str(base)) == f"{base}_2"
    cfg = OmegaConf.create({"dir": f"${{fresh_dir:{base}}}"})
    assert cfg.dir == f"{base}_3" and cfg.dir == f"{base}_3"  # resolved once: the same folder each time
    assert sorted(p.name for p in base.parent.iterdir()) == [base.name, f"{base.name}_2", f"{base.name}_3"]


@pytest.mark.parametrize(
    "script, overrides, expected",
    [
        (
            "train.py",
            ["model=hfrr"],
            "model=hfrr: no such option of model (did you mean model=hfr?); "
            "choose one of anomalib, hfr, igd, msfi, utad",
        ),
        (
            "train.py",
            ["model.lrr=0.1"],
            "model.lrr=0.1: unknown option model.lrr (did you mean model.lr?); the options of model are: ",
        ),
        ("eval.py", [], "ckpt_path=… is required (no default): python eval.py ckpt_path=…"),
        ("predict.py", ["ckpt_path=a.pt", "input=new/é.png"], """write it as 'input="new/é.png"'"""),
    ],
)
def test_hydra_errors_about_the_command_line_are_one_line_and_leave_no_folder(tmp_path, script, overrides, expected):
    result = run_entry(script, *overrides, cwd=tmp_path)  # a run folder would be made under tmp_path/outputs
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1 and expected in lines[0], output
    assert "+model" not in output and "HYDRA_FULL_ERROR" not in output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "command, arguments",
    [("train", ["model=hfrr"]), ("eval", []), ("predict", ["ckpt_path=a.pt"]), ("train", ["--help"])],
)
def test_command_line_errors_and_help_come_before_torch_is_imported(tmp_path, command, arguments):
    # The task's modules (torch, timm: seconds) are imported only once Hydra has accepted the command line.
    script = (
        "import sys\n"
        "from anomalib_lite.cli.main import run_command\n"
        "try:\n"
        f"    run_command({command!r}, {arguments!r}, {command!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "torch imported: False" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("value", ["new/é.png", "/data/a b/ø.png", 'say "é"', "C:\\images\\é\\"])
def test_a_value_hydra_reads_only_quoted_gets_the_quoted_override_that_reads_back(value):
    with pytest.raises(OverrideParseException) as raised:
        OverridesParser.create().parse_overrides([f"input={value}"])
    message = hydra_error_message(raised.value)
    assert message.startswith(f"input={value}: ") and "quotes" in message
    (suggested,) = shlex.split(message.split("write it as ")[1].split(" (double quotes")[0])
    (override,) = OverridesParser.create().parse_overrides([suggested])
    assert (override.key_or_group, override.value()) == ("input", value)


def test_eval_says_model_options_take_a_plus(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["eval.py", "ckpt_path=a.pt", "model.weight_search.apply=false"])
    configs = initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR))
    with configs, pytest.raises(Exception) as raised:
        compose("eval", overrides=sys.argv[1:])
    message = hydra_error_message(raised.value, prefixed=("model",))
    assert message == "model.weight_search.apply=false: eval.py takes model options with a leading +: " + (
        "+model.weight_search.apply=false"
    )


def test_missing_mvtec_gives_one_clear_message(tmp_path):
    run_dir = tmp_path / "run"
    result = run_entry(
        "train.py",
        "model=hfr",
        "data=mvtec",
        "category=screw",
        f"data.root={tmp_path / 'mvtec'}",
        f"hydra.run.dir={run_dir}",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Dataset not found: looked for" in output and "screw" in output
    assert "<root>/<category>/train/good" in output and "mvtec.com" in output
    assert "Traceback" not in output and not run_dir.exists()


def test_a_small_mvtec_layout_folder_trains_and_evaluates(tmp_path, mvtec_root):
    empty = mvtec_root / "widget" / "ground_truth" / "spot" / "000_mask.png"
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(empty)
    run_dir = tmp_path / "run"
    result = run_entry(
        "train.py",
        "data=mvtec",
        f"data.root={mvtec_root}",
        "category=widget",
        "data.image_size=64",
        "trainer.max_epochs=2",
        "trainer.progress=false",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr
    widget = metrics_of(run_dir)["categories"]["widget"]
    assert widget["n_images"] == 6 and widget["n_pixel_images"] == 5
    assert "pixel metrics over the 5 of 6 images" in widget["note"]
    assert "1 defect image(s) have an empty mask" in widget["note"]
    assert str(mvtec_root / "widget" / "test" / "spot" / "000.png") in widget["note"]
    assert widget["pixel_auroc"] is not None


@pytest.mark.slow
def test_multirun_makes_one_folder_per_category(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_entry(
        "train.py", "-m", "category=brick,grass", *TINY, f"data.root={tmp_path / 'data'}", f"hydra.sweep.dir={sweep}"
    )
    assert result.returncode == 0, result.stderr
    folders = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    assert len(folders) == 2 and all(name.startswith("category=") for name in folders)
    assert {next(iter(metrics_of(sweep / f)["categories"])) for f in folders} == {"brick", "grass"}


@pytest.mark.slow
def test_a_seed_sweep_gives_each_job_its_own_folder(tmp_path):
    sweep = tmp_path / "sweep"
    # trainer.device is left out of folder names, unless the sweep varies it (as here).
    result = run_entry(
        "train.py",
        "-m",
        "seed=0,1",
        "trainer.device=cpu,auto",
        *TINY,
        "category=brick",
        f"data.root={tmp_path / 'data'}",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = sorted(str(p.parent.relative_to(sweep)) for p in sweep.glob("*/metrics.json"))
    named = sorted(
        tuple(part for part in job.split(",") if part.startswith(("seed=", "trainer.device="))) for job in jobs
    )
    assert named == [(f"seed={s}", f"trainer.device={d}") for s in (0, 1) for d in ("auto", "cpu")]
    seeds = [torch.load(sweep / job / "checkpoints/brick/last.pt", weights_only=True)["config"]["seed"] for job in jobs]
    assert sorted(seeds) == [0, 0, 1, 1]
    table = collect_sweep(sweep)
    assert sorted(table.rows) == [f"seed={s},trainer.device={d}" for s in (0, 1) for d in ("auto", "cpu")]
    assert {label: table.overrides[label]["seed"] for label in table.rows} == {
        label: label.split(",")[0].removeprefix("seed=") for label in table.rows
    }


def test_a_sweep_keeps_the_keys_it_varies_in_job_folder_names():
    config = OmegaConf.create(
        {
            "hydra": {
                "job": {
                    "config": {
                        "override_dirname": {"exclude_keys": ["trainer.progress", "data.root", "trainer.device"]}
                    }
                },
                "overrides": {
                    "task": ["data.root=/a,/b", "trainer.device=cpu", "seed=0,1"],
                    "hydra": ["hydra.verbose=false"],
                },
            }
        }
    )
    keep_swept_keys_in_names(config)
    assert list(config.hydra.overrides.hydra) == [
        "hydra.verbose=false",
        "hydra.job.config.override_dirname.exclude_keys=[trainer.progress,trainer.device]",
    ]


def test_a_sweep_into_a_folder_that_holds_runs_is_refused(finished_run, tmp_path):
    run_dir, args = finished_run
    before = snapshot(run_dir.parent)
    result = run_entry("train.py", "-m", *args[:-1], "seed=0,1", f"hydra.sweep.dir={run_dir.parent}")
    output = result.stderr + result.stdout
    assert result.returncode == 1 and "already holds a run" in output and "Traceback" not in output
    assert snapshot(run_dir.parent) == before


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
    process = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args, f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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
