"""The dashboard reads a running run as one snapshot: a shard that lands between two reads is not half-seen."""
import pytest

from analysis.store.run_store import RunStore  # noqa: E402
from analysis.store.workspace import Workspace  # noqa: E402
from workspace_builder import N_IMAGES, build_workspace, run_tables  # noqa: E402


@pytest.fixture
def running(tmp_path, monkeypatch):
    """A run with its first shard stored; reading its images lands the second shard (as a live worker would)."""
    root = tmp_path / "workspace"
    ids = build_workspace(root)
    workspace = Workspace(root)
    done = workspace.run(ids["runs"][0])
    run_id = workspace.create_run(done["model_id"], done["dataset_id"], "saliency", {}, n=N_IMAGES, seed=1)
    workspace.update_run(run_id, status="running", n_total=N_IMAGES)
    images, regions, maps = run_tables(1)
    half = N_IMAGES // 2

    def write(shard: int, part: slice) -> None:
        ids_part = images.image_id.iloc[part]
        path = workspace.store(run_id).write_shard(shard, images.iloc[part].reset_index(drop=True),
                                                   regions[regions.image_id.isin(ids_part)].reset_index(drop=True),
                                                   maps[part])
        workspace.record_shard(run_id, shard, len(ids_part), path, n_done=int(ids_part.max()) + 1)

    write(0, slice(0, half))
    read_images = RunStore.images

    def images_then_a_shard_lands(self, *args, **kwargs):
        table = read_images(self, *args, **kwargs)
        if not (self.run_dir / "shard-00001").exists():
            write(1, slice(half, N_IMAGES))
        return table

    monkeypatch.setattr(RunStore, "images", images_then_a_shard_lands)
    monkeypatch.setenv("SALIENCY_AUDIT_WORKSPACE", str(root))
    return root, run_id, half


def test_the_dashboard_reads_a_running_run_through_a_snapshot(running):
    """Every table a page reads for one render comes from the shards present when the render began."""
    from dashboard import data

    root, run_id, half = running
    store = data._store(run_id)
    images, regions = store.images(), store.regions()  # the second shard lands during images()
    assert len(images) == half and sorted(regions.image_id.unique()) == list(range(half))
    assert len(store.maps()[0]) == half
    assert data._store(run_id).regions().image_id.nunique() == N_IMAGES  # the next render sees it


def test_a_live_store_would_straddle_the_new_shard(running):
    """The hazard the snapshot removes, shown on the live store: images from one shard, regions from two."""
    root, run_id, half = running
    store = Workspace(root).store(run_id)
    images, regions = store.images(), store.regions()
    assert len(images) == half and regions.image_id.nunique() == N_IMAGES


def test_the_dashboard_reads_the_workers_report_with_its_run_metadata(tmp_path, monkeypatch):
    """Through a snapshot the report still knows its run (model, dataset, seed) and hits the worker's report.json
    instead of rebuilding (and overwriting) it."""
    from analysis.report.build import cached_report
    from dashboard import data

    root = tmp_path / "workspace"
    run_id = build_workspace(root)["runs"][0]
    workspace = Workspace(root)
    written = cached_report(workspace.store(run_id), workspace)  # what the worker leaves at the end of a run
    path = workspace.run_dir(run_id) / "report.json"
    stamp = path.stat().st_mtime_ns
    monkeypatch.setenv("SALIENCY_AUDIT_WORKSPACE", str(root))
    shown = data.report(run_id, "test-meta")
    assert shown["run"]["model"]["name"] == written["run"]["model"]["name"] and shown["run"]["seed"] == 0
    assert shown == written and path.stat().st_mtime_ns == stamp
