"""The ImageNet normalisation that pretrained backbones expect, shared by the data and model layers."""

# Per-channel (RGB) mean and standard deviation of ImageNet, on images scaled to [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
