"""``benchmark.py peer``: the parts that need no anomalib (arguments, our timing through the engine,
the peer subprocess and its output, the ratio table), and one real anomalib run where an environment
with anomalib is at hand (never in CI)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from anomalib_lite.configs import CONFIG_DIR
from anomalib_lite.pipeline.config import validate
from anomalib_lite.research.benchmark import peer as peer_benchmark

from conftest import REPO

# Our data layer writes a tiny synthetic category; every figure comes from it.
TINY_DATA = ["data.n_train=8", "data.n_test_good=4", "data.n_per_defect=2", "data.source_size=64"]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    peer_benchmark.add_parser(parser.add_subparsers(dest="what"))
    return parser.parse_args(["peer", *argv])


def test_arguments_reach_our_config_and_set_overrides_win():
    args = parse(
        "--models",
        "msfi-chained",
        "--size",
        "96",
        "--batch",
        "4",
        "--epochs",
        "2",
        "--set",
        "trainer.max_epochs=1",
        "model.lr=0.1",
    )
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        run = validate(compose("train", overrides=peer_benchmark.our_overrides("msfi-chained", args)))
    assert (run.model.name, run.model.chained, run.model.scales) == ("msfi", True, [96])
    assert (run.data.image_size, run.data.batch_size, run.model.epochs) == (96, 4, 2)
    assert run.backbone.name == "tf_efficientnet_lite0" and run.backbone.weights == "imagenet"
    assert run.trainer.max_epochs == 1 and run.model.lr == 0.1  # --set passes through, last


def test_the_hfr_pair_uses_the_rd_backbone_with_random_weights_on_both_sides():
    args = parse("--rd-backbone", "wide_resnet50_2", "--size", "64", "--device", "cpu")
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        run = validate(compose("train", overrides=peer_benchmark.our_overrides("hfr", args)))
    assert (run.model.name, run.backbone.name, run.backbone.weights) == ("hfr", "wide_resnet50_2", "none")
    command = peer_benchmark.peer_command("rd", args, "/venv/bin/python")
    assert command[command.index("--backbone") + 1] == "wide_resnet50_2" and "--random-weights" in command
    stfpm = peer_benchmark.peer_command("stfpm", args, "/venv/bin/python")
    assert stfpm[stfpm.index("--backbone") + 1] == "tf_efficientnet_lite0" and "--random-weights" not in stfpm
    for flag, value in [("--size", "64"), ("--batch", "16"), ("--epochs", "3"), ("--precision", "fp32")]:
        assert stfpm[stfpm.index(flag) + 1] == value


def test_a_missing_anomalib_python_is_refused_before_any_work(tmp_path):
    with pytest.raises(SystemExit, match="--anomalib-python .*no such program"):
        peer_benchmark.run(parse("--anomalib-python", str(tmp_path / "nope" / "python")))
    no_anomalib = tmp_path / "python"  # a program, but one whose "import anomalib" fails
    no_anomalib.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import anomalib_not_installed'\n")
    no_anomalib.chmod(0o755)
    with pytest.raises(SystemExit, match="cannot import anomalib .*ModuleNotFoundError.*pip install"):
        peer_benchmark.run(parse("--anomalib-python", str(no_anomalib), "--data-root", str(tmp_path / "data")))
    assert not (tmp_path / "data").exists()


@pytest.mark.skipif(importlib.util.find_spec("anomalib") is None, reason="needs anomalib in this python (extra peer)")
def test_the_anomalib_python_may_be_a_name_on_the_path(tmp_path, monkeypatch):
    (tmp_path / "py").symlink_to(sys.executable)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    found = peer_benchmark.check_python("py")
    assert found == str(tmp_path / "py")


def tiny_hfr_args(tmp_path: Path, *overrides: str) -> argparse.Namespace:
    """``peer`` options for our HFR alone: 64 px, batch 4, 2 epochs on the CPU, tiny data, plus ``overrides``."""
    return parse(
        "--models",
        "hfr",
        "--size",
        "64",
        "--batch",
        "4",
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--data-root",
        str(tmp_path),
        "--set",
        *TINY_DATA,
        *overrides,
    )


def test_ours_is_timed_through_the_engine_with_the_trainer_options_given(tmp_path):
    args = tiny_hfr_args(tmp_path, "trainer.max_epochs=1")
    figures = peer_benchmark.measure_ours("hfr", args)
    # trainer.max_epochs=1 caps the 2 epochs: one epoch ran, so there is no steady-state figure.
    assert figures.train_steady is None
    assert figures.train_all > 0 and figures.inference > 0 and figures.memory_gib >= 0
    assert (Path(args.data_root) / "brick" / "train" / "good").is_dir()  # the images anomalib reads


def test_two_epochs_give_a_steady_figure(tmp_path):
    args = tiny_hfr_args(tmp_path)
    figures = peer_benchmark.measure_ours("hfr", args)
    assert figures.train_steady is not None and figures.train_steady > 0


def fake_peer(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "fake_peer.py"
    script.write_text(body)
    return [sys.executable, str(script)]


def test_the_peer_subprocess_figures_are_read_from_its_result_line(tmp_path):
    body = (
        "import json, sys\n"
        "print('Lightning banner\\nPEER_RESULT {\"train_all\": 1.0}')\n"  # an earlier line: the last one counts
        "print('PEER_RESULT ' + json.dumps({'train_all': 4.0, 'train_steady': 5.0, 'train_steps': 6.0,"
        " 'inference': 7.0, 'memory_gib': 0.5}))\n"
        "print('a warning', file=sys.stderr)\n"
    )
    figures = peer_benchmark.measure_peer(fake_peer(tmp_path, body))
    assert (figures.train_all, figures.train_steady, figures.train_steps) == (4.0, 5.0, 6.0)
    assert (figures.inference, figures.memory_gib) == (7.0, 0.5)


def test_a_failed_peer_run_is_reported_with_its_output(tmp_path):
    body = "import sys\nprint('ModuleNotFoundError: anomalib', file=sys.stderr)\nsys.exit(3)\n"
    with pytest.raises(RuntimeError, match=r"(?s)exit status 3.*ModuleNotFoundError: anomalib"):
        peer_benchmark.measure_peer(fake_peer(tmp_path, body))
    with pytest.raises(ValueError, match="PEER_RESULT"):
        peer_benchmark.parse_peer_output("no result here\n")


def test_the_ratio_table_divides_ours_by_anomalib():
    ours = peer_benchmark.Throughput(train_all=30.0, train_steady=45.0, inference=90.0, memory_gib=0.25)
    theirs = peer_benchmark.Throughput(
        train_all=12.0, train_steady=15.0, inference=60.0, memory_gib=1.0, train_steps=20.0
    )
    table = peer_benchmark.ratio_table([("hfr", "rd", ours, theirs), ("msfi", "stfpm", ours, None)])
    header, _, with_peer, alone = table.splitlines()
    cells = [cell.strip() for cell in with_peer.strip("|").split("|")]
    assert cells[0] == "hfr vs rd" and len(cells) == len(header.strip("|").split("|"))
    expected = [(30.0, 12.0), (45.0, 15.0), (30.0, 20.0), (90.0, 60.0), (0.25, 1.0)]
    for cell, (a, b) in zip(cells[1:], expected):
        assert cell.endswith(f"**{a / b:.2f}×**"), cell
    assert "×" not in alone and "30.0" in alone  # no anomalib figure: ours alone


def _anomalib_python() -> str | None:
    candidate = os.environ.get("ANOMALIB_PYTHON") or str(REPO / ".venv-peer" / "bin" / "python")
    if os.environ.get("CI"):
        return None
    try:
        return peer_benchmark.check_python(candidate)  # a program that imports anomalib, else refused
    except SystemExit:
        return None


ANOMALIB_PYTHON = _anomalib_python()


@pytest.mark.slow
@pytest.mark.skipif(ANOMALIB_PYTHON is None, reason="no python with anomalib (set ANOMALIB_PYTHON); not in CI")
def test_the_peer_command_runs_anomalib_on_our_images(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "benchmark.py"),
            "peer",
            "--anomalib-python",
            ANOMALIB_PYTHON,
            "--models",
            "msfi-chained",
            "--size",
            "64",
            "--batch",
            "4",
            "--epochs",
            "2",
            "--device",
            "cpu",
            "--data-root",
            str(tmp_path),
            "--set",
            *TINY_DATA,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith("| msfi-chained vs stfpm"))
    assert row.count("×**") == 5
