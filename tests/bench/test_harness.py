"""The benchmark's correctness gate and its bookkeeping, on real implementations with real numbers."""
from __future__ import annotations

import torch

from bench import harness
from bench.implementations import Impl, MethodCase, as_grad_cam_library_output, method_cases
from bench.models import build, images_and_targets


def test_gate_matches_every_peer_on_tiny_cnn():
    """Our Grad-CAM family, Saliency and RISE equal pytorch-grad-cam (after its relu + min-max at the layer's
    resolution), Captum, and the RISE reference, image by image."""
    model = build("tiny_cnn")
    images, targets = images_and_targets(model, 3)
    settings = {"rise": {"n_masks": 40, "cells": 7, "p": 0.5, "seed": 0, "chunk": 8, "control_variate": False}}
    for case in method_cases(model, ["gradcam", "gradcam_pp", "layercam", "saliency", "rise"], 3, settings):
        cosines = harness.gate(case, images, targets)
        assert set(cosines) == {peer.name for peer in case.peers}
        assert min(cosines.values()) >= 0.9999, (case.method, cosines)


def test_grad_cam_library_view_recovers_the_layer_cam_exactly():
    """Upsample a known 4x4 CAM as our explainers do; the gate's view must equal relu, min-max, upsample."""
    cam = torch.tensor([[[-1.0, 0.0, 2.0, 1.0], [0.5, 3.0, -2.0, 0.0], [1.0, 1.0, 1.0, -0.5], [0.0, 4.0, 0.0, 2.0]]])
    ours = torch.nn.functional.interpolate(cam[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    normalised = cam.clamp(min=0) / 4.0
    theirs = torch.nn.functional.interpolate(normalised[:, None], size=(32, 32), mode="bilinear",
                                             align_corners=False)[:, 0]
    torch.testing.assert_close(as_grad_cam_library_output(ours, (4, 4)), theirs, atol=1e-5, rtol=0)


def test_no_ratio_when_the_gate_fails():
    double = Impl("double", lambda x, t: 2 * x[:, 0])
    flipped = Impl("flipped", lambda x, t: -x[:, 0])
    case = MethodCase("toy", Impl("ours", lambda x, t: x[:, 0]), [double, flipped], "fb", 4)
    images = torch.rand(2, 3, 8, 8)
    cosines = harness.gate(case, images, torch.zeros(2, dtype=torch.long))
    assert cosines["double"] > 0.999999 and cosines["flipped"] < -0.999999
    limits = harness.Limits(fb=100.0, inf=400.0, fb_batch=8, inf_batch=8)
    timings = {"ours": [1.0, 2.0, 4.0], "double": [4.0, 4.0, 8.0], "flipped": [0.5, 0.5, 0.5]}
    rows = {row["impl"]: row for row in harness.case_rows(case, timings, cosines, 10, limits)}
    assert rows["ours"]["images_per_s"] == 5.0  # 10 images / median 2 s
    assert rows["ours"]["efficiency"] == 5.0 / (100.0 / 4)  # 4 forward+backward passes per image
    assert rows["double"]["ours_over_peer"] == 2.0
    assert rows["flipped"]["gate_passed"] is False and rows["flipped"]["ours_over_peer"] is None


def test_efficiency_uses_the_limit_timed_in_the_same_rounds():
    """With the limit in the rotation, efficiency is ours against the limit's median of those rounds (scaled
    by the passes per image), not the start-of-run rate; the limit impl does the limit's work."""
    model = build("tiny_cnn")
    images, targets = images_and_targets(model, 4)
    limits = harness.Limits(fb=1e9, inf=1e9, fb_batch=2, inf_batch=4)
    fb = harness.limit_impl(model, limits, "fb")
    grads = fb.fn(images, targets)
    x = images.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(model.net(x).gather(1, targets[:, None]).sum(), x)
    torch.testing.assert_close(grads, expected)
    assert all(p.requires_grad for p in model.net.parameters())  # frozen for the call only
    case = MethodCase("toy", Impl("ours", lambda x, t: x[:, 0]), [], "fb", 4)
    timings = harness.time_case(case, images, targets, repeats=3, device=torch.device("cpu"), min_seconds=0,
                                limit=fb)
    assert set(timings) == {"ours", "X_fb"} and len(timings["X_fb"]) == 3
    timings = {"ours": [1.0, 2.0, 4.0], "X_fb": [0.1, 0.2, 0.4]}
    (row,) = harness.case_rows(case, timings, {}, 10, limits)
    assert row["limit_interleaved"] and row["limit_images_per_s"] == 10 / 0.2 / 4
    assert row["efficiency"] == 5.0 / (10 / 0.2 / 4)
