"""UTAD's networks: shapes of both IE-Net variants and the Expert-Net, AdaIN's formula, shuffled negatives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

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


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _plain_convs(module: torch.nn.Module) -> int:
    """Conv layers outside the residual blocks."""
    inside = {id(m) for block in module.modules() if isinstance(block, ResidualBlock) for m in block.modules()}
    return sum(isinstance(m, torch.nn.Conv2d) and id(m) not in inside for m in module.modules())


@pytest.mark.parametrize(
    ("downsample", "blocks", "encoder", "decoder", "mlp"),
    [
        # Counted from the ref-code's own modules (Expert-Net/networks.py: Encoder(n_downsample, n_res, 3, 64, ...),
        # Decoder(n_downsample, n_res, 256 or 512, 3, ...) without its MLP, MLP(8, AdaIN parameters, 256, 3)), and
        # by hand. n_downsample 2 (ref-code), 2 residual blocks: encoder 3·64·49+64 = 9 472, 64·128·16+128 = 131 200,
        # 128·256·16+256 = 524 544, 2 blocks × 2 × (256·256·9+256) = 2 360 320; decoder 2 360 320 + conv5 256→128
        # 819 328 + norm 256 + conv5 128→64 204 864 + norm 128 + conv7 64→3 9 411; MLP 8·256+256 = 2 304,
        # 256·256+256 = 65 792, 256·2 048+2 048 = 526 336.
        (2, 2, 3_025_536, 3_394_307, 594_432),
        (2, 1, 1_845_376, 2_214_147, 331_264),
        # n_downsample 3 (the paper's 4 conv blocks, L105): encoder + conv4 256→512 2 097 664, residual blocks at 512:
        # 2 × 2 × (512·512·9+512) = 9 439 232; decoder 9 439 232 + conv5 512→256 3 277 056 + norm 512 + the layers
        # above; MLP: 256·4 096+4 096 = 1 052 672 for the last layer.
        (3, 2, 12_202_112, 13_750_787, 1_120_768),
        (3, 1, 7_482_496, 9_031_171, 594_432),
    ],
)
def test_expert_downsample_gives_the_ref_codes_layers_with_its_parameter_counts(
    downsample: int, blocks: int, encoder: int, decoder: int, mlp: int
) -> None:
    content, adaptive, plain = (
        ContentEncoder(blocks, downsample),
        Decoder(8, blocks, downsample),
        Decoder(None, blocks, downsample),
    )
    assert (_count(content), _count(plain), _count(adaptive)) == (encoder, decoder, decoder + mlp)
    assert _count(adaptive.mlp) == mlp
    # conv blocks before the residual blocks / after them: 3 (ref-code) or 4 (paper L105)
    assert _plain_convs(content) == _plain_convs(plain) == downsample + 1
    assert sum(isinstance(m, torch.nn.Upsample) for m in plain.modules()) == downsample
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    code = content(x)
    assert code.shape == (2, 64 * 2**downsample, 32 // 2**downsample, 32 // 2**downsample)
    assert adaptive(code, DetailEncoder(8)(x)).shape == plain(code).shape == x.shape


def test_ref_latent_head_is_the_ref_codes_conv_side_branch():
    # ref-code inceptionCAE.py L54-70: MaxPool 2×2 of the 8×8×512 bottom map, conv3 512→64, ReLU, conv3 64→512,
    # AvgPool over the 4×4 map, Linear 512→128 for μ and for log σ². Counted from its modules: encoder_g 590 400
    # (512·64·9+64 + 64·512·9+512), encoder_mean + encoder_log_var 131 328 (2 × (512·128+128)); the whole Model()
    # (encoder 1 627 520, decoder 4 426 368 and those) 6 775 616.
    torch.manual_seed(0)
    net = IENet(256, head="ref")
    assert (_count(net.branch), _count(net.mlp), _count(net)) == (590_400, 131_328, 6_775_616)
    assert net.expand is None and IENet(256).branch is None
    sides = []
    net.branch[1].register_forward_hook(lambda m, i, o: sides.append(tuple(i[0].shape[1:])))
    x = torch.rand(2, 3, 256, 256)
    mu, log_var, bottom = net.encode(x)
    assert sides == [(512, 4, 4)] and bottom.shape == (2, 512, 8, 8) and mu.shape == log_var.shape == (2, 128)
    # step by step, as the ref-code's forward
    conv1, conv2 = net.branch[1], net.branch[3]
    h = F.conv2d(
        F.relu(F.conv2d(F.max_pool2d(bottom, 2), conv1.weight, conv1.bias, padding=1)),
        conv2.weight,
        conv2.bias,
        padding=1,
    )
    expected = F.avg_pool2d(h, 4).flatten(1) @ net.mlp.weight.T + net.mlp.bias
    torch.testing.assert_close(mu, expected[:, :128], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(log_var, expected[:, 128:].clamp(-LOG_VAR_BOUND, LOG_VAR_BOUND), rtol=1e-5, atol=1e-6)
    # the KL on the code trains the branch; the small network (4×4 bottom map, pooled to 2×2) works too
    (mu**2).sum().backward()
    assert conv1.weight.grad.abs().sum() > 0
    small = IENet(64, small=True, head="ref")
    mu, _, bottom = small.encode(torch.rand(2, 3, 64, 64))
    assert bottom.shape == (2, 256, 4, 4) and mu.shape == (2, 128)


@pytest.mark.parametrize("head", ["paper", "ref"])
def test_initial_log_var_sets_only_the_log_variance_bias(head):
    # UTADConfig.initial_log_var: σ = exp(-3) at the start instead of PyTorch's default (σ ≈ 1); nothing else moves.
    torch.manual_seed(0)
    default = IENet(64, small=True, head=head)
    torch.manual_seed(0)
    small_sigma = IENet(64, small=True, head=head, initial_log_var=-6.0)
    changed = [
        name
        for (name, a), (_, b) in zip(default.state_dict().items(), small_sigma.state_dict().items(), strict=True)
        if not torch.equal(a, b)
    ]
    last = "mlp.4.bias" if head == "paper" else "mlp.bias"
    assert changed == [last]
    bias = small_sigma.state_dict()[last]
    assert torch.equal(bias[:128], default.state_dict()[last][:128]) and (bias[128:] == -6.0).all()
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        _, log_var, _ = small_sigma.encode(x)
        _, default_log_var, _ = default.encode(x)
    assert abs(log_var.mean().item() + 6.0) < 1.0
    assert abs(default_log_var.mean().item()) < 1.0
