"""Tiling (``data.tile_size``): the grid rule, exact stitching, labels of tiles, a model predicting whole images tile
by tile, and a tiny run that trains on tiles and is evaluated on whole-image maps."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from anomalib_lite.configs import CONFIG_DIR
from anomalib_lite.data import DataModule, ImageRecord, ImageSet, ValidationSplit, build_datamodule
from anomalib_lite.data.tiling import Tiling
from anomalib_lite.engine.checkpoint import load_checkpoint
from anomalib_lite.errors import ConfigError
from anomalib_lite.metrics import collect_predictions
from anomalib_lite.models.backbones import BackboneConfig
from anomalib_lite.models.base import AnomalyModel, AnomalyOutput
from anomalib_lite.models.hfr import HFRConfig
from anomalib_lite.pipeline.config import validate
from anomalib_lite.pipeline.evaluation import evaluate_category
from anomalib_lite.pipeline.inference import export_checkpoint, load_scorer, load_trained
from anomalib_lite.pipeline.tiling import TiledModel
from anomalib_lite.pipeline.training import run_config, train_run

from conftest import write_mvtec_category

GRIDS = [(64, 32, 0), (64, 32, 8), (100, 32, 0), (100, 32, 9), (96, 32, 0), (64, 64, 0), (257, 64, 16), (50, 33, 32)]


def _naive_count(side: int, tile: int, overlap: int) -> int:
    """The fewest tiles, placed evenly from 0 to side - tile, whose neighbours overlap by at least ``overlap``."""
    for n in range(1, side + 1):
        starts = [0] if n == 1 else [round(i * (side - tile) / (n - 1)) for i in range(n)]
        if starts[-1] + tile == side and all(a + tile - b >= overlap for a, b in zip(starts, starts[1:])):
            return n
    raise AssertionError("no grid")


@pytest.mark.parametrize(("side", "tile", "overlap"), GRIDS)
def test_the_grid_is_the_fewest_evenly_placed_tiles_with_the_overlap(side, tile, overlap):
    positions = Tiling(side, tile, overlap).positions
    assert len(positions) == _naive_count(side, tile, overlap)
    assert positions[0] == 0 and positions[-1] == side - tile
    assert all(a + tile - b >= overlap for a, b in zip(positions, positions[1:]))


@pytest.mark.parametrize(("side", "tile", "overlap"), GRIDS)
def test_stitching_the_tiles_of_a_map_gives_it_back_exactly(side, tile, overlap):
    tiling = Tiling(side, tile, overlap)
    known = torch.randn(3, 2, side, side, generator=torch.Generator().manual_seed(side + tile + overlap))
    tiles = tiling.cut(known)
    assert tiles.shape == (3 * tiling.per_image, 2, tile, tile)
    assert torch.equal(tiling.stitch(tiles), known)
    assert torch.equal(tiling.stitch(tiling.cut(known[:, 0])), known[:, 0])  # B×S×S maps too


@pytest.mark.parametrize(("side", "tile", "overlap"), GRIDS)
def test_each_pixel_comes_from_the_tile_with_the_nearest_centre(side, tile, overlap):
    """Tiles filled with their own number, stitched: each pixel holds the number of the tile a naive loop finds
    nearest (per axis, pixel centres against tile centres, the first of equal distances)."""
    tiling = Tiling(side, tile, overlap)
    positions, n = tiling.positions, len(tiling.positions)
    tiles = torch.arange(2 * n * n, dtype=torch.float32)[:, None, None].expand(-1, tile, tile)
    stitched = tiling.stitch(tiles.contiguous())

    def nearest(pixel: int) -> int:
        distances = [abs(pixel + 0.5 - (p + tile / 2)) for p in positions]
        return distances.index(min(distances))

    owner = [nearest(pixel) for pixel in range(side)]
    for image in range(2):
        expected = [[image * n * n + owner[y] * n + owner[x] for x in range(side)] for y in range(side)]
        assert stitched[image].tolist() == expected
    scores = torch.rand(2 * n * n, generator=torch.Generator().manual_seed(0))
    assert tiling.image_scores(scores).tolist() == [max(scores[i * n * n : (i + 1) * n * n].tolist()) for i in (0, 1)]


@pytest.mark.parametrize(
    ("option", "values"), [("tile_size", (64, 0)), ("tile_overlap", (32, 32)), ("tile_size", (16, 0))]
)
def test_an_impossible_grid_is_refused_naming_the_option(option, values):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        overrides = [
            "data=mvtec",
            "data.image_size=48",
            f"data.tile_size={values[0]}",
            f"data.tile_overlap={values[1]}",
        ]
        cfg = compose("train", overrides=overrides)
    with pytest.raises(ConfigError, match=rf"data\.{option}="):
        validate(cfg)
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=["data=mvtec", "data.tile_overlap=8"])
    with pytest.raises(ConfigError, match=r"data\.tile_overlap=8 needs data\.tile_size"):
        validate(cfg)


@pytest.mark.parametrize(("model", "side", "tile"), [("utad", 512, 256), ("igd", 512, 256), ("msfi", 768, 384)])
def test_model_configs_take_the_tile_side_as_their_input_side(model, side, tile):
    whole = [f"model={model}", "data=mvtec", f"data.image_size={side}"]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        tiled, whole = compose("train", overrides=[*whole, f"data.tile_size={tile}"]), compose("train", overrides=whole)
    assert (validate(tiled).model.image_size, validate(whole).model.image_size) == (tile, side)


def _image_set(labels: list[int], masks: np.ndarray, valid: list[bool]) -> ImageSet:
    images = np.random.default_rng(0).integers(0, 256, (len(labels), 64, 64, 3), dtype=np.uint8)
    records = [
        ImageRecord(Path(f"{i}.png"), label, None, "spot" if label else "good") for i, label in enumerate(labels)
    ]
    return ImageSet(records, torch.from_numpy(images), torch.from_numpy(masks), torch.tensor(valid))


def test_a_tile_is_anomalous_where_its_mask_is_and_validation_splits_are_tiled():
    tiling = Tiling(64, 32)  # 2×2 tiles
    masks = np.zeros((3, 64, 64), bool)
    masks[1, 5:10, 40:45] = True  # image 1: in its top-right tile only
    images = _image_set([0, 1, 1], masks, [True, True, False])  # image 2: anomalous, mask unknown
    tiles = images.tiles(tiling)
    assert [(r.path.name, r.label, r.defect) for r in tiles.records[4:8]] == [
        ("1.png", 0, "good"),
        ("1.png", 1, "spot"),
        ("1.png", 0, "good"),
        ("1.png", 0, "good"),
    ]
    assert [r.label for r in tiles.records[:4]] == [0] * 4 and [r.label for r in tiles.records[8:]] == [1] * 4
    assert torch.equal(tiles.images[5], images.images[1, 0:32, 32:64])
    assert torch.equal(tiles.masks[5], images.masks[1, 0:32, 32:64])

    datamodule = DataModule(images.subset([0, 0, 0]), images, batch_size=8)
    assert datamodule.batch_size == 3  # clamped to the 3 training images
    datamodule.use_tiles(tiling)
    assert datamodule.train_set.images.shape == (12, 32, 32, 3) and datamodule.test_set.images.shape[1] == 64
    assert datamodule.batch_size == 8  # as asked: the 12 tiles hold it
    datamodule.split_validation(ValidationSplit(fraction=0.5, seed=0))
    assert datamodule.validation_set.images.shape[1:3] == (32, 32) and datamodule.test_set.images.shape[1] == 64


class PixelModel(AnomalyModel):
    """A model whose map is a function of each pixel alone (its squared channel mean) and whose score is the map's
    maximum: tile by tile, it must give what it gives on the whole image."""

    def predict(self, image: torch.Tensor) -> AnomalyOutput:
        anomaly_map = image.mean(1) ** 2
        return AnomalyOutput(anomaly_map, anomaly_map.flatten(1).amax(1))

    def intermediates(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"input": image.sigmoid()}


@pytest.mark.parametrize("chunk", [None, 3])
def test_a_tiled_model_predicts_whole_images_as_a_pixelwise_model_does(chunk):
    images = torch.randn(4, 3, 100, 100, generator=torch.Generator().manual_seed(1))
    whole = PixelModel().predict(images)
    tiled = TiledModel(PixelModel(), Tiling(100, 32, 9), chunk)
    out = tiled.predict(images)
    assert torch.equal(out.anomaly_map, whole.anomaly_map) and torch.equal(out.score, whole.score)
    assert torch.equal(tiled.intermediates(images)["input"], images.sigmoid())


@pytest.mark.slow
def test_a_tiny_run_trains_on_tiles_and_is_evaluated_on_whole_maps(tmp_path):
    root = tmp_path / "mvtec"
    for sub in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        (root / "widget" / sub).mkdir(parents=True)
    write_mvtec_category(root, "widget", np.random.default_rng(0))
    data = {"name": "mvtec", "root": str(root), "category": "widget", "image_size": 64, "batch_size": 4}
    data |= {"tile_size": 32, "tile_overlap": 8}
    config = {
        "task_name": "hfr_tiled",
        "seed": 0,
        "category": "widget",
        "model": dataclasses.asdict(HFRConfig(epochs=1, conv_blocks=1)),
        "backbone": dataclasses.asdict(BackboneConfig(name="resnet18", weights="none")),
        "data": data,
        "trainer": {"device": "cpu", "progress": False},
        "eval": {"n_maps": 2, "curves": False},
    }
    run, stored = run_config(OmegaConf.create(config))
    metrics = train_run(run, stored, tmp_path / "run")["categories"]["widget"]
    assert (metrics["n_images"], metrics["n_pixel_images"]) == (6, 6)  # whole test images, not tiles
    assert len((tmp_path / "run" / "scores" / "widget.csv").read_text().splitlines()) == 7

    checkpoint = tmp_path / "run" / "checkpoints" / "widget" / "last.pt"
    assert load_checkpoint(checkpoint)["config"]["data"]["tile_size"] == 32
    trained, model = load_trained(checkpoint)
    datamodule = build_datamodule(trained.data, "widget")
    per_image = math.ceil((64 - 8) / (32 - 8)) ** 2
    assert datamodule.train_set.images.shape == (6 * per_image, 32, 32, 3)
    evaluation, pred = evaluate_category(model, datamodule, torch.device("cpu"), trained.eval, progress=False)
    assert pred.maps.shape == (6, 64, 64) and pred.masks.shape == (6, 64, 64)
    assert evaluation.metrics["pixel_auroc"] == metrics["pixel_auroc"]
    tiles = collect_predictions(model, datamodule.test_loader(), torch.device("cpu"), progress=False)  # untiled
    assert not torch.equal(tiles.maps, pred.maps)  # the whole-image maps are not the model run on whole images

    scorer = load_scorer(checkpoint, torch.device("cpu"))
    out = scorer.score(datamodule.test_set.images[:2].numpy())
    assert scorer.size == 64 and out.anomaly_map.shape == (2, 64, 64)
    assert torch.allclose(out.score, pred.scores[:2])
    exported = load_scorer(export_checkpoint(checkpoint, "torchscript", tmp_path / "export"), torch.device("cpu"))
    again = exported.score(datamodule.test_set.images[:2].numpy())  # the exported file takes whole images too
    assert exported.size == 64 and torch.allclose(torch.as_tensor(again.anomaly_map), out.anomaly_map, atol=1e-5)
