"""Our Grad-CAM's memory stays flat over many images (pytorch-grad-cam#195, #483): RSS after the warm-up
batches does not grow with the number of images explained. A memory-growth check, not a timing test."""
from __future__ import annotations

import pytest

from bench.memory import rss_growth


@pytest.mark.slow
def test_grad_cam_rss_flat_over_2000_images():
    rss = rss_growth(2000, batch_size=64, threads=2)  # a fresh subprocess, tiny_cnn at 64x64
    assert len(rss) == 32
    settled = rss[4]
    # Keeping each batch's 64 maps (1 MiB) alive would add ~27 MiB by the end; the bound is well below.
    assert max(rss[5:]) - settled < 16, [round(r) for r in rss]
