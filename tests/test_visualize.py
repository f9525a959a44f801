"""Overlays: which images get one, and what a panel shows."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from anomalib_lite.visualize import colorize, overlay_panel, save_overlays


def test_sample_covers_every_defect_folder_and_normal_images(tmp_path):
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 1])
    paths = [f"/d/{'good' if i < 3 else ('hole' if i < 6 else 'scratch')}/{i}.png" for i in range(9)]
    images = torch.zeros(9, 8, 8, 3, dtype=torch.uint8)
    masks = torch.zeros(9, 8, 8, dtype=torch.bool)
    written = save_overlays(images, torch.rand(9, 4, 4), masks, labels, paths, tmp_path, 4)
    names = sorted(p.name for p in written)
    assert len(names) == 4
    assert sum(n.startswith("good") for n in names) == 2
    assert any(n.startswith("hole") for n in names) and any(n.startswith("scratch") for n in names)
    assert Image.open(written[0]).size == (24, 8)  # input | ground truth | heat map


def test_panel_outlines_the_mask_and_colours_the_map():
    image = np.full((8, 8, 3), 100, np.uint8)
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    panel = overlay_panel(image, np.eye(8, dtype=np.float32), mask, 0.0, 1.0)
    middle = panel[:, 8:16]
    assert (middle[2, 2] == (0, 255, 0)).all() and (middle[3, 3] == 100).all()  # outline, not the interior
    assert not np.array_equal(panel[0, 16], panel[0, 17])  # hot diagonal vs cold neighbour
    assert np.array_equal(colorize(np.array([0.0, 1.0]))[[0, 1]], np.array([[0, 0, 128], [128, 0, 0]], np.uint8))
