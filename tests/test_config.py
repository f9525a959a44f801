"""Config validation: every bad option fails before any work, naming the option and the choices."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from anomalib_lite.config import validate
from anomalib_lite.errors import ConfigError
from anomalib_lite.models.hfr import HFRConfig

from conftest import REPO, run_entry


@pytest.fixture
def composed():
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "configs")):
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
    "override, expected",
    [
        ("model=nope", "Available options in 'model'"),
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
    for line in (
        "model: hfr",
        "data: cifar10, fashion_mnist, folder, mnist, mnist5k, mvtec, synthetic",
        "backbone: resnet18",
    ):
        assert line in result.stdout
