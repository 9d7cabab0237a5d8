"""Occlusion and RISE: hand-computed occlusion, Captum equality, RISE seeding, chunking and a planted patch."""
import pytest
import torch
from captum.attr import Occlusion as CaptumOcclusion
from torch import nn

from explainers.errors import InputError
from explainers.occlusion import Occlusion
from explainers.rise import RISE, draw_cells, relative_change, relative_standard_error, smooth_masks
from tests.explainers.saliency_nets import HandSetNet, SmallCNN

PIXEL_GRAD = torch.tensor([[2.0, -1.0, 1.0], [-1.0, 3.0, -3.0]]) / 16  # HandSetNet, see test_gradients


def test_occlusion_of_a_linear_model_by_hand():
    model, x, t = HandSetNet().eval(), torch.rand(2, 3, 4, 4), torch.tensor([0, 1])
    # Score drop when pixels are set to 0.5: sum over them of gradient . (x - 0.5).
    drop = torch.einsum("bc,bchw->bhw", PIXEL_GRAD[t], x - 0.5)
    torch.testing.assert_close(Occlusion(model, window=1, stride=1).explain(x, t).maps, drop)
    # 2x2 windows, stride 1: each pixel gets the mean drop of the windows that cover it.
    expected = torch.zeros(2, 4, 4)
    counts = torch.zeros(4, 4)
    for i in range(3):
        for j in range(3):
            expected[:, i:i + 2, j:j + 2] += drop[:, i:i + 2, j:j + 2].sum(dim=(1, 2))[:, None, None]
            counts[i:i + 2, j:j + 2] += 1
    result = Occlusion(model, window=2, stride=1, perturbations_per_eval=4).explain(x, t)
    torch.testing.assert_close(result.maps, expected / counts)
    torch.testing.assert_close(result.scores, model(x).gather(1, t[:, None])[:, 0])



def test_occlusion_reads_the_scores_from_captums_clean_forward():
    model, x, t = HandSetNet().eval(), torch.rand(2, 3, 4, 4), torch.tensor([0, 1])
    calls = []
    model.register_forward_hook(lambda _m, inputs, _o: calls.append(inputs[0].shape[0]))
    result = Occlusion(model, window=2, stride=1, perturbations_per_eval=4).explain(x, t)
    assert calls == [2, 8, 8, 2]  # the clean batch once, then 9 window positions x 2 images in groups of 4
    torch.testing.assert_close(result.scores, model(x).gather(1, t[:, None])[:, 0])

def test_occlusion_defaults_equal_captum_and_cover_the_image():
    model = SmallCNN().eval()
    x, t = torch.rand(2, 3, 64, 64), torch.tensor([0, 3])
    explainer = Occlusion(model)
    assert explainer.window_and_stride(64, 64) == ((8, 8), (4, 4))
    assert explainer.window_and_stride(224, 224) == ((28, 28), (14, 14))
    ours = explainer.explain(x, t).maps
    theirs = CaptumOcclusion(model).attribute(x, sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4),
                                              baselines=0.5, target=t, perturbations_per_eval=16)
    torch.testing.assert_close(ours, theirs[:, 0])
    torch.testing.assert_close(theirs[:, 0], theirs[:, 2])  # identical across channels
    assert (ours != 0).float().mean() > 0.99


def test_rise_masks_are_smooth_binary_grids_with_mean_p():
    grids, shifts = draw_cells(500, 7, 0.5, seed=0, device="cpu")
    masks = smooth_masks(grids, shifts, 64, 64)
    assert masks.shape == (500, 64, 64)
    assert masks.min() >= 0 and masks.max() <= 1
    assert abs(masks.mean().item() - 0.5) < 0.02
    # Smooth: neighbouring pixels differ by at most one cell's bilinear step (1 / cell size = 1 / 10).
    assert (masks[:, :, 1:] - masks[:, :, :-1]).abs().max() <= 0.1 + 1e-6
    # Not a hard threshold: intermediate values exist.
    assert ((masks > 0.05) & (masks < 0.95)).float().mean() > 0.2


class ConstantNet(nn.Module):
    """Ignores the image: softmax of (1, 0) everywhere, so RISE must return that probability everywhere."""

    def forward(self, x):
        return torch.tensor([1.0, 0.0]).expand(x.shape[0], 2)


def test_rise_of_a_constant_model_is_the_constant_probability():
    x = torch.rand(2, 3, 16, 16)
    plain = RISE(ConstantNet(), n_masks=1000, chunk=250, control_variate=False).explain(x, torch.tensor([0, 1])).maps
    p0 = torch.tensor([1.0, 0.0]).softmax(0)
    # sum_m P * mask_m / (N p) = P * mean(mask) / p, and mean(mask) is close to p: only close, mask noise.
    assert (plain[0] - p0[0]).abs().mean() < 0.03
    assert (plain[1] - p0[1]).abs().mean() < 0.03
    assert (plain[0] - p0[0]).abs().max() > 1e-3
    # the control variate cancels the mask-coverage noise: a constant score gives the constant, exactly
    maps = RISE(ConstantNet(), n_masks=1000, chunk=250).explain(x, torch.tensor([0, 1])).maps
    torch.testing.assert_close(maps, p0[:, None, None].expand(2, 16, 16), rtol=0, atol=1e-6)


def test_every_mask_pixel_has_expectation_exactly_p():
    """What makes the control variate unbiased: `smooth_masks` is linear in the grid and maps an all-ones grid
    to exactly 1 at every pixel (bilinear weights are convex, edges included, whatever the shift and size),
    so E[mask] = p * 1 for Bernoulli(p) cells; and empirically over 20,000 masks."""
    for size, cells in ((32, 8), (37, 7), (64, 7), (15, 4)):
        shifts = torch.rand(50, 2, generator=torch.Generator().manual_seed(size))
        ones = smooth_masks(torch.ones(50, 1, cells, cells), shifts, size, size)
        torch.testing.assert_close(ones, torch.ones_like(ones), rtol=0, atol=1e-6)
        a, b = draw_cells(50, cells, 0.3, 1, "cpu")[0], draw_cells(50, cells, 0.6, 2, "cpu")[0]
        torch.testing.assert_close(smooth_masks(0.25 * a + 0.75 * b, shifts, size, size),
                                   0.25 * smooth_masks(a, shifts, size, size)
                                   + 0.75 * smooth_masks(b, shifts, size, size), rtol=0, atol=1e-6)
    grids, shifts = draw_cells(20000, 7, 0.3, 0, "cpu")
    mean = smooth_masks(grids, shifts, 37, 37).mean(dim=0)
    # a pixel's mask is a convex mix of at most 4 cells: its standard deviation <= sqrt(0.3 * 0.7) = 0.46
    assert (mean - 0.3).abs().max() < 5 * 0.46 / 20000 ** 0.5, (mean - 0.3).abs().max()


def test_rise_control_variate_is_unbiased_at_four_masks():
    """Mean of 2,000 independent 4-mask control-variate maps against one 20,000-mask map (PatchNet): the
    regression slope of the centred maps is 1 (measured 0.970); c = the running mean without the (N - 1)
    correction would shrink it to (N - 1) / N = 0.75."""
    x, t = torch.ones(1, 3, 32, 32), torch.tensor([0])
    reference = RISE(PatchNet(), n_masks=20000, cells=8, tolerance=0, seed=10**6, chunk=500).explain(x, t).maps[0]
    small = torch.stack([RISE(PatchNet(), n_masks=4, cells=8, tolerance=0, seed=s).explain(x, t).maps[0]
                         for s in range(2000)]).mean(dim=0)
    centre = lambda m: m - m.mean()  # noqa: E731
    slope = float((centre(small) * centre(reference)).sum() / centre(reference).square().sum())
    assert 0.9 < slope < 1.1, slope
    assert abs(float(small.mean() - reference.mean())) < 0.005


class PatchNet(nn.Module):
    """Class 0 logit = 8 * (mean brightness of rows 4..11, columns 20..27 - 0.5); class 1 logit = 0."""

    def forward(self, x):
        patch = x[:, :, 4:12, 20:28].mean(dim=(1, 2, 3))
        return torch.stack([8 * (patch - 0.5), torch.zeros_like(patch)], dim=1)


def test_rise_finds_the_planted_patch():
    x = torch.ones(2, 3, 32, 32)
    maps = RISE(PatchNet(), n_masks=1000, cells=8).explain(x, torch.tensor([0, 1])).maps
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[4:12, 20:28] = True
    for image, sign in ((0, 1), (1, -1)):  # class 1 gains where class 0 loses
        gap = maps[image][inside].mean() - maps[image][~inside].mean()
        assert sign * gap > 0.1, gap
    assert maps[0].flatten().argmax().item() in inside.flatten().nonzero()


def test_rise_seed_chunk_and_batch_behaviour():
    model = SmallCNN().eval()
    x, t = torch.rand(3, 3, 32, 32), torch.tensor([0, 2, 4])
    a = RISE(model, n_masks=120, seed=5, chunk=40).explain(x, t)
    b = RISE(model, n_masks=120, seed=5, chunk=40).explain(x, t)
    assert torch.equal(a.maps, b.maps)
    other_seed = RISE(model, n_masks=120, seed=6, chunk=40).explain(x, t)
    assert (relative_change(a.maps, other_seed.maps) > 0.3).all()  # measured 0.67-1.08 (centred, relative)
    other_chunk = RISE(model, n_masks=120, seed=5, chunk=7).explain(x, t)
    torch.testing.assert_close(a.maps, other_chunk.maps, rtol=1e-5, atol=1e-6)
    alone = RISE(model, n_masks=120, seed=5, chunk=40).explain(x[1:2], t[1:2])
    torch.testing.assert_close(alone.maps[0], a.maps[1], rtol=1e-5, atol=1e-6)  # one mask set per batch


def test_rise_callable_target_uses_its_value():
    x = torch.ones(1, 3, 32, 32)
    maps = RISE(PatchNet(), n_masks=500).explain(x, lambda out: out[:, 0]).maps  # raw logit
    inside = maps[0, 4:12, 20:28].mean()
    assert inside > maps[0, 20:, :12].mean() + 0.5


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_rise_on_torchscript():
    model = torch.jit.script(SmallCNN().eval())
    x, t = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
    result = RISE(model, n_masks=40).explain(x, t)
    assert result.maps.shape == (2, 32, 32) and torch.isfinite(result.maps).all()


def test_bad_parameters_are_input_errors():
    model = SmallCNN()
    with pytest.raises(InputError, match="rise p"):
        RISE(model, p=0.0)
    with pytest.raises(InputError, match="n_masks"):
        RISE(model, n_masks=0)
    with pytest.raises(InputError, match="fill"):
        Occlusion(model, fill=-1)


def test_rise_stops_when_converged_within_tolerance_of_the_full_count():
    """Per image: stopped at the first check (every 250 masks) where the estimated error fell below the
    tolerance, and then within the tolerance (centred relative L2) of the map from all n_masks; tolerance=0
    uses every mask. Measured on PatchNet (seed 0), the original estimator (control_variate=False, whose
    numbers these are): estimated errors 0.330 / 0.382 at the stops, errors against the 4000-mask map
    0.253 / 0.192."""
    torch.manual_seed(0)
    x, t = torch.rand(2, 3, 32, 32) * 0.5 + 0.5, torch.tensor([0, 1])
    full = RISE(PatchNet(), n_masks=4000, cells=8, tolerance=0, control_variate=False).explain(x, t)
    assert (full.extras["masks_used"] == 4000).all()
    tol = 0.4
    early = RISE(PatchNet(), n_masks=4000, cells=8, tolerance=tol, control_variate=False).explain(x, t)
    used = early.extras["masks_used"]
    assert used.tolist() == [1000, 2500]
    error = relative_change(early.maps, full.maps)
    assert (error <= tol).all() and (error > 0.1).all(), error  # stopped early, so not the full map
    assert (early.extras["estimated_error"] < tol).all()
    # an image explained alone stops at the same count with the same map (no dependence on the batch)
    alone = RISE(PatchNet(), n_masks=4000, cells=8, tolerance=tol, chunk=50,
                 control_variate=False).explain(x[1:], t[1:])
    assert int(alone.extras["masks_used"][0]) == 2500
    torch.testing.assert_close(alone.maps[0], early.maps[1], rtol=1e-4, atol=1e-6)


def test_rise_control_variate_stops_earlier_within_tolerance():
    """The same images with the control variate (default): at tolerance 0.3 both stop at 500 masks (the
    original estimator needs 1,250 / 4,000 there), estimated errors 0.271 / 0.270, and are 0.229 / 0.229 from
    the control variate's own 4,000-mask map; an image alone stops at the same count with the same map."""
    torch.manual_seed(0)
    x, t = torch.rand(2, 3, 32, 32) * 0.5 + 0.5, torch.tensor([0, 1])
    full = RISE(PatchNet(), n_masks=4000, cells=8, tolerance=0).explain(x, t)
    plain = RISE(PatchNet(), n_masks=4000, cells=8, tolerance=0.3, control_variate=False).explain(x, t)
    early = RISE(PatchNet(), n_masks=4000, cells=8, tolerance=0.3).explain(x, t)
    assert early.extras["masks_used"].tolist() == [500, 500]
    assert plain.extras["masks_used"].tolist() == [1250, 4000]
    assert (early.extras["estimated_error"] < 0.3).all()
    error = relative_change(early.maps, full.maps)
    assert (error <= 0.3).all() and (error > 0.05).all(), error
    alone = RISE(PatchNet(), n_masks=4000, cells=8, tolerance=0.3, chunk=50).explain(x[1:], t[1:])
    assert int(alone.extras["masks_used"][0]) == 500
    torch.testing.assert_close(alone.maps[0], early.maps[1], rtol=1e-4, atol=1e-6)


def test_rise_error_estimate_matches_the_sampling_error_of_a_mean():
    """`relative_standard_error` on terms signal + Gaussian noise (sigma 0.5, 400 terms): the expected
    relative error is sigma * sqrt(pixels / n) / ||centred signal||."""
    generator = torch.Generator().manual_seed(0)
    signal = torch.linspace(0, 1, 16 * 16).view(1, 16, 16)
    terms = signal + 0.5 * torch.randn(400, 1, 16, 16, generator=generator)
    total, squares = terms.sum(dim=0), terms.square().sum(dim=0)
    expected = 0.5 * (256 / 400) ** 0.5 / (signal - signal.mean()).norm()
    estimate = relative_standard_error(total, squares, 400)
    assert abs(float(estimate[0]) / float(expected) - 1) < 0.08, (estimate, expected)
    # noise common to every pixel (one Gaussian per term) moves no pixel against another: with the sums of
    # the terms' spatial means it is not counted, without them it is (sigma * sqrt(pixels / n) again)
    common = signal + 0.5 * torch.randn(400, 1, 1, 1, generator=generator).expand(400, 1, 16, 16)
    sums = common.sum(dim=0), common.square().sum(dim=0)
    spatial = common.mean(dim=(2, 3))
    assert abs(float(relative_standard_error(*sums, 400)[0]) / float(expected) - 1) < 0.15
    centred = relative_standard_error(*sums, 400, spatial.sum(dim=0), spatial.square().sum(dim=0))
    assert float(centred[0]) < 1e-3, centred
    constant = torch.full((1, 8, 8), 3.0)  # no variance, no spatial signal: converged, error 0
    assert float(relative_standard_error(constant * 10, constant.square() * 10, 10)[0]) == 0.0


def test_rise_with_a_callable_target_stops_per_image_too():
    x = torch.ones(2, 3, 32, 32)
    x[1] = 0.2
    result = RISE(PatchNet(), n_masks=1000, tolerance=0.3).explain(x, lambda out: out[:, 0])
    assert result.maps.shape == (2, 32, 32) and (result.extras["masks_used"] <= 2000).all()
    assert torch.isfinite(result.maps).all()


def test_occlusion_stops_after_two_lattices_within_tolerance_and_is_captum_otherwise():
    """PatchNet at 32 px (window 4, stride 2: 15 x 15 = 225 positions; E x E and O x O: 64 + 49 = 113).
    Measured: the change after two lattices is 0.424 for a flat image (its error against the full map 0.080)
    and 0.876 for a noisy one; at tolerance 0.5 the first stops, the second gets every window."""
    torch.manual_seed(0)
    x, t = torch.ones(2, 3, 32, 32), torch.tensor([0, 0])
    x[1] = torch.rand(3, 32, 32)
    full = Occlusion(PatchNet()).explain(x, t)
    assert full.extras["windows_used"].tolist() == [225, 225]
    early = Occlusion(PatchNet(), tolerance=0.5).explain(x, t)
    assert early.extras["windows_used"].tolist() == [113, 225]
    change = early.extras["converged_change"]
    assert 0.40 < float(change[0]) < 0.45 and float(change[1]) > 0.85
    error = relative_change(early.maps, full.maps)
    assert 0.07 < float(error[0]) < 0.09 and float(error[0]) < float(change[0])
    torch.testing.assert_close(early.maps[1], full.maps[1], rtol=1e-5, atol=1e-7)  # all windows: Captum's map
    torch.testing.assert_close(early.scores, full.scores)
    # an odd stride grid (last position cut at the edge) still ends at Captum's map
    odd = Occlusion(PatchNet(), window=5, stride=3, tolerance=1e-9).explain(x, t)
    torch.testing.assert_close(odd.maps, Occlusion(PatchNet(), window=5, stride=3).explain(x, t).maps,
                               rtol=1e-5, atol=1e-7)
    with pytest.raises(InputError, match="occlusion tolerance"):
        Occlusion(PatchNet(), tolerance=-1)
