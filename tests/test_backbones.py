"""Backbones: the offline weights are really ImageNet weights; download code works from a local file."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from skimage import data as skdata

from anomalib_lite.data.images import to_model_input
from anomalib_lite.data.normalisation import IMAGENET_MEAN, IMAGENET_STD
from anomalib_lite.errors import ConfigError, WeightsError
from anomalib_lite.models import backbones
from anomalib_lite.models.backbones import Backbone


def classify(name: str, photo) -> int:
    """ImageNet class of a photo through the backbone's full network with its offline weights."""
    spec = backbones.BACKBONES[name]
    net = spec.make().eval()
    backbones.load_pip_efficientnet(net, backbones.pip_weights_path(spec.pip_package))
    x = to_model_input(torch.from_numpy(photo))[None]
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    scale = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) / 0.5
    shift = (torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) - 0.5) / 0.5
    with torch.no_grad():
        return int(net(x * scale + shift).argmax())


@pytest.mark.parametrize("name", backbones.OFFLINE_BACKBONES)
def test_offline_weights_recognise_photos(name):
    assert classify(name, skdata.chelsea()) in (281, 282, 285)  # tabby, tiger cat, Egyptian cat
    assert classify(name, skdata.coffee()) == 967  # espresso


def test_stages_shapes_and_frozen():
    backbone = Backbone("tf_efficientnet_lite0")
    features = backbone(torch.randn(2, 3, 128, 128))
    assert [f.shape for f in features] == [(2, 24, 32, 32), (2, 40, 16, 16), (2, 112, 8, 8)]
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not backbone.training  # BatchNorm statistics stay frozen


def test_layer_order_follows_the_request():
    backbone = Backbone("resnet18", ["layer2", "layer1"], weights="none")
    assert backbone.channels == [128, 64] and backbone.strides == [8, 4]


def test_unknown_backbone_and_layer_name_the_choices():
    with pytest.raises(ConfigError, match="choices: resnet18"):
        Backbone("resnet1000", weights="none")
    with pytest.raises(ConfigError, match="choices: stem, layer1"):
        Backbone("resnet18", ["layer9"], weights="none")


def test_torchvision_weights_download_from_a_local_file(tmp_path, monkeypatch):
    source = tmp_path / "served" / "resnet18-local.pth"
    source.parent.mkdir()
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), source)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cached = tmp_path / "torch_home" / "hub" / "checkpoints" / source.name
    monkeypatch.setattr(backbones, "torchvision_weights_path", lambda name: (source.as_uri(), cached))
    backbone = Backbone("resnet18")
    assert cached.is_file()
    assert torch.equal(backbone.steps[1][0].conv1.weight, reference.layer1[0].conv1.weight)


def test_missing_weights_offline_name_the_file_and_the_alternative(tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "resnet18-f37072fd.pth"
    unreachable = (tmp_path / "nowhere" / "resnet18-f37072fd.pth").as_uri()
    monkeypatch.setattr(backbones, "torchvision_weights_path", lambda name: (unreachable, cache))
    with pytest.raises(WeightsError, match=r"resnet18-f37072fd\.pth[\s\S]*backbone\.name=tf_efficientnet_lite0"):
        Backbone("resnet18")
    assert not cache.exists()


def test_vgg_taps_are_the_convolutions_before_their_relu():
    # UTAD's perceptual layers conv1_2, conv2_2, conv3_4 "before ReLU": torchvision's VGG ReLUs are in place, and
    # would turn a tapped conv output into its activation.
    backbone = Backbone("vgg19", weights="none")
    assert backbone.layers == ["features.2", "features.7", "features.16"]
    x = torch.randn(2, 3, 32, 32)
    conv1_2, conv2_2, conv3_4 = backbone(x)
    steps = dict(zip(backbone.names, backbone.steps))
    h = x * backbone.scale + backbone.shift
    expected = {}
    for name in backbone.names:  # every step out of place, the ReLUs as F.relu
        step = steps[name]
        h = torch.relu(h) if isinstance(step, torch.nn.ReLU) else step(h)
        expected[name] = h
    for tap, name in ((conv1_2, "features.2"), (conv2_2, "features.7"), (conv3_4, "features.16")):
        assert (tap < 0).any(), f"{name} holds no negative value: it is a ReLU's output"
        torch.testing.assert_close(tap, expected[name])
