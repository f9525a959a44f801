"""The ``anomalib-lite`` command (also ``python -m anomalib_lite``): one subcommand per entry point, working
from any folder with the configs shipped inside the package; runs write ``outputs/`` in the current folder.

    anomalib-lite train [group=option ...] [key=value ...]     (Hydra, as ``python train.py``)
    anomalib-lite eval ckpt_path=...                            (Hydra, as ``python eval.py``)
    anomalib-lite predict ckpt_path=... input=...               (Hydra, as ``python predict.py``)
    anomalib-lite export ckpt_path=... format=onnx              (Hydra, as ``python export.py``)
    anomalib-lite reproduce|compare|collect|plot|prepare|benchmark [--help]   (as ``scripts/<name>.py``)
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

import hydra
from omegaconf import DictConfig

from anomalib_lite.cli.run_folders import run_main
from anomalib_lite.configs import CONFIG_MODULE

# Hydra subcommand → (its config in the package, the module and function that run it, the top-level keys it
# takes only with a leading "+" (eval's ``model``; see run_main)).
HYDRA_COMMANDS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "train": ("train", "anomalib_lite.cli.train", "train", ()),
    "eval": ("eval", "anomalib_lite.cli.evaluate", "evaluate", ("model",)),
    "predict": ("predict", "anomalib_lite.cli.predict", "predict", ()),
    "export": ("export", "anomalib_lite.cli.export", "export", ()),
}
# Argparse subcommand → the module whose ``main(argv) -> int`` it runs.
TOOL_COMMANDS: dict[str, str] = {
    "reproduce": "anomalib_lite.research.reproduce.command",
    "compare": "anomalib_lite.research.compare",
    "collect": "anomalib_lite.research.collect",
    "plot": "anomalib_lite.reporting.plots",
    "prepare": "anomalib_lite.cli.prepare",
    "benchmark": "anomalib_lite.research.benchmark",
}
SUMMARY = {
    "train": "train and evaluate a model (Hydra overrides, e.g. model=hfr data=mvtec category=screw)",
    "eval": "re-evaluate a checkpoint: ckpt_path=...",
    "predict": "score new images: ckpt_path=... input=DIR_OR_FILE",
    "export": "export a checkpoint as ONNX or TorchScript: ckpt_path=... format=onnx",
    "reproduce": "run and report a paper's table (--list)",
    "compare": "do two runs differ beyond chance?",
    "collect": "one table of a sweep's runs",
    "plot": "several runs' curves on one figure",
    "prepare": "fetch a dataset or backbone weights (--help lists them)",
    "benchmark": "speed figures: evaluator, model, inference, export, peer",
}


def hydra_task(config_name: str, module: str, function: str) -> Callable[[], None]:
    """The ``@hydra.main`` function that composes ``config_name`` from the packaged configs and runs
    ``module.function`` on it (returning its value to Hydra: a sweeper that optimises reads train's objective from
    it). The module is imported only then, so that Hydra's errors about the command line and ``--help`` come
    before the seconds that importing torch takes."""

    @hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name=config_name)
    def main(cfg: DictConfig) -> Any:
        return getattr(importlib.import_module(module), function)(cfg)

    return main


def run_command(name: str, argv: list[str], prog: str) -> int:
    """Run subcommand ``name`` with its arguments ``argv`` (Hydra's for train/eval/predict/export), shown as ``prog``.

    Returns:
        The exit status (Hydra's commands exit on error themselves).
    """
    if name in HYDRA_COMMANDS:
        config_name, module, function, prefixed = HYDRA_COMMANDS[name]
        sys.argv = [prog, *argv]  # Hydra reads its overrides from sys.argv
        run_main(hydra_task(config_name, module, function), prefixed=prefixed)
        return 0
    return int(importlib.import_module(TOOL_COMMANDS[name]).main(argv) or 0)


def usage() -> str:
    """The command's help: each subcommand with one line."""
    width = max(map(len, SUMMARY))
    lines = [f"  {name:<{width}}  {text}" for name, text in SUMMARY.items()]
    return (
        "usage: anomalib-lite COMMAND [ARGS ...]\n\ncommands:\n"
        + "\n".join(lines)
        + "\n\n`anomalib-lite COMMAND --help` describes a command. Outputs go to ./outputs."
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``anomalib-lite`` and ``python -m anomalib_lite``: dispatch to a subcommand.

    Returns:
        The exit status: 2 for an unknown or missing command.
    """
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUMMARY:
        sys.stderr.write(f"anomalib-lite: unknown command {name!r}\n\n{usage()}\n")
        return 2
    return run_command(name, rest, f"anomalib-lite {name}")
