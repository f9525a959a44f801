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


def _inception(c_in: int, f: int) -> int:
    # four bias-free convs (1×1, 3×3, 5×5, 1×1 after the pool) with BatchNorm (weight and bias) each
    return f * c_in * (1 + 9 + 25 + 1) + 4 * 2 * f


def _linear(a: int, b: int) -> int:
    return a * b + b


def _conv(a: int, b: int, k: int) -> int:
    return a * b * k * k + b


def test_ie_net_parameter_counts_follow_the_layer_formula_at_256_px():
    # Encoder IB(3,32) ↓4 IB(128,32) ↓2 IB(128,64) ↓2 IB(256,128) ↓2; the ref-code decoder (inceptionCAE.py)
    # IB(512,128) ↑2 IB(512,64) ↑4 IB(256,64) ↑2 IB(256,32) ↑2, conv1×1 without bias (1 627 520 and 4 426 368
    # parameters there). Paper head: 512 → 512 → 512 → 2·128, and a linear layer from z back to the 512×8×8 map.
    net = IENet(256)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    encoder = _inception(3, 32) + _inception(128, 32) + _inception(128, 64) + _inception(256, 128)
    decoder = _inception(512, 128) + _inception(512, 64) + _inception(256, 64) + _inception(256, 32) + 128 * 3
    head = _linear(512, 512) + _linear(512, 512) + _linear(512, 256)
    assert (count(net.encoder), count(net.decoder), count(net.mlp)) == (encoder, decoder, head)
    assert count(net.expand) == _linear(128, 512 * 8 * 8)
    assert count(IENet(256, head="ref").mlp) == _linear(512, 256)  # ref-code: encoder_mean + encoder_log_var
    assert count(MIDiscriminator(128, 512)) == _linear(640, 128) + 2 * _linear(128, 128) + _linear(128, 1)
    small = IENet(64, small=True)
    assert count(small.decoder) == _inception(256, 64) + _inception(256, 64) + _inception(256, 32) + 128 * 3


def test_ie_net_decoder_runs_its_inception_blocks_below_full_resolution():
    # ref-code order: inception block, then nearest upsampling (2, 4, 2, 2); the last block works at S/2.
    sides = []
    net = IENet(256)
    for module in net.decoder:
        if isinstance(module, InceptionBlock):
            module.register_forward_hook(lambda m, i, o: sides.append(o.shape[-1]))
    mu, _, bottom = net.encode(torch.rand(1, 3, 256, 256))
    assert net.decode(mu, bottom).shape == (1, 3, 256, 256)
    assert sides == [8, 16, 64, 128]


def test_expert_net_parameter_counts_follow_the_layer_formula_at_256_px():
    # MUNIT layers: content encoder conv7 3→64, conv4 64→128, conv4 128→256, 2 residual blocks (two conv3 each);
    # decoder 2 residual blocks, conv5 256→128 + LayerNorm, conv5 128→64 + LayerNorm, conv7 64→3, AdaIN MLP
    # 8→256→256→(2 blocks × 2 AdaIN × γ, β of 256); detail extractor conv7, conv4 ×2, conv1×1 → 8 (paper: 3 convs).
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    residual = 2 * _conv(256, 256, 3)
    content = _conv(3, 64, 7) + _conv(64, 128, 4) + _conv(128, 256, 4) + 2 * residual
    up = _conv(256, 128, 5) + 2 * 128 + _conv(128, 64, 5) + 2 * 64 + _conv(64, 3, 7)
    mlp = _linear(8, 256) + _linear(256, 256) + _linear(256, 2 * 2 * 2 * 256)
    detail = _conv(3, 64, 7) + _conv(64, 128, 4) + _conv(128, 256, 4) + _conv(256, 8, 1)
    assert count(ContentEncoder(2)) == content
    assert count(Decoder(8, 2)) == 2 * residual + up + mlp
    assert count(Decoder(None, 2)) == 2 * residual + up
    assert count(DetailEncoder(8, 3)) == detail
