"""MSFI: students fed by the teacher, independent blocks, pruning, the held-out validation split, shapes, the image
pyramid, three or four levels, the paper's weight search."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image
from sklearn.metrics import log_loss

from anomalib_lite.configs import CONFIG_DIR
from anomalib_lite.data.datamodule import DataModule, ImageRecord, ImageSet, ValidationSplit
from anomalib_lite.data.images import to_model_input
from anomalib_lite.errors import ConfigError, DataError, WeightsError
from anomalib_lite.models import BackboneConfig, backbones
from anomalib_lite.models.backbones import Backbone
from anomalib_lite.models.msfi.config import MSFIConfig, WeightSearchConfig
from anomalib_lite.models.msfi.model import MSFI
from anomalib_lite.models.msfi.networks import antialiased_bilinear_weights, block_map, pyramid_input
from anomalib_lite.pipeline.config import validate

from conftest import TINY, per_position, run_entry


def _model(**options) -> MSFI:
    torch.manual_seed(0)
    return MSFI(MSFIConfig(**{"scales": [32, 64], **options}), BackboneConfig(name="resnet18", weights="none")).eval()


def _record_inputs(model: MSFI) -> dict[tuple[int, int], torch.Tensor]:
    seen = {}
    for s, group in enumerate(model.students):
        for lv, block in enumerate(group):
            block.register_forward_hook(lambda m, args, out, key=(s, lv): seen.__setitem__(key, args[0].detach()))
    return seen


def test_block_map_is_a_quarter_of_the_squared_distance_of_unit_feature_vectors():
    teacher, student = torch.randn(2, 5, 3, 4), torch.randn(2, 5, 3, 4)
    naive = per_position(teacher, student, lambda u, v: 0.25 * ((u / u.norm() - v / v.norm()) ** 2).sum())
    torch.testing.assert_close(block_map(teacher, student), naive)


def test_students_receive_teacher_features_not_student_outputs():
    model = _model()
    seen = _record_inputs(model)
    x = torch.randn(2, 3, 64, 64)
    model.block_maps(x)
    for s, scale in enumerate(model.cfg.scales):
        teacher = model.teacher(pyramid_input(x, scale), model.inputs)  # the pyramid itself: tested below
        for lv in range(3):
            assert torch.equal(seen[(s, lv)], teacher[lv]), (scale, lv)
    # The STFPM baseline chains them instead: each block is fed by the previous student block.
    chained = _model(chained=True, scales=[64])
    seen = _record_inputs(chained)
    outputs = {}
    for lv, block in enumerate(chained.students[0]):
        block.register_forward_hook(lambda m, a, out, lv=lv: outputs.__setitem__(lv, out.detach()))
    chained.block_maps(x)
    assert torch.equal(seen[(0, 1)], outputs[0]) and torch.equal(seen[(0, 2)], outputs[1])


def test_dropping_or_changing_a_block_changes_nothing_else():
    model = _model()
    x = torch.randn(2, 3, 64, 64)
    full = model.block_maps(x)
    some = model.block_maps(x, only=[1, 5])
    assert set(some) == {1, 5} and all(torch.equal(some[i], full[i]) for i in some)
    with torch.no_grad():
        for p in model.students[0][1].parameters():
            p.add_(1.0)
    changed = model.block_maps(x)
    assert not torch.equal(changed[1], full[1])
    assert all(torch.equal(changed[i], full[i]) for i in full if i != 1)


def test_pruned_blocks_are_not_run_and_maps_have_the_input_size():
    model = _model(scales=[32, 64, 96], weight_search=WeightSearchConfig(enabled=True, keep_k=2))
    calls = {}
    for s, group in enumerate(model.students):
        for lv, block in enumerate(group):
            block.register_forward_hook(lambda *a, key=(s, lv): calls.__setitem__(key, calls.get(key, 0) + 1))
    model.block_weights.copy_(torch.tensor([0.3, 0.05, 0.05, 0.05, 0.3, 0.05, 0.1, 0.05, 0.05]))
    assert model.active_blocks() == [0, 4]  # 32px/layer1 and 64px/layer2; nothing at 96px
    out = model.predict(torch.randn(2, 3, 64, 64))
    assert out.anomaly_map.shape == (2, 64, 64) and out.score.shape == (2,)
    assert set(calls) == {(0, 0), (1, 1)}


def test_weight_search_puts_the_largest_weight_on_the_block_that_finds_the_defects(monkeypatch):
    model = _model(weight_search=WeightSearchConfig(enabled=True, method="calibrated", keep_k=2))
    mask = torch.zeros(4, 1, 64, 64)
    mask[:, :, 10:30, 20:40] = 1
    noise = torch.rand(6, 4, 64, 64) * 0.5
    noise[3] = mask[:, 0] * 0.9 + 0.05  # block 3 (64px/layer1) sees exactly the defects
    monkeypatch.setattr(model, "block_maps", lambda image: dict(enumerate(noise)))
    search = model.stages()[-1]
    assert search.name == "weight_search" and search.split == "validation"
    optimizer = search.optimizer(search.parameters)
    batch = {"image": torch.zeros(4, 3, 64, 64), "mask": mask, "mask_valid": torch.ones(4, dtype=torch.bool)}
    for _ in range(100):
        optimizer.zero_grad()
        search.step(batch)["loss"].backward()
        optimizer.step()
    search.on_epoch_end(1)
    weights = model.block_weights.numpy()
    assert weights.argmax() == 3
    logits = model.search_logits.detach().double().numpy()
    np.testing.assert_allclose(weights, np.exp(logits) / np.exp(logits).sum(), rtol=1e-6)  # the searched weights
    assert set(np.flatnonzero(model.kept.numpy())) == set(np.argsort(weights)[-2:])  # the two largest


def test_the_validation_split_is_removed_from_the_test_set():
    records = [ImageRecord(f"img{i}.png", int(i >= 10), None, "good" if i < 10 else "spot") for i in range(30)]
    images = torch.zeros(30, 8, 8, 3, dtype=torch.uint8)
    masks = torch.zeros(30, 8, 8, dtype=torch.bool)
    valid = torch.tensor([i < 10 or i % 2 == 0 for i in range(30)])  # odd anomalous images have no mask
    test = ImageSet(records, images, masks, valid)
    dm = DataModule(test, test, batch_size=4, name="toy")
    dm.split_validation(ValidationSplit(0.3, seed=0))
    held = {str(r.path) for r in dm.validation_set.records}
    kept = {str(r.path) for r in dm.test_set.records}
    assert not held & kept and len(held | kept) == 30
    assert sum(r.label == 0 for r in dm.validation_set.records) == 3  # 30 % of 10 normal
    assert all(dm.validation_set.mask_valid)  # anomalous ones are drawn among those with masks
    assert sum(r.label == 1 for r in dm.validation_set.records) == 3  # 30 % of the 10 with masks
    again = DataModule(test, test, batch_size=4, name="toy")
    again.split_validation(ValidationSplit(0.3, seed=0))
    assert {str(r.path) for r in again.validation_set.records} == held


def tiny_msfi(tmp_path) -> list[str]:
    """train.py overrides of a tiny MSFI run on the synthetic brick category (a random ResNet-18, 32/64 px)."""
    return [
        *TINY,
        "category=brick",
        f"data.root={tmp_path / 'data'}",
        "model=msfi",
        "backbone=resnet18",
        "backbone.weights=none",
        "model.scales=[32,64]",
    ]


def test_weight_search_end_to_end_records_weights_and_reports_on_the_reduced_test_set(tmp_path):
    run = tmp_path / "run"
    result = run_entry(
        "train.py",
        *tiny_msfi(tmp_path),
        "model.weight_search.enabled=true",
        "model.weight_search.keep_k=2",
        "model.weight_search.method=calibrated",
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())["categories"]["brick"]
    # TINY: 4 normal + 8 anomalous test images; 30 % of each held out (1 and 2).
    assert metrics["n_images"] == 12 - 3
    state = torch.load(run / "checkpoints" / "brick" / "last.pt", weights_only=True)
    weights, logits = state["model"]["block_weights"].numpy(), state["model"]["search_logits"].double().numpy()
    np.testing.assert_allclose(weights, np.exp(logits) / np.exp(logits).sum(), rtol=1e-6)
    assert np.ptp(weights) > 1e-3  # the search moved them away from equal weights
    assert set(np.flatnonzero(state["model"]["kept"].numpy())) == set(np.argsort(weights)[-2:])
    result = run_entry(
        "eval.py",
        f"ckpt_path={run / 'checkpoints' / 'brick' / 'last.pt'}",
        "progress=false",
        f"data.root={tmp_path / 'data'}",
        "+model.weight_search.apply=false",
        f"hydra.run.dir={tmp_path / 'before'}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    before = json.loads((tmp_path / "before" / "metrics.json").read_text())["categories"]["brick"]
    assert before["n_images"] == metrics["n_images"]


def _decode(image: Image.Image, side: int) -> torch.Tensor:
    """The reference decode: PIL's bilinear resize of ``image`` to ``side`` (PIL averages the covered pixels
    when it reduces), normalised as the data layer does: ``1×3×side×side``."""
    return to_model_input(torch.from_numpy(np.array(image.resize((side, side), Image.Resampling.BILINEAR))))[None]


def test_pyramid_inputs_are_the_largest_decode_and_its_antialiased_downsamples(tmp_path):
    path = tmp_path / "fine.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (600, 600, 3), dtype=np.uint8)).save(path)
    decoded = ImageSet.load([ImageRecord(path, 0)], 384)[0]["image"][None]  # the data layer at the largest scale
    model = _model(scales=[128, 256, 384], image_size=384)
    seen = {}
    model.teacher.register_forward_pre_hook(lambda m, args: seen.__setitem__(args[0].shape[-1], args[0]))
    model.block_maps(decoded)
    original = Image.open(path).convert("RGB")
    torch.testing.assert_close(seen[384], _decode(original, 384), rtol=0, atol=0)  # the 384 decode itself
    largest = Image.fromarray(np.array(original.resize((384, 384), Image.Resampling.BILINEAR)))
    for side in (128, 256):  # PIL's antialiased reduction of that decode, up to its uint8 rounding
        torch.testing.assert_close(seen[side], _decode(largest, side), rtol=0, atol=0.025)
    # What the test tells apart: a 256 decode upsampled to 384, and downsamples without antialiasing.
    upsampled = F.interpolate(_decode(original, 256), size=384, mode="bilinear")
    assert (upsampled - seen[384]).abs().max() > 0.5
    assert (F.interpolate(seen[384], size=128, mode="bilinear") - _decode(largest, 128)).abs().max() > 0.5


@pytest.mark.parametrize("size_in, size_out", [(384, 128), (384, 256), (384, 100), (96, 64), (64, 48), (384, 383)])
def test_pyramid_downsample_is_torchs_antialiased_bilinear_as_two_matrix_products(size_in, size_out):
    # The matrices (exportable to ONNX) against torch's own antialiased kernel (which is not).
    x = torch.rand(2, 3, size_in, size_in, generator=torch.Generator().manual_seed(size_out))
    reference = F.interpolate(x, size=(size_out, size_out), mode="bilinear", antialias=True)
    torch.testing.assert_close(pyramid_input(x, size_out), reference, rtol=0, atol=1e-4)
    weights = antialiased_bilinear_weights(size_in, size_out)
    assert weights.shape == (size_out, size_in) and np.allclose(weights.sum(axis=1), 1.0)


def test_msfi_refuses_to_upsample_its_largest_scale_and_its_recipes_decode_at_it():
    with pytest.raises(ValueError, match=r"data.image_size=256.*data.image_size=384 eval.map_size=256"):
        MSFIConfig(scales=[128, 256, 384], image_size=256)
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        for data in ("mvtec", "synthetic"):
            run = validate(compose("train", overrides=["model=msfi", f"data={data}"]))
            assert (run.data.image_size, run.eval.map_size, run.model.image_size) == (384, 256, 384), data
        with pytest.raises(ConfigError, match="upsampled decode"):
            validate(compose("train", overrides=["model=msfi", "data=mvtec", "data.image_size=256"]))
    GlobalHydra.instance().clear()


def test_three_levels_by_default_four_one_option_away():
    x = torch.randn(1, 3, 64, 64)
    three, four = _model(scales=[64]), _model(scales=[64], levels=4)
    assert three.teacher.layers == ["layer1", "layer2", "layer3"] and len(three.block_names) == 3
    assert four.teacher.layers == ["layer1", "layer2", "layer3", "layer4"] and len(four.block_names) == 4
    seen = _record_inputs(four)
    maps = four.block_maps(x)
    assert set(maps) == {0, 1, 2, 3} and all(m.shape == (1, 64, 64) for m in maps.values())
    # the fourth block has layer4's structure and imitates layer4 from the teacher's layer3
    assert [type(m) for m in four.students[0][3][0].modules()] == [type(m) for m in four.teacher.steps[4].modules()]
    torch.testing.assert_close(seen[(0, 3)], four.teacher(x, ["layer3"])[0])
    lite = MSFI(MSFIConfig(scales=[64], levels=4), BackboneConfig(name="tf_efficientnet_lite0", weights="none"))
    assert lite.teacher.strides == [4, 8, 16, 32]
    with pytest.raises(ConfigError, match="model.levels=4"):
        MSFI(MSFIConfig(levels=4), BackboneConfig(name="resnet18", layers=["layer1", "layer2"], weights="none"))
    with pytest.raises(ConfigError, match="4 feature levels of backbone vgg19"):
        MSFI(MSFIConfig(levels=4), BackboneConfig(name="vgg19", weights="none"))
    with pytest.raises(ValueError, match="model.levels=5"):
        MSFIConfig(levels=5)


def test_resnet50_is_a_backbone_with_the_usual_offline_rule(tmp_path, monkeypatch, caplog):
    assert Backbone("resnet50", weights="none").channels == [256, 512, 1024]
    missing = tmp_path / "cache" / "resnet50-11ad3fa6.pth"
    unreachable = (tmp_path / "nowhere" / missing.name).as_uri()
    monkeypatch.setattr(backbones, "torchvision_weights_path", lambda name: (unreachable, missing))
    with pytest.raises(WeightsError, match=r"resnet50-11ad3fa6\.pth[\s\S]*backbone\.name=tf_efficientnet_lite0"):
        Backbone("resnet50")
    with caplog.at_level(logging.WARNING):
        chosen = backbones.cached_or_offline(BackboneConfig(name="resnet50"), "tf_efficientnet_lite0")
    assert chosen.name == "tf_efficientnet_lite0" and "prepare_data.py weights --name resnet50" in caplog.text
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        assert validate(compose("train", overrides=["model=msfi", "backbone=resnet50"])).backbone.name == "resnet50"
    GlobalHydra.instance().clear()


def _defect_set(kinds: int, per_kind: int, normal: int) -> DataModule:
    records = [ImageRecord(f"good/{i}.png", 0) for i in range(normal)]
    records += [
        ImageRecord(f"d{k}/{i}.png", 1, f"gt{k}/{i}.png", f"d{k}") for k in range(kinds) for i in range(per_kind)
    ]
    n = len(records)
    test = ImageSet(
        records,
        torch.zeros(n, 8, 8, 3, dtype=torch.uint8),
        torch.zeros(n, 8, 8, dtype=torch.bool),
        torch.ones(n, dtype=torch.bool),
    )
    return DataModule(test, test, batch_size=4, name="toy")


@pytest.mark.parametrize("coverage, n_kinds", [(0.25, 1), (0.5, 2), (0.75, 3), (1.0, 4)])
def test_paper_split_holds_out_ten_percent_of_each_chosen_defect_kind(coverage, n_kinds):
    dm = _defect_set(kinds=4, per_kind=20, normal=10)
    everything = {str(r.path) for r in dm.test_set.records}
    search = WeightSearchConfig(enabled=True, coverage=coverage)  # method=paper, val_fraction 10 %
    model = _model(weight_search=search)
    dm.split_validation(model.validation_split())
    held = dm.validation_set.records
    kinds = {r.defect for r in held}
    assert len(kinds) == n_kinds and all(r.label == 1 for r in held)  # anomalous images only
    assert all(sum(r.defect == k for r in held) == 2 for k in kinds)  # 10 % of each chosen kind's 20
    kept = {str(r.path) for r in dm.test_set.records}
    assert not kept & {str(r.path) for r in held} and kept | {str(r.path) for r in held} == everything


def test_paper_split_leaves_every_defect_kind_in_the_test_set():
    dm = _defect_set(kinds=3, per_kind=2, normal=2)
    dm.split_validation(ValidationSplit(0.1, seed=0, by_defect=True))
    assert len(dm.validation_set) == 3 and {r.defect for r in dm.test_set.records} == {"good", "d0", "d1", "d2"}
    with pytest.raises(DataError, match="validation split is empty"):
        _defect_set(kinds=2, per_kind=1, normal=2).split_validation(ValidationSplit(0.1, seed=0, by_defect=True))


def _cross_entropy(maps: np.ndarray, gt: np.ndarray, logits: np.ndarray) -> float:
    """sklearn's log loss of ``φ = Σ softmax(logits)_i maps_i`` against ``gt`` (the paper's eq. 8-10)."""
    weights = np.exp(logits) / np.exp(logits).sum()
    phi = np.tensordot(weights, maps, axes=1)
    return log_loss(gt.ravel(), phi.ravel(), labels=[0, 1])


def test_paper_search_is_plain_gradient_descent_on_the_pixel_cross_entropy(monkeypatch):
    model = _model(weight_search=WeightSearchConfig(enabled=True, lr=5.0))
    gen = torch.Generator().manual_seed(0)
    mask = torch.zeros(3, 1, 64, 64)
    mask[:, :, 8:24, 30:50] = 1
    maps = torch.rand(6, 3, 64, 64, generator=gen, dtype=torch.float64).float() * 0.3
    maps[2] = (mask[:, 0] * 0.7 + 0.05).float()  # block 2 finds the defects
    monkeypatch.setattr(model, "block_maps", lambda image: dict(enumerate(maps)))
    search = model.stages()[-1]
    assert search.parameters == [model.search_logits]
    optimizer = search.optimizer(search.parameters)
    batch = {"image": torch.zeros(3, 3, 64, 64), "mask": mask, "mask_valid": torch.ones(3, dtype=torch.bool)}
    gt, m = mask[:, 0].numpy().astype(np.float64), maps.numpy().astype(np.float64)
    before = model.search_logits.detach().double().numpy().copy()
    assert search.step(batch)["loss"].item() == pytest.approx(_cross_entropy(m, gt, before), rel=1e-5)
    # Each step is ω − ξ ∇L_val (no momentum, no adaptive scaling), the gradient by central differences of
    # the independent reference at the current ω.
    h = 1e-5
    logits = before
    for _ in range(2):
        numeric = np.array(
            [
                (_cross_entropy(m, gt, logits + h * e) - _cross_entropy(m, gt, logits - h * e)) / (2 * h)
                for e in np.eye(6)
            ]
        )
        optimizer.zero_grad()
        search.step(batch)["loss"].backward()
        optimizer.step()
        logits = logits - 5.0 * numeric
        np.testing.assert_allclose(model.search_logits.detach().double().numpy(), logits, atol=1e-5)
    for _ in range(50):
        optimizer.zero_grad()
        search.step(batch)["loss"].backward()
        optimizer.step()
    after = model.search_logits.detach().double().numpy()
    assert _cross_entropy(m, gt, after) < _cross_entropy(m, gt, before) - 0.01
    assert after.argmax() == 2


@pytest.mark.slow
def test_paper_weight_search_end_to_end_reports_on_the_test_set_without_the_held_out_images(tmp_path):
    run = tmp_path / "run"
    result = run_entry(
        "train.py",
        *tiny_msfi(tmp_path),
        "eval.map_size=null",
        "model.weight_search.enabled=true",
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())["categories"]["brick"]
    # TINY: 4 normal + 2 images of each of the 4 defect kinds; the paper's split holds out 1 of each kind.
    assert (metrics["n_images"], metrics["n_anomalous"]) == (12 - 4, 8 - 4)
    state = torch.load(run / "checkpoints" / "brick" / "last.pt", weights_only=True)
    assert np.ptp(state["model"]["block_weights"].numpy()) > 1e-4  # the search moved the weights
