"""An early-stopping explainer's per-image budget (RISE's masks used) is stored in the run and reported."""
from __future__ import annotations

import pytest

from analysis.runs.engine import execute_run
from analysis.store.run_store import RunStore
from analysis.store.workspace import Workspace
from tests.runs.helpers import write_dataset, write_model


@pytest.mark.slow  # a whole audit with its evidence stage: ~25 s of CPU
def test_rise_masks_used_per_image_are_in_the_images_table_and_the_report(tmp_path):
    from analysis.report.build import cached_report
    from analysis.report.html import render_html

    ws = Workspace(tmp_path / "ws")
    model_id = ws.register_model(write_model(tmp_path / "model"))
    params = {"n_masks": 300, "min_masks": 100, "tolerance": 0.6, "chunk": 50}
    run_id = ws.create_run(model_id, ws.register_dataset(write_dataset(tmp_path / "data", n=6, seed=1)), "rise",
                           params, n=6, seed=0)
    assert execute_run(ws, run_id, batch_size=3, progress=False)["status"] == "done"
    images = RunStore(ws.run_dir(run_id), workspace=ws, run_id=run_id).images()
    used = images["masks_used"]
    assert len(used) == 6 and set(used) <= {100.0, 200.0, 300.0}, used.tolist()
    stopped = used < 300
    assert (images.loc[stopped, "estimated_error"] < 0.6).all()
    report = cached_report(run_id, ws)
    assert report["metrics"]["masks_used"] == {"median": float(used.median()), "p90": float(used.quantile(0.9)),
                                               "max": float(used.max()), "n_images": 6}
    assert "masks used per image" in render_html(report)
