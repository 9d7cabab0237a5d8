"""The planted shortcut is visible in the committed models' attention, measured with a minimal inline
Grad-CAM (hook on the target layer, autograd.grad, channel-mean weights, ReLU, bilinear upsample). It is
independent of `explainers/` on purpose: this is the ground truth the engine is later tested against."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sample_models.architectures import TARGET_LAYERS
from sample_models.scenes import SCENARIOS, render
from sample_models.train import load_version, to_tensors


def inline_gradcam(net, x, target):
    layer = net.get_submodule(TARGET_LAYERS["tiny_cnn"])
    captured = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.setdefault("act", out))
    try:
        logits = net(x)
    finally:
        handle.remove()
    act = captured["act"]
    (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), act)
    cam = F.relu((grad.mean((2, 3), keepdim=True) * act).sum(1, keepdim=True))
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0].detach()


def region_mass(cams, masks, region_id):
    """Mean over images of sum(S+ * M_r) / sum(S+) (images without positive mass are left out)."""
    total = cams.sum((1, 2))
    keep = total > 0
    inside = (cams * torch.from_numpy(masks == region_id)).sum((1, 2))
    return float((inside[keep] / total[keep]).mean())


def attention(scenario, version, n=160, seed=301):
    """Shortcut and core mass on held-out images that carry the shortcut (cage bars, tag, long hair, water)."""
    scenes = render(scenario, n=n, leak=0.95, seed=seed)
    keep = scenes.shortcut == 1
    x, y = to_tensors(scenes)
    cams = inline_gradcam(load_version(scenario, version), x[keep], y[keep])
    sc = scenes.scenario
    masks = scenes.masks[keep]
    return (region_mass(cams, masks, sc.regions.index(sc.shortcut)),
            region_mass(cams, masks, sc.regions.index(sc.core)))


def test_inline_gradcam_matches_a_hand_computation_on_a_linear_head():
    """On a one-layer net the CAM is exactly relu(sum_c w_c * A_c) with w_c = fc weight / (h * w)."""
    torch.manual_seed(0)
    from sample_models.architectures import TinyCNN

    net = TinyCNN(2).eval()
    x = torch.rand(2, 3, 64, 64)
    act = net.block3(net.block2(net.block1(x)))
    weights = net.fc.weight[torch.tensor([1, 0])] / 64  # d(mean pool)/dA = 1/64 per cell
    expected = F.relu((weights[:, :, None, None] * act).sum(1, keepdim=True))
    expected = F.interpolate(expected, size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(inline_gradcam(net, x, torch.tensor([1, 0])), expected.detach())


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_v1_attends_to_the_shortcut_and_v5_to_the_core(scenario):
    shortcut_v1, core_v1 = attention(scenario, 1)
    shortcut_v5, core_v5 = attention(scenario, 5)
    # Measured (n=160, seed 301): shortcut v1 -> v5 cage .23 -> .15, doctor_nurse .12 -> .04,
    # watermark .12 -> .00, background .87 -> .71; core cage .18 -> .42, doctor_nurse .45 -> .82, ...
    assert shortcut_v1 > shortcut_v5 + 0.05, (shortcut_v1, shortcut_v5)
    assert core_v5 > core_v1 + 0.15, (core_v1, core_v5)
    assert np.isfinite([shortcut_v1, core_v1, shortcut_v5, core_v5]).all()
