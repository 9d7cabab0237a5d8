"""The D-RISE benchmark's gate: on the same injected masks our map equals vision-explanation-methods' map."""
from __future__ import annotations

import torch


from bench import drise  # noqa: E402


def test_gate_agrees_with_vem_on_injected_masks_on_the_sample_detector():
    detector, make_images, _ = drise.grid_detector()
    images = make_images(2)
    targets, records = drise.top_detections(detector, images)
    assert [len(t) for t in targets] == [1, 1] and all(float(t.probs.sum()) > 0.99 for t in targets)
    checked = drise.gate(detector, images, targets, records, n_masks=40, cells=16)
    assert checked["min_cosine"] >= 0.99999 and checked["max_abs_diff"] < 1e-4, checked


def test_gate_sees_a_different_mask_set():
    """Without injection the two sides draw different masks: the maps differ, so the gate's agreement above
    comes from the injected masks, not from maps that are alike whatever the masks."""
    detector, make_images, _ = drise.grid_detector()
    images = make_images(1)
    targets, records = drise.top_detections(detector, images)
    ours = drise.ours_fn(detector, targets, n_masks=40, cells=16, batch_size=64)(images)[0][0]
    torch.manual_seed(0)
    theirs = drise.vem_fn(detector, records, n_masks=40, cells=16)(images)[0][0]["detection"][0]
    ours = (ours - ours.min()) / (ours.max() - ours.min())
    assert float(torch.nn.functional.cosine_similarity(ours.flatten(), theirs.flatten(), dim=0)) < 0.99
