"""The feature cache: training from cached frozen features equals training without it.

Equal, not close, at any thread count (``OMP_NUM_THREADS=1``, 2, …): the cache runs each frozen network on calls
of the same shapes as an uncached training step (the training batch, padded; or one step's inputs,
:func:`~anomalib_lite.engine.feature_cache.images_per_call`), so the same kernels sum in the same order and the
features, hence every loss and weight, are the same floats. A tolerance would have to cover a different call
shape, whose last-bit differences Adam amplifies to ~1e-6 in a few steps (IGD's local stage did, at one thread):
none is given. Only bf16 has a tolerance, stated below.
"""

from __future__ import annotations

import logging

import pytest
import torch

from anomalib_lite.data import ImageSet
from anomalib_lite.engine.feature_cache import FeatureCache, images_per_call
from anomalib_lite.engine.trainer import Engine, TrainerConfig
from anomalib_lite.errors import ConfigError
from anomalib_lite.models import BackboneConfig, build_model
from anomalib_lite.models.hfr.config import HFRConfig
from anomalib_lite.models.igd.config import IGDConfig
from anomalib_lite.models.msfi.config import MSFIConfig
from anomalib_lite.models.utad.config import UTADConfig

from conftest import tiny_datamodule


def hfr():
    torch.manual_seed(0)
    return build_model(HFRConfig(epochs=2, conv_blocks=1), BackboneConfig("tf_efficientnet_lite0", weights="none"))


def msfi(chained: bool = False):
    torch.manual_seed(0)
    config = MSFIConfig(scales=[32, 48], epochs=2, chained=chained)
    return build_model(config, BackboneConfig("resnet18", weights="none"))


def assert_equal_weights(model, reference):
    """Every parameter and buffer of ``model`` equals ``reference``'s, to the bit (NaN never equal)."""
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def frozen_network(model):
    return model.encoder if hasattr(model, "encoder") else model.teacher


def train(model, datamodule, tmp_path, **options):
    """Fit ``model`` on CPU; return the loss terms of every step, whether the steps got cached features,
    and how many batches the frozen network saw."""
    losses, cached, calls = [], [], []
    step = model.training_step

    def recording_step(batch):
        cached.append("features" in batch)
        terms = step(batch)
        losses.append({name: value.item() for name, value in terms.items()})
        return terms

    model.training_step = recording_step
    frozen_network(model).register_forward_hook(lambda *_: calls.append(1))
    cfg = TrainerConfig(device="cpu", progress=False, **options)
    Engine(cfg, 3, tmp_path / f"{options.get('feature_cache')}.pt", {}).fit(model, datamodule)
    return losses, cached, len(calls)


@pytest.mark.parametrize(
    ("make", "options"),
    [(hfr, {}), (msfi, {}), (lambda: msfi(chained=True), {}), (msfi, {"channels_last": True})],
    ids=["hfr", "msfi", "msfi_chained", "msfi_channels_last"],
)
def test_cached_training_equals_uncached_in_fp32(tmp_path, make, options):
    datamodule = tiny_datamodule()
    plain, cached_model = make(), make()
    plain_losses, plain_cached, plain_calls = train(plain, datamodule, tmp_path, feature_cache="off", **options)
    losses, cached, calls = train(cached_model, datamodule, tmp_path, feature_cache="on", **options)
    steps = 2 * (10 // 4)  # 2 epochs, last partial batch dropped
    assert len(losses) == len(plain_losses) == steps
    assert not any(plain_cached) and all(cached)
    scales = len(getattr(cached_model.cfg, "scales", [1]))
    assert plain_calls == steps * scales and calls == (1 + 3) * scales  # probe + 3 batches of 4, per scale
    assert losses == plain_losses  # equal floats: see the module's docstring
    assert_equal_weights(cached_model, plain)


def test_bf16_cache_is_stored_in_bf16_and_trains_within_tolerance(tmp_path, caplog):
    datamodule = tiny_datamodule()
    plain, cached_model = hfr(), hfr()
    plain_losses, _, _ = train(plain, datamodule, tmp_path, feature_cache="off", precision="bf16")
    with caplog.at_level(logging.INFO, logger="anomalib_lite.engine.feature_cache"):
        losses, cached, _ = train(cached_model, datamodule, tmp_path, feature_cache="on", precision="bf16")
    assert all(cached) and "torch.bfloat16" in caplog.text
    # The stated bf16 tolerance: losses within 1e-3 relative, weights within 1e-3 (the two paths run
    # the same bf16 encoder on differently composed batches; on this CPU they agree exactly).
    for a, b in zip(losses, plain_losses):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)
    for (name, a), b in zip(cached_model.state_dict().items(), plain.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3, msg=name)


def test_cached_rows_keep_the_features_memory_format():
    # Features of a channels-last model are stored and delivered channels-last (no reorder per step).
    stored = torch.randn(6, 8, 4, 4).contiguous(memory_format=torch.channels_last)
    cache = FeatureCache({"map": stored, "vector": torch.randn(6, 3)}, torch.device("cpu"))
    rows = cache.lookup(torch.tensor([4, 1]))
    assert rows["map"].is_contiguous(memory_format=torch.channels_last) and rows["vector"].is_contiguous()
    assert torch.equal(rows["map"], stored[[4, 1]]) and torch.equal(rows["vector"], cache.tensors["vector"][[4, 1]])


class Flipping(ImageSet):
    """A training set with a random horizontal flip (a random transform)."""

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        if torch.rand(()) < 0.5:
            item["image"] = item["image"].flip(-1)
        return item


def test_random_transforms_turn_the_cache_off_or_are_refused(tmp_path, caplog):
    datamodule = tiny_datamodule()
    datamodule.train_set = Flipping(
        *(getattr(datamodule.train_set, k) for k in ("records", "images", "masks", "mask_valid"))
    )
    with caplog.at_level(logging.INFO, logger="anomalib_lite.engine.feature_cache"):
        _, cached, _ = train(hfr(), datamodule, tmp_path, feature_cache="auto", max_epochs=1)
    assert not any(cached) and "randomly transformed" in caplog.text
    with pytest.raises(ConfigError, match="feature_cache=on.*randomly transformed"):
        train(hfr(), datamodule, tmp_path, feature_cache="on", max_epochs=1)


def test_a_cache_over_budget_is_off_with_auto_and_refused_with_on(tmp_path, caplog):
    datamodule = tiny_datamodule()
    with caplog.at_level(logging.INFO, logger="anomalib_lite.engine.feature_cache"):
        _, cached, _ = train(hfr(), datamodule, tmp_path, feature_cache="auto", feature_cache_budget_gb=1e-6)
    assert not any(cached) and "more than the budget" in caplog.text
    with pytest.raises(ConfigError, match="more than the budget"):
        train(hfr(), datamodule, tmp_path, feature_cache="on", feature_cache_budget_gb=1e-6, max_epochs=1)


def test_a_resumed_cached_run_equals_an_uninterrupted_one(tmp_path):
    datamodule = tiny_datamodule()
    straight = hfr()
    train(straight, datamodule, tmp_path / "a", feature_cache="on")
    first = hfr()
    train(first, datamodule, tmp_path / "b", feature_cache="on", max_epochs=1)  # stops after epoch 1
    resumed = build_model(HFRConfig(epochs=2, conv_blocks=1), BackboneConfig("tf_efficientnet_lite0", weights="none"))
    _, cached, _ = train(resumed, datamodule, tmp_path / "b", feature_cache="on", resume=True)
    assert len(cached) == 10 // 4 and all(cached)  # the second epoch only, from a rebuilt cache
    assert_equal_weights(resumed, straight)


def igd(**config):
    torch.manual_seed(0)
    config = IGDConfig(image_size=64, width=8, hidden=32, latent=8, **config)
    return build_model(config, BackboneConfig("resnet18", weights="none"))


def utad():
    torch.manual_seed(0)
    config = UTADConfig(image_size=32, ie_epochs=1, ie_warmup_epochs=0, expert_epochs=2, latent=8, mlp_hidden=16)
    return build_model(config, BackboneConfig("resnet18", weights="none"))


FROZEN_STAGES_CONFIG = {
    "igd_local": dict(epochs=2, kd_steps=2, kd_input_size=32, patch_stride=32, patches_per_image=2, use_global=False),
    "igd_distill": dict(epochs=1, kd_steps=4, kd_batch_size=4, kd_input_size=32, patch_stride=32, use_global=False),
}
# The models' stages that train against a frozen network on un-augmented images, and their steps.
FROZEN_STAGES = {
    # IGD's global encoder: a frozen backbone plus a trained linear map.
    "igd_global": (lambda: igd(epochs=2, kd_steps=0, estep_every=1), "global_step"),
    # The local encoder body, fixed after distillation (paper L189), on 2 random patches of 4 per image.
    "igd_local": (lambda: igd(**FROZEN_STAGES_CONFIG["igd_local"]), "local_step"),
    # IGD's distillation: the frozen backbone's target for 4 random patches of the batch's 16 (4 per image).
    "igd_distill": (lambda: igd(**FROZEN_STAGES_CONFIG["igd_distill"]), "distill_step"),
    # UTAD's Expert-Net stage: the frozen IE-Net's impression of each image.
    "utad_expert": (utad, "expert_step"),  # on 32 px images
}


@pytest.mark.parametrize("case", FROZEN_STAGES)
def test_stages_train_from_cached_frozen_features_as_without_them(tmp_path, case):
    datamodule = tiny_datamodule(size=32 if case.startswith("utad") else 64)
    make, step_name = FROZEN_STAGES[case]
    runs = {}
    for mode in ("off", "on"):
        model, losses, cached = make(), [], []
        step = getattr(model, step_name)

        def recording_step(batch, step=step, losses=losses, cached=cached):
            cached.append("features" in batch)
            terms = step(batch)
            losses.append({name: value.item() for name, value in terms.items()})
            return terms

        setattr(model, step_name, recording_step)
        Engine(TrainerConfig(device="cpu", progress=False, feature_cache=mode), 3, tmp_path / f"{mode}.pt", {}).fit(
            model, datamodule
        )
        runs[mode] = (model, losses, cached)
    (plain, plain_losses, plain_cached), (model, losses, cached) = runs["off"], runs["on"]
    assert len(losses) == len(plain_losses) == 4 and all(cached) and not any(plain_cached)
    assert losses == plain_losses  # equal floats: see the module's docstring
    assert_equal_weights(model, plain)


def test_auto_caches_only_when_the_frozen_network_would_see_fewer_inputs(tmp_path, caplog):
    datamodule = tiny_datamodule(size=64)  # 10 images of 4 patches: the cache runs the teacher on 40 patches
    runs = {}
    # 2 steps (one epoch) of 4 patches: 8 teacher inputs uncached; 6 steps (3 epochs) of all 16: 96.
    for kd_steps, kd_batch_size in ((2, 4), (6, 16)):
        model = igd(
            epochs=1,
            kd_steps=kd_steps,
            kd_batch_size=kd_batch_size,
            kd_input_size=32,
            patch_stride=32,
            use_global=False,
            freeze_encoder=False,
        )
        cached = []
        step = model.distill_step
        model.distill_step = lambda batch, step=step, cached=cached: cached.append("features" in batch) or step(batch)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="anomalib_lite.engine.feature_cache"):
            engine = Engine(TrainerConfig(device="cpu", progress=False), 3, tmp_path / f"{kd_steps}.pt", {})
            engine.fit(model, datamodule)
        runs[kd_steps] = cached, caplog.text
    assert runs[2][0] == [False] * 2 and "on 40 inputs, training without it on 8 (2 steps)" in runs[2][1]
    assert runs[6][0] == [True] * 6 and "feature cache for stage 'distill': 10 images" in runs[6][1]


def test_the_cache_calls_the_frozen_network_on_as_many_inputs_as_a_step():
    """IGD's local stage draws 2 of each image's 4 patches: a step runs the body on 4 × 2 = 8 patches, so the
    cache fills from 2 images (8 patches) a call, not from the batch's 4 (16 patches, other kernels)."""
    local = next(s for s in igd(**FROZEN_STAGES_CONFIG["igd_local"]).stages() if s.name == "local")
    assert (local.features_per_image, local.features_per_step(4)) == (4, 8)
    assert images_per_call(local, 4) == 2
    distill = next(s for s in igd(**FROZEN_STAGES_CONFIG["igd_distill"]).stages() if s.name == "distill")
    assert images_per_call(distill, 4) == 1  # 4 patches a step: one image's (and chunked by the model as well)
    assert all(images_per_call(stage, 4) == 4 for stage in hfr().stages())  # every input of the batch
    assert images_per_call(local, 3) == 3  # 6 patches a step are no whole number of images: the batch
