"""The embedded dataset: generated offline, deterministically, in the MVTec AD layout.

Normal images are random crops (with flips and a slight brightness change) of
photographs that ship inside scikit-image. Anomalous test images carry one
procedural defect, of one of four kinds and of random size, with its pixel mask:

- ``scratch``: a thin curved stroke, much darker or brighter than the surface;
- ``hole``: a dark, noisy ellipse;
- ``patch``: a rectangle cut from another category's photograph and pasted in;
- ``stain``: an irregular blob tinted with a saturated colour.

Two difficulties (``data.difficulty``, see :data:`DIFFICULTIES`): ``easy``, the default, and ``hard``,
with the same kinds of defect at half the size and blended into the surface at a third of the contrast,
generated into its own folder (:func:`synthetic_folder`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from skimage import data as skdata
from tqdm import tqdm

from anomalib_lite.data.datamodule import DataModule
from anomalib_lite.data.mvtec import mvtec_records
from anomalib_lite.data.registry import DataConfig, Dataset, register_dataset
from anomalib_lite.errors import ConfigError, DataError
from anomalib_lite.files import install_folder

GENERATOR_VERSION = 3
STAMP = "generation.json"  # written last into a generated category: its parameters
SOURCES: dict[str, Callable[[], np.ndarray]] = {
    "brick": skdata.brick,
    "grass": skdata.grass,
    "gravel": skdata.gravel,
    "tissue": skdata.immunohistochemistry,
}
SYNTHETIC_CATEGORIES = list(SOURCES)
# Patches are cut from a photograph that looks plainly different from the category's own.
DONORS = {"brick": "gravel", "grass": "tissue", "gravel": "brick", "tissue": "grass"}
DEFECTS = ("scratch", "hole", "patch", "stain")


@dataclass(frozen=True)
class DefectStrength:
    """How pronounced the procedural defects are.

    Attributes:
        scale: multiplies every defect's size (length, width, radius, side).
        contrast: weight of the defect's own pixels against the surface beneath (1 = replaces it).
    """

    scale: float
    contrast: float


# *choice*: easy = the original generator; hard = half the size and a third of the contrast: still visible to
# the eye, faint enough that the model families no longer all score ≥ 0.98 (issue 12, item 9).
DIFFICULTIES = {"easy": DefectStrength(scale=1.0, contrast=1.0), "hard": DefectStrength(scale=0.5, contrast=0.35)}


def synthetic_folder(root: Path, difficulty: str) -> Path:
    """Where the synthetic set of ``difficulty`` lives: ``root`` (easy) or ``root/<difficulty>``, never shared."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"data.difficulty={difficulty!r} is unknown; choices: {', '.join(DIFFICULTIES)}")
    return root if difficulty == "easy" else root / difficulty


def _blend(surface: np.ndarray, defect: np.ndarray, contrast: float) -> np.ndarray:
    """``defect`` laid over ``surface`` with weight ``contrast`` (exactly ``defect`` at 1)."""
    return surface * (1 - contrast) + defect * contrast


def _rgb(array: np.ndarray) -> np.ndarray:
    return np.repeat(array[..., None], 3, axis=2) if array.ndim == 2 else array[..., :3]


def _crop(source: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``size×size`` crop, randomly flipped, with a ±5 % brightness change: float ``H×W×3``."""
    y = rng.integers(0, source.shape[0] - size + 1)
    x = rng.integers(0, source.shape[1] - size + 1)
    crop = source[y : y + size, x : x + size].astype(np.float32)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1]
    return np.clip(crop * rng.uniform(0.95, 1.05), 0, 255)


def _blob_mask(size: int, rng: np.random.Generator, radius: float, parts: int) -> np.ndarray:
    """An irregular region: the union of ``parts`` ellipses around a random centre, bool ``H×W``."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    cy, cx = rng.uniform(radius + size / 64, size - radius - size / 64, 2)
    for _ in range(parts):
        oy, ox = rng.normal(0, radius / 3, 2)
        ry, rx = rng.uniform(0.4, 1.0, 2) * radius
        draw.ellipse([cx + ox - rx, cy + oy - ry, cx + ox + rx, cy + oy + ry], fill=255)
    return np.asarray(canvas) > 127


def _scratch(
    image: np.ndarray, rng: np.random.Generator, donor: np.ndarray, strength: DefectStrength
) -> tuple[np.ndarray, np.ndarray]:
    size = image.shape[0]
    length = rng.uniform(0.15, 0.5) * size * strength.scale
    start = rng.uniform(0.2, 0.8, 2) * size
    angle = rng.uniform(0, 2 * np.pi)
    end = start + length * np.array([np.cos(angle), np.sin(angle)])
    bend = (start + end) / 2 + rng.normal(0, length / 4, 2)
    t = np.linspace(0, 1, 64)[:, None]
    points = (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t**2 * end
    canvas = Image.new("L", (size, size), 0)
    width = max(1, round(rng.integers(4, 9) * size / 256 * strength.scale))
    ImageDraw.Draw(canvas).line([tuple(p) for p in points], fill=255, width=width)
    mask = np.asarray(canvas) > 127
    value = 15.0 if image[mask].mean() > 110 else 240.0
    out = image.copy()
    out[mask] = _blend(image[mask], value + rng.normal(0, 8, (int(mask.sum()), 3)), strength.contrast)
    return out, mask


def _hole(
    image: np.ndarray, rng: np.random.Generator, donor: np.ndarray, strength: DefectStrength
) -> tuple[np.ndarray, np.ndarray]:
    mask = _blob_mask(image.shape[0], rng, rng.uniform(8, 30) * image.shape[0] / 256 * strength.scale, parts=1)
    out = image.copy()
    dark = image[mask] * 0.15 + rng.normal(10, 6, (int(mask.sum()), 3))
    out[mask] = _blend(image[mask], dark, strength.contrast)
    return out, mask


def _patch(
    image: np.ndarray, rng: np.random.Generator, donor: np.ndarray, strength: DefectStrength
) -> tuple[np.ndarray, np.ndarray]:
    size = image.shape[0]
    h, w = (rng.integers(24, 60, 2) * size / 256 * strength.scale).round().astype(int).clip(2)
    margin = size // 32
    y, x = rng.integers(margin, size - h - margin), rng.integers(margin, size - w - margin)
    sy, sx = rng.integers(0, donor.shape[0] - h), rng.integers(0, donor.shape[1] - w)
    out = image.copy()
    out[y : y + h, x : x + w] = _blend(image[y : y + h, x : x + w], donor[sy : sy + h, sx : sx + w], strength.contrast)
    mask = np.zeros((size, size), dtype=bool)
    mask[y : y + h, x : x + w] = True
    return out, mask


def _stain(
    image: np.ndarray, rng: np.random.Generator, donor: np.ndarray, strength: DefectStrength
) -> tuple[np.ndarray, np.ndarray]:
    mask = _blob_mask(image.shape[0], rng, rng.uniform(10, 36) * image.shape[0] / 256 * strength.scale, parts=4)
    colour = np.array([(220, 30, 30), (30, 60, 220), (40, 200, 40), (230, 200, 20)][rng.integers(0, 4)])
    alpha = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(1.5)))
    coverage = alpha[..., None].astype(np.float32) / 255
    out = _blend(image, colour, coverage * (0.7 * strength.contrast))
    return out, coverage[..., 0] > 0.5


MAKE_DEFECT = {"scratch": _scratch, "hole": _hole, "patch": _patch, "stain": _stain}


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(array, 0, 255).round().astype(np.uint8)).save(path)


def generate_category(
    folder: Path,
    category: str,
    seed: int,
    n_train: int,
    n_test_good: int,
    n_per_defect: int,
    size: int,
    difficulty: str = "easy",
) -> None:
    """Write one category in the MVTec AD layout under ``folder`` (which must be empty or absent).

    The normal images and the draws that place the defects do not depend on ``difficulty``: only the
    defects' size and contrast do (:data:`DIFFICULTIES`).
    """
    strength = DIFFICULTIES[difficulty]
    index = SYNTHETIC_CATEGORIES.index(category)
    rng = np.random.default_rng([seed, index])
    source = _rgb(SOURCES[category]())
    donor = _rgb(SOURCES[DONORS[category]]()).astype(np.float32)
    for i in range(n_train):
        _save(_crop(source, size, rng), folder / "train" / "good" / f"{i:03d}.png")
    for i in range(n_test_good):
        _save(_crop(source, size, rng), folder / "test" / "good" / f"{i:03d}.png")
    for defect in DEFECTS:
        for i in range(n_per_defect):
            image, mask = MAKE_DEFECT[defect](_crop(source, size, rng), rng, donor, strength)
            _save(image, folder / "test" / defect / f"{i:03d}.png")
            _save(mask.astype(np.float32) * 255, folder / "ground_truth" / defect / f"{i:03d}_mask.png")


def _stamp(folder: Path) -> dict | None:
    """The generation parameters recorded in ``folder``; ``{}`` for an unreadable stamp; ``None`` without one."""
    stamp = folder / STAMP
    if not stamp.is_file():
        return None
    try:
        return json.loads(stamp.read_text())
    except (OSError, ValueError):
        return {}


def _check_ours(folder: Path) -> None:
    """Fail unless ``folder`` is absent, empty, or was written by this generator (holds its stamp)."""
    if folder.exists() and _stamp(folder) is None and (not folder.is_dir() or any(folder.iterdir())):
        raise DataError(
            f"{folder} exists but was not written by the synthetic data generator (it has no {STAMP}); "
            "it is left untouched. Move it elsewhere, or choose another data.root for the synthetic data."
        )


@contextlib.contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``root`` (released when the block ends, or when the process dies)."""
    with (root / ".generate.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
        yield


def ensure_synthetic(
    root: Path, seed: int, n_train: int, n_test_good: int, n_per_defect: int, size: int, difficulty: str = "easy"
) -> Path:
    """Generate every synthetic category of ``difficulty`` unless the same generation is already there.

    The categories go to :func:`synthetic_folder` ``(root, difficulty)``. Each is written to a fresh
    hidden folder next to it and renamed into place only when complete, so an interrupted generation
    leaves nothing that looks like a category. Generation holds a lock on that folder: concurrent jobs
    wait, then find the complete set. An earlier generation with other parameters is replaced (jobs
    that need different parameters need different roots); a folder this generator did not write (no
    stamp) is never deleted.

    Returns:
        The folder holding the categories.
    Raises:
        DataError: a category folder holds files but no stamp (user data), naming it.
        ValueError: an unknown ``difficulty``.
    """
    folder = synthetic_folder(root, difficulty)
    params = {
        "version": GENERATOR_VERSION,
        "seed": seed,
        "n_train": n_train,
        "n_test_good": n_test_good,
        "n_per_defect": n_per_defect,
        "size": size,
        "difficulty": difficulty,
        "strength": asdict(DIFFICULTIES[difficulty]),
    }

    def todo() -> list[str]:
        return [category for category in SYNTHETIC_CATEGORIES if _stamp(folder / category) != params]

    missing = todo()
    for category in missing:
        _check_ours(folder / category)
    if not missing:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with _exclusive(folder):
        # Under the lock, hidden work folders can only be left over from a generation that was killed.
        for leftover in [*folder.glob(".*.partial-*"), *folder.glob(".*.stale-*")]:
            shutil.rmtree(leftover, ignore_errors=True)
        for category in tqdm(todo(), desc=f"generate synthetic data in {folder}", leave=False):
            _check_ours(folder / category)
            partial = Path(tempfile.mkdtemp(dir=folder, prefix=f".{category}.partial-"))
            try:
                generate_category(partial, category, seed, n_train, n_test_good, n_per_defect, size, difficulty)
                (partial / STAMP).write_text(json.dumps(params))
                install_folder(partial, folder / category)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
    return folder


@dataclass
class SyntheticConfig(DataConfig):
    """The embedded dataset, generated under ``root`` on first use.

    Attributes:
        difficulty: ``easy`` (the default) or ``hard`` (smaller, lower-contrast defects, kept in ``root/hard``).
    """

    name: str = "synthetic"
    root: str = "data/synthetic"
    seed: int = 0
    n_train: int = 60
    n_test_good: int = 16
    n_per_defect: int = 6
    source_size: int = 256
    difficulty: str = "easy"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.difficulty not in DIFFICULTIES:
            raise ValueError(f"data.difficulty={self.difficulty!r} is unknown; choices: {', '.join(DIFFICULTIES)}")
        for key in ("n_train", "n_test_good", "n_per_defect"):
            if getattr(self, key) < 1:
                raise ValueError(f"data.{key}={getattr(self, key)} must be ≥ 1")
        if self.source_size < 32:
            raise ValueError(f"data.source_size={self.source_size} must be ≥ 32")


@register_dataset("synthetic", SyntheticConfig)
class Synthetic(Dataset):
    """``data=synthetic``: the four generated categories (:data:`SYNTHETIC_CATEGORIES`)."""

    def categories(self, cfg: SyntheticConfig) -> list[str]:
        """The requested categories; an unknown one is refused with the choices."""
        wanted = self.requested(cfg, SYNTHETIC_CATEGORIES)
        bad = [c for c in wanted if c not in SYNTHETIC_CATEGORIES]
        if bad:
            choices = ", ".join(SYNTHETIC_CATEGORIES)
            raise ConfigError(f"category={bad[0]!r} is not a synthetic category; choices: {choices}")
        return wanted

    def datamodule(self, cfg: SyntheticConfig, category: str) -> DataModule:
        """Generate the categories if needed (:func:`ensure_synthetic`), then load ``category``."""
        root = ensure_synthetic(
            Path(cfg.root), cfg.seed, cfg.n_train, cfg.n_test_good, cfg.n_per_defect, cfg.source_size, cfg.difficulty
        )
        train, test = mvtec_records(root, category)
        return DataModule.from_records(
            train, test, cfg.image_size, cfg.batch_size, cfg.num_workers, cfg.skip_unreadable, f"{cfg.name}/{category}"
        )
