"""UTAD: the two stages, the frozen IE-Net in stage 2, the ablations, a tiny end-to-end run."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from anomalib_lite.configs import CONFIG_DIR
from anomalib_lite.data.normalisation import IMAGENET_MEAN, IMAGENET_STD
from anomalib_lite.engine.checkpoint import save_checkpoint
from anomalib_lite.engine.trainer import Engine, TrainerConfig
from anomalib_lite.errors import ConfigError, TrainingError
from anomalib_lite.models import BackboneConfig
from anomalib_lite.models.backbones import torchvision_weights_path
from anomalib_lite.models.layers import to_normalised
from anomalib_lite.models.utad import UTAD, UTADConfig
from anomalib_lite.models.utad.networks import ResidualBlock

from conftest import TINY, run_entry

OFFLINE = BackboneConfig(name="tf_efficientnet_lite0", weights="none")


def test_stage_two_trains_the_expert_net_and_leaves_the_ie_net_untouched():
    torch.manual_seed(0)
    model = UTAD(UTADConfig(image_size=64), OFFLINE)
    ie_net, expert_net = model.stages()
    assert (ie_net.name, expert_net.name) == ("ie_net", "expert_net")
    before = {k: v.clone() for k, v in model.ie_net.state_dict().items()}
    expert_before = [p.clone() for p in expert_net.parameters]
    optimizer = expert_net.optimizer(expert_net.parameters)
    model.train()
    expert_net.step({"image": torch.randn(4, 3, 64, 64)})["loss"].backward()
    optimizer.step()
    after = model.ie_net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and batch-norm statistics
    assert any(not torch.equal(a, b) for a, b in zip(expert_before, expert_net.parameters))
    assert not set(map(id, ie_net.parameters)) & set(map(id, expert_net.parameters))


def test_shapes_through_both_stages_and_the_ablations():
    torch.manual_seed(0)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    x = (torch.rand(2, 3, 64, 64) - mean) / std  # normalised images, as batches hold them
    full = UTAD(UTADConfig(image_size=64), OFFLINE).eval()
    parts = full.intermediates(x)
    assert set(parts) == {"input", "impression", "naive", "reconstruction"}
    assert all(p.shape == (2, 3, 64, 64) and p.min() >= -1e-6 and p.max() <= 1 + 1e-6 for p in parts.values())
    out = full.predict(x)
    assert out.anomaly_map.shape == (2, 64, 64) and out.score.shape == (2,)
    assert torch.allclose(out.score, out.anomaly_map.flatten(1).amax(1))
    no_expert = UTAD(UTADConfig(image_size=64, use_expert=False), OFFLINE).eval()
    assert [s.name for s in no_expert.stages()] == ["ie_net"]
    parts = no_expert.intermediates(x)
    expected = no_expert.perceptual_distance(parts["input"], parts["impression"])
    assert torch.allclose(no_expert.predict(x).anomaly_map, expected)
    no_detail = UTAD(UTADConfig(image_size=64, use_detail=False), OFFLINE)
    assert no_detail.detail is None and "detail" not in no_detail.expert_step({"image": x})
    assert no_detail.decoder.mlp is not None  # AdaIN is kept (fed random codes), not removed


def test_utad_trains_end_to_end_on_the_synthetic_data(tmp_path):
    run = tmp_path / "run"
    result = run_entry(
        "train.py", *TINY, "model=utad", "category=brick", f"data.root={tmp_path / 'data'}", f"hydra.run.dir={run}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())["categories"]["brick"]
    assert 0 <= metrics["pixel_auroc"] <= 1 and 0 <= metrics["image_auroc"] <= 1
    assert 0 <= metrics["iou"] <= 1 and metrics["iou_threshold"] == 0.5  # the paper's segmentation metric
    assert "| iou |" in result.stdout  # the printed table gains the column
    gallery = json.loads((run / "maps" / "brick" / "gallery.json").read_text())
    assert gallery["stage_tiles"] == ["input", "impression", "naive", "reconstruction", "anomaly map"]
    drawn = {entry["stages"] for group in gallery["groups"].values() for entry in group}
    assert sorted(p.name for p in (run / "maps" / "brick").glob("*_stages.png")) == sorted(drawn)  # one per overlay
    log = (run / "train.log").read_text()
    assert "ie_net epoch 1/1" in log and "expert_net epoch 1/1" in log
    stored = torch.load(run / "checkpoints" / "brick" / "last.pt", weights_only=True)["config"]["backbone"]
    if not torchvision_weights_path("vgg19")[1].is_file():  # offline: the perceptual net falls back, and says so
        assert stored["name"] == "tf_efficientnet_lite0" and "not in the torch cache" in log
    else:
        assert stored["name"] == "vgg19"


def test_stage_two_starts_only_from_a_finished_stage_one(tmp_path):
    model = UTAD(UTADConfig(image_size=64), OFFLINE)
    path = tmp_path / "unfinished.pt"
    save_checkpoint({"model": model.state_dict(), "config": {}, "stages_done": []}, path)
    cfg = TrainerConfig(device="cpu", start_stage="expert_net", init_from=str(path), progress=False)
    with pytest.raises(TrainingError, match="needs ie_net finished"):
        Engine(cfg, 0, tmp_path / "new.pt", {}).fit(model, None)
    cfg = TrainerConfig(device="cpu", start_stage="nope", init_from=str(path), progress=False)
    with pytest.raises(TrainingError, match="stages: ie_net, expert_net"):
        Engine(cfg, 0, tmp_path / "new.pt", {}).fit(model, None)


@pytest.mark.slow
def test_stage_two_reruns_alone_from_a_stage_one_run(tmp_path):
    common = [*TINY, "model=utad", "category=brick", f"data.root={tmp_path / 'data'}"]
    first = tmp_path / "first"
    assert run_entry("train.py", *common, f"hydra.run.dir={first}").returncode == 0
    second = tmp_path / "second"
    result = run_entry(
        "train.py",
        *common,
        "trainer.start_stage=expert_net",
        f"trainer.init_from={first}",
        "model.expert_lr=0.001",
        f"hydra.run.dir={second}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    log = (second / "train.log").read_text()
    assert "starting at stage expert_net" in log and "ie_net epoch" not in log and "expert_net epoch 1/1" in log
    a = torch.load(first / "checkpoints" / "brick" / "last.pt", weights_only=True)["model"]
    b = torch.load(second / "checkpoints" / "brick" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("ie_net."))  # stage 1 reused as is
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("decoder."))  # stage 2 retrained


def test_small_images_get_one_residual_block_in_the_expert_net():
    # Paper §4.2: on MNIST/FMNIST/CIFAR "we set the number of residual blocks to 1 in Expert-Net".
    small, large = UTAD(UTADConfig(image_size=64), OFFLINE), UTAD(UTADConfig(image_size=128), OFFLINE)
    for model, blocks in ((small, 1), (large, 2)):
        for module in (model.content, model.naive_encoder):
            assert sum(isinstance(m, ResidualBlock) for m in module.modules()) == blocks
        assert len(model.decoder.blocks) == len(model.naive_decoder.blocks) == blocks


def test_expert_downsample_builds_the_papers_four_conv_blocks_in_every_expert_net_part():
    # Paper L105: encoders and decoders of 4 conv blocks (model.expert_downsample=3); ref-code n_downsample 2 (3).
    # 256 px, counted from the ref-code's modules (tests/test_utad_networks.py): 2 content encoders 12 202 112 each,
    # AdaIN decoder 13 750 787 + MLP 1 120 768, naïve decoder 13 750 787, 3-conv detail extractor 9 472 + 131 200
    # + 524 544 + conv1×1 256→8 2 056 = 667 272; with the defaults 3 025 536, 3 394 307 + 594 432, 3 394 307, 667 272.
    count = lambda modules: sum(p.numel() for m in modules for p in m.parameters())  # noqa: E731
    expert = {2: 2 * 3_025_536 + 3_394_307 + 594_432 + 3_394_307 + 667_272}
    expert[3] = 2 * 12_202_112 + 13_750_787 + 1_120_768 + 13_750_787 + 667_272
    for downsample in (2, 3):
        model = UTAD(UTADConfig(image_size=256, expert_downsample=downsample), OFFLINE)
        assert count(model._expert_modules()) == expert[downsample]
    assert UTADConfig().expert_downsample == 2  # the default: ref-code
    torch.manual_seed(0)
    model = UTAD(UTADConfig(image_size=64, latent=16, expert_downsample=3), OFFLINE)
    for module in (model.content, model.naive_encoder):
        assert module.channels == 512
    x = torch.rand(2, 3, 64, 64)
    stage = model.stages()[1]
    optimizer = stage.optimizer(stage.parameters)
    terms = stage.step({"image": x})
    terms["loss"].backward()
    optimizer.step()
    assert model.content(2 * x - 1).shape == (2, 512, 8, 8)
    assert model.eval().predict(x).anomaly_map.shape == (2, 64, 64)
    for bad in (0, 5):
        with pytest.raises(ValueError, match="expert_downsample"):
            UTADConfig(expert_downsample=bad)
    model_yaml = OmegaConf.load(CONFIG_DIR / "model" / "utad.yaml")
    assert model_yaml.expert_downsample == 2


def test_without_detail_guidance_adain_is_fed_standard_normal_codes():
    # Paper Table 2 "without Guide": AdaIN's input is random N(0, I), not the detail extractor's code.
    torch.manual_seed(0)
    model = UTAD(UTADConfig(image_size=64, use_detail=False), OFFLINE).eval()
    seen = []
    model.decoder.mlp.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    x = torch.rand(4, 3, 64, 64)
    torch.manual_seed(7)
    model.expert(x, x)
    torch.manual_seed(7)
    assert torch.equal(seen[0], torch.randn(4, 8))
    codes = torch.cat([model.detail_code(torch.zeros(500, 3, 4, 4)) for _ in range(4)])
    assert abs(codes.mean().item()) < 0.03 and abs(codes.std().item() - 1) < 0.03


def test_ie_net_optimiser_is_the_reference_codes_sgd_with_warm_up_and_step_decay():
    # The paper's learning rate is lost; ref-code: lr 1e-3, weight decay 1e-4, 2 warm-up epochs, ×0.1 at epochs
    # 200 and 350.
    cfg = UTADConfig(image_size=64, ie_epochs=400)
    model = UTAD(cfg, OFFLINE)
    stage = model.stages()[0]
    optimizer = stage.optimizer(stage.parameters)
    sgd, adam = optimizer.optimizers  # the MI discriminator has its own Adam (model.mi_optimizer=adam)
    group = sgd.param_groups[0]
    assert isinstance(sgd, torch.optim.SGD) and isinstance(adam, torch.optim.Adam)
    assert (group["lr"], group["weight_decay"], group["momentum"]) == (1e-3, 1e-4, 0.9)
    assert {id(p) for p in adam.param_groups[0]["params"]} == {id(p) for p in model.mi.parameters()}
    assert {id(p) for p in group["params"]} == {id(p) for p in model.ie_net.parameters()}
    assert adam.param_groups[0]["lr"] == 1e-3 and adam.param_groups[0]["betas"] == (0.5, 0.999)
    shared = UTAD(UTADConfig(image_size=64, mi_optimizer="sgd", mi_lr=0.05), OFFLINE)
    groups = shared.stages()[0].optimizer(shared.stages()[0].parameters).param_groups
    assert groups[1]["lr"] == 0.05 and {id(p) for p in groups[1]["params"]} == {id(p) for p in shared.mi.parameters()}
    scheduler = stage.scheduler(optimizer, 800)  # 2 steps per epoch
    rates, mi_rates = [], []
    for _ in range(800):
        rates.append(sgd.param_groups[0]["lr"])
        mi_rates.append(adam.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # ref-code config: 2 warm-up epochs (4 steps here), a linear rise per step; the MI Adam follows the schedule
    assert rates[:5] == pytest.approx([1e-3 * k / 4 for k in (1, 2, 3, 4, 4)])
    assert mi_rates[:5] == pytest.approx(rates[:5])
    assert rates[399] == pytest.approx(1e-3) and rates[400] == pytest.approx(1e-4)
    assert rates[699] == pytest.approx(1e-4) and rates[700] == pytest.approx(1e-5)
    unwarmed = UTAD(UTADConfig(image_size=64, ie_epochs=400, ie_warmup_epochs=0), OFFLINE).stages()[0]
    optimizer = unwarmed.optimizer(unwarmed.parameters)
    unwarmed.scheduler(optimizer, 800)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="ie_warmup_epochs"):
        UTADConfig(image_size=64, ie_epochs=1)
    with pytest.raises(ValueError, match="mi_optimizer"):
        UTADConfig(image_size=64, mi_optimizer="rmsprop")


def test_the_mi_discriminator_tells_its_own_pairs_from_shuffled_ones():
    # Stage 1's MI term must leave chance (2 ln 2 for the two BCE terms) on distinct images. With the
    # discriminator in the IE-Net's SGD at 1e-3 it stays at 1.38 here (as it did on mnist5k); its own Adam
    # separates the pairs once the reconstruction has spread the codes apart.
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    images = F.interpolate(torch.randn(4, 3, 4, 4, generator=generator), size=16, mode="bilinear")
    model = UTAD(UTADConfig(image_size=16, small=True), OFFLINE)
    stage = model.stages()[0]
    optimizer = stage.optimizer(stage.parameters)
    bce = []
    for _ in range(80):
        terms = stage.step({"image": images})
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        bce.append(terms["mi"].item())
    assert bce[0] == pytest.approx(2 * math.log(2), abs=0.02)  # chance at the start
    assert sum(bce[-10:]) / 10 < 1.0


def test_the_ablation_variants_switch_the_papers_components():
    variants = CONFIG_DIR / "variant"
    expected = {
        "utad_mi_en_guide": (1.0, True, True),
        "utad_en_guide": (0.0, True, True),
        "utad_mi": (1.0, False, False),
        "utad_mi_en": (1.0, True, False),
    }
    for name, values in expected.items():
        cfg = OmegaConf.load(variants / f"{name}.yaml")
        assert (cfg.mi_weight, cfg.use_expert, cfg.use_detail) == values
    sweep = OmegaConf.load(CONFIG_DIR / "experiment" / "utad_ablation.yaml").hydra.sweeper.params
    assert set(sweep["+variant"].split(",")) == set(expected)


def test_the_perceptual_measure_weighs_each_layer_by_its_lambda():
    backbone = BackboneConfig(name="vgg19", weights="none")
    model = UTAD(UTADConfig(image_size=64, latent=16, perceptual_weights=[2.0, 0.0, 0.5]), backbone).eval()
    a, b = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    expected = torch.zeros(2, 64, 64)
    for weight, tap in ((2.0, "features.2"), (0.5, "features.16")):  # a naive sum, layer by layer
        fa, fb = (model.perceptual(to_normalised(x), layers=[tap])[0] for x in (a, b))
        distance = ((fa - fb) ** 2).mean(1, keepdim=True)
        expected += weight * F.interpolate(distance, size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(model.perceptual_distance(a, b), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="2 weights for the 3 perceptual layers"):
        UTAD(UTADConfig(image_size=64, latent=16, perceptual_weights=[1.0, 1.0]), backbone)
    with pytest.raises(ValueError, match="perceptual_weights"):
        UTADConfig(perceptual_weights=[-1.0])
