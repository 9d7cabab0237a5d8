"""The overlay helpers on hand-built pictures with exact expected pixels."""
import numpy as np
from PIL import Image

from dashboard import overlay


def _grey(w=8, h=6, value=100):
    return Image.fromarray(np.full((h, w, 3), value, dtype=np.uint8), mode="RGB")


def test_colorize_hits_ramp_anchors_exactly():
    values = np.array([[0.0, 0.25, 1.0]])
    rgb = overlay.colorize(values)
    assert rgb[0, 0].tolist() == [0, 0, 4]
    assert rgb[0, 1].tolist() == [87, 16, 110]
    assert rgb[0, 2].tolist() == [252, 255, 164]
    # Halfway between the first two anchors.
    assert overlay.colorize(np.array([0.125])).tolist() == [[44, 8, 57]]


def test_blend_opacity_zero_is_the_image_and_cold_pixels_stay_untouched():
    image = _grey()
    saliency = np.zeros((6, 8), dtype=np.float32)
    saliency[2, 3] = 5.0
    assert np.array_equal(np.asarray(overlay.blend(image, saliency, 0.0, vmax=5.0)), np.asarray(image))
    out = np.asarray(overlay.blend(image, saliency, 1.0, vmax=5.0))
    assert out[2, 3].tolist() == [252, 255, 164]  # full alpha, top of the ramp
    assert out[0, 0].tolist() == [100, 100, 100]  # zero saliency -> alpha 0


def test_blend_half_opacity_mixes_linearly_and_negative_saliency_is_ignored():
    image = _grey(value=0)
    saliency = np.full((6, 8), -3.0, dtype=np.float32)
    saliency[1, 1] = 2.0  # scaled to 1.0 with vmax=2
    out = np.asarray(overlay.blend(image, saliency, 0.5, vmax=2.0))
    assert out[1, 1].tolist() == [126, 128, 82]  # 0.5 * (252, 255, 164), rounded half to even
    assert out[4, 6].tolist() == [0, 0, 0]


def test_blend_alpha_is_opacity_times_root_of_scaled_saliency():
    image = _grey(w=4, h=4, value=0)
    saliency = np.full((4, 4), 0.25, dtype=np.float32)  # scaled 0.25 -> alpha 0.8 * 0.5 = 0.4
    out = np.asarray(overlay.blend(image, saliency, 0.8, vmax=1.0))
    assert out[0, 0].tolist() == [35, 6, 44]  # 0.4 * ramp(0.25) = 0.4 * (87, 16, 110)


def test_blend_resizes_a_low_resolution_map_onto_the_image():
    image = _grey(w=16, h=16)
    saliency = np.ones((4, 4), dtype=np.float32)
    out = np.asarray(overlay.blend(image, saliency, 1.0, vmax=1.0))
    assert out.shape == (16, 16, 3)
    assert (out == [252, 255, 164]).all()


def test_display_scale_is_a_percentile_of_the_positive_part():
    maps = np.arange(-50, 51, dtype=np.float32).reshape(1, 101)
    # Positive part: 50 zeros + 0 + 1..50 -> 99th percentile of that vector.
    expected = float(np.percentile(np.clip(maps, 0, None), 99))
    assert overlay.display_scale(maps) == expected
    assert overlay.display_scale(np.zeros((2, 3, 3))) == 1.0


def test_region_edges_are_the_inner_border_of_a_square():
    mask = np.zeros((6, 6), dtype=np.int32)
    mask[1:5, 1:5] = 2
    edges = overlay.region_edges(mask == 2)
    expected = np.zeros((6, 6), dtype=bool)
    expected[1:5, 1:5] = True
    expected[2:4, 2:4] = False
    assert np.array_equal(edges, expected)


def test_outline_regions_colours_only_the_chosen_region_border():
    mask = np.zeros((6, 6), dtype=np.int32)
    mask[1:5, 1:5] = 2
    out = np.asarray(overlay.outline_regions(_grey(6, 6), mask, region_ids=[2]))
    color = list(overlay.REGION_PALETTE[2])
    assert out[1, 1].tolist() == color and out[4, 2].tolist() == color
    assert out[2, 2].tolist() == [100, 100, 100]  # interior untouched
    assert out[0, 0].tolist() == [100, 100, 100]  # background not outlined
    assert overlay.region_color_hex(2) == "#00ff00"


def test_outline_regions_resizes_a_mask_of_another_resolution():
    mask = np.zeros((3, 3), dtype=np.int32)
    mask[1, 1] = 1
    out = np.asarray(overlay.outline_regions(_grey(9, 9), mask, region_ids=[1]))
    color = list(overlay.REGION_PALETTE[1])
    assert out[3, 3].tolist() == color and out[5, 5].tolist() == color
    assert out[4, 4].tolist() == [100, 100, 100]


def test_enlarged_uses_an_integer_nearest_factor_and_leaves_big_images_alone():
    small = Image.fromarray(np.array([[[0, 0, 0], [255, 255, 255]]], dtype=np.uint8))  # 2 x 1 pixels
    big = overlay.enlarged(small, min_side=3)
    assert big.size == (6, 3)
    assert np.asarray(big)[:, :3].max() == 0 and np.asarray(big)[:, 3:].min() == 255
    assert overlay.enlarged(_grey(600, 600), min_side=512).size == (600, 600)
