"""Audit the sample scenarios end to end: run -> evidence -> flags, per scenario and model version.

Used by test_samples_e2e.py, and runnable to print the flag table:
    python -m tests.report.samples_audit [n_images] [scenario ...]
Needs the `samples` branch (sample_models.scenes, sample_models/weights/<scenario>/v1..v5/).
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np

VERSIONS = ("v1", "v2", "v3", "v4", "v5")
MODEL_SUFFIXES = (".pt", ".safetensors", ".pt2", ".pth")  # a state dict rebuilds a plain, hookable net
WEIGHTS = Path(os.environ.get("SALIENCY_AUDIT_SAMPLE_WEIGHTS")
               or Path(__file__).resolve().parents[2] / "sample_models" / "weights")


def model_file(scenario: str, version: str) -> Path:
    folder = WEIGHTS / scenario / version
    for suffix in MODEL_SUFFIXES:
        found = sorted(folder.glob(f"*{suffix}"))
        if found:
            return found[0]
    raise FileNotFoundError(f"no model file in {folder}")


def make_dataset(scenario: str, folder: Path, n: int, seed: int = 123) -> Path:
    from sample_models.scenes import generate

    result = generate(scenario, folder, n, seed=seed)
    return Path(result) if isinstance(result, (str, Path)) else folder


def audit(workspace, model_path: Path, data_id: str, *, method: str = "gradcam", n: int = 64, seed: int = 0):
    """(store, evidence, findings) for one model on one registered dataset."""
    from analysis.evidence.stage import compute_evidence
    from analysis.report.flags import report_findings
    from analysis.runs.runner import execute_run, prepare

    run_id = workspace.create_run(workspace.register_model(model_path), data_id, method, n=n, seed=seed)
    execute_run(workspace, run_id, progress=False)
    loaded, dataset, _, layer_name, _ = prepare(workspace, workspace.run(run_id))
    store = workspace.store(run_id)
    evidence = compute_evidence(loaded, dataset, store, method=method, layer_name=layer_name, seed=seed,
                                max_images=n, n_boot=300, sanity_images=8, faithfulness_images=16)
    store.write_evidence(evidence)
    findings = report_findings(store.images(), store.regions(), evidence, n_boot=300, seed=seed)
    return store, evidence, findings


def image_folder_copy(data: Path, out: Path) -> Path:
    """The same images as a plain ImageFolder tree (no manifest, no masks): the mask-free path."""
    import csv

    with open(data / "manifest.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            target = out / row["label"] / Path(row["image"]).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(data / row["image"], target)
    return out


def region_centroid_cell(data: Path, region_name: str) -> str:
    """The 3x3 grid cell holding the centroid of `region_name` over the dataset's masks."""
    import csv
    import json

    from PIL import Image

    regions = json.loads((data / "regions.json").read_text())["regions"]
    rid = next(int(k) for k, v in regions.items() if v["name"] == region_name)
    ys, xs = [], []
    with open(data / "manifest.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            mask = np.asarray(Image.open(data / row["mask"]))
            yy, xx = np.nonzero(mask == rid)
            if len(yy):
                ys.append(yy.mean() / mask.shape[0])
                xs.append(xx.mean() / mask.shape[1])
    row_name = ("top", "middle", "bottom")[min(2, int(np.mean(ys) * 3))]
    col_name = ("left", "centre", "right")[min(2, int(np.mean(xs) * 3))]
    return f"{row_name}-{col_name}"


def main(argv: list[str]) -> None:
    import tempfile

    from analysis.store.workspace import Workspace
    from sample_models.scenes import SCENARIOS  # noqa: F401  (fails early without the samples branch)

    n = int(argv[0]) if argv else 64
    scenarios = argv[1:] or ["cage", "doctor_nurse", "watermark", "background"]
    root = Path(tempfile.mkdtemp(prefix="samples-audit-"))
    ws = Workspace(root / "ws")
    print("scenario version region severity confidence lift flip_rate control_flips p sanity")
    for scenario in scenarios:
        data = make_dataset(scenario, root / scenario, n)
        data_id = ws.register_dataset(data)
        for version in VERSIONS:
            _, evidence, findings = audit(ws, model_file(scenario, version), data_id, n=n)
            if not findings["flags"]:
                print(scenario, version, "-", flush=True)
            for f in findings["flags"]:
                ev = f["evidence"]
                print(scenario, version, f["region"], f["severity"], f["confidence"], round(f["lift"], 2),
                      ev.get("flip_rate"), ev.get("control_flip_rate"), ev.get("p_value"),
                      ev.get("sanity_passed"), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
