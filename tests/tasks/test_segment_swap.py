"""The segmenter's swap on tiny hand-made maps: which pixels count as another class's surroundings, what the
swap writes, and how the report turns a (class, region)'s fill and swap into one finding and a power line."""
import torch

from analysis.evidence.segment_audit import context_pools, object_classes, swap_in
from analysis.report.tag_report import power_lines, shortcut_flags


def _truth():
    t = torch.zeros(2, 8, 8, dtype=torch.long)  # class 0 everywhere (the background)
    t[0, 3:5, 3:5] = 1  # image 0: a 2x2 object of class 1
    t[1, 0:2, 0:2] = 2  # image 1: a 2x2 object of class 2 in the corner
    return t


def test_objects_are_the_classes_that_cover_under_half_of_their_images():
    assert object_classes(_truth(), 3) == [1, 2]


def test_surroundings_are_the_ring_around_another_class_without_either_class():
    pools = context_pools(_truth(), 1, [2])  # for class 1: the surroundings of class 2 (image 1 only)
    assert [i for i, _ in pools] == [1]
    ring = pools[0][1]
    # within 3 pixels of the 2x2 corner object: the 5x5 corner square minus the object
    assert int(ring.sum()) == 25 - 4 and bool(ring[4, 4]) and not bool(ring[0, 0]) and not bool(ring[5, 0])


def test_swap_draws_only_donor_surroundings_into_the_region_and_the_control():
    truth = _truth()
    images = torch.zeros(2, 3, 8, 8)
    images[1] = 0.5  # the donor's surroundings are grey
    images[1, :, 0:2, 0:2] = 1.0  # its object is white and must never be drawn
    where = torch.zeros(1, 8, 8, dtype=torch.bool)
    where[0, 6:, :] = True  # the region of image 0: its two bottom rows
    control = torch.zeros(1, 8, 8, dtype=torch.bool)
    control[0, :, 7] = True
    swapped, ctrl = swap_in(images[:1], where, control, images, context_pools(truth, 1, [2]), seed=0)
    assert torch.all(swapped[0][:, where[0]] == 0.5) and torch.all(swapped[0][:, ~where[0]] == 0)
    assert torch.all(ctrl[0][:, control[0]] == 0.5) and torch.all(ctrl[0][:, ~control[0]] == 0)


def _record(kind, excess, ci, p, cls="car", region="road"):
    return {"class": cls, "region": region, "intervention": kind, "excess_drop": excess, "excess_drop_ci": ci,
            "p_value": p, "n": 40}


def test_fill_and_swap_of_one_pair_make_one_finding_with_the_swap_deciding():
    records = [_record("fill", 0.15, [0.07, 0.24], 1.0), _record("swap", 0.5, [0.36, 0.65], 1e-6),
               _record("fill", 0.0, [-0.02, 0.03], 1.0, cls="boat"), _record("swap", 0.01, [-0.01, 0.04], 0.6, cls="boat")]
    flags = shortcut_flags(records, {}, "class")
    assert len(flags) == 1
    flag = flags[0]
    assert [t["name"] for t in flag["tests"]] == ["swap", "fill"]
    assert [t["decision"] for t in flag["tests"]] == ["shown", "undecided"]
    assert flag["tests"][0]["p_value_corrected"] == 4e-6  # Holm: the smallest of 4 p-values times 4
    assert flag["evidence"]["intervention"] == "swap" and "surroundings" in flag["headline"]
    power = power_lines(records, flags, "class")
    assert [(p["class"], p["region"]) for p in power] == [("boat", "road")]
    assert power[0]["excess_drop_upper"] == 0.04
    assert "filling it, by at most 3%; swapping it, by at most 4%" in power[0]["text"]
