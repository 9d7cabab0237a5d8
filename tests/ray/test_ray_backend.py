"""The Ray backend writes the same run store as the local runner: same images, region shares and maps."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.runs.runner import execute_run
from analysis.store.workspace import Workspace
from tests.runs.helpers import expected_region_table, write_dataset, write_model

import ray
pytestmark = [pytest.mark.ray, pytest.mark.slow]  # Ray start-up and actor imports


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _run(root, files, backend):
    workspace = Workspace(root)
    model_id = workspace.resolve_model(str(files / "model" / "model.pt2"))
    dataset_id = workspace.resolve_dataset(str(files / "data"))
    run_id = workspace.create_run(model_id, dataset_id, "gradcam", {"target": "pred"}, n=20, seed=0)
    if backend == "ray":
        from analysis.runs.ray_backend import run_with_ray

        final = run_with_ray(workspace, run_id, num_workers=2, batch_size=4)
    else:
        final = execute_run(workspace, run_id, batch_size=4, progress=False)
    return workspace, run_id, final


def test_ray_run_matches_local_run(tmp_path, ray_local):
    files = tmp_path / "files"
    write_model(files / "model")
    write_dataset(files / "data", n=20, corrupt=(3,))
    local_ws, local_id, local_final = _run(tmp_path / "local", files, "local")
    ray_ws, ray_id, ray_final = _run(tmp_path / "ray", files, "ray")

    assert ray_id == local_id  # same identity, so the same run id in both workspaces
    assert ray_final["status"] == "done" and ray_final["target_layer"] == local_final["target_layer"] == "features"
    assert (ray_final["n_done"], ray_final["n_skipped"]) == (local_final["n_done"], local_final["n_skipped"]) == (19, 1)
    assert len(ray_ws.shards(ray_id)) == len(local_ws.shards(local_id)) == 5

    key = ["image_id", "region"]
    ours = ray_ws.store(ray_id).regions().sort_values(key).reset_index(drop=True)
    theirs = local_ws.store(local_id).regions().sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(ours, theirs)
    pd.testing.assert_frame_equal(ray_ws.store(ray_id).images().sort_values("image_id").reset_index(drop=True),
                                  local_ws.store(local_id).images().sort_values("image_id").reset_index(drop=True))
    (ids_r, maps_r), (ids_l, maps_l) = ray_ws.store(ray_id).maps(), local_ws.store(local_id).maps()
    np.testing.assert_array_equal(ids_r[np.argsort(ids_r)], ids_l[np.argsort(ids_l)])
    np.testing.assert_array_equal(maps_r[np.argsort(ids_r)], maps_l[np.argsort(ids_l)])
    assert ray_ws.store(ray_id).skipped()["image"].tolist() == ["images/003.png"]

    # Resuming a finished run starts no actor and rewrites nothing.
    from analysis.runs.ray_backend import run_with_ray

    shards = ray_ws.shards(ray_id)
    again = run_with_ray(ray_ws, ray_id, num_workers=2, batch_size=4)
    assert again["n_done"] == 19 and ray_ws.shards(ray_id) == shards

    # Region shares equal the red channel's, computed from the files alone (the helper model's ground truth).
    expected = expected_region_table(files / "data", skip=(3,))
    assert ours["image_id"].nunique() == 19
    for name, group in ours.groupby("region"):
        assert group["mass"].mean() == pytest.approx(expected[name]["mass_mean"], abs=1e-4)
        assert group["area"].mean() == pytest.approx(expected[name]["area_mean"], abs=1e-9)



def test_ray_detection_run_matches_local_run(tmp_path, ray_local):
    """A detector's D-RISE run on Ray actors: the same detections, ground truth, maps and evidence as local."""
    from sample_models.detection import WEIGHTS_DIR, make_scenes, write_coco

    data = write_coco(make_scenes(12, seed=5, biased=True), tmp_path / "coco")
    stores = {}
    for backend in ("local", "ray"):
        workspace = Workspace(tmp_path / backend)
        model_id = workspace.register_model(WEIGHTS_DIR / "biased" / "model.safetensors",
                                            WEIGHTS_DIR / "biased" / "model.json")
        run_id = workspace.create_run(model_id, workspace.resolve_dataset(str(data)), "drise",
                                      {"n_masks": 100, "sanity_images": 2}, n=12, seed=0)
        if backend == "ray":
            from analysis.runs.ray_backend import run_with_ray

            final = run_with_ray(workspace, run_id, num_workers=2, batch_size=4)
        else:
            final = execute_run(workspace, run_id, batch_size=4, progress=False)
        assert final["status"] == "done" and final["n_done"] == 12, final
        assert len(workspace.shards(run_id)) == 3
        stores[backend] = workspace.store(run_id)

    def table(backend, name, key):
        return stores[backend].table(name).sort_values(key).reset_index(drop=True)

    for name, key in (("detections", ["image_id", "det"]), ("ground_truth", ["image_id", "object"])):
        assert len(table("local", name, key)) > 0
        pd.testing.assert_frame_equal(table("ray", name, key), table("local", name, key))
    (ids_r, maps_r), (ids_l, maps_l) = stores["ray"].maps(), stores["local"].maps()
    np.testing.assert_array_equal(maps_r[np.argsort(ids_r)], maps_l[np.argsort(ids_l)])
    assert stores["ray"].evidence() == stores["local"].evidence()
    assert stores["ray"].evidence()["sanity"]["model_randomization"]["n"] == 2
