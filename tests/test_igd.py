"""IGD: the GSVDD E-step, patches, the separation of autoencoder and critic updates, shapes, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from anomalib_lite.configs import CONFIG_DIR
from anomalib_lite.data.images import IMAGENET_MEAN, IMAGENET_STD
from anomalib_lite.engine.trainer import Engine, TrainerConfig
from anomalib_lite.models import BackboneConfig
from anomalib_lite.models.backbones import cached_or_offline, torchvision_weights_path
from anomalib_lite.models.base import AnomalyModel, Stage
from anomalib_lite.models.igd.config import IGDConfig
from anomalib_lite.models.igd.model import IGD, CriticAfterAutoencoder, GaussianDescriptor, mirrored_chunks
from anomalib_lite.models.igd.networks import (
    Critic,
    GlobalBlockEncoder,
    GlobalCritic,
    GlobalDecoder,
    GlobalEncoder,
    MeanPool,
    ResidualBlock,
    fold_patches,
    to_patches,
)
from anomalib_lite.models.layers import to_unit_range
from anomalib_lite.models.ssim import GLOBAL_WEIGHTS, LOCAL_WEIGHTS, ms_ssim, ms_ssim_residual_map

from conftest import run_entry, write_mvtec_category


class Identity(nn.Module):
    """An "encoder" whose code is its input: ``B×d`` → ``(h, z) = (x, x)``."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.to_latent = nn.Identity(), nn.Identity()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


@pytest.mark.parametrize("kappa", [0.5, 1.0])  # paper L185; the ref-code's sig_f = 1
def test_e_step_fits_the_known_mean_and_variance(kappa):
    torch.manual_seed(0)
    d, n = 8, 4000
    mean = torch.tensor([2.0, -3.0, 0.5, 0.05, -0.02, 1.0, 0.03, -1.5])
    noise = torch.randn(n, d)
    noise = (noise - noise.mean(0)) / noise.std(0, unbiased=False)  # exactly zero mean, unit variance
    codes = mean + 0.7 * noise
    cfg = IGDConfig(latent=d, width=4, kappa=kappa)
    descriptor = GaussianDescriptor(Identity(), nn.Identity(), nn.Identity(), GLOBAL_WEIGHTS, 11, cfg, False)
    descriptor.e_step(iter(codes.split(1000)))
    # Components smaller than mu_min = 0.1 in magnitude are pushed out to ±0.1, keeping their sign.
    expected_mu = torch.tensor([2.0, -3.0, 0.5, 0.1, -0.1, 1.0, 0.1, -1.5])
    assert torch.allclose(descriptor.mu, expected_mu, atol=1e-5)
    # mean ||z − μ||² = d·0.7² + Σ (μ_i − mean_i)², σ² = κ times that, floored at 1.
    spread = d * 0.49 + ((expected_mu - mean) ** 2).sum()
    assert descriptor.sigma2.item() == pytest.approx(max(kappa * spread.item(), 1.0), rel=1e-5)
    descriptor.e_step(iter([torch.full((10, d), 3.0)]))
    assert descriptor.sigma2.item() == 1.0  # no spread: the floor
    z = torch.zeros(1, d)
    expected = 1 - np.exp(-((z - descriptor.mu) ** 2).sum().item() / 1.0)
    assert descriptor.distance(z).item() == pytest.approx(expected, rel=1e-6)


def test_patches_match_slicing_and_fold_back_to_the_image():
    image = torch.rand(2, 3, 64, 64)
    patches = to_patches(image, 32, 16)
    assert patches.shape == (2, 9, 3, 32, 32)
    assert torch.equal(patches[1, 5], image[1, :, 16:48, 32:64])  # row 1, column 2
    folded = fold_patches(patches[:, :, 0], 64, 16)
    assert torch.allclose(folded, image[:, 0], atol=1e-6)
    # Overlaps are averaged: patch-constant maps 0..8 fold to the mean of the patches covering a pixel.
    constant = torch.arange(9.0).view(1, 9, 1, 1).expand(1, 9, 32, 32)
    assert fold_patches(constant, 64, 16)[0, 20, 20].item() == pytest.approx((0 + 1 + 3 + 4) / 4)


def test_critic_and_autoencoder_losses_move_only_their_own_parameters():
    torch.manual_seed(0)
    model = IGD(IGDConfig(width=4, kd_steps=0), BackboneConfig(weights="none"))
    descriptor = model.local
    # The decoder starts flat (zero output weights: nothing reaches the encoder yet); as after a step:
    nn.init.normal_(descriptor.decoder.net[-1].weight, std=0.1)
    terms = model.local_step({"image": torch.randn(6, 3, 32, 32)})

    def grads(term: str) -> dict[str, bool]:
        descriptor.zero_grad(set_to_none=True)
        terms[term].backward(retain_graph=True)
        return {
            part: any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(descriptor, part).parameters())
            for part in ("encoder", "decoder", "critic")
        }

    assert grads("generator") == {"encoder": True, "decoder": True, "critic": False}
    assert grads("critic") == {"encoder": False, "decoder": False, "critic": True}
    assert grads("reconstruction") == {"encoder": True, "decoder": True, "critic": False}


def test_predict_shapes_local_only_and_with_the_global_model():
    torch.manual_seed(0)
    small = IGD(IGDConfig(width=4, kd_steps=0), BackboneConfig(weights="none")).eval()
    out = small.predict(torch.randn(3, 1, 32, 32))  # grey input is accepted
    assert out.anomaly_map.shape == (3, 32, 32) and out.score.shape == (3,)
    assert small.global_model is None and small.backbone is None
    large = IGD(IGDConfig(image_size=64, width=4, kd_steps=1), BackboneConfig(weights="none")).eval()
    assert [s.name for s in large.stages()] == ["distill", "local", "global"]
    out = large.predict(torch.randn(2, 3, 64, 64))
    assert out.anomaly_map.shape == (2, 64, 64) and torch.isfinite(out.score).all()
    with pytest.raises(ValueError, match="image_size=60"):
        IGDConfig(image_size=60)


def test_an_uncached_torchvision_backbone_falls_back_to_the_offline_one(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    chosen = cached_or_offline(BackboneConfig(name="resnet18", layers=["layer4"]), "tf_efficientnet_lite0")
    assert chosen == BackboneConfig(name="tf_efficientnet_lite0", layers=None, stand_in_for="resnet18")
    assert "not in the torch cache" in caplog.text and "prepare_data.py weights" in caplog.text
    # Once the file is in the cache, the paper's backbone is kept.
    _, path = torchvision_weights_path("resnet18")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    assert cached_or_offline(BackboneConfig(name="resnet18"), "tf_efficientnet_lite0").name == "resnet18"
    assert cached_or_offline(BackboneConfig(name="vgg19", weights="none"), "x").name == "vgg19"


def test_igd_trains_on_an_mvtec_layout_folder_with_pixel_metrics(tmp_path):
    root = tmp_path / "mvtec"
    for split in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        (root / "bottle" / split).mkdir(parents=True)
    write_mvtec_category(root, "bottle", np.random.default_rng(0))
    result = run_entry(
        "train.py",
        "model=igd",
        "data=mvtec",
        "category=bottle",
        f"data.root={root}",
        "data.image_size=64",
        "data.batch_size=4",
        "model.width=4",
        "model.kd_input_size=32",
        "trainer.max_epochs=1",
        "trainer.progress=false",
        "eval.n_maps=2",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["categories"]["bottle"]
    assert 0 <= metrics["pixel_auroc"] <= 1 and 0 <= metrics["aupro"] <= 1
    log = (tmp_path / "run" / "train.log").read_text()
    assert all(f"{stage} epoch 1/1" in log for stage in ("distill", "local", "global"))
    checkpoint = tmp_path / "run" / "checkpoints" / "bottle" / "last.pt"
    result = run_entry("eval.py", f"ckpt_path={checkpoint}", "progress=false", f"hydra.run.dir={tmp_path / 'eval'}")
    assert result.returncode == 0, result.stderr[-2000:]
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())["categories"]["bottle"]
    assert again["pixel_auroc"] == pytest.approx(metrics["pixel_auroc"], abs=1e-6)
    assert again["image_auroc"] == pytest.approx(metrics["image_auroc"], abs=1e-6)


@pytest.mark.slow
def test_igd_runs_offline_on_mnist5k(tmp_path):
    result = run_entry(
        "train.py",
        "model=igd",
        "data=mnist5k",
        "data.normal_class=3",
        "model.width=4",
        "model.kd_steps=1",
        "trainer.max_epochs=1",
        "trainer.progress=false",
        "eval.n_maps=2",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["categories"]["3"]
    assert metrics["n_images"] == 1000 and metrics["n_anomalous"] == 900
    assert metrics["pixel_auroc"] is None and 0 <= metrics["image_auroc"] <= 1


def test_one_local_step_leaves_the_distilled_encoder_body_unchanged():
    # IGD L189: after distillation the encoder body is fixed; only 512→128, the decoder and the critic train.
    torch.manual_seed(0)
    model = IGD(IGDConfig(width=4, kd_steps=1, kd_input_size=32), BackboneConfig(weights="none"))
    distill, local = model.stages()
    assert distill.steps == 1 and local.name == "local"
    body = model.local.encoder.body
    assert not {id(p) for p in body.parameters()} & {id(p) for p in local.parameters}
    local.on_stage_start(type("Data", (), {"train_set": [{"image": torch.randn(3, 32, 32)} for _ in range(8)]})())
    before = {k: v.clone() for k, v in body.state_dict().items()}
    head_before = model.local.encoder.to_latent.weight.clone()
    optimizer = local.optimizer(local.parameters)
    model.train()
    local.step({"image": torch.randn(8, 3, 32, 32)})["loss"].backward()
    optimizer.step()
    after = body.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and batch-norm statistics
    assert not body.training and not any(p.requires_grad for p in body.parameters())
    assert not torch.equal(head_before, model.local.encoder.to_latent.weight)
    # A checkpoint taken after distillation restores a frozen body.
    fresh = IGD(IGDConfig(width=4, kd_steps=1, kd_input_size=32), BackboneConfig(weights="none"))
    fresh.load_state_dict(model.state_dict())
    assert not any(p.requires_grad for p in fresh.local.encoder.body.parameters())
    # Without distillation there is nothing to fix: the body trains (the paper's no-KD ablation).
    no_kd = IGD(IGDConfig(width=4, kd_steps=0), BackboneConfig(weights="none"))
    assert {id(p) for p in no_kd.local.encoder.body.parameters()} <= {id(p) for p in no_kd.stages()[0].parameters}


def test_the_models_train_on_their_own_ms_ssim_and_combine_by_beta():
    torch.manual_seed(0)
    one_class = IGD(IGDConfig(width=4, kd_steps=0), BackboneConfig(weights="none"))
    assert (one_class.local.ssim_weights, one_class.local.ssim_window) == (GLOBAL_WEIGHTS, 11)  # paper footnote 1
    for combine, share in (("beta", 0.1), ("equal", 0.5)):
        cfg = IGDConfig(image_size=64, width=4, kd_steps=1, combine=combine)
        model = IGD(cfg, BackboneConfig(weights="none")).eval()
        assert (model.local.ssim_weights, model.local.ssim_window) == (LOCAL_WEIGHTS, 3)
        assert (model.global_model.ssim_weights, model.global_model.ssim_window) == (GLOBAL_WEIGHTS, 11)
        image = torch.randn(2, 3, 64, 64)
        out = model.predict(image)
        patches = to_patches(image, 32, 16).flatten(0, 1)
        local_score, local_map = model.local.evaluate(patches, patches)
        global_score, global_map = model.global_model.evaluate(image, image)
        expected_map = share * global_map + (1 - share) * fold_patches(local_map.view(2, 9, 32, 32), 64, 16)
        expected_score = share * global_score + (1 - share) * local_score.view(2, 9).amax(1)
        assert torch.allclose(out.anomaly_map, expected_map, atol=1e-6)
        assert torch.allclose(out.score, expected_score, atol=1e-6)


def test_reconstruction_error_follows_the_paper_formula_in_normalised_space():
    # ℓ_m = ρ·MAE/L + (1 − ρ)(1 − MS-SSIM) with L = 4.7579 on ImageNet-normalised images (paper L185).
    torch.manual_seed(0)
    model = IGD(IGDConfig(width=4, kd_steps=0), BackboneConfig(weights="none"))
    x, y = torch.randn(3, 3, 32, 32), torch.randn(3, 3, 32, 32)
    expected = 0.15 * (x - y).abs().mean(dim=(1, 2, 3)) / 4.7579 + 0.85 * (
        1 - ms_ssim(x, y, GLOBAL_WEIGHTS, 11, data_range=4.7579)
    )
    assert torch.allclose(model.local.reconstruction_error(x, y), expected, atol=1e-6)
    unit = IGD(IGDConfig(width=4, kd_steps=0, ssim_space="unit"), BackboneConfig(weights="none"))
    assert unit._targets(x).min() >= x.min() * 0.229 + 0.406 - 1e-6  # mapped to [0, 1] space
    with pytest.raises(ValueError, match="ssim_space"):
        IGDConfig(ssim_space="pixels")


def _digit_like(n: int, size: int) -> torch.Tensor:
    """``n×3×size×size`` images in [0, 1]: black with a bright square over the centre (an MNIST-like digit)."""
    images = torch.zeros(n, 3, size, size)
    images[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1.0
    return images


def test_a_reconstruction_of_the_wrong_mean_sign_leaves_ms_ssim_without_a_gradient():
    # Why the decoders start flat: the coarsest scale's luminance is negative when the output's mean has the
    # opposite sign of the target's, and the clamp at 0 (ref-code) zeroes MS-SSIM and its whole gradient.
    target = _digit_like(2, 32)
    recon = (torch.full_like(target, -0.25) + 0.01 * torch.randn_like(target)).requires_grad_()
    value = ms_ssim(recon, target, GLOBAL_WEIGHTS, 11)
    value.sum().backward()
    assert torch.equal(value, torch.zeros(2)) and torch.equal(recon.grad, torch.zeros_like(recon))


@pytest.mark.parametrize("space", ["unit", "normalised"])
def test_the_decoders_start_flat_grey_and_ms_ssim_with_any_target_has_a_gradient(space):
    torch.manual_seed(0)
    cfg = IGDConfig(image_size=64, width=4, kd_steps=0, ssim_space=space)
    model = IGD(cfg, BackboneConfig(weights="none"))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    for descriptor, size in ((model.local, 32), (model.global_model, 64)):
        recon = descriptor.decoder(torch.randn(4, cfg.latent))
        assert torch.equal(recon, torch.full_like(recon, 0.5 if space == "unit" else 0.0))
        unit = torch.cat([_digit_like(1, size), torch.zeros(1, 3, size, size), torch.rand(2, 3, size, size)])
        target = unit if space == "unit" else (unit - mean) / std
        value = ms_ssim(recon, target, descriptor.ssim_weights, descriptor.ssim_window, data_range=cfg.data_range)
        assert (value > 0).all()
        (1 - value).sum().backward()
        grad = descriptor.decoder.net[-1].weight.grad if size == 32 else descriptor.decoder.net[-1][1].weight.grad
        assert grad.abs().sum() > 0
    torch.manual_seed(0)
    default = IGD(IGDConfig(width=4, kd_steps=0, ssim_space=space, flat_start=False), BackboneConfig(weights="none"))
    assert default.local.decoder(torch.randn(4, cfg.latent)).std() > 0  # ref-code: PyTorch's default init


def test_local_training_sees_every_patch_unless_a_budget_is_set(monkeypatch):
    seen = []
    for per_image, expected in ((None, 2 * 9), (4, 2 * 4)):
        model = IGD(
            IGDConfig(image_size=64, width=4, kd_steps=0, patches_per_image=per_image), BackboneConfig(weights="none")
        )
        monkeypatch.setattr(model.local, "losses", lambda inputs, targets, hidden=None: seen.append(inputs.shape[0]))
        model.local_step({"image": torch.randn(2, 3, 64, 64)})
        assert seen[-1] == expected


@pytest.mark.parametrize("count", [1, 2, 5, 36, 37])
@pytest.mark.parametrize("size", [2, 3, 8, 100])
def test_mirrored_micro_batches_hold_every_patch_once_and_keep_acai_partners(count, size):
    chunks = list(mirrored_chunks(count, size))
    every = torch.cat(chunks)
    assert sorted(every.tolist()) == list(range(count))
    for chunk in chunks:
        assert chunk.numel() <= size and torch.equal(chunk, chunk.sort().values)
        # flip(0) inside the micro-batch pairs i with count − 1 − i, as over the whole batch
        assert torch.equal(chunk.flip(0), count - 1 - chunk)


def _local_gradients(micro_batch: int | None, decoder_norm: str) -> tuple[dict, dict]:
    """One local step of a fixed model on fixed images (36 patches: 4 images of 64 px at stride 16), as the engine
    runs it after distillation (the body frozen, paper L189): its terms and the gradients it leaves in the
    parameters."""
    torch.manual_seed(0)
    cfg = IGDConfig(
        image_size=64, width=4, hidden=32, latent=8, kd_steps=1, micro_batch=micro_batch, decoder_norm=decoder_norm
    )
    model = IGD(cfg, BackboneConfig(weights="none")).double()
    model.local.sigma2.fill_(2.0)
    model.local.mu.normal_()
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    stage = model.stages()[1]
    model.train()
    model.local.encoder.body.freeze()
    torch.manual_seed(2)  # the step's own draws (the interpolation weights)
    terms = stage.step({"image": images})
    if not stage.backward_in_step:
        terms["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: float(v.detach()) for k, v in terms.items()}, grads


@pytest.mark.parametrize("micro_batch", [2, 7, 8, 36, 64])
def test_micro_batched_local_steps_give_the_gradients_of_one_pass(micro_batch):
    # decoder_norm=fixed and the critic's layer norm: no layer mixes samples, so the update must be the same, to
    # fp32 rounding (ℓ_m is computed in fp32 whatever the model's precision).
    whole_terms, whole = _local_gradients(None, "fixed")
    terms, grads = _local_gradients(micro_batch, "fixed")
    assert set(terms) == set(whole_terms) == {"loss", "reconstruction", "descriptor", "generator", "critic"}
    for name, value in whole_terms.items():
        assert terms[name] == pytest.approx(value, rel=1e-6), name
    assert set(grads) == set(whole) and len(grads) > 10
    for name, grad in whole.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-8, msg=name)


def test_micro_batches_with_batch_statistics_normalise_each_micro_batch_by_its_own():
    # The stated departure: decoder_norm=batch mixes samples, so micro-batching changes the decoder's statistics.
    _, whole = _local_gradients(None, "batch")
    _, grads = _local_gradients(8, "batch")
    decoder = [name for name in whole if name.startswith("local.decoder.")]
    assert decoder and not all(torch.allclose(grads[name], whole[name]) for name in decoder)


def test_micro_batching_refuses_a_critic_that_steps_after_the_autoencoder():
    with pytest.raises(ValueError, match="micro_batch=8 needs model.critic_update=joint"):
        IGDConfig(micro_batch=8, critic_update="after")
    with pytest.raises(ValueError, match="micro_batch=1 must be ≥ 2"):
        IGDConfig(micro_batch=1)


@pytest.mark.parametrize(("resample", "norm"), [("down", "layer"), ("down", "batch"), ("up", "batch")])
def test_residual_blocks_equal_the_ref_code_order_of_pooling_and_upsampling(resample, norm):
    # Reference: the ref-code's order, nn.AvgPool2d after the second conv and before the shortcut's 1×1 conv (down),
    # nearest upsampling before the shortcut's 1×1 conv (up).
    torch.manual_seed(0)
    block = ResidualBlock(8, 16, resample, norm, 16).double()
    x = torch.randn(4, 8, 16, 16, dtype=torch.float64, requires_grad=True)
    if resample == "down":
        norm1, relu1, conv1, norm2, relu2, (conv2, _) = block.body
        reference = nn.AvgPool2d(2)(conv2(relu2(norm2(conv1(relu1(norm1(x))))))) + block.shortcut[1](nn.AvgPool2d(2)(x))
    else:
        reference = block.body(x) + block.shortcut[1](nn.Upsample(scale_factor=2)(x))
    ours = block(x)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)
    inputs = [x, *block.parameters()]
    for a, b in zip(
        torch.autograd.grad(ours.square().sum(), inputs), torch.autograd.grad(reference.square().sum(), inputs)
    ):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_mean_pooling_keeps_no_activation_for_the_backward_pass():
    saved = []
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        ours = MeanPool()(x)
    assert saved == []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        nn.AvgPool2d(2)(x)
    assert sum(saved) >= x.numel()  # avg_pool2d's own backward keeps its input
    torch.testing.assert_close(ours, nn.AvgPool2d(2)(x), rtol=0, atol=0)


def test_the_distillation_stage_runs_its_steps_in_whole_epochs(tmp_path):
    # IGD counts distillation in iterations (paper L189): 5 steps on a 2-batch loader = 3 epochs, 6 steps.
    class Data:
        batch_size = 1

        def train_loader(self, generator=None, pin_memory=False):
            return DataLoader([{"image": torch.zeros(1)}] * 2, batch_size=None)

    weight = nn.Parameter(torch.zeros(()))
    calls = []

    class Model(AnomalyModel):
        def __init__(self) -> None:
            super().__init__()
            self.weight = weight

        def stages(self):
            def step(batch):
                calls.append(1)
                return {"loss": (self.weight - 1) ** 2}

            return [Stage("distill", 1, [self.weight], lambda p: torch.optim.SGD(p, lr=0.1), step, steps=5)]

    Engine(TrainerConfig(device="cpu", progress=False), 0, tmp_path / "last.pt", {}).fit(Model(), Data())
    assert len(calls) == 6
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 3


def test_global_model_has_four_residual_blocks_and_the_ref_code_parameter_counts():
    # Paper L189 "four residual blocks"; the counts are the ref-code's own (tianyu0207/IGD at 1ce9952), from its
    # modules built in Python: p32/ssim_module.py Encoder(z_dim=512), twoin1Generator, VisualDiscriminator(64);
    # p256/mvtec_module.py twoin1Generator256, VisualDiscriminator256(64). The critics' norms are ours (choice:
    # GroupNorm with one affine pair per channel, the ref-code's LayerNorm([C, H, W]) one per element), so the
    # critics are compared without their norm parameters.
    w, latent = 64, 128

    def count(net, norms=True):
        return sum(
            p.numel()
            for m in net.modules()
            if norms or not isinstance(m, (nn.GroupNorm, nn.LayerNorm))
            for p in m.parameters(recurse=False)
        )

    decoder, critic = GlobalDecoder(256, w, latent, 0.5), GlobalCritic(256, w)
    for net in (decoder, critic):
        assert sum(isinstance(m, ResidualBlock) for m in net.modules()) == 4
    assert count(decoder) == 10_903_363 and count(critic, norms=False) == 9_850_881
    local = IGD(IGDConfig(width=w, hidden=512, latent=latent, kd_steps=0), BackboneConfig(weights="none")).local
    assert count(local.encoder.body) == 6_694_656  # the distilled encoder: conv3, three down blocks, 8192→512
    assert count(local.decoder) == 3_556_675 and count(local.critic, norms=False) == 2_506_241


def test_only_the_local_critic_ends_in_a_sigmoid():
    # ref-code: p32's VisualDiscriminator ends in a sigmoid, p256's VisualDiscriminator256 has no output activation.
    torch.manual_seed(0)
    local, global_ = Critic(32, 4), GlobalCritic(64, 4)
    for critic in (local, global_):
        nn.init.constant_(critic.out.bias, 5.0)
    x = torch.rand(2, 3, 32, 32)
    logits = local.out(local.down(x))[:, 0]
    assert torch.allclose(local(x), 1 / (1 + torch.exp(-logits)))
    x = torch.rand(2, 3, 64, 64)
    outputs = global_(x)
    assert torch.equal(outputs, global_.out(global_.net(x))[:, 0]) and (outputs > 1).any()


def test_grey_images_go_back_to_their_unit_range_value():
    # A grey pixel of 0.502 is normalised with the mean statistics (data.images); back, it is 0.502 in R, G, B.
    grey = (torch.full((1, 1, 2, 2), 0.502) - torch.tensor(IMAGENET_MEAN).mean()) / torch.tensor(IMAGENET_STD).mean()
    rgb = to_unit_range(grey)
    assert rgb.shape == (1, 3, 2, 2)
    assert torch.allclose(rgb, torch.full_like(rgb, 0.502), atol=1e-6)


def test_a_grey_image_reaches_igd_as_the_same_image_loaded_as_rgb():
    # data.grey_to_rgb=false gives 1-channel images normalised with the mean statistics; IGD must see (inputs,
    # targets, maps, scores) what the same image loaded as RGB (normalised per channel) gives.
    torch.manual_seed(0)
    value = torch.rand(2, 1, 64, 64)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    grey = (value - mean.mean()) / std.mean()
    rgb = (value.expand(-1, 3, -1, -1) - mean) / std
    for space in ("unit", "normalised"):
        model = IGD(IGDConfig(image_size=64, width=4, kd_steps=0, ssim_space=space), BackboneConfig(weights="none"))
        model.eval()
        for a, b in zip(model._local_inputs(grey, None), model._local_inputs(rgb, None)):
            assert a is None or torch.allclose(a, b, atol=1e-5)
        from_grey, from_rgb = model.predict(grey), model.predict(rgb)
        assert torch.allclose(from_grey.anomaly_map, from_rgb.anomaly_map, atol=1e-4)
        assert torch.allclose(from_grey.score, from_rgb.score, atol=1e-4)
    unit = IGD(IGDConfig(image_size=64, width=4, kd_steps=0, ssim_space="unit"), BackboneConfig(weights="none"))
    targets = unit._local_inputs(grey, None)[1]
    assert torch.allclose(targets[0], value[0, :, :32, :32].expand(3, -1, -1), atol=1e-6)


def test_the_mvtec_experiment_has_the_papers_budget():
    # Paper L185/L189: 256 epochs on MVTec AD; 50 000 distillation steps at batch 64; every patch (ref-code).
    from omegaconf import OmegaConf

    experiment = OmegaConf.load(CONFIG_DIR / "experiment" / "igd_mvtec.yaml")
    model = OmegaConf.load(CONFIG_DIR / "model" / "igd.yaml")
    assert experiment.model.epochs == 256 and experiment.data.image_size == 256
    assert experiment.data.batch_size == 64 and experiment.model.micro_batch < 64 * 225  # the paper's batch, in passes
    assert (model.kd_steps, model.kd_batch_size, model.patches_per_image, model.beta) == (50000, 64, None, 0.1)
    assert IGDConfig().kd_steps == 50000 and IGDConfig().patches_per_image is None


def _train_set(n: int = 8) -> object:
    """A stand-in datamodule whose training set is ``n`` random 32×32 images."""
    return type("Data", (), {"train_set": [{"image": torch.randn(3, 32, 32)} for _ in range(n)]})()


def test_without_a_descriptor_the_autoencoder_trains_and_scores_on_reconstruction_alone():
    # IGD Table 5 "MS-SSIM" / "+ KD": the autoencoder with the MS-SSIM loss, no GSVDD.
    torch.manual_seed(0)
    model = IGD(IGDConfig(width=4, kd_steps=0, descriptor="none"), BackboneConfig(weights="none"))
    local = model.stages()[0]
    local.on_stage_start(_train_set())
    local.on_epoch_end(10)
    assert not bool(model.local.fitted)  # no E-step ran
    image = torch.randn(6, 3, 32, 32)
    terms = model.local_step({"image": image})
    assert set(terms) == {"loss", "reconstruction", "generator", "critic"}
    assert torch.allclose(terms["loss"], terms["reconstruction"] + terms["generator"] + terms["critic"])
    model.eval()
    with torch.no_grad():
        expected = model.local.reconstruction_error(model.local.decoder(model.local.encode(image)), image)
    score, _ = model.local.evaluate(image, image)
    assert torch.allclose(score, expected, atol=1e-6)  # ℓ_m itself, not ξ·ℓ_m
    assert torch.allclose(model.predict(image).score, expected, atol=1e-6)
    with pytest.raises(ValueError, match="descriptor"):
        IGDConfig(descriptor="gmm")


def test_svdd_trains_and_scores_the_squared_distance_to_the_mean_initial_code():
    # Deep SVDD (Ruff et al. 2018, IGD Table 5 "DSVDD"): c = mean of the initial codes (|c_i| ≥ ε = 0.1), fixed;
    # loss mean ‖z − c‖², score term ‖z − c‖².
    torch.manual_seed(0)
    model = IGD(IGDConfig(width=4, kd_steps=0, descriptor="svdd"), BackboneConfig(weights="none"))
    data = _train_set()
    local = model.stages()[0]
    with torch.no_grad():
        codes = model.local.eval().encode(torch.stack([item["image"] for item in data.train_set]))
    mean = codes.mean(0)
    centre = torch.where(mean.abs() < 0.1, torch.where(mean < 0, -0.1, 0.1), mean)
    local.on_stage_start(data)
    assert torch.allclose(model.local.mu, centre, atol=1e-6)
    model.train()
    image = torch.randn(6, 3, 32, 32)
    terms = model.local_step({"image": image})
    z = model.local.encode(image)
    assert torch.allclose(terms["descriptor"], ((z - centre) ** 2).sum(1).mean(), rtol=1e-5)
    optimizer = local.optimizer(local.parameters)
    terms["loss"].backward()
    optimizer.step()
    local.on_epoch_end(10)  # where the GSVDD would refit its mean, the centre stays
    assert torch.allclose(model.local.mu, centre, atol=1e-6)
    model.eval()
    with torch.no_grad():
        z = model.local.encode(image)
        reconstruction = model.local.reconstruction_error(model.local.decoder(z), image)
    score, _ = model.local.evaluate(image, image)
    assert torch.allclose(score, 0.5 * reconstruction + 0.5 * ((z - centre) ** 2).sum(1), rtol=1e-5)


def test_without_interpolation_there_is_no_critic_and_no_generator_term():
    # IGD Table 5 without "INTER" (ACAI, eq. 5 and 6): neither the critic loss nor the decoder's generator term.
    torch.manual_seed(0)
    cfg = IGDConfig(image_size=64, width=4, kd_steps=0, interpolation=False)
    model = IGD(cfg, BackboneConfig(weights="none"))
    assert model.local.critic is None and model.global_model.critic is None
    assert not any("critic" in name for name, _ in model.named_parameters())
    local = model.stages()[0]
    trained = {id(p) for p in local.parameters}
    decoder_and_head = [*model.local.decoder.parameters(), *model.local.encoder.to_latent.parameters()]
    assert trained == {id(p) for p in [*model.local.encoder.body.parameters(), *decoder_and_head]}
    local.on_stage_start(_train_set())
    terms = model.local_step({"image": torch.randn(2, 3, 64, 64)})
    assert set(terms) == {"loss", "reconstruction", "descriptor"}
    assert torch.allclose(terms["loss"], terms["reconstruction"] + terms["descriptor"])
    full = IGD(IGDConfig(image_size=64, width=4, kd_steps=0), BackboneConfig(weights="none"))
    critic = {id(p) for p in full.local.critic.parameters()}
    assert critic and critic <= {id(p) for p in full.stages()[0].parameters}


def test_without_distillation_there_is_no_distill_stage_and_the_encoder_trains_from_scratch():
    # IGD Table 5 "MS-SSIM" has no "KD": no distillation, so the (randomly initialised) body is not frozen.
    torch.manual_seed(0)
    model = IGD(IGDConfig(width=4, distill=False), BackboneConfig(weights="none"))  # kd_steps stays 50 000
    assert [s.name for s in model.stages()] == ["local"]
    assert model.backbone is None and model.kd_head is None and not model.cfg.body_frozen
    local = model.stages()[0]
    assert local.features is None  # the body's features change: nothing to cache
    local.on_stage_start(_train_set())
    body = model.local.encoder.body
    before = [p.detach().clone() for p in body.parameters()]
    optimizer = local.optimizer(local.parameters)
    model.train()
    local.step({"image": torch.randn(8, 3, 32, 32)})["loss"].backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, body.parameters()))
    distilled = IGD(IGDConfig(width=4, kd_steps=1, kd_input_size=32), BackboneConfig(weights="none"))
    assert [s.name for s in distilled.stages()] == ["distill", "local"] and distilled.cfg.body_frozen


def test_the_global_encoder_is_the_frozen_backbone_or_the_papers_four_trained_blocks():
    torch.manual_seed(0)
    ref = IGD(IGDConfig(image_size=64, width=4, kd_steps=0), BackboneConfig(weights="none"))
    paper = IGD(IGDConfig(image_size=64, width=4, kd_steps=0, global_encoder="paper_blocks"), BackboneConfig())
    assert isinstance(ref.global_model.encoder, GlobalEncoder) and ref.backbone is not None
    # No backbone at all without distillation: paper_blocks needs no ImageNet weights (BackboneConfig() would load them)
    assert isinstance(paper.global_model.encoder, GlobalBlockEncoder) and paper.backbone is None
    blocks = [m for m in paper.global_model.encoder.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 4 and all(isinstance(m, nn.BatchNorm2d) for b in blocks for m in b.body[:1])
    trained = {id(p) for p in paper.stages()[-1].parameters}
    assert all(id(p) in trained for p in paper.global_model.encoder.body.parameters())
    assert not any(id(p) in {id(q) for q in ref.stages()[-1].parameters} for p in ref.backbone.parameters())
    assert paper.stages()[-1].features is None  # a trained encoder's features cannot be cached
    out = paper.eval().predict(torch.randn(2, 3, 64, 64))
    assert out.anomaly_map.shape == (2, 64, 64)


def test_patch_maps_fold_back_averaged_or_summed_as_a_naive_loop():
    maps = torch.rand(2, 9, 32, 32)  # 64 px, patches of 32 at stride 16: a 3×3 grid
    averaged, summed = fold_patches(maps, 64, 16), fold_patches(maps, 64, 16, average=False)
    total, count = torch.zeros(2, 64, 64), torch.zeros(64, 64)
    for index in range(9):
        row, column = divmod(index, 3)
        total[:, 16 * row : 16 * row + 32, 16 * column : 16 * column + 32] += maps[:, index]
        count[16 * row : 16 * row + 32, 16 * column : 16 * column + 32] += 1
    torch.testing.assert_close(summed, total)
    torch.testing.assert_close(averaged, total / count)
    model = IGD(IGDConfig(image_size=64, width=4, kd_steps=0, patch_fusion="sum"), BackboneConfig(weights="none"))
    assert model.eval().predict(torch.randn(1, 3, 64, 64)).anomaly_map.shape == (1, 64, 64)


def test_hflip_flips_about_half_of_the_training_images_and_turns_the_feature_cache_off():
    model = IGD(IGDConfig(image_size=64, width=4, kd_steps=2, hflip=True), BackboneConfig(weights="none"))
    image = torch.randn(400, 3, 8, 8)
    torch.manual_seed(0)
    out = model._augmented(image)
    flipped = (out == image.flip(-1)).flatten(1).all(1)
    kept = (out == image).flatten(1).all(1)
    assert bool((flipped | kept).all()) and 150 < int(flipped.sum()) < 250
    assert all(stage.features is None for stage in model.stages() if stage.name in ("local", "global"))
    plain = IGD(IGDConfig(image_size=64, width=4, kd_steps=2), BackboneConfig(weights="none"))
    assert torch.equal(plain._augmented(image), image)
    assert all(stage.features is not None for stage in plain.stages())


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_the_critics_normalise_by_layer_norm_per_channel_per_element_as_the_ref_code_or_by_batch_norm():
    # layer_elementwise: the ref-code's LayerNorm([C, H, W]); the critics then hold its parameter counts, counted
    # from its own modules (tianyu0207/IGD at 1ce9952: VisualDiscriminator(64), VisualDiscriminator256(64)).
    w = 64
    assert _count(Critic(32, w, "layer_elementwise")) == 2_964_993
    assert _count(GlobalCritic(256, w, "layer_elementwise")) == 17_715_201
    norms = [m for m in Critic(32, w, "layer_elementwise").modules() if isinstance(m, nn.LayerNorm)]
    assert [tuple(m.normalized_shape) for m in norms] == [(64, 32, 32)] * 2 + [(128, 16, 16)] * 2 + [(256, 8, 8)] * 2
    # layer (choice): the same normalisation, one affine pair per channel; batch: paper L189.
    assert all(isinstance(m, nn.GroupNorm) for m in Critic(32, 4).modules() if "Norm" in type(m).__name__)
    for cfg in (IGDConfig(image_size=64, width=4, kd_steps=0, critic_norm="batch"),):
        model = IGD(cfg, BackboneConfig(weights="none"))
        for critic in (model.local.critic, model.global_model.critic):
            kinds = {type(m) for m in critic.modules() if "Norm" in type(m).__name__}
            assert kinds == {nn.BatchNorm2d}
    x = torch.rand(2, 3, 32, 32)
    critic = Critic(32, 4, "layer_elementwise")
    nn.init.normal_(critic.out.weight)
    assert critic(x).shape == (2,)
    # Per element, an affine weight changes one output alone: not the per-channel choice's behaviour.
    with torch.no_grad():
        first = critic.down.net[1].body[0]
        before = first(critic.down.net[0](x))
        first.weight[0, 0, 0] += 1.0
        after = first(critic.down.net[0](x))
    changed = (before != after).flatten(1).any(0).nonzero().flatten().tolist()
    assert changed == [0]
    with pytest.raises(ValueError, match="critic_norm"):
        IGDConfig(critic_norm="group")


def test_fixed_decoder_norms_stay_in_eval_mode_as_a_per_channel_affine_map():
    # ref-code: the generator trains in eval mode (init_c calls net.eval()), so each decoder batch norm is
    # γ·x/√(1 + ε) + β over its initial running mean 0 and variance 1, which never update.
    torch.manual_seed(0)
    cfg = IGDConfig(image_size=64, width=4, kd_steps=0, patches_per_image=2, decoder_norm="fixed")
    model = IGD(cfg, BackboneConfig(weights="none"))
    local = model.stages()[0]
    local.on_stage_start(type("Data", (), {"train_set": [{"image": torch.randn(3, 64, 64)} for _ in range(4)]})())
    optimizer = local.optimizer(local.parameters)
    model.train()
    for _ in range(2):
        terms = local.step({"image": torch.randn(4, 3, 64, 64)})
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
    for decoder in (model.local.decoder, model.global_model.decoder):
        norms = [m for m in decoder.modules() if isinstance(m, nn.BatchNorm2d)]
        assert norms and not any(m.training for m in norms) and decoder.training
        assert all(torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) for m in norms)
        assert all(torch.equal(m.running_var, torch.ones_like(m.running_var)) for m in norms)
    norm = next(m for m in model.local.decoder.modules() if isinstance(m, nn.BatchNorm2d))
    with torch.no_grad():
        nn.init.normal_(norm.weight)
        nn.init.normal_(norm.bias)
        x = torch.randn(3, norm.num_features, 4, 4)
        expected = norm.weight.view(1, -1, 1, 1) * x / (1 + norm.eps) ** 0.5 + norm.bias.view(1, -1, 1, 1)
        torch.testing.assert_close(norm(x), expected)
        z = torch.randn(3, cfg.latent)  # no batch statistics: each code decodes alone as in the batch
        torch.testing.assert_close(model.local.decoder(z)[1:2], model.local.decoder(z[1:2]))
    default = IGD(IGDConfig(width=4, kd_steps=0), BackboneConfig(weights="none")).train()
    assert all(m.training for m in default.local.decoder.modules() if isinstance(m, nn.BatchNorm2d))
    with pytest.raises(ValueError, match="decoder_norm"):
        IGDConfig(decoder_norm="frozen")


def _one_class_model(**options) -> IGD:
    model = IGD(IGDConfig(width=4, kd_steps=0, **options), BackboneConfig(weights="none"))
    model.stages()[0].on_stage_start(_train_set())
    return model


def _engine_steps(model: IGD, batches: list[torch.Tensor]) -> torch.optim.Optimizer:
    """The first stage's optimiser steps on ``batches`` as the engine runs them (batch ``k`` drawn after seed ``k``)."""
    stage = model.stages()[0]
    optimizer = stage.optimizer(stage.parameters)
    model.train()
    for seed, x in enumerate(batches):
        torch.manual_seed(seed)
        terms = stage.step({"image": x})
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
    return optimizer


def test_critic_after_the_autoencoder_matches_the_ref_codes_two_optimiser_steps_written_out():
    # ref-code p32/ssim_main.py:266-305: optimizer_g steps on ℓ_m + ℓ_h + 0.1·mean(d(g(e2))²); then the critic's
    # loss from g(e2) and g(f(x)) of the updated generator, e2 kept from before the step; optimizer_d steps
    # (its own Adam, no weight decay). Fixed decoder norms (as the ref-code's) make the modes irrelevant. Two
    # steps, so that Adam's first, sign-like step is not all that is compared.
    options = {"decoder_norm": "fixed", "critic_weight_decay": 0.0}
    torch.manual_seed(0)
    model = _one_class_model(critic_update="after", **options)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [torch.randn(4, 3, 32, 32) for _ in range(2)]
    assert "critic" not in model.stages()[0].step({"image": batches[0]})  # computed inside the optimiser step
    model.local._pending_critic = None
    optimizer = _engine_steps(model, batches)
    assert isinstance(optimizer, CriticAfterAutoencoder)

    reference = _one_class_model(critic_update="after", **options)
    reference.load_state_dict(start)
    d, cfg = reference.local, reference.cfg
    reference.train()
    critic_params = list(d.critic.parameters())
    critic_ids = {id(p) for p in critic_params}
    autoencoder_params = [p for p in reference.stages()[0].parameters if id(p) not in critic_ids]
    opt_g = torch.optim.Adam(autoencoder_params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=1e-6)
    opt_d = torch.optim.Adam(critic_params, lr=cfg.lr, betas=tuple(cfg.betas))
    for seed, x in enumerate(batches):
        torch.manual_seed(seed)
        z = d.encode(x)
        fake = d.decoder(z)
        alpha = 0.5 * torch.rand(4)
        e2 = alpha[:, None] * z + (1 - alpha[:, None]) * z.flip(0)
        reg_inter = (d.critic(d.decoder(e2)) ** 2).mean()
        l1 = (x - fake).abs().mean() / 4.7579
        ms = 1 - ms_ssim(fake, x, GLOBAL_WEIGHTS, 11, data_range=4.7579)
        svdd = (1 - torch.exp(-((z - d.mu) ** 2).sum(1) / d.sigma2)).mean()
        opt_g.zero_grad()
        (0.85 * ms.mean() + 0.15 * l1 + svdd + 0.1 * reg_inter).backward()
        opt_g.step()
        g2 = d.decoder(e2).detach()
        fake = d.decoder(d.encode(x)).detach()
        d_loss = ((d.critic(g2) - alpha) ** 2).mean() + (d.critic(fake + 0.2 * (x - fake)) ** 2).mean()
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()

    ours, theirs = dict(model.named_parameters()), dict(reference.named_parameters())
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-6, rtol=1e-5, msg=name)
    # The default order (one joint step, the critic on the reconstructions before it) gives another critic.
    joint = _one_class_model(**options)
    joint.load_state_dict(start)
    _engine_steps(joint, batches)
    gap = max((a - b).abs().max().item() for a, b in zip(joint.local.critic.parameters(), critic_params))
    assert gap > 1e-5
    # With batch statistics (the default decoder_norm), the critic's passes leave the running statistics alone.
    plain = _one_class_model(critic_update="after")
    plain.train()
    plain.stages()[0].step({"image": batches[0]})
    before = {k: v.clone() for k, v in plain.local.state_dict().items() if "running" in k}
    assert before and plain.local.critic_loss_after_step() is not None
    assert all(torch.equal(v, plain.local.state_dict()[k]) for k, v in before.items())
    assert plain.local.critic_loss_after_step() is None  # nothing pending any more
    # The optimiser's state round-trips and refuses another optimiser's.
    stage = model.stages()[0]
    fresh = stage.optimizer(stage.parameters)
    fresh.load_state_dict(optimizer.state_dict())
    assert fresh.state_dict()["critic"]["state"].keys() == optimizer.state_dict()["critic"]["state"].keys()
    with pytest.raises(ValueError, match="critic_update"):
        fresh.load_state_dict(torch.optim.Adam(stage.parameters).state_dict())


def test_the_critic_may_train_without_weight_decay_in_its_own_group():
    default = _one_class_model()
    stage = default.stages()[0]
    assert len(stage.optimizer(stage.parameters).param_groups) == 1  # paper L185: one weight decay
    model = _one_class_model(critic_weight_decay=0.0)
    stage = model.stages()[0]
    groups = stage.optimizer(stage.parameters).param_groups
    critic = {id(p) for p in model.local.critic.parameters()}
    assert [g["weight_decay"] for g in groups] == [1e-6, 0.0]
    assert {id(p) for p in groups[1]["params"]} == critic and not critic & {id(p) for p in groups[0]["params"]}
    with pytest.raises(ValueError, match="critic_weight_decay"):
        IGDConfig(critic_weight_decay=-1.0)


def test_the_ref_code_map_is_its_per_channel_ssim_and_mae_merged_by_rgb2gray():
    # ref-code multi_scale/inference_loc.py:283-296, 305-323: relu(0.85·Σ_j w_j(1 − relu(ssim_j)) + 0.15·|x − x̃|/L)
    # per channel, rgb2gray (0.2989, 0.5870, 0.1140); the residual map itself is checked in test_ssim by loops.
    torch.manual_seed(0)
    model = IGD(IGDConfig(image_size=64, width=4, kd_steps=0, ssim_map="ref"), BackboneConfig(weights="none"))
    x, y = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    for descriptor, weights, window in ((model.local, LOCAL_WEIGHTS, 3), (model.global_model, GLOBAL_WEIGHTS, 11)):
        per_channel = (
            0.85 * ms_ssim_residual_map(x, y, weights, window, data_range=4.7579) + 0.15 * (x - y).abs() / 4.7579
        )
        expected = 0.2989 * per_channel[:, 0] + 0.5870 * per_channel[:, 1] + 0.1140 * per_channel[:, 2]
        torch.testing.assert_close(descriptor.reconstruction_error(x, y, per_pixel=True), expected)
    padded = IGD(IGDConfig(image_size=64, width=4, kd_steps=0), BackboneConfig(weights="none"))
    assert not torch.allclose(
        padded.local.reconstruction_error(x, y, True), model.local.reconstruction_error(x, y, True)
    )
    assert model.eval().predict(x).anomaly_map.shape == (2, 64, 64)
    with pytest.raises(ValueError, match="ssim_map"):
        IGDConfig(ssim_map="valid")


def test_the_scalar_ms_ssim_may_be_taken_per_channel_as_the_ref_code():
    x, y = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    model = IGD(IGDConfig(width=4, kd_steps=0, ssim_channels="per_channel"), BackboneConfig(weights="none"))
    expected = 0.15 * (x - y).abs().mean(dim=(1, 2, 3)) / 4.7579 + 0.85 * (
        1 - sum(ms_ssim(x[:, c : c + 1], y[:, c : c + 1], GLOBAL_WEIGHTS, 11, data_range=4.7579) for c in range(3)) / 3
    )
    torch.testing.assert_close(model.local.reconstruction_error(x, y), expected)
    with pytest.raises(ValueError, match="ssim_channels"):
        IGDConfig(ssim_channels="mean")


def test_beta_in_the_training_loss_weighs_the_global_and_local_ms_ssim_terms_as_paper_eq_8():
    # Paper eq. 8: (1 − ρ)(1 − (β m_G + (1 − β) m_L)) = (1 − ρ)[β(1 − m_G) + (1 − β)(1 − m_L)]; MAE unsplit.
    torch.manual_seed(0)
    for loss_beta, (local_share, global_share) in ((False, (1.0, 1.0)), (True, (0.9, 0.1))):
        model = IGD(IGDConfig(image_size=64, width=4, kd_steps=0, loss_beta=loss_beta), BackboneConfig(weights="none"))
        model.train()
        for descriptor, share, side, weights, window in (
            (model.local, local_share, 32, LOCAL_WEIGHTS, 3),
            (model.global_model, global_share, 64, GLOBAL_WEIGHTS, 11),
        ):
            nn.init.normal_(descriptor.decoder.fc.weight)
            x = torch.randn(4, 3, side, side)
            terms = descriptor.losses(x, x)
            recon = descriptor.decoder(descriptor.encode(x))
            ms = ms_ssim(recon, x, weights, window, data_range=4.7579)
            expected = 0.15 * (recon - x).abs().mean(dim=(1, 2, 3)) / 4.7579 + 0.85 * share * (1 - ms)
            torch.testing.assert_close(terms["reconstruction"], expected.mean())
    one_class = IGD(IGDConfig(width=4, kd_steps=0, loss_beta=True), BackboneConfig(weights="none"))
    assert one_class.local.loss_ssim_weight == 1.0  # β is MVTec AD's (L187): no global model, no split


@pytest.mark.parametrize("partner", ["batch", "features"])
def test_the_interpolation_partner_is_the_batch_reversed_or_the_code_reversed(partner):
    torch.manual_seed(0)
    model = _one_class_model(interpolation_partner=partner)
    seen = []
    model.local.decoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    z, targets = torch.randn(5, model.cfg.latent), torch.randn(5, 3, 32, 32)
    recon = model.local.decoder(z)
    torch.manual_seed(3)
    model.local.interpolation_losses(z, recon, targets)
    torch.manual_seed(3)
    alpha = 0.5 * torch.rand(5)
    other = torch.stack([z[4 - i] for i in range(5)]) if partner == "batch" else torch.stack([r.flip(0) for r in z])
    torch.testing.assert_close(seen[-1], alpha[:, None] * z + (1 - alpha[:, None]) * other)
    with pytest.raises(ValueError, match="interpolation_partner"):
        IGDConfig(interpolation_partner="shuffle")


def test_each_model_may_have_its_own_xi_as_the_ref_codes_detection_script():
    # multi_scale/inference_det.py:190, 206, 208-209: 0.5·max(0.9·ℓ_m + 0.1·ℓ_h) + 0.5·(0.1·ℓ_m + 0.9·ℓ_h).
    torch.manual_seed(0)
    cfg = IGDConfig(image_size=64, width=4, kd_steps=0, xi=0.9, xi_global=0.1, combine="equal")
    model = IGD(cfg, BackboneConfig(weights="none"))
    model.stages()[0].on_stage_start(type("D", (), {"train_set": [{"image": torch.randn(3, 64, 64)}] * 2})())
    model.eval()
    image = torch.randn(2, 3, 64, 64)
    patches = to_patches(image, 32, 16).flatten(0, 1)

    def parts(descriptor, x):
        with torch.no_grad():
            z = descriptor.encode(x)
            return descriptor.reconstruction_error(descriptor.decoder(z), x), descriptor.distance(z)

    local_m, local_h = parts(model.local, patches)
    global_m, global_h = parts(model.global_model, image)
    expected = 0.5 * (0.9 * local_m + 0.1 * local_h).view(2, 9).amax(1) + 0.5 * (0.1 * global_m + 0.9 * global_h)
    torch.testing.assert_close(model.predict(image).score, expected)
    assert (model.local.xi, model.global_model.xi) == (0.9, 0.1)
    assert IGD(IGDConfig(image_size=64, width=4, kd_steps=0), BackboneConfig(weights="none")).global_model.xi == 0.5
    with pytest.raises(ValueError, match="xi_global"):
        IGDConfig(xi_global=1.5)
