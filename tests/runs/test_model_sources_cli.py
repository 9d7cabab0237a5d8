"""End to end through the CLI: timm ConvNeXt (convnext_atto: Grad-CAM) and ViT (test_vit: IG, GradientSHAP),
a Hugging Face ViT folder (GradientSHAP, its zip; Grad-CAM at its token layer), a torchvision resnet with LRP,
each audited with random weights at 32 px, with region Shapley values in the report."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import save_file

from analysis.cli import main
from analysis.store.workspace import Workspace
from explainers.loading.models import load_model
from explainers.preprocess import to_input
from tests.explainers_models.sources import write_hf_vit, write_timm, zip_folder
from tests.runs.helpers import CLASSES, write_dataset

N = 6
pytestmark = pytest.mark.slow  # each audit: maps, then the whole evidence stage, on a real architecture


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data") / "data", n=N)


def audit(capsys, workspace, model, data, method, *extra) -> tuple[str, dict, str]:
    """Run, then report: (run id, report JSON, the run's stderr)."""
    code = main(["run", "--model", str(model), "--data", str(data), "--method", method, "--n", str(N),
                 "--workspace", str(workspace), "--batch-size", "3", "--no-progress",
                 "--param", "region_shapley=4", *map(str, extra)])
    out, err = capsys.readouterr()
    assert code == 0, err
    run_id = out.strip().splitlines()[-1]
    assert main(["report", run_id, "--format", "json", "--workspace", str(workspace)]) == 0
    report = json.loads(capsys.readouterr()[0])
    return run_id, report, err


def check_audit(report, workspace, run_id, model_path, data, method):
    assert report["run"]["method"] == method and report["run"]["n_images"] == N
    overall = {r["region"] for r in report["regions"] if r["class"] is None and r["group"] is None}
    assert overall == {"background", "animal", "cage"}
    evidence = Workspace(workspace).store(run_id).evidence()
    assert evidence["sanity"]["model_randomization"]["method"] == method
    shapley = evidence["region_shapley"]
    assert shapley["regions"] == ["background", "animal", "cage"] and shapley["n"] == 4
    # Efficiency on the stored values: every pixel is in a region, so sum_r phi = p(image) - p(flat mean colour).
    loaded = load_model(model_path)
    dataset = Workspace(workspace).open_dataset(Workspace(workspace).runs()[-1]["dataset_id"])
    by_id = {int(item.image_id): item for item in dataset.items}
    inputs = torch.stack([to_input(dataset.load(by_id[i])[0], loaded.card) for i in range(N)])
    colour = inputs.mean(dim=(0, 2, 3))
    x = torch.stack([inputs[i] for i in shapley["image_ids"]])
    images = Workspace(workspace).store(run_id).images().set_index("image_id")
    targets = torch.as_tensor([int(images.loc[i, "target_idx"]) for i in shapley["image_ids"]])
    with torch.no_grad():
        full = loaded.module(x).softmax(1).gather(1, targets[:, None])[:, 0]
        flat = loaded.module(colour.view(1, 3, 1, 1).expand_as(x).contiguous()).softmax(1).gather(1, targets[:, None])[:, 0]
    np.testing.assert_allclose(np.asarray(shapley["values"]).sum(1), (full - flat).numpy(), rtol=1e-4, atol=1e-6)
    rows = report["region_shapley"]["rows"]
    assert {(r["class"], r["region"]) for r in rows} == {(c, g) for c in (None, *CLASSES)
                                                         for g in ("background", "animal", "cage")}
    for row in rows:
        assert row["share_ci"][0] <= row["share_mean"] + 1e-12 and row["share_mean"] <= row["share_ci"][1] + 1e-12
    overall_rows = [r for r in rows if r["class"] is None]
    assert all(r["n"] == 4 for r in overall_rows)
    assert sum(abs(r["share_mean"]) for r in overall_rows) <= 1 + 1e-9


def test_timm_convnext_with_gradcam_and_lrp_refused(tmp_path, data, capsys):
    _, path = write_timm(tmp_path / "m", "convnext_atto", size=32, classes=CLASSES)
    ws = tmp_path / "ws"
    run_id, report, err = audit(capsys, ws, path, data, "gradcam")
    assert "target layer: stages" in err and "(detected)" in err
    check_audit(report, ws, run_id, path, data, "gradcam")
    # zennit has no LRP rule for ConvNeXt's LayerNorm: refused before any compute, with the alternatives.
    code = main(["run", "--model", str(path), "--data", str(data), "--method", "lrp", "--workspace", str(ws),
                 "--no-progress"])
    err = capsys.readouterr()[1]
    assert code == 2 and "has no LRP rule" in err and "gradient_shap" in err


@pytest.mark.parametrize("method,param", [("integrated_gradients", "n_steps=4"), ("gradient_shap", "n_samples=4")])
def test_timm_vit_with_integrated_gradients_or_gradient_shap(tmp_path, data, capsys, method, param):
    _, path = write_timm(tmp_path / "m", "test_vit", size=32, classes=CLASSES)  # timm's tiny ViT config
    ws = tmp_path / "ws"
    run_id, report, _ = audit(capsys, ws, path, data, method, "--param", param)
    check_audit(report, ws, run_id, path, data, method)


def test_hugging_face_vit_folder_and_its_zip(tmp_path, data, capsys):
    _, folder = write_hf_vit(tmp_path / "vit_hf", size=32, classes=CLASSES)
    ws = tmp_path / "ws"
    run_id, report, _ = audit(capsys, ws, folder, data, "gradient_shap", "--param", "n_samples=4")
    registered = Workspace(ws).model(Workspace(ws).run(run_id)["model_id"])
    assert registered["format"] == "hf_folder"
    check_audit(report, ws, run_id, registered["abspath"], data, "gradient_shap")
    # The zipped folder is the same model: the same command resumes the same run.
    code = main(["run", "--model", str(zip_folder(folder, tmp_path / "vit_hf.zip")), "--data", str(data),
                 "--method", "gradient_shap", "--n", str(N), "--workspace", str(ws), "--batch-size", "3",
                 "--no-progress", "--param", "region_shapley=4", "--param", "n_samples=4"])
    out = capsys.readouterr()[0]
    assert code == 0 and out.strip().splitlines()[-1] == run_id


def test_hugging_face_vit_folder_with_gradcam_at_its_token_layer(tmp_path, data, capsys):
    """pytorch-grad-cam's Hugging Face recipe, found without a card: the last layer's `layernorm_before`
    (`vit.encoder.layer[-1]` in older transformers, `vit.layers[-1]` now), behind the `.logits` unwrapper."""
    _, folder = write_hf_vit(tmp_path / "vit_hf", size=32, classes=CLASSES)
    ws = tmp_path / "ws"
    run_id, report, err = audit(capsys, ws, folder, data, "gradcam")
    assert "target layer: model.vit.layers.1.layernorm_before (detected)" in err
    assert report["run"]["target_layer"] == "model.vit.layers.1.layernorm_before"
    check_audit(report, ws, run_id, Workspace(ws).model(Workspace(ws).run(run_id)["model_id"])["abspath"], data,
                "gradcam")
    images = Workspace(ws).store(run_id).images()  # a token layer: each image's register-like tokens counted
    assert "artifact_tokens" in images.columns and images["artifact_tokens"].notna().all()


def test_hugging_face_vit_folder_with_transformer_attribution(tmp_path, data, capsys):
    """Chefer's gradient-weighted rollout on a transformers ViT as saved by save_pretrained (sdpa attention:
    the probabilities are recomputed from the blocks' own projections, `explainers.attention`)."""
    _, folder = write_hf_vit(tmp_path / "vit_hf", size=32, classes=CLASSES)
    ws = tmp_path / "ws"
    run_id, report, _ = audit(capsys, ws, folder, data, "transformer_attribution")
    check_audit(report, ws, run_id, Workspace(ws).model(Workspace(ws).run(run_id)["model_id"])["abspath"], data,
                "transformer_attribution")
    ids, maps = Workspace(ws).store(run_id).maps()
    assert len(ids) == N and (maps >= 0).all() and maps.reshape(len(ids), -1).std(1).min() > 0


def test_torchvision_resnet_with_lrp(tmp_path, data, capsys):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=len(CLASSES)).eval()
    (tmp_path / "m").mkdir()
    path = tmp_path / "m" / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    path.with_suffix(".json").write_text(json.dumps({"task": "classification", "classes": CLASSES,
                                                     "input_size": [32, 32], "architecture": "resnet18"}))
    ws = tmp_path / "ws"
    run_id, report, _ = audit(capsys, ws, path, data, "lrp")
    check_audit(report, ws, run_id, path, data, "lrp")
    assert report["run"]["params"]["region_shapley"] == 4
