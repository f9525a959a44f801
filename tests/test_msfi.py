"""MSFI: students fed by the teacher, independent blocks, pruning, the held-out validation split, shapes."""

from __future__ import annotations

import json

import numpy as np
import torch

from anomalib_lite.data.datamodule import DataModule, ImageRecord, ImageSet
from anomalib_lite.models import BackboneConfig
from anomalib_lite.models.msfi.model import MSFI, MSFIConfig, WeightSearchConfig, block_map

from conftest import TINY, run_entry


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
    naive = torch.zeros(2, 3, 4)
    for n in range(2):
        for y in range(3):
            for x in range(4):
                u, v = teacher[n, :, y, x], student[n, :, y, x]
                naive[n, y, x] = 0.25 * ((u / u.norm() - v / v.norm()) ** 2).sum()
    torch.testing.assert_close(block_map(teacher, student), naive)


def test_students_receive_teacher_features_not_student_outputs():
    model = _model()
    seen = _record_inputs(model)
    x = torch.randn(2, 3, 64, 64)
    model.block_maps(x)
    for s, scale in enumerate(model.cfg.scales):
        resized = x if scale == 64 else torch.nn.functional.interpolate(x, size=scale, mode="bilinear")
        teacher = model.teacher(resized, model.inputs)
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
    model = _model(weight_search=WeightSearchConfig(enabled=True, keep_k=2))
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
    dm.split_validation(0.3, seed=0)
    held = {str(r.path) for r in dm.validation_set.records}
    kept = {str(r.path) for r in dm.test_set.records}
    assert not held & kept and len(held | kept) == 30
    assert sum(r.label == 0 for r in dm.validation_set.records) == 3  # 30 % of 10 normal
    assert all(dm.validation_set.mask_valid)  # anomalous ones are drawn among those with masks
    assert sum(r.label == 1 for r in dm.validation_set.records) == 3  # 30 % of the 10 with masks
    again = DataModule(test, test, batch_size=4, name="toy")
    again.split_validation(0.3, seed=0)
    assert {str(r.path) for r in again.validation_set.records} == held


def test_weight_search_end_to_end_records_weights_and_reports_on_the_reduced_test_set(tmp_path):
    run = tmp_path / "run"
    common = [*TINY, "category=brick", f"data.root={tmp_path / 'data'}", "model=msfi", "backbone=resnet18",
              "backbone.weights=none", "model.scales=[32,64]"]  # fmt: skip
    result = run_entry("train.py", *common, "model.weight_search.enabled=true", "model.weight_search.keep_k=2",
                       f"hydra.run.dir={run}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())["categories"]["brick"]
    # TINY: 4 normal + 8 anomalous test images; 30 % of each held out (1 and 2).
    assert metrics["n_images"] == 12 - 3
    state = torch.load(run / "checkpoints" / "brick" / "last.pt", weights_only=True)
    weights, logits = state["model"]["block_weights"].numpy(), state["model"]["search_logits"].double().numpy()
    np.testing.assert_allclose(weights, np.exp(logits) / np.exp(logits).sum(), rtol=1e-6)
    assert np.ptp(weights) > 1e-3  # the search moved them away from equal weights
    assert set(np.flatnonzero(state["model"]["kept"].numpy())) == set(np.argsort(weights)[-2:])
    result = run_entry("eval.py", f"ckpt_path={run / 'checkpoints' / 'brick' / 'last.pt'}", "progress=false",
                       f"data.root={tmp_path / 'data'}", "+model.weight_search.apply=false",
                       f"hydra.run.dir={tmp_path / 'before'}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    before = json.loads((tmp_path / "before" / "metrics.json").read_text())["categories"]["brick"]
    assert before["n_images"] == metrics["n_images"]
