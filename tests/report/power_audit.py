"""Audit the moving-patch calibration series (`sample_models.moving_patch`) end to end: train, run, flag.

Used by test_power.py and by docs/calibration.py (the table and the plot in docs/).
"""
from __future__ import annotations

import json
from pathlib import Path

from sample_models import moving_patch

EVAL_N = 400


def trained(root: Path, rho: float, seed: int) -> tuple[Path, float]:
    """(model file, shuffle drop on held-out images) for one (rho, seed), trained once per folder."""
    folder = root / f"rho{rho:.2f}-seed{seed}"
    net = moving_patch.train(rho, seed)
    path = moving_patch.save_model(net, folder)
    drop = moving_patch.shuffle_drop(net, moving_patch.render(EVAL_N, rho, seed=500 + seed))
    return path, drop


def dataset(root: Path, rho: float, n: int, *, masks: bool = True, seed: int = 7, patch_annotated: bool = True) -> Path:
    """A manifest folder; `patch_annotated=False`: masks name only the background and the bar (core), the
    patch's pixels are background (the cue nobody annotated)."""
    kind = ("masks" if patch_annotated else "masks-no-patch") if masks else "plain"
    folder = root / f"data-rho{rho:.2f}-n{n}-{kind}-{seed}"
    if not folder.exists():
        scenes = moving_patch.render(n, rho, seed=seed)
        if not patch_annotated:
            scenes.masks[scenes.masks == 2] = 0
        moving_patch.write_dataset(scenes, folder, masks=masks)
        if masks and not patch_annotated:
            regions = {k: v for k, v in moving_patch.REGIONS.items() if v["name"] != "patch"}
            (folder / "regions.json").write_text(json.dumps({"regions": regions}, indent=2) + "\n")
    return folder


def audit(workspace, model: Path, data_id: str, *, method: str = "gradcam", n: int = 200, params=None):
    """The finished run's report (flags, power, discovered regions...)."""
    from analysis.report.build import build_report
    from analysis.runs.engine import execute_run

    run_id = workspace.create_run(workspace.register_model(model), data_id, method, params or {}, n=n, seed=0)
    execute_run(workspace, run_id, progress=False)
    return build_report(workspace.store(run_id), workspace, n_boot=200)
