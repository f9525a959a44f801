"""The Hydra configs of the entry points (``train.yaml``, ``eval.yaml``, ``predict.yaml``, ``export.yaml``) and
their groups (``model/``, ``data/``, ``backbone/``, ``recipe/``, ``experiment/``, …), shipped inside the package so
that the ``anomalib-lite`` command works from any folder. Hydra finds them as ``pkg://anomalib_lite.configs``."""

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent
# Where Hydra's ``@hydra.main`` and ``initialize_config_module`` find this folder.
CONFIG_MODULE = "anomalib_lite.configs"
