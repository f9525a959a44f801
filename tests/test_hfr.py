"""HFR against the paper's formulas, and the shared layers against scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from anomalib_lite.models import BackboneConfig, build_model
from anomalib_lite.models.hfr import HFRConfig
from anomalib_lite.models.layers import gaussian_blur, normalized_distance

from conftest import per_position


@pytest.mark.parametrize("sigma", [1.0, 4.0])
def test_gaussian_blur_matches_scipy(sigma):
    maps = torch.rand(2, 40, 48, dtype=torch.float64)
    expected = np.stack([ndimage.gaussian_filter(m, sigma, mode="reflect") for m in maps.numpy()])
    # scipy's "reflect" repeats the edge pixel; torch's "reflect" does not: compare away from the border.
    r = int(4 * sigma + 0.5)
    got = gaussian_blur(maps, sigma).numpy()
    np.testing.assert_allclose(got[:, r:-r, r:-r], expected[:, r:-r, r:-r], atol=1e-10)


def test_normalized_distance_formula():
    a, b = torch.randn(2, 5, 3, 4), torch.randn(2, 5, 3, 4)
    naive = per_position(a, b, lambda u, v: torch.linalg.norm(u / torch.linalg.norm(u) - v / torch.linalg.norm(v)))
    torch.testing.assert_close(normalized_distance(a, b), naive)


@pytest.fixture(scope="module")
def hfr():
    return build_model(HFRConfig(), BackboneConfig("resnet18", weights="none"))


def test_decoder_reconstructs_each_level_from_the_one_below(hfr):
    encoder_widths = hfr.encoder.channels  # 64, 128, 256
    first_convs = [d[0] for d in hfr.decoders]
    assert [c.in_channels for c in first_convs] == [256, 256, 128]  # E3, then D3, then D2
    assert [d[-1].out_channels for d in hfr.decoders] == encoder_widths[::-1]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in hfr.decoders[0]) == 3


def test_loss_and_map_follow_the_paper(hfr):
    hfr.eval()
    image = torch.randn(2, 3, 64, 64)
    residuals = hfr.residuals(image)
    assert [tuple(m.shape) for m in residuals] == [(2, 16, 16), (2, 8, 8), (2, 4, 4)]
    loss = hfr.training_step({"image": image})["loss"]
    torch.testing.assert_close(loss, torch.stack([m.mean() for m in residuals]).mean())
    out = hfr.predict(image)
    summed = sum(F.interpolate(m[:, None], size=(64, 64), mode="bilinear")[:, 0] for m in residuals)
    torch.testing.assert_close(out.anomaly_map, gaussian_blur(summed, 4.0))
    torch.testing.assert_close(out.score, out.anomaly_map.flatten(1).amax(1))


def test_only_the_decoder_trains(hfr):
    (stage,) = hfr.stages()
    trained = {id(p) for p in stage.parameters}
    assert trained == {id(p) for p in hfr.decoders.parameters()}
    assert not trained & {id(p) for p in hfr.encoder.parameters()}
    optimizer = stage.optimizer(stage.parameters)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["lr"] == 0.4


def test_bad_hyper_parameter_is_named():
    with pytest.raises(ValueError, match="model.kernel_size"):
        HFRConfig(kernel_size=2)


def test_learning_rate_is_constant_by_default_cosine_decay_one_option_away():
    assert build_model(HFRConfig(), BackboneConfig("resnet18", weights="none")).stages()[0].scheduler is None
    (stage,) = build_model(HFRConfig(lr_schedule="cosine"), BackboneConfig("resnet18", weights="none")).stages()
    optimizer = stage.optimizer(stage.parameters)
    scheduler = stage.scheduler(optimizer, 10)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    rates.append(optimizer.param_groups[0]["lr"])
    expected = [0.5 * 0.4 * (1 + np.cos(np.pi * k / 10)) for k in range(11)]  # 0.4 at step 0, 0 at the end
    np.testing.assert_allclose(rates, expected, atol=1e-9)
    with pytest.raises(ValueError, match="model.lr_schedule='step'; choices: constant, cosine"):
        HFRConfig(lr_schedule="step")
