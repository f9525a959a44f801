"""UTAD's networks: shapes of both IE-Net variants and the Expert-Net, AdaIN's formula, shuffled negatives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomalib_lite.models.utad.networks import (
    LOG_VAR_BOUND,
    ContentEncoder,
    Decoder,
    DetailEncoder,
    IENet,
    InceptionBlock,
    MIDiscriminator,
    ResidualBlock,
    adain,
    shuffled_partners,
)


@pytest.mark.parametrize(("size", "small", "bottom"), [(256, False, (512, 8)), (64, True, (256, 4))])
def test_ie_net_shapes(size, small, bottom):
    net = IENet(size, small).eval()
    x = torch.rand(2, 3, size, size)
    mu, log_var, bottom_map = net.encode(x)
    feature = bottom_map.mean(dim=(2, 3))
    assert mu.shape == log_var.shape == (2, 128) and bottom_map.shape == (2, *bottom, bottom[1])
    assert net.bottom == bottom
    impression = net.decode(mu, bottom_map)
    assert impression.shape == x.shape and impression.min() > 0 and impression.max() < 1
    assert MIDiscriminator(128, net.feature_size)(mu, feature).shape == (2,)
    assert InceptionBlock(3, 5)(x).shape == (2, 20, size, size)
    with pytest.raises(ValueError, match="divisible by"):
        IENet(size + 8, small)


def test_expert_net_shapes_and_the_detail_code_changes_the_output():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    content = ContentEncoder()(x)
    detail = DetailEncoder(8)(x)
    assert content.shape == (2, 256, 16, 16) and detail.shape == (2, 8)
    decoder = Decoder(8)
    out = decoder(content, detail)
    assert out.shape == x.shape and out.abs().max() <= 1
    assert not torch.allclose(out, decoder(content, detail + 1.0))
    assert Decoder(None)(content).shape == x.shape  # the naïve-impression branch: no detail code


def test_adain_equals_its_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (2, 4, 5, 6))
    gamma, beta = rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
    ours = adain(torch.from_numpy(x), torch.from_numpy(gamma), torch.from_numpy(beta), eps=0.0).numpy()
    for b in range(2):
        for c in range(4):
            plane = x[b, c]
            expected = gamma[b, c] * (plane - plane.mean()) / plane.std() + beta[b, c]
            np.testing.assert_allclose(ours[b, c], expected, rtol=1e-10)


def test_negative_pairs_are_really_shuffled():
    generator = torch.Generator().manual_seed(0)
    shifts = set()
    for batch in (2, 3, 8):
        for _ in range(50):
            partners = shuffled_partners(batch, generator)
            assert sorted(partners.tolist()) == list(range(batch))  # a permutation
            assert (partners != torch.arange(batch)).all()  # nobody paired with itself
            shifts.add((batch, int(partners[0])))
    assert len({s for b, s in shifts if b == 8}) > 1  # not always the same partner
    with pytest.raises(ValueError):
        shuffled_partners(1)


def test_latent_head_is_three_fc_layers_with_a_bounded_log_variance():
    # Paper §4.1: μ and σ "estimated by a MLP ... a stack of three fully connected layers"; log σ² clamped.
    torch.manual_seed(0)
    net = IENet(64, small=True, head="paper")
    assert sum(isinstance(m, torch.nn.Linear) for m in net.mlp.modules()) == 3
    with torch.no_grad():
        net.mlp[-1].bias[128:] = 1e4  # a runaway log σ²
    _, log_var, _ = net.encode(torch.rand(2, 3, 64, 64))
    assert log_var.max() == LOG_VAR_BOUND
    assert torch.isfinite(log_var.to(torch.bfloat16).exp()).all()
    # The decoder reads the code: a different z gives a different impression.
    mu, _, bottom = net.encode(torch.rand(2, 3, 64, 64))
    assert not torch.allclose(net.decode(mu, bottom), net.decode(mu + 1, bottom))
    # Reference-code variant: the decoder reads the bottom map; the latent is a side branch (one linear layer).
    ref = IENet(64, small=True, head="ref")
    assert isinstance(ref.mlp, torch.nn.Linear) and ref.expand is None
    mu, _, bottom = ref.encode(torch.rand(2, 3, 64, 64))
    assert torch.equal(ref.decode(mu, bottom), ref.decode(mu + 1, bottom))
    with pytest.raises(ValueError, match="latent_head"):
        IENet(64, small=True, head="vae")


@pytest.mark.parametrize(("blocks", "convs"), [(1, 3), (2, 5)])
def test_expert_net_block_and_detail_layer_counts(blocks, convs):
    content, decoder = ContentEncoder(blocks), Decoder(8, blocks)
    assert sum(isinstance(m, ResidualBlock) for m in content.modules()) == blocks
    assert len(decoder.blocks) == blocks
    assert sum(isinstance(m, torch.nn.Conv2d) for m in DetailEncoder(8, convs).modules()) == convs + 1  # + 1×1 out
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert decoder(content(x), DetailEncoder(8, convs)(x)).shape == x.shape
