"""Overlays: which images get one, and what a panel shows."""

from __future__ import annotations

import matplotlib
import numpy as np
import torch
from PIL import Image

from anomalib_lite.reporting.overlays import colorize, overlay_panel, sample_indices, save_overlays, save_stages


def test_sample_covers_every_defect_folder_and_normal_images(tmp_path):
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 1])
    paths = [f"/d/{'good' if i < 3 else ('hole' if i < 6 else 'scratch')}/{i}.png" for i in range(9)]
    images = torch.zeros(9, 8, 8, 3, dtype=torch.uint8)
    masks = torch.zeros(9, 8, 8, dtype=torch.bool)
    written = save_overlays(images, torch.rand(9, 4, 4), masks, paths, sample_indices(labels, 4), tmp_path)
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
    assert (middle[2, 2] == 255).all() and (middle[3, 3] == 100).all()  # outline, not the interior
    assert (middle[1, 2] == 0).all()  # its black rim, just outside the mask
    assert not np.array_equal(panel[0, 16], panel[0, 17])  # hot diagonal vs cold neighbour
    inferno = (matplotlib.colormaps["inferno"]([0.0, 1.0])[:, :3] * 255).round()
    assert np.array_equal(colorize(np.array([0.0, 1.0])), inferno.astype(np.uint8))


def test_grey_images_get_overlays_and_stages_are_drawn_side_by_side(tmp_path):
    grey = torch.full((2, 8, 8, 1), 50, dtype=torch.uint8)
    written = save_overlays(
        grey, torch.rand(2, 8, 8), torch.zeros(2, 8, 8, dtype=torch.bool), ["/a/0.png", "/a/1.png"], [1], tmp_path
    )
    assert [p.name for p in written] == ["a_1.png"] and Image.open(written[0]).size == (24, 8)
    stages = {"input": torch.zeros(1, 3, 8, 8), "impression": torch.ones(1, 3, 8, 8)}
    (path,) = save_stages(stages, torch.rand(1, 4, 4), ["/d/hole/3.png"], tmp_path)
    panel = np.asarray(Image.open(path))
    assert path.name == "hole_3_stages.png" and panel.shape == (8, 24, 3)  # input | impression | map
    assert (panel[:, :8] == 0).all() and (panel[:, 8:16] == 255).all()
