"""One bad image never kills a run: a model that raises on some inputs, an explainer that fails on whole
batches, a model that fails on everything (that one must stop the run), a card that does not fit the model.

The model is tests/runs' planted red-channel net, so every explained image's region shares are known
exactly (`expected_region_table`): the images that survive a failing batch must still be exactly right.
NaN outputs are covered in tests/runs/test_run_cli.py::test_nan_model_output_skips_the_image.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from analysis.runs import runner
from analysis.cli import main
from analysis.store.workspace import Workspace

from tests.runs.helpers import expected_region_table

from .checks import assert_catalog_and_shards_sound

POISONED = (2, 9)  # images the model raises on


def _first_pixels(data, ids) -> torch.Tensor:
    return torch.tensor([np.asarray(Image.open(data / "images" / f"{i:03d}.png"))[0, 0, 0] / 255.0 for i in ids],
                        dtype=torch.float32)


def _patch_prepare(monkeypatch, wrap_forward=None, wrap_explain=None):
    real_prepare = runner.prepare

    def prepare(*args, **kwargs):
        loaded, dataset, explainer, layer, target = real_prepare(*args, **kwargs)
        if wrap_forward:
            loaded.module.forward = wrap_forward(loaded.module.forward)
        if wrap_explain:
            explainer.explain = wrap_explain(explainer.explain)
        return loaded, dataset, explainer, layer, target

    monkeypatch.setattr(runner, "prepare", prepare)


def _run(tmp_path, model_file, data, batch_size=4):
    ws = Workspace(tmp_path / "ws")
    run_id = ws.create_run(ws.register_model(model_file), ws.register_dataset(data), "gradcam",
                           {"target": "pred"}, n=12, seed=0)
    return ws, run_id, lambda: runner.execute_run(ws, run_id, batch_size=batch_size, progress=False)


def _overall(ws, run_id) -> dict:
    regions = ws.store(run_id).regions()
    return {name: {"mass_mean": g["mass"].mean(), "area_mean": g["area"].mean()}
            for name, g in regions.groupby("region")}


def _assert_exact(ws, run_id, data, skip):
    expected, got = expected_region_table(data, skip=skip), _overall(ws, run_id)
    for name, values in expected.items():
        for key in ("mass_mean", "area_mean"):
            np.testing.assert_allclose(got[name][key], values[key], rtol=0, atol=1e-6, err_msg=f"{name}.{key}")


def test_model_raising_on_some_images_skips_only_those(tmp_path, model_file, data_12, monkeypatch):
    poisoned = _first_pixels(data_12, POISONED)
    attempts = []

    def wrap(forward):
        def raising_forward(x):
            attempts.append(len(x))
            if torch.isclose(x[:, 0, 0, 0, None], poisoned).any():
                raise RuntimeError("kernel failed on this input")
            return forward(x)
        return raising_forward

    _patch_prepare(monkeypatch, wrap_forward=wrap)
    ws, run_id, execute = _run(tmp_path, model_file, data_12)
    final = execute()
    assert final["status"] == "done" and final["n_done"] == 9 and final["n_skipped"] == 3
    reasons = ws.store(run_id).skipped().set_index("image_id")["reason"].to_dict()
    assert sorted(reasons) == [2, 5, 9]
    for i in POISONED:
        assert "RuntimeError" in reasons[i] and "kernel failed on this input" in reasons[i]
    assert 1 in attempts  # the failing batches were retried image by image
    _assert_exact(ws, run_id, data_12, skip=(5, *POISONED))
    assert_catalog_and_shards_sound(ws, run_id)


def test_explainer_failing_on_whole_batches_loses_no_image(tmp_path, model_file, data_12, monkeypatch):
    """E.g. out of memory for a batch of 4 but not for 1: every image is still explained, exactly."""
    def wrap(explain):
        def explain_small_batches_only(inputs, targets):
            if len(inputs) > 1:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            return explain(inputs, targets)
        return explain_small_batches_only

    _patch_prepare(monkeypatch, wrap_explain=wrap)
    ws, run_id, execute = _run(tmp_path, model_file, data_12)
    final = execute()
    assert final["status"] == "done" and final["n_done"] == 11 and final["n_skipped"] == 1
    _assert_exact(ws, run_id, data_12, skip=(5,))


def test_model_failing_on_everything_stops_the_run_and_records_no_skips(tmp_path, model_file, data_12,
                                                                         monkeypatch):
    def wrap(forward):
        def broken(x):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
        return broken

    _patch_prepare(monkeypatch, wrap_forward=wrap)
    ws, run_id, execute = _run(tmp_path, model_file, data_12)
    # batches of 4 with image 5 unreadable: 4, 7, then 11 failures, past the limit of 8
    with pytest.raises(RuntimeError, match="failed on each of the first 11 images.*mat1 and mat2"):
        execute()
    run = ws.run(run_id)
    assert run["status"] == "failed" and "mat1 and mat2" in run["error"]
    # only the unreadable image is recorded as skipped; the others are not, so fixing the model retries them
    assert ws.store(run_id).skipped()["image_id"].tolist() == [5]

    monkeypatch.undo()  # the model is fixed
    final = runner.execute_run(ws, run_id, batch_size=4, progress=False)
    assert final["status"] == "done" and final["n_done"] == 11
    _assert_exact(ws, run_id, data_12, skip=(5,))


def test_card_with_more_classes_than_outputs_is_one_line_before_compute(tmp_path, model_file, data_12, capsys):
    folder = tmp_path / "three"
    folder.mkdir()
    shutil.copy(model_file, folder / "model.pt2")
    card = json.loads((model_file.parent / "model.json").read_text())
    card["classes"] = [*card["classes"], "horse"]
    (folder / "model.json").write_text(json.dumps(card))
    code = main(["run", "--model", str(folder / "model.pt2"), "--data", str(data_12), "--workspace",
                 str(tmp_path / "ws"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    (line,) = [l for l in err.splitlines() if l.startswith("saliency-audit")]
    assert "3 classes" in line and "2 logits" in line
    (run,) = Workspace(tmp_path / "ws").runs()
    assert run["status"] == "failed" and run["n_done"] == 0 and not Workspace(tmp_path / "ws").shards(run["id"])
