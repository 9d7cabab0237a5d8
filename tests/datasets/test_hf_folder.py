"""Hugging Face `datasets` folders (save_to_disk) as a dataset source: the same items, masks and attributes as
the manifest folder they were made from, the same audit, and errors that name the user's folder."""
import csv
import json
from pathlib import Path

import datasets
import numpy as np
import pytest

from analysis.cli import main
from analysis.data.datasets import open_dataset
from analysis.report.build import cached_report
from analysis.store.workspace import Workspace
from explainers.errors import InputError
from tests.report import samples_audit


def _to_hf(manifest_root, out, *, with_regions=True, split=None):
    """The manifest folder's rows as a datasets.Dataset with Image, ClassLabel, mask and attribute columns."""
    with open(manifest_root / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    classes = sorted({r["label"] for r in rows})
    attributes = [c for c in rows[0] if c not in ("image", "label", "mask")]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=classes),
                                  "mask": datasets.Image(), **{a: datasets.Value("string") for a in attributes}})
    table = datasets.Dataset.from_dict({
        "image": [str(manifest_root / r["image"]) for r in rows],
        "label": [classes.index(r["label"]) for r in rows],
        "mask": [str(manifest_root / r["mask"]) for r in rows],
        **{a: [r[a] for r in rows] for a in attributes}}, features=features)
    table = table.cast_column("image", datasets.Image(decode=False)).map(
        lambda row: {"image": {"bytes": Path(row["image"]["path"]).read_bytes(), "path": row["image"]["path"]}})
    table = table.cast_column("mask", datasets.Image(decode=False)).map(
        lambda row: {"mask": {"bytes": Path(row["mask"]["path"]).read_bytes(), "path": row["mask"]["path"]}})
    if split:
        datasets.DatasetDict({split: table, "train": table.select(range(2))}).save_to_disk(str(out))
        target = out / split
    else:
        table.save_to_disk(str(out))
        target = out
    if with_regions:
        (target / "regions.json").write_text((manifest_root / "regions.json").read_text())
    return out


@pytest.fixture(scope="module")
def cage(tmp_path_factory):
    return samples_audit.make_dataset("cage", tmp_path_factory.mktemp("data") / "cage", 24, seed=5)


def test_a_saved_dataset_reads_as_the_manifest_it_came_from(cage, tmp_path):
    hf = open_dataset(_to_hf(cage, tmp_path / "hf"), workdir=tmp_path / "work")
    reference = open_dataset(cage)
    hf.validate()
    assert len(hf) == len(reference) == 24
    assert hf.classes == reference.classes and hf.attributes == reference.attributes
    assert {r.name: r.role for r in hf.regions.values()} == {r.name: r.role for r in reference.regions.values()}
    for mine, theirs in zip(hf.items, reference.items):
        assert mine.label == theirs.label and mine.attributes == theirs.attributes
        (image_a, mask_a), (image_b, mask_b) = hf.load(mine), reference.load(theirs)
        assert np.array_equal(np.asarray(image_a), np.asarray(image_b)) and np.array_equal(mask_a, mask_b)


def test_a_dataset_dict_is_read_from_its_validation_split(cage, tmp_path):
    hf = open_dataset(_to_hf(cage, tmp_path / "hf", split="validation"), workdir=tmp_path / "work")
    assert len(hf) == 24  # not the 2-row train split


def test_masks_without_region_names_ask_for_regions_json(cage, tmp_path):
    folder = _to_hf(cage, tmp_path / "hf", with_regions=False)
    with pytest.raises(InputError, match="no regions.json names them") as err:
        open_dataset(folder, workdir=tmp_path / "work")
    assert str(folder) in str(err.value)


def test_a_dataset_without_an_image_column_names_the_fix(tmp_path):
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}).save_to_disk(str(tmp_path / "hf"))
    with pytest.raises(InputError, match="no image column") as err:
        open_dataset(tmp_path / "hf", workdir=tmp_path / "work")
    assert str(tmp_path / "hf") in str(err.value)


def test_auditing_the_saved_dataset_gives_the_manifest_folders_numbers(cage, tmp_path, capsys):
    model = samples_audit.model_file("cage", "v1")
    reports = []
    for data in (cage, _to_hf(cage, tmp_path / "hf")):
        code = main(["run", "--model", str(model), "--data", str(data), "--n", "24", "--workspace",
                     str(tmp_path / "ws"), "--no-progress"])
        out, err = capsys.readouterr()
        assert code == 0, err
        reports.append(cached_report(out.strip().splitlines()[-1], Workspace(tmp_path / "ws")))
    overall = [{r["region"]: r["mass_mean"] for r in rep["regions"] if r["class"] is None and r["group"] is None}
               for rep in reports]
    assert overall[0] == pytest.approx(overall[1], abs=1e-6)
    assert json.dumps(reports[0]["metrics"]) == json.dumps(reports[1]["metrics"])
