"""IGD: the GSVDD E-step, patches, the separation of autoencoder and critic updates, shapes, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from anomalib_lite.models import BackboneConfig
from anomalib_lite.models.backbones import cached_or_offline, torchvision_weights_path
from anomalib_lite.models.igd.model import IGD, GaussianDescriptor, IGDConfig, fold_patches, to_patches

from conftest import run_entry, write_mvtec_category


class Identity(nn.Module):
    """An "encoder" whose code is its input: ``B×d`` → ``(h, z) = (x, x)``."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


def test_e_step_fits_the_known_mean_and_variance():
    torch.manual_seed(0)
    d, n = 8, 4000
    mean = torch.tensor([2.0, -3.0, 0.5, 0.05, -0.02, 1.0, 0.03, -1.5])
    noise = torch.randn(n, d)
    noise = (noise - noise.mean(0)) / noise.std(0, unbiased=False)  # exactly zero mean, unit variance
    codes = mean + 0.7 * noise
    cfg = IGDConfig(latent=d, width=4)
    descriptor = GaussianDescriptor(Identity(), 32, cfg)
    descriptor.e_step(iter(codes.split(1000)))
    # Components smaller than mu_min = 0.1 in magnitude are pushed out to ±0.1, keeping their sign.
    expected_mu = torch.tensor([2.0, -3.0, 0.5, 0.1, -0.1, 1.0, 0.1, -1.5])
    assert torch.allclose(descriptor.mu, expected_mu, atol=1e-5)
    # mean ||z − μ||² = d·0.7² + Σ (μ_i − mean_i)², σ² = κ times that (0.5 here), floored at 1.
    spread = d * 0.49 + ((expected_mu - mean) ** 2).sum()
    assert descriptor.sigma2.item() == pytest.approx(max(0.5 * spread.item(), 1.0), rel=1e-5)
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
    model = IGD(IGDConfig(width=4, kd_epochs=0), BackboneConfig(weights="none"))
    terms = model.local_step({"image": torch.randn(6, 3, 32, 32)})
    descriptor = model.local

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
    small = IGD(IGDConfig(width=4, kd_epochs=0), BackboneConfig(weights="none")).eval()
    out = small.predict(torch.randn(3, 1, 32, 32))  # grey input is accepted
    assert out.anomaly_map.shape == (3, 32, 32) and out.score.shape == (3,)
    assert small.global_model is None and small.backbone is None
    large = IGD(IGDConfig(image_size=64, width=4, kd_epochs=1), BackboneConfig(weights="none")).eval()
    assert [s.name for s in large.stages()] == ["distill", "local", "global"]
    out = large.predict(torch.randn(2, 3, 64, 64))
    assert out.anomaly_map.shape == (2, 64, 64) and torch.isfinite(out.score).all()
    with pytest.raises(ValueError, match="image_size=60"):
        IGDConfig(image_size=60)


def test_an_uncached_torchvision_backbone_falls_back_to_the_offline_one(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    chosen = cached_or_offline(BackboneConfig(name="resnet18", layers=["layer4"]), "tf_efficientnet_lite0")
    assert chosen == BackboneConfig(name="tf_efficientnet_lite0", layers=None)
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
        "train.py", "model=igd", "data=mvtec", "category=bottle", f"data.root={root}", "data.image_size=64",
        "data.batch_size=4", "model.width=4", "model.kd_input_size=32", "trainer.max_epochs=1",
        "trainer.progress=false", "eval.n_maps=2", f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
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
        "train.py", "model=igd", "data=mnist5k", "data.normal_class=3", "model.width=4", "model.kd_epochs=1",
        "trainer.max_epochs=1", "trainer.progress=false", "eval.n_maps=2", f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["categories"]["3"]
    assert metrics["n_images"] == 1000 and metrics["n_anomalous"] == 900
    assert metrics["pixel_auroc"] is None and 0 <= metrics["image_auroc"] <= 1
