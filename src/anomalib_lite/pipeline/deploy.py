"""Exported models: one file (ONNX or TorchScript) that turns RGB pixels into anomaly maps and scores.

The file holds the whole inference path: the pixels' normalisation (as the data layer's
:func:`anomalib_lite.data.images.to_model_input`), the model's ``predict`` and nothing else. It is
traced at the training size, so it takes that size only, with any batch size:

- input ``image``: RGB ``N×3×S×S``; ONNX: float32 in [0, 1]; TorchScript: uint8 in [0, 255] or
  float in [0, 1] (uint8 is divided by 255 inside, so both give the same result). A model trained
  on grey images takes RGB too: the channel mean, rounded to 8 bits, as ``predict.py`` does.
- outputs ``anomaly_map`` ``N×S×S`` float32 (higher = more anomalous, the shape of
  :class:`~anomalib_lite.models.base.AnomalyOutput`) and ``score`` ``N`` float32.

The file carries its settings (input size, threshold stored by evaluation, the model's family,
backbone and hyper-parameters) as JSON: ONNX metadata property ``anomalib_lite``, TorchScript
extra file ``anomalib_lite.json``; :func:`export_model` also writes them beside it (``<file>.json``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import anomalib_lite
from anomalib_lite.data.images import normalise
from anomalib_lite.errors import AnomalibLiteError, ConfigError
from anomalib_lite.files import write_atomically
from anomalib_lite.models import AnomalyModel
from anomalib_lite.models.base import AnomalyOutput
from anomalib_lite.pipeline.config import RunConfig

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
METADATA_KEY = "anomalib_lite"  # ONNX metadata property, and TorchScript extra file <key>.json
OPSET = 18  # ONNX opset: the first with Col2Im (IGD's fold of patch maps)
TOLERANCE = 1e-4  # largest difference to predict allowed, relative to the largest value of the map or score
EXAMPLE_BATCH, CHECK_BATCH = 2, 3  # traced with one batch size, checked with another


class ExportError(AnomalibLiteError):
    """A model cannot be exported, or its exported file does not reproduce ``predict``."""


def check_format(fmt: str) -> None:
    """Raise a :class:`ConfigError` for an unknown format, or for ``onnx`` without its packages."""
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt}; choices: {', '.join(FORMATS)}")
    if fmt == "onnx":
        require_onnx()


def require_onnx() -> None:
    """Raise a :class:`ConfigError` naming the extra to install when ``onnx`` or ``onnxruntime`` is missing."""
    missing = [name for name in ("onnx", "onnxruntime") if not _importable(name)]
    if missing:
        raise ConfigError(
            f"format=onnx needs {' and '.join(missing)}, not installed: pip install 'anomalib_lite[export]' "
            "(or format=torchscript, which needs nothing more)"
        )


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


class PixelsToAnomaly(nn.Module):
    """The traced part: RGB float pixels in [0, 1] ``N×3×S×S`` → ``(anomaly_map N×S×S, score N)``.

    Args:
        model: a trained model (put in eval mode). grey: it was trained on grey images (``N×1×S×S``).
    """

    def __init__(self, model: AnomalyModel, grey: bool) -> None:
        super().__init__()
        self.model = model
        self.grey = grey
        self.eval()  # the exporters restore this mode afterwards: eval, as predict needs
        self.requires_grad_(False)  # an exported file's outputs carry no autograd history

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.grey:  # as predict.py: the mean of the three 8-bit values, rounded
            image = (image.mean(1, keepdim=True) * 255).round() / 255
        out = self.model.predict(normalise(image))
        return out.anomaly_map, out.score


class CheckedInput(nn.Module):
    """TorchScript's outer layer: refuses a wrong shape, then scales uint8 pixels to [0, 1] (scripted, so
    both checks run on every call), then runs the traced :class:`PixelsToAnomaly`."""

    def __init__(self, traced: nn.Module, size: int) -> None:
        super().__init__()
        self.traced = traced
        self.size = size

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if image.dim() != 4 or image.shape[1] != 3 or image.shape[2] != self.size or image.shape[3] != self.size:
            raise ValueError(
                f"expected an RGB image batch N×3×{self.size}×{self.size} (the training size), got {list(image.shape)}"
            )
        pixels = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        return self.traced(pixels)


def metadata(run: RunConfig, fmt: str, threshold: float | None, threshold_note: str, checkpoint: Path) -> dict:
    """The settings an exported file carries (see the module doc)."""
    size, grey = run.data.image_size, trained_on_grey(run)
    dtype = "float32 in [0, 1]" if fmt == "onnx" else "uint8 in [0, 255], or float in [0, 1]"
    return {
        "format": fmt,
        "input": {
            "name": "image",
            "shape": ["N", 3, size, size],
            "channels": "RGB",
            "dtype": dtype,
            "resize": f"to {size}×{size} before the model (predict.py: bilinear, Pillow)",
            "normalisation": "inside the model: ImageNet mean and std"
            + (" of the grey image (channel mean rounded to 8 bits)" if grey else ""),
        },
        "outputs": {
            "anomaly_map": f"N×{size}×{size} float32, higher = more anomalous",
            "score": "N float32, higher = more anomalous",
        },
        "image_size": size,
        "threshold": threshold,
        "threshold_source": threshold_note,
        "model": {
            "family": run.model.name,
            "backbone": dataclasses.asdict(run.backbone),
            "hparams": dataclasses.asdict(run.model),
        },
        "data": {"name": run.data.name, "category": str(run.category), "grey": grey},
        "checkpoint": str(checkpoint),
        "versions": {"anomalib_lite": anomalib_lite.__version__, "torch": torch.__version__},
    }


def trained_on_grey(run: RunConfig) -> bool:
    """Whether the run's model was trained on grey ``B×1×H×W`` images (``data.grey_to_rgb=false``)."""
    return getattr(run.data, "grey_to_rgb", True) is False


def export_model(model: AnomalyModel, run: RunConfig, fmt: str, path: Path, info: dict[str, Any]) -> Path:
    """Write ``model`` as one ``fmt`` file at ``path`` (and ``info`` beside it as ``<path>.json``), then
    check that the file reproduces ``predict`` on a batch of another size than the traced one.

    Args:
        model: trained, on the CPU. run: its config. fmt: a key of :data:`FORMATS`.
        info: :func:`metadata`, stored in the file and beside it.
    The file is written under a partial name (``<stem>.partial-<pid><suffix>``), checked, then renamed to
    ``path``: ``path`` is complete and checked, or absent.

    Returns:
        The path of the JSON file.
    Raises:
        ConfigError: unknown format; onnx packages missing.
        ExportError: the model cannot be exported (the message says why), or the file's outputs differ.
        OSError: the file cannot be written (e.g. a full disk), naming ``path``.
    """
    check_format(fmt)
    refusal = model.export_refusal()
    if refusal:
        raise ExportError(f"{run.model.name} cannot be exported: {refusal}")
    size = run.data.image_size
    core = PixelsToAnomaly(model, trained_on_grey(run))
    example = _pixels(EXAMPLE_BATCH, size, seed=0)
    text = json.dumps(info, indent=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written and checked under a partial name, then renamed: a failed, interrupted or killed export never
    # leaves a truncated or unchecked file under the final name (the suffix stays: it tells the format).
    partial = path.with_name(f"{path.stem}.partial-{os.getpid()}{path.suffix}")
    sidecar = path.with_name(path.name + ".json")
    try:
        with quiet_tracing():
            if fmt == "onnx":
                _write_onnx(core, example, partial, text)
            else:
                traced = torch.jit.trace(core, (example,), check_trace=False)
                scripted = torch.jit.script(CheckedInput(traced, size))
                torch.jit.save(scripted, str(partial), _extra_files={f"{METADATA_KEY}.json": text})
        exported = load_exported(partial)
        exported.path = path  # its name in the check's messages
        check_export(exported, core, size)
        write_atomically(sidecar, lambda file: file.write((text + "\n").encode()))
        os.replace(partial, path)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if not path.exists():  # the settings of a file that was not written
            sidecar.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename in (None, str(partial)):
            raise OSError(exc.errno, exc.strerror, str(path)) from exc  # named by its final name
        raise
    return sidecar


def _pixels(n: int, size: int, seed: int) -> torch.Tensor:
    """``n`` random RGB images, float in [0, 1], ``n×3×size×size``."""
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@contextlib.contextmanager
def quiet_tracing() -> Iterator[None]:
    """Silence what tracing warns about a model exported at a fixed input size: branches and constants
    taken from tensor shapes (correct at that size), and the deprecation notices of ``torch.jit`` and of
    the TorchScript-based ONNX exporter (used on purpose: it needs no package beyond ``onnx``). A branch on
    tensor values would be wrong for other inputs: :func:`check_export` catches that on another batch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*(deprecated|will be removed|train=True|Constant folding).*")
        yield


def _write_onnx(core: nn.Module, example: torch.Tensor, path: Path, text: str) -> None:
    import onnx

    torch.onnx.export(
        core,
        (example,),
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=["image"],
        output_names=["anomaly_map", "score"],
        dynamic_axes={"image": {0: "N"}, "anomaly_map": {0: "N"}, "score": {0: "N"}},
    )
    graph = onnx.load(str(path))
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, text
    onnx.save(graph, str(path))


def check_export(exported: ExportedModel, core: PixelsToAnomaly, size: int) -> None:
    """Compare ``exported`` with the model's ``predict`` (through ``core``) on :data:`CHECK_BATCH` random
    images (another batch size than the traced one, so a traced batch size or a branch frozen at tracing
    shows).

    Raises:
        ExportError: the file fails on that batch, the file's or predict's map or score holds NaN/inf, or a map
            or score differs by more than :data:`TOLERANCE` of its largest value.
    """
    pixels = _pixels(CHECK_BATCH, size, seed=1)
    try:
        got = exported(pixels)
    except Exception as exc:  # onnxruntime and TorchScript raise their own types
        raise ExportError(
            f"the exported {exported.path.name} fails on a batch of {CHECK_BATCH} images (traced with "
            f"{EXAMPLE_BATCH}): {_first_line(exc)}"
        ) from exc
    with torch.inference_mode():
        expected_map, expected_score = core(pixels)
    for name, a, b in (("anomaly_map", got.anomaly_map, expected_map), ("score", got.score, expected_score)):
        for whose, values in ((f"the exported {exported.path.name}", a), ("predict", b)):
            if not torch.isfinite(values).all():
                raise ExportError(f"{whose} gives NaN/inf in its {name} on {CHECK_BATCH} random images")
        error, scale = relative_difference(a, b)
        if a.shape != b.shape or not error <= TOLERANCE:  # NaN-safe: a NaN difference is an error too
            raise ExportError(
                f"the exported {exported.path.name} does not reproduce predict: its {name} "
                f"{tuple(a.shape)} differs from predict's {tuple(b.shape)} by up to {error:.3g} of {scale:.3g}"
            )


def _first_line(exc: BaseException) -> str:
    """The first non-blank line of ``exc``'s message, or its type's name."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """``(max |a − b| / max |b|, max |b|)`` (``inf`` when the shapes differ); ``b`` is the reference."""
    if a.shape != b.shape:
        return float("inf"), float(b.abs().max())
    scale = float(b.abs().max())
    return float((a.float() - b.float()).abs().max()) / max(scale, 1e-12), scale


def is_exported(path: Path) -> bool:
    """Whether ``path`` is a file written by :func:`export_model` (``.onnx``, or a TorchScript archive
    holding our settings), rather than a training checkpoint (also ``.pt``)."""
    if path.suffix == ".onnx":
        return True
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith(f"extra/{METADATA_KEY}.json") for name in archive.namelist())
    except zipfile.BadZipFile:  # not a zip archive, or a damaged one: not ours
        return False


class ExportedModel:
    """An exported file, loaded for inference.

    Call it with RGB ``N×3×S×S`` images, uint8 in [0, 255] or float in [0, 1] (either format);
    it returns an :class:`AnomalyOutput` on the CPU.

    Attributes:
        path: the file. info: its settings (:func:`metadata`). size: ``S``.
    """

    def __init__(self, path: Path, info: dict, run: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]):
        self.path, self.info, self._run = path, info, run
        self.size = int(info["image_size"])

    def __call__(self, images: torch.Tensor) -> AnomalyOutput:
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, self.size, self.size):
            raise ConfigError(
                f"{self.path.name} takes RGB images N×3×{self.size}×{self.size} (the training size), "
                f"got {tuple(images.shape)}"
            )
        pixels = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        anomaly_map, score = self._run(pixels)
        return AnomalyOutput(anomaly_map=anomaly_map, score=score)


def load_exported(path: Path, device: torch.device | None = None) -> ExportedModel:
    """Load an ONNX file (onnxruntime; its CUDA provider when ``device`` is a GPU and onnxruntime has it)
    or a TorchScript file (on the CPU, where it was traced: its shape-derived constants live there).

    Raises:
        ConfigError: no such file; onnx packages missing; a file without our settings; a file that cannot be
            parsed or loaded (damaged, truncated, another kind of file), naming it and why.
    """
    device = device or torch.device("cpu")
    if not path.is_file():
        raise ConfigError(f"ckpt_path={path}: no such file")
    if path.suffix == ".onnx":
        require_onnx()
        import onnx
        import onnxruntime

        try:
            props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        except Exception as exc:  # protobuf's DecodeError, onnx's own errors
            raise ConfigError(f"ckpt_path={path}: not an ONNX file ({_first_line(exc)})") from exc
        if METADATA_KEY not in props:
            raise ConfigError(f"{path}: an ONNX file without anomalib_lite's settings (not written by export.py)")
        available = onnxruntime.get_available_providers()
        providers = ["CUDAExecutionProvider"] if device.type == "cuda" and "CUDAExecutionProvider" in available else []
        try:
            session = onnxruntime.InferenceSession(str(path), providers=providers + ["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types (InvalidProtobuf, Fail…)
            raise ConfigError(
                f"ckpt_path={path}: a damaged ONNX file, onnxruntime cannot load it ({_first_line(exc)})"
            ) from exc

        def run(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            outputs = session.run(None, {"image": np.ascontiguousarray(pixels.cpu().numpy(), dtype=np.float32)})
            return torch.from_numpy(outputs[0]), torch.from_numpy(outputs[1])

        return ExportedModel(path, json.loads(props[METADATA_KEY]), run)
    extra = {f"{METADATA_KEY}.json": ""}
    try:
        with quiet_tracing():
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # torch raises RuntimeError, ValueError… for a damaged archive
        raise ConfigError(
            f"ckpt_path={path}: a damaged TorchScript file, torch cannot load it ({_first_line(exc)})"
        ) from exc
    if not extra[f"{METADATA_KEY}.json"]:
        raise ConfigError(f"{path}: a TorchScript file without anomalib_lite's settings (not written by export.py)")

    def run_script(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            return module(pixels.cpu())

    return ExportedModel(path, json.loads(extra[f"{METADATA_KEY}.json"]), run_script)
