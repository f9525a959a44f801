"""Bad inputs to eval.py, predict.py and export.py: damaged or foreign checkpoints, NaN weights, bad options."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from anomalib_lite.cli.evaluate import EvalOptions
from anomalib_lite.cli.export import ExportOptions
from anomalib_lite.cli.predict import PredictOptions
from anomalib_lite.configs import CONFIG_DIR
from anomalib_lite.engine.checkpoint import frozen_record, lean_state, save_checkpoint
from anomalib_lite.errors import ConfigError, WeightsError
from anomalib_lite.models import build_model
from anomalib_lite.pipeline.config import plain_config, validate, validate_options
from anomalib_lite.pipeline.deploy import export_model, metadata
from anomalib_lite.pipeline.inference import load_scorer, load_trained

from conftest import run_entry

CPU = torch.device("cpu")


def tiny_config():
    """The composed training config of an HFR model on 32 px images with a random backbone."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=["model=hfr", "backbone.weights=none", "data.image_size=32", "category=brick"])
    GlobalHydra.instance().clear()
    return cfg


def write_checkpoint(path: Path, poison: str | None = None) -> Path:
    """A checkpoint as training writes it (HFR, random backbone, 32 px, untrained), its tensor ``poison`` NaN."""
    cfg = tiny_config()
    run = validate(cfg)
    model = build_model(run.model, run.backbone)
    frozen = frozen_record(model)
    state = lean_state(model, frozen)
    if poison is not None:
        state[poison] = state[poison].clone()
        state[poison].view(-1)[0] = float("nan")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"model": state, "frozen": frozen, "config": plain_config(cfg)}, path)
    return path


@pytest.fixture(scope="module")
def nan_bias(tmp_path_factory) -> tuple[Path, str]:
    """A checkpoint with one NaN in a bias, and that bias's name."""
    path = tmp_path_factory.mktemp("nan") / "last.pt"
    clean = write_checkpoint(path)
    name = next(key for key in torch.load(clean, weights_only=True)["model"] if key.endswith("bias"))
    return write_checkpoint(path, poison=name), name


def test_a_checkpoint_with_nan_weights_is_refused_naming_the_file_and_the_tensors(nan_bias):
    path, name = nan_bias
    for load in (lambda: load_trained(path), lambda: load_scorer(path, CPU)):  # eval and export; predict
        with pytest.raises(WeightsError, match=rf"ckpt_path={path}: its weights hold NaN/inf in {name}\b"):
            load()


def test_a_sound_checkpoint_still_loads(tmp_path):
    scorer = load_scorer(write_checkpoint(tmp_path / "last.pt"), CPU)
    out = scorer.score(torch.zeros(2, 32, 32, 3, dtype=torch.uint8).numpy())
    assert out.score.shape == (2,) and torch.isfinite(out.score).all()


class Payload:
    """An object whose unpickling would run code."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def bad_checkpoint(kind: str, folder: Path) -> Path:
    """A ``last.pt`` that is not a checkpoint of this project, of the given ``kind``."""
    path = folder / kind / "last.pt"
    sound = write_checkpoint(folder / "sound" / "last.pt").read_bytes()
    path.parent.mkdir(parents=True)
    if kind == "zero-byte":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(sound[: len(sound) // 2])
    elif kind == "random bytes":
        path.write_bytes(os.urandom(5000))
    elif kind == "config-less":
        torch.save({"model": torch.load(folder / "sound" / "last.pt", weights_only=True)["model"]}, path)
    elif kind == "not a dict":
        torch.save(torch.zeros(3), path)
    elif kind == "pickle payload":
        torch.save({"model": {}, "config": {}, "hook": Payload()}, path)
    elif kind == "legacy pickle":
        path.write_bytes(pickle.dumps({"model": {}, "config": {}}))
    return path


WHAT_IS_WRONG = {
    "zero-byte": "an empty file (0 bytes)",
    "truncated": "not the zip archive torch.save writes",
    "random bytes": "not the zip archive torch.save writes",
    "config-less": "no 'config' entry",
    "not a dict": "it holds a Tensor",
    "pickle payload": "it holds other objects than tensors and plain data (refused: not loaded, nothing run)",
    "legacy pickle": "not the zip archive torch.save writes",
}


@pytest.mark.parametrize("kind", WHAT_IS_WRONG)
def test_a_file_that_is_not_a_checkpoint_is_named_with_what_is_wrong(tmp_path, kind, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = bad_checkpoint(kind, tmp_path)
    for load in (lambda: load_trained(path), lambda: load_scorer(path, CPU)):  # eval and export; predict
        with pytest.raises(ConfigError) as raised:
            load()
        message = str(raised.value)
        assert message.startswith(f"{path}: not a checkpoint of this project: {WHAT_IS_WRONG[kind]}")
        assert "weights_only" not in message and "\n" not in message
    assert not (tmp_path / "pwned").exists()


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A TorchScript file written by export.py's function (HFR, 32 px, untrained)."""
    folder = tmp_path_factory.mktemp("exported")
    run = validate(tiny_config())
    torch.manual_seed(0)
    path = folder / "model.pt"
    export_model(
        build_model(run.model, run.backbone), run, "torchscript", path, metadata(run, "torchscript", None, "", path)
    )
    return path


def test_an_exported_file_given_to_eval_or_export_says_to_use_it_with_predict(exported):
    with pytest.raises(ConfigError, match=rf"ckpt_path={exported} is an exported file .* to use with predict.py"):
        load_trained(exported)
    assert load_scorer(exported, CPU).size == 32  # predict.py takes it


@pytest.mark.parametrize(
    "content", [b"", b"not an onnx file at all\n", bytes(range(256)) * 20], ids=["empty", "text", "bytes"]
)
def test_a_garbage_onnx_file_given_to_predict_is_named(tmp_path, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=rf"^(ckpt_path=)?{path}: (not an ONNX file|an ONNX file without)"):
        load_scorer(path, CPU)


def test_a_damaged_exported_torchscript_file_is_named(tmp_path, exported):
    data = bytearray(exported.read_bytes())
    start = data.find(b"constants.pkl")  # a damaged entry, the archive's directory intact
    data[start + 200 : start + 260] = bytes(60)
    (tmp_path / "model.pt").write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="damaged|not a checkpoint"):
        load_scorer(tmp_path / "model.pt", CPU)


# One line from the command, naming the file and what is wrong; no traceback, no advice to load unsafely, no
# run folder left behind.
COMMAND_CASES = {
    "eval, random bytes": ("eval.py", "random bytes", "not a checkpoint of this project"),
    "export, config-less": ("export.py", "config-less", "not a checkpoint of this project: no 'config' entry"),
    "eval, exported model.pt": ("eval.py", "exported", "is an exported file (written by export.py), to use with"),
    "predict, garbage .onnx": ("predict.py", "garbage onnx", "not an ONNX file"),
    "predict, NaN bias": ("predict.py", "nan", "its weights hold NaN/inf in"),
}


@pytest.mark.parametrize("case", COMMAND_CASES)
def test_the_commands_refuse_a_bad_checkpoint_in_one_line_and_leave_no_folder(tmp_path, case, exported, nan_bias):
    script, kind, expected = COMMAND_CASES[case]
    if kind == "exported":
        path = exported
    elif kind == "nan":
        path = nan_bias[0]
    elif kind == "garbage onnx":
        path = tmp_path / "model.onnx"
        path.write_bytes(os.urandom(3000))
    else:
        path = bad_checkpoint(kind, tmp_path)
    out = tmp_path / "out"
    options = [f"input={tmp_path}"] if script == "predict.py" else []
    result = run_entry(script, f"ckpt_path={path}", *options, f"hydra.run.dir={out}")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-2000:]
    assert str(path) in output and expected in output
    assert "Traceback" not in output and "weights_only" not in output
    assert not out.exists()


def command_options(command: str, *overrides: str):
    """The options of ``command`` (eval, predict, export) given ``overrides``, checked as the command does."""
    classes = {"eval": EvalOptions, "predict": PredictOptions, "export": ExportOptions}
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(command, overrides=list(overrides))
    GlobalHydra.instance().clear()
    return validate_options(cfg, classes[command])


PREDICT = ["ckpt_path=last.pt", "input=images"]
BAD_OPTIONS = {
    "predict batch_size=0": ("predict", [*PREDICT, "batch_size=0"], "batch_size=0 must be ≥ 1"),
    "predict batch_size=-3": ("predict", [*PREDICT, "batch_size=-3"], "batch_size=-3 must be ≥ 1"),
    "predict threshold=abc": ("predict", [*PREDICT, "threshold=abc"], "Bad value for threshold: Value 'abc'"),
    "predict threshold=nan": ("predict", [*PREDICT, "threshold=nan"], "threshold=nan must be a finite number"),
    "predict threshold=inf": ("predict", [*PREDICT, "threshold=inf"], "threshold=inf must be a finite number"),
    "predict +unknown=1": (
        "predict",
        [*PREDICT, "+unknown=1"],
        "Unknown option unknown; valid options of the config: ckpt_path, input, threshold, device, batch_size",
    ),
    "predict progress=maybe": ("predict", [*PREDICT, "progress=maybe"], "Bad value for progress"),
    "predict device=gpu": ("predict", [*PREDICT, "device=gpu"], "device=gpu is not a device; choices: auto, cpu"),
    "predict without input": ("predict", ["ckpt_path=last.pt"], "Missing option input"),
    "export format=tflite": ("export", ["ckpt_path=last.pt", "format=tflite"], "format=tflite; choices: onnx"),
    "export +unknown=1": ("export", ["ckpt_path=last.pt", "+unknown=1"], "Unknown option unknown; valid options"),
    "eval +unknown=1": ("eval", ["ckpt_path=last.pt", "+unknown=1"], "Unknown option unknown; valid options"),
    "eval device=tpu:x": ("eval", ["ckpt_path=last.pt", "device=tpu:x"], "device=tpu:x is not a device"),
    "eval without ckpt_path": ("eval", [], "Missing option ckpt_path"),
}


@pytest.mark.parametrize("case", BAD_OPTIONS)
def test_a_bad_option_is_named_before_any_work(case):
    command, overrides, expected = BAD_OPTIONS[case]
    with pytest.raises(ConfigError) as raised:
        command_options(command, *overrides)
    assert str(raised.value).startswith(expected) or expected in str(raised.value)
    assert "\n" not in str(raised.value)


def test_good_options_are_kept():
    options = command_options("predict", *PREDICT, "threshold=1", "batch_size=3", "device=cpu")
    assert (options.threshold, options.batch_size, options.device, options.input) == (1.0, 3, "cpu", "images")
    options = command_options("eval", "ckpt_path=last.pt", "data.root=/elsewhere", "+model.weight_search.apply=false")
    assert options.data["root"] == "/elsewhere" and options.model == {"weight_search": {"apply": False}}
    assert command_options("export", "ckpt_path=last.pt", "format=torchscript").format == "torchscript"


@pytest.mark.parametrize(
    "command, overrides, expected",
    [
        ("predict.py", ["input=.", "batch_size=0"], "batch_size=0 must be ≥ 1"),
        ("predict.py", ["input=.", "threshold=nan"], "threshold=nan must be a finite number"),
        ("eval.py", ["+unknown=1"], "Unknown option unknown"),
    ],
)
def test_the_commands_refuse_a_bad_option_in_one_line_and_leave_no_folder(tmp_path, command, overrides, expected):
    out = tmp_path / "out"
    result = run_entry(command, f"ckpt_path={tmp_path / 'absent.pt'}", *overrides, f"hydra.run.dir={out}")
    output = result.stdout + result.stderr
    assert result.returncode == 1 and expected in output, output[-2000:]
    assert "Traceback" not in output and "absent.pt: no such file" not in output  # refused before loading
    assert not out.exists()
