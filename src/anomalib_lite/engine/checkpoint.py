"""Checkpoints: written atomically and lean (a frozen network is named and fingerprinted, not stored).

A model's frozen networks are its :class:`~anomalib_lite.models.backbones.Backbone` modules with
no trainable parameter: their weights come from the backbone's own source (ImageNet file, pip
package, or the fixed seed of ``weights=none``), so a checkpoint records each one's name, weight
source and SHA-256 fingerprint under ``"frozen"`` and leaves its tensors out of ``"model"``. On load
the rebuilt network's fingerprint must match. Checkpoints without ``"frozen"`` (full state) still load.
"""

from __future__ import annotations

import logging
import pickle
import time
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from anomalib_lite.errors import ConfigError, WeightsError
from anomalib_lite.files import write_atomically
from anomalib_lite.models.backbones import Backbone, weight_fingerprint

log = logging.getLogger(__name__)
FrozenRecord = dict[str, dict[str, str]]


class _RecordedWrites:
    """A binary file for ``torch.save`` that keeps the first ``OSError`` of its writes: torch turns a failed
    write (a full disk) into ``RuntimeError: [enforce fail at inline_container.cc…]``, losing the reason."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.error = file, None

    def write(self, data: bytes) -> int:
        """Write ``data`` to the file; returns the bytes written."""
        try:
            return self.file.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        """Flush the file."""
        self.file.flush()


def _save(state: dict[str, Any], file: BinaryIO) -> None:
    recorded = _RecordedWrites(file)
    try:
        torch.save(state, recorded)
    except RuntimeError as exc:
        if recorded.error is None:
            raise
        raise recorded.error from exc


def save_checkpoint(state: dict[str, Any], path: Path) -> int:
    """Write ``state`` to ``path`` atomically: a crash or a full disk mid-write never leaves a broken ``path``
    behind (the previous file stays). Returns the bytes written.

    Raises:
        OSError: the file cannot be written (e.g. ENOSPC on a full disk), naming ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_atomically(path, lambda file: _save(state, file))
    except OSError as exc:
        if exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    return path.stat().st_size


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load the checkpoint ``path`` safely: tensors and plain data only (``weights_only=True``; anything else is
    refused, never unpickled).

    Returns:
        Its state: a dict holding at least ``"model"`` (the weights) and ``"config"`` (the run's plain config).
    Raises:
        ConfigError: ``path`` cannot be read, or is not a checkpoint of this project (empty, truncated or damaged,
            another kind of file, a TorchScript file, other objects than tensors and plain data, no ``"model"``
            or ``"config"``): one line naming the file and what is wrong.
    """

    def refuse(why: str) -> ConfigError:
        return ConfigError(f"{path}: not a checkpoint of this project: {why}")

    try:
        size = path.stat().st_size
        if size == 0:
            raise refuse("an empty file (0 bytes)")
        if not zipfile.is_zipfile(path):
            raise refuse(f"not the zip archive torch.save writes ({size} bytes: truncated, or another kind of file)")
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    except zipfile.BadZipFile as exc:
        raise refuse(f"a damaged zip archive ({exc})") from exc
    if any(name.endswith("/constants.pkl") or "/code/" in name for name in names):
        raise refuse(
            "a TorchScript file (a model saved to run on its own, e.g. by export.py), not a training checkpoint"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise refuse("it holds other objects than tensors and plain data (refused: not loaded, nothing run)") from exc
    except Exception as exc:  # torch raises RuntimeError, EOFError, KeyError… for damaged archives
        raise refuse(f"damaged or truncated ({_first_sentence(exc)})") from exc
    if not isinstance(state, dict):
        raise refuse(f"it holds a {type(state).__name__}, not a training checkpoint's dict")
    for key in ("model", "config"):
        if not isinstance(state.get(key), dict):
            raise refuse(f"no '{key}' entry (it holds {', '.join(map(repr, list(state)[:8])) or 'an empty dict'})")
    return state


def _first_sentence(exc: BaseException) -> str:
    """The first sentence of ``exc``'s message (torch's first sentences say what failed; the rest advises), or its
    type's name; never torch's advice to load with ``weights_only=False``."""
    line = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    sentence = line.split(". ")[0].rstrip(".")
    return sentence if sentence and "weights_only" not in sentence else type(exc).__name__


def frozen_networks(model: nn.Module) -> dict[str, Backbone]:
    """Each frozen backbone of ``model`` under every name it is reachable by (a backbone shared by two
    modules appears twice): the :class:`Backbone` modules none of whose parameters requires grad."""
    return {
        name: module
        for name, module in model.named_modules(remove_duplicate=False)
        if isinstance(module, Backbone) and not any(p.requires_grad for p in module.parameters())
    }


def frozen_record(model: nn.Module) -> FrozenRecord:
    """Module name → ``{"network", "weights", "sha256"}`` of every frozen network of ``model``
    (each distinct network hashed once)."""
    hashes: dict[int, str] = {}
    record = {}
    for name, module in frozen_networks(model).items():
        if id(module) not in hashes:
            hashes[id(module)] = weight_fingerprint(module)
        record[name] = {"network": module.network, "weights": module.weight_source, "sha256": hashes[id(module)]}
    return record


def _is_frozen(key: str, record: FrozenRecord) -> bool:
    return any(key.startswith(f"{name}.") for name in record)


def lean_state(model: nn.Module, record: FrozenRecord) -> dict[str, torch.Tensor]:
    """``model``'s state dict without the tensors of the frozen networks in ``record``."""
    return {key: value for key, value in model.state_dict().items() if not _is_frozen(key, record)}


def _describe(entry: dict[str, str]) -> str:
    return f"{entry['network']} ({entry['weights']} weights, sha256 {entry['sha256'][:16]}…)"


def load_model_state(model: nn.Module, state: dict[str, Any], path: Path, record: FrozenRecord | None = None) -> None:
    """Load checkpoint ``state``'s weights into ``model``.

    A lean checkpoint's frozen networks are checked against ``model``'s own (``record``: their
    :func:`frozen_record`, computed here when not given); a full checkpoint is loaded as is.

    Raises:
        WeightsError: a frozen network differs from the one the checkpoint was trained with (naming
            both), or the checkpoint's tensors do not fit ``model``.
    """
    if "frozen" not in state:
        model.load_state_dict(state["model"])
        return
    stored = state["frozen"]
    here = frozen_record(model) if record is None else record
    if stored.keys() != here.keys():
        raise WeightsError(
            f"{path} was trained with frozen networks {sorted(stored)}, but this model has {sorted(here)}"
        )
    for name, entry in stored.items():
        if entry != here[name]:
            raise WeightsError(
                f"{path}: the frozen network '{name}' was {_describe(entry)} in training, but the one rebuilt "
                f"here from the config is {_describe(here[name])}. Its weights file changed since training "
                "(another file, package or library version); restore the one used for training, or retrain."
            )
    result = model.load_state_dict(state["model"], strict=False)
    missing = [key for key in result.missing_keys if not _is_frozen(key, here)]
    if missing or result.unexpected_keys:
        raise WeightsError(
            f"{path} does not fit this model: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )


class CheckpointWriter:
    """Decides when to write ``path`` and writes it, counting what it wrote.

    Args:
        path: the checkpoint file (overwritten each time, atomically).
        every: write after every ``every``-th epoch; ``None``: when at least ``seconds`` have passed
            since the last write (or since the start). The last epoch of a stage is always written.
    """

    def __init__(self, path: Path, every: int | None, seconds: float) -> None:
        self.path, self.every, self.seconds = path, every, seconds
        self.last_write = time.monotonic()
        self.count, self.bytes, self.write_seconds = 0, 0, 0.0

    def due(self, epoch: int, stage_end: bool) -> bool:
        """Whether to write after ``epoch`` (1-based, of the current stage)."""
        if stage_end:
            return True
        if self.every is not None:
            return epoch % self.every == 0
        return time.monotonic() - self.last_write >= self.seconds

    def write(self, state: dict[str, Any]) -> None:
        """Save ``state`` to :attr:`path` atomically."""
        start = time.monotonic()
        self.bytes += save_checkpoint(state, self.path)
        self.last_write = time.monotonic()
        self.write_seconds += self.last_write - start
        self.count += 1

    def summary(self) -> str:
        """``N checkpoint(s), X MB written in Y s``."""
        return f"{self.count} checkpoint(s), {self.bytes / 1e6:.1f} MB written in {self.write_seconds:.1f} s"
