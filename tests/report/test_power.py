"""Audit power: swaps, the sequential sample, Holm, discovered regions, and planted calibration cases.

The planted cases train `sample_models.moving_patch` models (seconds each, cached per session) and audit
them through the real engine: partial reliance (shuffle drop 10-15 points) is flagged by Grad-CAM, plain
gradients and RISE; the moving cue is flagged without masks and named by where it sits; clean models
(rho = 0.5) over 10 training seeds are flagged at most 5% of the time.
"""
import numpy as np
import pytest
import torch

from analysis.evidence.intervention import swap_donors, swap_variants
from analysis.stats.sequential import clopper_pearson, decision, holm, net_rate_bounds
from tests.report import power_audit


def test_holm_and_clopper_pearson_match_their_definitions():
    from scipy.stats import binomtest

    assert holm([0.01, 0.04, 0.03, None]).round(6)[:3].tolist() == [0.03, 0.06, 0.06]
    assert np.isnan(holm([0.01, None])[1])
    for k, n in ((0, 50), (7, 50), (50, 50)):
        ci = binomtest(k, n).proportion_ci(confidence_level=0.9, method="exact")
        assert clopper_pearson(k, n, 0.05) == pytest.approx((ci.low, ci.high), abs=1e-9)
    low, high = net_rate_bounds(34, 0, 300, 0.05)
    assert 0.05 < low < 34 / 300 < high and decision((low, high), 0.05) == "shown"
    assert decision(net_rate_bounds(0, 0, 400, 0.05), 0.05) == "excluded"
    assert decision(net_rate_bounds(5, 0, 100, 0.05), 0.05) == "undecided"


def test_swap_covers_own_cue_and_transplants_the_donors_at_its_place():
    images = torch.zeros(2, 3, 8, 8)
    images[0, :, :2, :2] = 1.0  # image 0 (class 0): cue top-left
    images[1, 0, 6:, 6:] = 0.5  # image 1 (class 1): cue bottom-right, red only
    region = torch.zeros(2, 8, 8, dtype=torch.bool)
    region[0, :2, :2], region[1, 6:, 6:] = True, True
    donors = swap_donors(np.array([0, 1]), np.array([True, True]))
    assert donors.tolist() == [1, 0]
    swapped, control, keep, kind = swap_variants(images, region, donors)
    assert keep.tolist() == [True, True] and kind == "equal-area"
    assert torch.equal(swapped[0], images[1]) and torch.equal(swapped[1], images[0])  # both places from the donor
    absent = region.clone()
    absent[1] = False  # image 1 lacks the region: it still receives image 0's cue
    swapped, _, _, _ = swap_variants(images, absent, swap_donors(np.array([0, 1]), np.array([True, False])))
    assert torch.equal(swapped[1, :, :2, :2], torch.ones(3, 2, 2)) and swapped[1, 0, 6:, 6:].eq(0.5).all()
    changed = (control != images).any(1)
    assert changed[0].sum() <= 8 and not (changed[0] & (region[0] | region[1])).any()


def test_discovery_groups_a_corner_blob_that_moves_and_names_it_by_position():
    from analysis.stats.discovered_regions import discover_regions

    rng = np.random.default_rng(0)
    n, s = 60, 32
    maps = np.zeros((n, s, s), np.float32)
    images = rng.uniform(0.3, 0.6, (n, 3, s, s)).astype(np.float32)
    corners = rng.integers(0, 4, n)
    for i, c in enumerate(corners):
        y, x = (1 if c < 2 else s - 6), (1 if c % 2 == 0 else s - 6)
        maps[i, y:y + 5, x:x + 5] = 1.0
        images[i, :, y:y + 5, x:x + 5] = 0.9
        maps[i, 13:19, 13:19] = 0.8  # the core, which discovery leaves alone
    core = np.zeros_like(maps, dtype=bool)
    core[:, 11:21, 11:21] = True
    labels = np.arange(n) % 2
    (found,) = discover_regions(maps, images, labels, core, classes=["a", "b"])
    assert found["description"] == "small uniform patch, in one of 4 corners, 100% of images, all classes"
    assert found["masks"].sum((1, 2)).tolist() == [25] * n and len(found["exemplar_rows"]) == 6
    fixed = {"top-left-ish": found["masks"]}  # a candidate that is an already tested region is dropped
    assert discover_regions(maps, images, labels, core, fixed) == []


def test_a_coarse_maps_blob_around_a_flat_patch_is_named_uniform_and_a_checkerboard_textured():
    """A coarse map (a 7x7 Grad-CAM cell upsampled) peaks on a blob several times the cue's size, beside it as
    often as on it: the peak's pixels were mostly noise, and a flat patch was named "textured" (0.05 on the
    calibration's cue). Uniformity is now the flat area inside the component against the peak's size."""
    from analysis.stats.discovered_regions import discover_regions

    rng = np.random.default_rng(2)
    n, s = 60, 32
    core = np.zeros((n, s, s), dtype=bool)
    core[:, 11:21, 11:21] = True
    labels = np.arange(n) % 2
    named = {}
    for cue in ("flat", "checkerboard"):
        maps = np.zeros((n, s, s), np.float32)
        images = rng.uniform(0.3, 0.6, (n, 3, s, s)).astype(np.float32)
        for i, c in enumerate(rng.integers(0, 4, n)):
            y, x = (1 if c < 2 else s - 6), (1 if c % 2 == 0 else s - 6)
            images[i, :, y:y + 5, x:x + 5] = 0.9 if cue == "flat" else 0.1 + 0.8 * (np.indices((5, 5)).sum(0) % 2)
            by, bx = max(0, y - 3), max(0, x - 3)
            maps[i, by:by + 11, bx:bx + 11] = 0.7  # the blob, 4.8x the cue's area
            py, px = (y + 5, x + 5) if c == 0 else (max(0, y - 3), max(0, x - 3))
            maps[i, py:py + 4, px:px + 4] = 1.0  # its peak, on the blob's rim beside the cue
        (found,) = discover_regions(maps, images, labels, core, classes=["a", "b"])
        named[cue] = found["description"]
    assert named["flat"].startswith("small uniform patch, in one of 4 corners"), named
    assert named["checkerboard"].startswith("small textured patch, in one of 4 corners"), named


def test_alongside_masks_discovery_searches_the_scene_only_and_drops_the_objects_own_blob():
    from analysis.stats.discovered_regions import discover_regions, searchable_pixels

    rng = np.random.default_rng(1)
    n, s = 60, 32
    maps = np.zeros((n, s, s), np.float32)
    images = rng.uniform(0.3, 0.6, (n, 3, s, s)).astype(np.float32)
    masks = np.zeros((n, s, s), np.int64)  # 0 background (the scene), 1 object (core), 2 tag (annotated)
    masks[:, 12:20, 12:20] = 1
    masks[:, 26:30, 14:18] = 2
    for i, c in enumerate(rng.integers(0, 4, n)):
        y, x = (1 if c < 2 else s - 6), (1 if c % 2 == 0 else s - 6)
        maps[i, y:y + 5, x:x + 5] = 1.0  # the cue nobody annotated: a patch in a random corner
        images[i, :, y:y + 5, x:x + 5] = 0.9
        maps[i, 10:16, 16:22] = 0.9  # the object's own blob, spread off it by a coarse map (peak off the core)
        maps[i, 11, 21] = 0.95
        maps[i, 25:31, 13:19] = 0.9  # attention on the annotated tag (tested whole, not a discovery)
    core = masks == 1
    searchable = searchable_pixels(masks, core, {0: False, 1: True, 2: False})
    assert not searchable[core].any() and not searchable[masks == 2].any() and searchable[masks == 0].all()
    labels = np.arange(n) % 2
    (found,) = discover_regions(maps, images, labels, core, searchable=searchable, max_core_overlap=0.1)
    assert found["description"].startswith("small uniform patch, in one of 4 corners, 100% of images")
    assert found["masks"].sum((1, 2)).tolist() == [25] * n
    # without the alongside-masks rules the object's blob (half on the core) is a second "discovery"
    loose = discover_regions(maps, images, labels, core)
    assert any("middle" in d["description"] or "top-centre" in d["description"] for d in loose), \
        [d["description"] for d in loose]


class _CoreReader(torch.nn.Module):
    """Reads the image's centre (class 1 when bright), and a corner cue when one is painted: red-over-green
    points at class 0, green-over-red at class 1 (a flat fill leaves red = green: no cue)."""

    def forward(self, x):
        centre = x[:, 0, 6:10, 6:10].mean((1, 2))
        cue = x[:, 0, :3, :3].mean((1, 2)) - x[:, 1, :3, :3].mean((1, 2))
        logit = 20 * (centre - 0.5) - 100 * cue * (cue.abs() > 0.5)
        return torch.stack([-logit, logit], 1)


def _cue_images(n, cue_fraction, seed, labels_follow_centre=True):
    gen = torch.Generator().manual_seed(seed)
    bright = torch.rand(n, generator=gen) < 0.5
    x = torch.full((n, 3, 16, 16), 0.3)
    x[:, 0, 6:10, 6:10] = torch.where(bright, 0.9, 0.1)[:, None, None]
    labels = bright.long() if labels_follow_centre else torch.randint(0, 2, (n,), generator=gen)
    cue = torch.rand(n, generator=gen) < cue_fraction
    for i in torch.nonzero(cue).flatten().tolist():
        x[i, int(labels[i]), :3, :3], x[i, 1 - int(labels[i]), :3, :3] = 1.0, 0.0  # points at its own label
    corner = torch.zeros(n, 16, 16, dtype=torch.bool)
    corner[:, :3, :3] = True
    core = torch.zeros(n, 16, 16, dtype=torch.bool)
    core[:, 6:10, 6:10] = True
    return x, labels.numpy(), corner, core


def test_a_region_the_model_ignores_is_excluded_at_the_first_look_even_at_half_accuracy():
    """Half its answers are wrong under every variant, but no variant changes one: the marginal bounds (one
    accuracy rate against another, both near 0.5) stayed +-12 points wide at n = 100 and the region ran to
    the cap; the discordant pairs are all zero, so the first look excludes it."""
    from analysis.evidence.sequential_interventions import run_trials

    x, labels, corner, core = _cue_images(400, 0.0, seed=1, labels_follow_centre=False)
    assert 0.35 < (_CoreReader()(x).argmax(1).numpy() == labels).mean() < 0.65
    (trial,), _, design = run_trials(_CoreReader(), x, labels, [{"name": "corner", "masks": corner}], core=core)
    assert trial.decision == "excluded" and trial.n() == 100
    # its 5 variants (fill, its control, swap, its control, the same-class swap) and the clean forward
    assert design["forwards"] == 5 * 100 + 100


def test_a_variant_pair_decided_early_stops_while_the_other_goes_on():
    """A cue in 8% of images, pointing at its own label: filling it costs no right answer (the centre gives
    the same one), so the fill pair is excluded at the first look; a donor's cue misleads the model, an effect
    near the threshold, so the swap pair goes on alone (2 forwards per image, not 4)."""
    from analysis.evidence.sequential_interventions import run_trials

    x, labels, corner, core = _cue_images(400, 0.08, seed=2)
    (trial,), _, design = run_trials(_CoreReader(), x, labels, [{"name": "corner", "masks": corner}], core=core)
    assert trial.n("fill") == 100 and trial.states["fill_accuracy_drop"] == "excluded"
    assert trial.n("swap") > 100, trial.bounds
    # the swap pair and its same-class swap: 3 forwards per image; and the clean forwards
    assert design["forwards"] == 2 * 100 + 3 * trial.n("swap") + trial.n("swap")


def test_the_fill_pair_reads_only_rows_that_hold_the_region():
    """The region is in half the images. A look of 100 rows held it in ~50: two forwards each on the rest tested
    nothing, and the clean model's bound at 50 pairs (15 points) needed three more looks to exclude 5. The
    fill pair's look takes the next 100 rows that hold it; the swap pair (which transplants an absent region
    from the donor) takes every row: both are excluded at the first look."""
    from analysis.evidence.sequential_interventions import run_trials

    x, labels, corner, core = _cue_images(400, 0.0, seed=5)
    corner[1::2] = False
    (trial,), base, design = run_trials(_CoreReader(), x, labels, [{"name": "corner", "masks": corner}], core=core)
    fill_rows, swap_rows = trial.arrays()["fill_rows"], trial.arrays()["swap_rows"]
    assert trial.decision == "excluded" and trial.looks == 1, trial.bounds
    assert trial.n("fill") == 100 and corner[fill_rows].flatten(1).any(1).all() and fill_rows.max() == 198
    assert np.array_equal(swap_rows, np.arange(100))
    forwarded = np.union1d(fill_rows, swap_rows)
    assert np.array_equal(np.flatnonzero(base >= 0), forwarded)
    assert design["forwards"] == 2 * 100 + 3 * 100 + len(forwarded) and design["n_used"] == 199


class _BackgroundReader(torch.nn.Module):
    """Reads the background's blue (a background shortcut): class 1 when it is bright."""

    def forward(self, x):
        logit = 20 * (x[:, 2, 0, 8] - 0.5)
        return torch.stack([-logit, logit], 1)


def _scenes_with_background(n, seed):
    """Centre bright for class 1 (the object), background blue bright for class 1 (the shortcut)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=gen)
    x = torch.full((n, 3, 16, 16), 0.3)
    x[:, 2] = torch.where(labels.bool(), 0.8, 0.2)[:, None, None]
    x[:, 0, 6:10, 6:10] = torch.where(labels.bool(), 0.9, 0.1)[:, None, None]
    core = torch.zeros(n, 16, 16, dtype=torch.bool)
    core[:, 6:10, 6:10] = True
    return x, labels.numpy(), ~core, core


def test_a_background_swap_is_controlled_by_the_core_swap():
    """Every roll of a background overlaps it by ~90%, so a rolled control swapped the same background and
    hid the shortcut; the control is the core swap, as for the fill: a background reader follows the donor's
    background (shown), an object reader follows the donor's object, so its background swap is excluded."""
    from analysis.evidence.sequential_interventions import run_trials

    x, labels, background, core = _scenes_with_background(300, seed=3)
    swapped, control, keep, kind = swap_variants(x, background, swap_donors(labels, np.ones(300, bool)), keep_out=core)
    assert kind == "core" and torch.equal((control != x).any(1) & ~core, torch.zeros_like(core))
    results = {}
    for name, model in (("background reader", _BackgroundReader()), ("object reader", _CoreReader())):
        (trial,), _, _ = run_trials(model, x, labels, [{"name": "background", "masks": background}], core=core)
        results[name] = trial
    shortcut, clean = results["background reader"], results["object reader"]
    assert shortcut.swap_control_kind == "core" and shortcut.states["swap_towards_donor"] == "shown"
    assert shortcut.decision == "shown"
    assert clean.states["swap_towards_donor"] == "excluded" and clean.decision == "excluded", clean.bounds


class _MovingCueReader(torch.nn.Module):
    """Reads a cue painted in the top-left or the bottom-right corner: red-over-green -> class 0."""

    def forward(self, x):
        cue = sum(x[:, 0, a, b].mean((1, 2)) - x[:, 1, a, b].mean((1, 2))
                  for a, b in ((slice(0, 3), slice(0, 3)), (slice(-3, None), slice(-3, None))))
        logit = -100 * cue
        return torch.stack([-logit, logit], 1)


def test_a_background_swap_does_not_carry_the_donors_cue():
    """The cue is annotated as its own region and moves between two corners; the background is the rest. A
    union of the two images' backgrounds takes in the donor's cue (where the recipient has background) and
    covers the recipient's: the 'background' swap was a swap of the cue, and flagged the background of a
    cue reader (the calibration's rho = 1 models). A background swaps only what is background in both."""
    from analysis.evidence.sequential_interventions import run_trials

    gen = torch.Generator().manual_seed(4)
    n = 200
    labels = torch.randint(0, 2, (n,), generator=gen)
    x = torch.full((n, 3, 16, 16), 0.3)
    x[:, 2] = torch.rand(n, 16, 16, generator=gen)
    patch = torch.zeros(n, 16, 16, dtype=torch.bool)
    for i in range(n):
        a, b = (slice(0, 3), slice(0, 3)) if i % 2 else (slice(-3, None), slice(-3, None))
        patch[i, a, b] = True
        x[i, int(labels[i]), a, b], x[i, 1 - int(labels[i]), a, b] = 1.0, 0.0
    core = torch.zeros(n, 16, 16, dtype=torch.bool)
    core[:, 6:10, 6:10] = True
    background = ~(core | patch)
    trials, _, _ = run_trials(_MovingCueReader(), x, labels.numpy(),
                              [{"name": "background", "masks": background}, {"name": "patch", "masks": patch}],
                              core=core)
    found = {t.name: t for t in trials}
    assert found["patch"].decision == "shown"
    assert found["background"].swap_control_kind == "core"
    assert found["background"].states["swap_towards_donor"] == "excluded", found["background"].bounds


def test_a_swap_never_covers_the_recipients_core():
    images = torch.zeros(2, 3, 8, 8)
    images[1] = 1.0
    region = torch.zeros(2, 8, 8, dtype=torch.bool)
    region[1, 2:6, 2:6] = True  # the donor's cue sits where the recipient's object is
    core = torch.zeros(2, 8, 8, dtype=torch.bool)
    core[0, 3:5, 3:5] = True
    swapped, _, keep, _ = swap_variants(images, region, np.array([1, 0]), keep_out=core)
    assert keep[0] and swapped[0, :, 3:5, 3:5].eq(0).all() and swapped[0, :, 2, 2].eq(1).all()


def test_a_grid_cell_holding_a_moving_cue_in_a_quarter_of_images_is_flagged_without_a_net_effect_of_0_2():
    from analysis.report.flags import report_findings, shortcut_flags
    from analysis.stats.aggregate import region_table
    from tests.report.synthetic import planted_frames

    images, regions = planted_frames(n=150, patch_mass=0.04, patch_area=0.05)  # lift CI not above 1
    table = region_table(images, regions, n_boot=200)
    # the case: the fill flips 11.5% against 0%, every flip a right answer lost (rho = 1)
    iv = {"p_value": 1e-7, "flip_rate": 0.115, "accuracy_drop": 0.115, "n": 300, "fill": "mean",
          "control": {"flip_rate": 0.0, "accuracy_drop": 0.0}}
    (flag,) = shortcut_flags(table, {"interventions": {"patch": iv}})
    assert flag["basis"] == "intervention" and flag["evidence"]["shown_by"] == "fill"
    assert "Holm" in flag["evidence"]["correction"] and flag["evidence"]["p_value_holm"] == pytest.approx(1e-7)
    weak = {**iv, "flip_rate": 0.03, "p_value": 0.02}
    assert shortcut_flags(table, {"interventions": {"patch": weak}}) == []
    sensitive = {**iv, "accuracy_drop": 0.01}  # flips as many, right answers kept: sensitivity, not reliance
    assert shortcut_flags(table, {"interventions": {"patch": sensitive}}) == []
    bounds = {"fill_flips": [-0.02, 0.03], "fill_accuracy_drop": [-0.03, 0.02], "swap_towards_donor": [-0.01, 0.025],
              "swap_accuracy_drop": [-0.02, 0.029]}
    seq = {**weak, "sequential": {"n": 400, "decision": "excluded", "bounds": bounds, "level": 0.95}}
    out = report_findings(images, regions, {"interventions": {"patch": seq}}, n_boot=50)
    (power,) = out["power"]
    assert power["text"].startswith("swapping `patch` for another class's changes accuracy by less than 3 points")
    assert "n = 400" in power["text"] and out["multiple_testing"]["method"] == "Holm"


# ---------------------------------------------------------------- planted: trained models, real engine

N = 200


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from analysis.store.workspace import Workspace

    root = tmp_path_factory.mktemp("power")
    return root, Workspace(root / "ws"), {}


def _model(lab, rho, seed=0):
    root, _, cache = lab
    if (rho, seed) not in cache:
        cache[rho, seed] = power_audit.trained(root, rho, seed)
    return cache[rho, seed]


@pytest.mark.slow
@pytest.mark.timeout(1200)  # training plus an audit (RISE: 500 masks, its sanity check too) on a shared CPU
@pytest.mark.parametrize("method,params", [("gradcam", {}), ("saliency", {}), ("rise", {"n_masks": 500})])
def test_partial_reliance_is_flagged_by_cam_gradient_and_perturbation_methods(lab, method, params):
    root, ws, _ = lab
    model, drop = _model(lab, 0.85)
    assert 0.10 <= drop <= 0.15, drop  # the planted case: partial reliance
    report = power_audit.audit(ws, model, ws.register_dataset(power_audit.dataset(root, 0.85, N)), method=method,
                               n=N, params=params)
    flagged = {f["region"]: f for f in report["flags"]}
    assert "patch" in flagged, (method, report["interventions"].get("patch", {}).get("swap"))
    assert "bar" not in flagged  # the core: never
    assert flagged["patch"]["evidence"]["shown_by"] in ("fill", "swap")


@pytest.mark.slow
def test_moving_cue_is_found_without_masks_and_named_by_position(lab):
    root, ws, _ = lab
    model, drop = _model(lab, 1.0)
    assert drop >= 0.3
    report = power_audit.audit(ws, model, ws.register_dataset(power_audit.dataset(root, 1.0, N, masks=False)), n=N)
    discovered = [f for f in report["flags"] if f["region"].startswith("discovered-")]
    assert discovered, [d["description"] for d in report["discovered_regions"]]
    assert "in one of 4 corners" in discovered[0]["description"] and discovered[0]["exemplars"]
    assert discovered[0]["evidence"]["swap"]["towards_donor_rate"] > 0.5


@pytest.mark.slow
def test_a_moving_cue_nobody_annotated_is_discovered_and_flagged_alongside_masks(lab):
    root, ws, _ = lab
    model, drop = _model(lab, 1.0)
    data = power_audit.dataset(root, 1.0, N, patch_annotated=False)  # masks: background and bar only
    report = power_audit.audit(ws, model, ws.register_dataset(data), n=N)
    assert {r["region"] for r in report["regions"]} == {"background", "bar"}
    discovered = [f for f in report["flags"] if f["region"].startswith("discovered-")]
    assert discovered, [(d["description"], report["interventions"][d["name"]]) for d in report["discovered_regions"]]
    flag = discovered[0]
    print("planted, alongside masks:", flag["description"], flag["lift"], flag["evidence"])
    assert "in one of 4 corners" in flag["description"] and flag["exemplars"]
    assert flag["evidence"]["p_value_holm"] < 0.01 and "Holm" in flag["evidence"]["correction"]
    assert flag["evidence"]["swap"]["towards_donor_rate"] > 0.5
    assert "bar" not in {f["region"] for f in report["flags"]}


@pytest.mark.slow
def test_a_clean_model_with_masks_gets_no_discovered_region_flag(lab):
    root, ws, _ = lab
    model, drop = _model(lab, 0.5)
    assert drop <= 0.01 + 1e-9, drop  # 4 answers of 400: float 0.0100...09 on some CPUs
    for annotated in (True, False):
        data = power_audit.dataset(root, 0.5, N, patch_annotated=annotated)
        report = power_audit.audit(ws, model, ws.register_dataset(data), n=N)
        print("clean, alongside masks:", annotated, [(d["description"], report["interventions"][d["name"]].get("p_value"))
                                                       for d in report["discovered_regions"]])
        assert not [f for f in report["flags"] if f["region"].startswith("discovered-")], report["flags"]


@pytest.fixture(scope="module")
def clean_audits(lab):
    """Ten clean models (the cue's colour carries no information: rho 0.5), each audited: (drops, reports)."""
    root, ws, _ = lab
    data_id = ws.register_dataset(power_audit.dataset(root, 0.5, 120))
    drops, reports = [], []
    for seed in range(10):
        model, drop = _model(lab, 0.5, seed)
        drops.append(drop)
        reports.append(power_audit.audit(ws, model, data_id, n=120))
        print(f"clean seed {seed}: shuffle drop {drop:.4f}, flags {[f['region'] for f in reports[-1]['flags']]}")
    return drops, reports


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ten trainings and ten audits: minutes on a shared 2-core machine
def test_clean_models_over_ten_seeds_never_flag_the_cue_and_state_their_power(clean_audits):
    drops, reports = clean_audits
    # clean: the cue carries no information, the model does not use it. At most 1 point: 4 answers of 400, whose
    # float rate is 0.010000000000000009 on some CPUs (training differs by its floating-point order).
    assert max(drops) <= 0.01 + 1e-9, drops
    flagged = sum(any(f["region"] == "patch" for f in report["flags"]) for report in reports)
    assert flagged / 10 <= 0.05, flagged
    for report in reports:  # every unflagged cue says what its test could have detected
        assert any(p["region"] == "patch" for p in report["power"])


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_clean_models_over_ten_seeds_are_flagged_at_most_five_percent_on_any_region(clean_audits):
    """Seed 2 trains to 54% accuracy; filling its background (90% of the image, no equal-area control: the
    core is the control) moved 95% of its answers and cost 3% of them. A rule that took flips for reliance
    flagged it; a fill now shows reliance only by the right answers it costs."""
    _, reports = clean_audits
    flagged = sum(bool(report["flags"]) for report in reports)
    assert flagged / 10 <= 0.05, [[f["region"] for f in r["flags"]] for r in reports]


def test_report_html_shows_swap_evidence_power_and_discovered_regions():
    from analysis.report.html import render_html

    iv = {"n": 100, "flip_rate": 0.02, "control": {"flip_rate": 0.01}, "p_value": 0.4,
          "swap": {"towards_donor_rate": 0.03, "control": {"towards_donor_rate": 0.02}, "accuracy_drop": 0.01,
                   "p_value": 0.5}, "sequential": {"n": 400, "decision": "excluded"}}
    report = {"run": {"name": "r"}, "flags": [], "interventions": {"patch": iv},
              "power": [{"region": "patch", "text": "swapping `patch` for another class's changes accuracy by "
                                                    "less than 3 points"}],
              "multiple_testing": {"method": "Holm", "n_tests": 6, "family": "f", "alpha": 0.01},
              "sequential": {"design": "group-sequential", "bounds": "cp", "chunk": 100, "cap": 400},
              "discovered_regions": [{"name": "discovered-1", "description": "small uniform patch, in one of 4 corners",
                                      "share": 0.96, "attention": {"lift": 5.0}, "exemplars": [3, 9]}]}
    html = render_html(report)
    for text in ("swap: towards donor", "less than 3 points", "Holm over 6 tests", "in one of 4 corners", "3, 9",
                 "excluded", "<td>96.0%</td>", "<td>no</td>"):
        assert text in html, text


def test_committed_demo_versions_are_partly_fully_and_not_reliant_on_the_moving_patch():
    from sample_models import moving_patch

    for name, rho in moving_patch.DEMO_VERSIONS.items():
        net = moving_patch.load_version(name)
        drop = moving_patch.shuffle_drop(net, moving_patch.render(400, rho, seed=500))
        expected = {"partly_biased": 0.10 <= drop <= 0.15, "moving_cue": drop >= 0.4, "clean": abs(drop) < 0.03}
        assert expected[name], (name, drop)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_moderate_reliance_is_flagged_at_1000_images_as_the_sample_grows_past_the_old_cap(lab):
    """Five to seven points of true reliance (rho 0.8, seeds 0 and 2): flagged on `patch` at 1,000 images. The
    evidence sample can grow to the run's images while the patch is undecided (its cap is the run's 1,000, not a
    fixed 400, which left a 7.8-point decoy undecided at 300: issue 25)."""
    root, ws, _ = lab
    used = []
    for seed in (0, 2):
        model, drop = _model(lab, 0.8, seed)
        assert 0.04 <= drop <= 0.08, drop
        report = power_audit.audit(ws, model, ws.register_dataset(power_audit.dataset(root, 0.8, 1000)), n=1000)
        assert "patch" in {f["region"] for f in report["flags"]}, report["power"]
        used.append(report["interventions"]["patch"]["sequential"]["n"])
        assert report["sequential"]["cap"] == 1000 and report["sequential"]["median_n"] >= 100
    # donors whose patch points at their own class decide both at 400-800 images; random donors needed all
    # 1,000 for seed 0, and the sample may still grow to the run's 1,000 while a candidate is undecided
    assert all(100 <= n <= 1000 for n in used), used


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("rho,seed", [(0.8, 0), (0.9, 1)])
def test_five_points_of_reliance_are_flagged_without_masks_at_1000_images(lab, rho, seed):
    """The two models the mask-free calibration missed (5.0 points of true reliance each): the maps single the
    corner patch out in 14-21% of the images; snapped to the patch and searched for in the others, it is tested
    in nearly all of them and flagged, first. Before, one stayed undecided at 700 images (swap towards-donor
    5.1% against 4.7%: the donor's cue sat beside the recipient's own) and the other formed no corner region."""
    root, ws, _ = lab
    model, drop = _model(lab, rho, seed)
    assert 0.04 <= drop <= 0.06, drop
    data = power_audit.dataset(root, rho, 1000, masks=False)
    report = power_audit.audit(ws, model, ws.register_dataset(data), n=1000)
    corner = {d["name"]: d for d in report["discovered_regions"] if "corners" in d["description"]}
    assert corner and max(d["share_tested"] for d in corner.values()) >= 0.9, report["discovered_regions"]
    assert report["flags"] and report["flags"][0]["region"] in corner, [f["region"] for f in report["flags"]]
