"""The synthetic shortcut benchmark: valid dataset folders, exact leak semantics, seeded bytes, flipping."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from explainers.errors import InputError
from sample_models.scenes import SCENARIOS, generate, render


def _manifest(folder):
    with open(folder / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _shortcut_in_pixels(scenes):
    """Read the planted shortcut back from the pixels and masks, independently of the generator's flags."""
    sc = scenes.scenario
    masks, images = scenes.masks, scenes.images.astype(int)
    rid = sc.regions.index(sc.shortcut)
    area = (masks == rid).mean(axis=(1, 2))
    if sc.name in ("cage", "watermark"):
        return (area > 0).astype(int)  # present or absent
    if sc.name == "doctor_nurse":
        return (area > 0.04).astype(int)  # long hair covers far more than a cap
    bg = masks == rid  # background: water is bluer than it is green
    blue = (images[..., 2] * bg).sum((1, 2)) / bg.sum((1, 2))
    green = (images[..., 1] * bg).sum((1, 2)) / bg.sum((1, 2))
    return (blue > green).astype(int)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_generate_writes_a_valid_dataset_folder(tmp_path, scenario):
    out = generate(scenario, tmp_path / scenario, n=40, size=64, leak=0.9, seed=3)
    sc = SCENARIOS[scenario]
    rows = _manifest(out)
    assert len(rows) == 40
    assert list(rows[0]) == ["image", "label", "mask", sc.attribute]
    regions = json.loads((out / "regions.json").read_text())["regions"]
    assert [r["name"] for r in regions.values()] == list(sc.regions)
    assert [r["name"] for r in regions.values() if r.get("role") == "core"] == [sc.core]
    ids = {int(k) for k in regions}
    assert ids == set(range(len(sc.regions)))
    for row in rows:
        assert row["label"] in sc.classes
        assert row[sc.attribute] in sc.attribute_values
        image = Image.open(out / row["image"])
        mask = Image.open(out / row["mask"])
        assert image.mode == "RGB" and mask.mode == "L"
        assert image.size == mask.size == (64, 64)
        values = set(np.unique(np.asarray(mask)).tolist())
        assert values <= ids, f"{row['mask']} has unknown region ids {values - ids}"
        assert sc.regions.index(sc.core) in values, "every image shows its core object"
    truth = json.loads((out / "scenario.json").read_text())
    assert truth["shortcut_region"] == sc.shortcut and truth["core_region"] == sc.core


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_leak_is_the_probability_that_the_shortcut_agrees_with_the_label(scenario):
    for leak in (0.5, 0.95):
        scenes = render(scenario, n=800, leak=leak, seed=11)
        assert abs(scenes.agrees.mean() - leak) < 0.05  # 3 binomial standard deviations at leak 0.5
        assert scenes.labels.mean() == 0.5  # balanced classes
        np.testing.assert_array_equal(_shortcut_in_pixels(scenes), scenes.shortcut)
    assert render(scenario, n=200, leak=1.0, seed=11).agrees.all()


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_flip_places_the_shortcut_against_every_label(scenario):
    scenes = render(scenario, n=200, seed=5, flip=True)
    assert not scenes.agrees.any()
    np.testing.assert_array_equal(_shortcut_in_pixels(scenes), 1 - scenes.labels)


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path):
    a = generate("watermark", tmp_path / "a", n=30, seed=7)
    b = generate("watermark", tmp_path / "b", n=30, seed=7)
    c = generate("watermark", tmp_path / "c", n=30, seed=8)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 30 * 2 + 3
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (a / "images/00000.png").read_bytes() != (c / "images/00000.png").read_bytes()


@pytest.mark.parametrize("size", [32, 96])
def test_other_sizes_keep_masks_aligned(size):
    scenes = render("doctor_nurse", n=8, size=size, seed=1)
    assert scenes.images.shape == (8, size, size, 3) and scenes.masks.shape == (8, size, size)
    assert set(np.unique(scenes.masks)) == {0, 1, 2, 3}


def test_background_scenario_has_no_unassigned_pixels():
    scenes = render("background", n=16, seed=2)
    assert set(np.unique(scenes.masks)) == {0, 1}
    assert 0.8 < (scenes.masks == 0).mean() < 0.97  # the background is the shortcut region, most pixels


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(InputError, match="unknown scenario 'zoo'.*cage"):
        render("zoo")
    with pytest.raises(ValueError, match="leak"):
        render("cage", leak=1.5)
