"""The model input: ImageNet normalisation of uint8 pixels, against the formula computed in NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomalib_lite.data.images import to_model_input
from anomalib_lite.data.normalisation import IMAGENET_MEAN, IMAGENET_STD


@pytest.mark.parametrize("shape", [(5, 37, 29, 3), (37, 29, 3), (4, 16, 16, 1)])
def test_model_input_is_the_imagenet_normalisation_of_the_pixels(shape):
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    mean, std = np.float32(IMAGENET_MEAN), np.float32(IMAGENET_STD)
    if shape[-1] == 1:  # grey: the channel means of the statistics
        mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
    expected = np.moveaxis((pixels.astype(np.float32) / np.float32(255) - mean) / std, -1, -3)
    result = to_model_input(torch.from_numpy(pixels))
    assert result.dtype == torch.float32 and result.is_contiguous()
    np.testing.assert_allclose(result.numpy(), expected, rtol=0, atol=1e-6)
