"""The sample detector as an ONNX file (the native boxes/scores/probs contract, committed beside its weights):
the same detections as the PyTorch detector, and a CLI D-RISE audit whose report and context flags equal
the PyTorch run's; the version comparison takes both."""
import json

import pytest
import torch

from analysis.report.build import cached_report
from analysis.store.workspace import Workspace
from detection_helpers import cli, run_args
from explainers.loading.models import load_model
from explainers.loading.onnx_model import OnnxDetector
from sample_models.detection import WEIGHTS_DIR, make_scenes

ONNX = WEIGHTS_DIR / "biased_onnx" / "model.onnx"


def test_onnx_export_detects_what_the_pytorch_detector_detects():
    onnx, torch_model = load_model(ONNX), load_model(WEIGHTS_DIR / "biased" / "model.safetensors")
    assert isinstance(onnx.net, OnnxDetector) and onnx.net.layout == "contract"
    images = torch.stack([s.image for s in make_scenes(16, seed=3, biased=True)])
    with torch.no_grad():
        got, expected = onnx.module(images), torch_model.module(images)
    assert sum(len(d["boxes"]) for d in expected) > 16
    for g, e in zip(got, expected):
        assert g["labels"].tolist() == e["labels"].tolist()
        for key in ("boxes", "scores", "probs"):
            torch.testing.assert_close(g[key], e[key], atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_cli_drise_audit_of_the_onnx_detector_equals_the_pytorch_audit(detection_runs, coco_scenes, capsys):
    ws = detection_runs["ws"]
    args = run_args(ws, "biased", coco_scenes[1])
    args[args.index("--model") + 1] = ONNX
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    onnx_run = out.strip().splitlines()[-1]
    workspace = Workspace(ws)
    got, expected = cached_report(workspace.store(onnx_run), workspace), cached_report(
        workspace.store(detection_runs["biased"]), workspace)
    assert [(f["class"], f["region"]) for f in got["flags"]] == [(f["class"], f["region"]) for f in expected["flags"]]
    assert ("boat", "water") in {(f["class"], f["region"]) for f in got["flags"]}
    rows = {(r["class"], r["region"]): r["mass_mean"] for r in expected["regions"]}
    for r in got["regions"]:
        assert r["mass_mean"] == pytest.approx(rows[(r["class"], r["region"])], abs=2e-3)
    assert got["metrics"]["recall"] == expected["metrics"]["recall"]
    # a black box's weights cannot be randomised: the checks registry leaves the sanity check out, with the reason
    assert got["sanity"] == {} and expected["sanity"]["model_randomization"]["n"] > 0
    assert {n["key"]: n["reason"] for n in got["not_judged"]}["sanity"].endswith("no weights to randomise")
    # nor explained by another family: D-RISE is the only one without gradients, and the report says why
    assert got["second_explainer"]["status"] == "not_applicable" and "no gradients" in got["second_explainer"]["reason"]
    assert expected["second_explainer"]["status"] == "ran"
    checks = {c["name"]: c["status"] for c in got["flags"][0]["checks"]}
    assert checks == {"second explainer": "not_run", "model randomisation": "not_applicable"}
    assert got["flags"][0]["confidence"] == "low"
    code, out, _ = cli(capsys, "compare", detection_runs["biased"], onnx_run, "--workspace", ws, "--format", "json")
    assert code == 0 and len(json.loads(out)["runs"]) == 2
