"""An ONNX classifier is audited like its `.pt2` twin by the black-box methods (same logits, same RISE and
occlusion maps, the same region table through the CLI), and gradient / CAM methods refuse it with the fix."""
import json

import pytest
import torch

from analysis.cli import main
from analysis.report.build import cached_report
from analysis.store.workspace import Workspace
from explainers.errors import InputError
from explainers.loading.models import load_model
from explainers.registry import make_explainer
from explainers.targets import ClassTarget
from tests.runs.helpers import write_dataset


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def loaded(classifier_files):
    return {name: load_model(classifier_files[name]) for name in ("pt2", "onnx", "onnx_batch1")}


@pytest.fixture(scope="module")
def images():
    return torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_onnx_gives_the_same_logits_as_pt2(loaded, images):
    assert loaded["onnx"].format == "onnx" and not loaded["onnx"].supports_hooks
    with torch.no_grad():
        expected = loaded["pt2"].module(images)
        for name in ("onnx", "onnx_batch1"):  # dynamic batch, and a batch-1 export run image by image
            torch.testing.assert_close(loaded[name].module(images), expected, rtol=1e-5, atol=1e-5)
    assert expected.std() > 0.01  # the logits differ between images: a real comparison


@pytest.mark.parametrize("method, params", [("rise", {"n_masks": 200, "cells": 4, "chunk": 16}),
                                            ("occlusion", {"window": 4, "stride": 2})])
def test_black_box_maps_match_the_pt2_maps(loaded, images, method, params):
    targets = ClassTarget(torch.tensor([0, 1, 0, 1, 1]))
    reference = make_explainer(method, loaded["pt2"].module, **params).explain(images, targets)
    scale = reference.maps.abs().max()
    assert scale > 1e-3
    for name in ("onnx", "onnx_batch1"):
        got = make_explainer(method, loaded[name].module, **params).explain(images, targets)
        torch.testing.assert_close(got.maps, reference.maps, rtol=1e-4, atol=1e-4 * float(scale))
        torch.testing.assert_close(got.scores, reference.scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients", "smoothgrad", "guided_backprop"])
def test_gradient_methods_refuse_onnx_with_the_fix(loaded, method):
    with pytest.raises(InputError, match=r"model\.onnx: method .* export a \.pt2 for gradient methods"):
        make_explainer(method, loaded["onnx"].module)


def test_cam_methods_refuse_onnx_with_the_fix(loaded):
    with pytest.raises(InputError, match=r"model\.onnx: ONNX models have no hookable layers.*occlusion, rise"):
        loaded["onnx"].target_layer_name()
    layer = loaded["pt2"].layer("features")
    with pytest.raises(InputError, match=r"model\.onnx: method 'gradcam' .* export a \.pt2"):
        make_explainer("gradcam", loaded["onnx"].module, layer=layer)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("bbdata") / "data", n=10)


def test_cli_rise_audit_of_onnx_equals_the_pt2_audit(classifier_files, dataset, tmp_path, capsys):
    ws = tmp_path / "ws"
    reports = {}
    for name in ("pt2", "onnx"):
        code, out, err = _cli(capsys, "run", "--model", classifier_files[name], "--data", dataset, "--method", "rise",
                              "--param", "n_masks=64", "--param", "cells=4", "--n", 10, "--workspace", ws,
                              "--batch-size", 4, "--no-progress")
        assert code == 0, err
        reports[name] = cached_report(Workspace(ws).store(out.strip().splitlines()[-1]), Workspace(ws))
    rows = {name: {(r["region"], r["class"], r["group"]): r["mass_mean"] for r in rep["regions"]}
            for name, rep in reports.items()}
    assert rows["onnx"].keys() == rows["pt2"].keys() and len(rows["pt2"]) > 3
    for key, mass in rows["pt2"].items():
        assert rows["onnx"][key] == pytest.approx(mass, abs=1e-4), key
    assert reports["onnx"]["metrics"]["accuracy"] == reports["pt2"]["metrics"]["accuracy"]
    # the checks registry does not run the sanity check on a black box, and says why (not judged, not failed)
    assert reports["onnx"]["sanity"] == {} and reports["pt2"]["sanity"]["model_randomization"]["n"] > 0
    left_out = {n["key"]: n["reason"] for n in reports["onnx"]["not_judged"]}
    assert left_out["sanity"] == "the model (onnx) is a black box: it has no weights to randomise"
    assert "sanity" not in {n["key"] for n in reports["pt2"]["not_judged"]}
    assert f"model randomisation: not judged ({left_out['sanity']})" in reports["onnx"]["verdict"]["not_tested"]
    verdict_checks = {c["name"]: c["status"] for c in reports["onnx"]["verdict"]["checks"]}
    assert verdict_checks["model randomisation"] == "not_applicable"
    evidence = Workspace(ws).store(reports["onnx"]["run"]["id"]).evidence()
    assert evidence["second_explainer"]["method"] == "occlusion"
    assert evidence["interventions"]  # region fills ran through onnxruntime
    json.dumps(reports["onnx"], allow_nan=False)


def test_cli_gradcam_on_onnx_exits_2_with_one_line(classifier_files, dataset, tmp_path, capsys):
    code, _, err = _cli(capsys, "run", "--model", classifier_files["onnx"], "--data", dataset, "--method", "gradcam",
                        "--workspace", tmp_path / "ws", "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "model.onnx" in err and ".pt2" in err and "occlusion" in err
