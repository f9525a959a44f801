"""Config validation: every bad option fails before any work, naming the option and the choices."""

from __future__ import annotations

import re

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from anomalib_lite.configs import CONFIG_DIR
from anomalib_lite.errors import ConfigError
from anomalib_lite.models.hfr import HFRConfig
from anomalib_lite.pipeline.config import validate

from conftest import run_entry


@pytest.fixture
def composed():
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        yield lambda *overrides: compose("train", overrides=list(overrides))
    GlobalHydra.instance().clear()


def test_defaults_validate_to_typed_parts(composed):
    run = validate(composed())
    assert isinstance(run.model, HFRConfig)
    assert run.model.epochs == 15 and run.data.batch_size == 4  # the hfr_synthetic recipe
    assert run.data.name == "synthetic" and run.data.category == "all"
    assert run.backbone.name == "tf_efficientnet_lite0"
    assert validate(composed("data=mvtec")).model.epochs == 200  # no recipe: the paper's value


def test_category_is_read_by_the_data_config(composed):
    assert validate(composed("data=mvtec", "category=screw")).data.category == "screw"


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.image_size=-1", "data.image_size=-1 must be"),
        ("data.image_size=big", "data.image_size"),
        ("+trainer.max_epoch=3", "Unknown option trainer.max_epoch; valid options of trainer.: device, precision"),
        ("+model.lr_decay=3", "Unknown option model.lr_decay; valid options of model.: name, epochs, lr"),
        ("trainer.precision=fp8", "trainer.precision='fp8'; choices: auto, bf16, fp32"),
        ("eval.fpr_limit=2", "eval.fpr_limit=2.0 must be in"),
    ],
)
def test_bad_values_are_named(composed, override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        validate(composed(override))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["trainer.grad_clip=-1"], "trainer.grad_clip=-1.0 must be > 0"),
        (["trainer.grad_clip=0"], "trainer.grad_clip=0.0 must be > 0"),
        (["trainer.max_epochs=0"], "trainer.max_epochs=0 must be ≥ 1"),
        (["trainer.log_every=0"], "trainer.log_every=0 must be ≥ 1"),
        (["category=1"], "category=1 must be a name"),
        (["category=[brick,2]"], "category=['brick', 2] must be a name"),
        (["data.batch_size=0"], "data.batch_size=0 must be ≥ 1"),
        (["data.n_per_defect=0"], "data.n_per_defect=0 must be ≥ 1"),
        (["data.n_train=0"], "data.n_train=0 must be ≥ 1"),
        (["data.n_test_good=-2"], "data.n_test_good=-2 must be ≥ 1"),
        (["data.source_size=8"], "data.source_size=8 must be ≥ 32"),
        (["model.epochs=0"], "model.epochs=0 must be ≥ 1"),
        (["model.lr=-0.1"], "model.lr=-0.1 must be > 0"),
        (["model.momentum=1.5"], "model.momentum=1.5 must be in [0, 1)"),
        (["model.weight_decay=-1e-4"], "model.weight_decay=-0.0001 must be ≥ 0"),
        (["model.sigma=-1"], "model.sigma=-1.0 must be ≥ 0"),
        (["model=msfi", "model.lr=0"], "model.lr=0.0 must be > 0"),
        (["model=msfi", "model.weight_search.lr=-1"], "model.weight_search.lr=-1.0 must be > 0"),
        (["model=msfi", "model.weight_search.epochs=0"], "model.weight_search.epochs=0 must be ≥ 1"),
        (["model=igd", "model.lr=-1e-4"], "model.lr=-0.0001 must be > 0"),
        (["model=igd", "model.kd_lr=0"], "model.kd_lr=0.0 must be > 0"),
        (["model=igd", "model.betas=[0.9,1.2]"], "model.betas=[0.9, 1.2] must be two numbers in [0, 1)"),
        (["model=igd", "model.lr_power=-1"], "model.lr_power=-1.0 must be ≥ 0"),
        (["model=igd", "data.image_size=48"], "model.image_size=48 (data.image_size, the global model's input)"),
        (["model=igd", "data.image_size=96"], "model.image_size=96 (data.image_size, the global model's input)"),
        (
            ["model=igd", "data.image_size=64", "model.local_size=48", "model.patch_stride=16"],
            "model.local_size=48 (the local model's input) must be 4·2^k",
        ),
        (["model=utad", "data.image_size=80"], "model.image_size=80 (data.image_size) must be a multiple of 32"),
        (["model=utad", "data.image_size=56"], "model.image_size=56 (data.image_size) must be a multiple of 16"),
        (["model=utad", "data.image_size=256", "model.small=true", "model.ie_lr=0"], "model.ie_lr=0.0 must be > 0"),
        (["model=utad", "model.expert_lr=-1"], "model.expert_lr=-1.0 must be > 0"),
        (["model=utad", "model.betas=[-0.5,0.9]"], "model.betas=[-0.5, 0.9] must be two numbers"),
    ],
)
def test_options_a_network_or_optimiser_needs_are_checked_before_any_work(composed, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(composed(*overrides))


@pytest.mark.parametrize(
    "overrides",
    [["model=utad", "data.image_size=96"], ["model=utad", "data.image_size=48"], ["model=igd", "data.image_size=64"]],
)
def test_sides_the_networks_accept_pass(composed, overrides):
    validate(composed(*overrides))


@pytest.mark.parametrize(
    "override, expected",
    [
        ("trainer.grad_clip=-1", "trainer.grad_clip=-1.0 must be > 0"),
        ("model=nope", "model=nope: no such option of model; choose one of anomalib, hfr, igd, msfi, utad"),
        ("category=nope", "choices: brick, grass, gravel, tissue"),
        ("data.image_size=-1", "data.image_size=-1 must be"),
        ("trainer.max_epoch=3", "trainer.max_epoch"),
    ],
)
def test_train_py_fails_before_any_work(tmp_path, override, expected):
    run_dir = tmp_path / "run"
    result = run_entry("train.py", override, f"hydra.run.dir={run_dir}", f"data.root={tmp_path / 'data'}")
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not run_dir.exists() and not (tmp_path / "data").exists()


def test_help_lists_the_config_groups():
    result = run_entry("train.py", "--help")
    assert result.returncode == 0
    for group in ("model", "data", "backbone", "recipe"):
        options = sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))
        assert len(options) > 1
        assert f"{group}: {', '.join(options)}\n" in result.stdout
