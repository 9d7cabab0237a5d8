"""Power without masks (issue 25): a discovered cue is the cue (snapped to the flat patch the map peaks beside)
and is searched for in every image, the swap's donors point their cue at their own class, and the same-class
swap is reported beside the cross-class one."""
import numpy as np
import torch

from analysis.evidence.intervention import region_pointing, same_class_effects, swap_donors
from analysis.stats.discovered_regions import discover_regions, snap_to_flat

S = 32


def _corner_scenes(n, singled_out, *, cue="flat", seed=0):
    """Noise images, a 5x5 cue in a random corner of every image; the maps peak on a blob *beside* the cue
    (a coarse map) in the first `singled_out` images only, elsewhere on the centre."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.3, 0.6, (n, 3, S, S)).astype(np.float32)
    maps = np.zeros((n, S, S), np.float32)
    patch = np.zeros((n, S, S), bool)
    for i, c in enumerate(rng.integers(0, 4, n)):
        y, x = (1 if c < 2 else S - 6), (1 if c % 2 == 0 else S - 6)
        images[i, :, y:y + 5, x:x + 5] = 0.9 if cue == "flat" else 0.1 + 0.8 * (np.indices((5, 5)).sum(0) % 2)
        patch[i, y:y + 5, x:x + 5] = True
        maps[i, 13:19, 13:19] = 0.8
        if i < singled_out:
            py = y + 2 if c < 2 else y - 1  # a blob of 4 rows, 3 of them on the cue, one beside it
            maps[i, py:py + 4, x:x + 5] = 1.0
    core = np.zeros((n, S, S), bool)
    core[:, 11:21, 11:21] = True
    return images, maps, patch, core


def test_a_cue_the_maps_single_out_in_a_fifth_of_images_is_tested_in_all_of_them():
    images, maps, patch, core = _corner_scenes(100, 20)
    (found,) = discover_regions(maps, images, np.arange(100) % 2, core, classes=["a", "b"])
    # named by the images the maps single it out in, tested where its look is found
    assert found["description"] == "small uniform patch, in one of 4 corners, 20% of images, all classes"
    assert (found["n_extended"], found["share_tested"]) == (80, 1.0)
    held = found["masks"]
    assert all(np.array_equal(held[i], patch[i]) for i in range(100))  # the cue itself, never its neighbour


def test_a_textured_blob_is_not_searched_for_and_not_snapped():
    images, maps, patch, core = _corner_scenes(100, 20, cue="checkerboard")
    (found,) = discover_regions(maps, images, np.arange(100) % 2, core, classes=["a", "b"])
    assert found["n_extended"] == 0 and found["share_tested"] == 0.2
    assert found["masks"][20:].sum() == 0 and not (found["masks"][:20] & patch[:20]).all()


def test_snapping_keeps_a_component_beside_no_flat_area_and_refuses_a_flat_scene():
    flat = np.zeros((S, S), bool)
    mask = np.zeros((S, S), bool)
    mask[10:14, 10:14] = True
    core = np.zeros((S, S), bool)
    assert snap_to_flat(mask, flat, core) is None
    flat[15:18, 10:13] = True  # 1 pixel away: within reach
    assert np.array_equal(snap_to_flat(mask, flat, core), flat)
    sky = np.zeros((S, S), bool)
    sky[:16] = True  # a flat scene 32x the component: not a patch
    assert snap_to_flat(mask, sky, core) is None
    core[16, 11] = True
    assert snap_to_flat(mask, flat, core) is None  # the flat area touches the object


def test_donors_are_drawn_among_those_whose_cue_points_at_their_own_class():
    """rho 0.7: 30% of the images' cues point at the other class; a random donor of another class carried one
    pointing at the recipient's own class in ~30% of swaps, the chosen donors in none."""
    rng = np.random.default_rng(0)
    n = 400
    labels = np.arange(n) % 2
    cue = np.where(rng.random(n) < 0.7, labels, 1 - labels)
    colours = torch.tensor([[0.9, 0.15, 0.15], [0.15, 0.2, 0.9]])
    images = torch.full((n, 3, 8, 8), 0.45)
    images[:, :, :2, :2] = colours[cue][:, :, None, None]
    masks = torch.zeros(n, 8, 8, dtype=torch.bool)
    masks[:, :2, :2] = True
    pointing, strength = region_pointing(images, masks, labels)
    assert np.array_equal(pointing, cue) and strength.min() > 0
    plain = swap_donors(labels, np.ones(n, bool), seed=1)
    aimed = swap_donors(labels, np.ones(n, bool), seed=1, pointing=pointing, strength=strength)
    assert 0.2 < (cue[plain] == labels).mean() < 0.4  # the donor's cue named the recipient's class
    assert (labels[aimed] != labels).all() and (cue[aimed] == labels[aimed]).all()
    same = swap_donors(labels, np.ones(n, bool), seed=1, pointing=pointing, strength=strength, same_class=True)
    assert (labels[same] == labels).all() and (same != np.arange(n)).all() and (cue[same] == labels).all()


def test_same_class_effects_count_what_the_cross_class_swap_costs_beyond_any_paste():
    labels = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    base = labels.copy()
    swapped = np.array([1, 1, 0, 1, 1, 0, 0, 1])  # 5 answers lost to the cross-class swap
    same = np.array([0, 1, 1, 1, 0, 1, 0, 1])  # 1 lost to the same-class swap (image 1: lost to both)
    out = same_class_effects(base, swapped, same, labels)
    assert (out["n"], out["accuracy_drop"], out["cross_accuracy_drop"], out["net_effect"]) == (8, 1 / 8, 5 / 8, 0.5)
    assert out["discordant"] == [4, 0] and out["p_value"] == 0.0625
