"""Catalog identity by content hash, run identity, shard atomicity, concurrent writers."""
import json
import multiprocessing as mp
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.store.run_store import RunStore, pool_maps
from analysis.store.workspace import Workspace
from explainers.errors import InputError
from tests.runs.helpers import write_dataset, write_model


@pytest.fixture
def model_file(tmp_path):
    path = write_model(tmp_path / "src")
    card = json.loads((path.parent / "model.json").read_text())
    (path.parent / "model.json").write_text(json.dumps({**card, "classes": ["a", "b"]}))
    return path


def test_register_refuses_bytes_that_are_no_model(tmp_path):
    (tmp_path / "model.pt2").write_bytes(b"not really a model, only bytes to hash")
    (tmp_path / "model.json").write_text(json.dumps({"classes": ["a", "b"]}))
    with pytest.raises(InputError, match="not a model file"):
        Workspace(tmp_path / "ws").register_model(tmp_path / "model.pt2")
    assert not (tmp_path / "ws" / "models").exists() or not any((tmp_path / "ws" / "models").iterdir())


@pytest.fixture
def fake_dataset_opener(monkeypatch):
    fake = SimpleNamespace(items=[SimpleNamespace(mask="m.png")] * 3, regions={1: object()}, has_masks=True, sha256="ab" * 32,
                           validate=lambda classes=None: None)
    monkeypatch.setattr(Workspace, "open_dataset_at", staticmethod(lambda path, workdir: fake))


def test_register_model_by_content_hash(tmp_path, model_file):
    ws = Workspace(tmp_path / "ws")
    first = ws.register_model(model_file)
    assert ws.register_model(model_file) == first
    copy = tmp_path / "elsewhere" / "model.pt2"
    copy.parent.mkdir()
    copy.write_bytes(model_file.read_bytes())
    (copy.parent / "model.json").write_text((model_file.parent / "model.json").read_text())
    assert ws.register_model(copy) == first
    row = ws.model(first)
    assert Path(row["abspath"]).read_bytes() == model_file.read_bytes()
    assert (Path(row["abspath"]).parent / "model.json").is_file()
    assert row["card"]["classes"] == ["a", "b"] and row["format"] == "pt2"
    assert ws.resolve_model(first) == first and ws.resolve_model(str(model_file)) == first


def test_missing_model_and_card_are_input_errors(tmp_path, model_file):
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(InputError, match="not found"):
        ws.register_model(tmp_path / "nope.pt2")
    (model_file.parent / "model.json").unlink()
    with pytest.raises(InputError, match="--card"):
        ws.register_model(model_file)
    with pytest.raises(InputError, match="no such file"):
        ws.resolve_model("m-doesnotexist")


def test_run_identity_resumes_same_id(tmp_path, model_file, fake_dataset_opener):
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.csv").write_text("image,label\n")
    ws = Workspace(tmp_path / "ws")
    model_id, dataset_id = ws.register_model(model_file), ws.register_dataset(data)
    assert ws.register_dataset(data) == dataset_id
    assert ws.dataset(dataset_id)["n_items"] == 3 and ws.dataset(dataset_id)["has_masks"]
    run = ws.create_run(model_id, dataset_id, "gradcam", {"target": "pred"}, n=10, seed=0, name="x")
    assert ws.create_run(model_id, dataset_id, "gradcam", {"target": "pred"}, n=10, seed=0, name="y") == run
    assert ws.create_run(model_id, dataset_id, "gradcam", {"target": "label"}, n=10, seed=0) != run
    assert ws.create_run(model_id, dataset_id, "gradcam", {"target": "pred"}, n=10, seed=1) != run
    assert ws.run(run)["status"] == "pending" and ws.run(run)["name"] == "x"
    ws.update_run(run, status="running", pid=os.getpid())
    assert [r["id"] for r in ws.runs()][0] == run and ws.runs()[0]["status"] == "running"
    with pytest.raises(ValueError):
        ws.update_run(run, status="exploded")
    with pytest.raises(InputError):
        ws.run("r-unknown")


def _frames(ids):
    images = pd.DataFrame({"image_id": ids, "image": [f"images/{i}.png" for i in ids], "label": "a",
                           "label_idx": 0, "pred": "a", "pred_idx": 0, "confidence": 0.9, "correct": True,
                           "target_idx": 0, "score": 1.5})
    regions = pd.DataFrame({"image_id": np.repeat(ids, 2), "region": ["bg", "obj"] * len(ids),
                            "region_id": [0, 1] * len(ids), "role": [None, "core"] * len(ids),
                            "mass": 0.5, "area": 0.25, "lift": 2.0})
    return images, regions


def test_store_reads_only_recorded_shards(tmp_path, model_file, fake_dataset_opener):
    ws = Workspace(tmp_path / "ws")
    data = tmp_path / "data"
    data.mkdir()
    (data / "x").write_text("x")
    run = ws.create_run(ws.register_model(model_file), ws.register_dataset(data), "gradcam", {}, 5, 0)
    store = ws.store(run)
    images, regions = _frames([3, 1])
    maps = pool_maps(torch.arange(2 * 128 * 96, dtype=torch.float32).reshape(2, 128, 96))
    assert maps.shape == (2, 64, 64) and maps.dtype == np.float16
    path = store.write_shard(0, images, regions, maps,
                             pd.DataFrame({"image_id": [7], "image": ["images/7.png"], "reason": "truncated"}))
    assert store.images().empty  # written but not recorded: invisible
    ws.record_shard(run, 0, 2, path, n_done=2, n_skipped=1)
    images2, regions2 = _frames([4])
    store.write_shard(1, images2, regions2, pool_maps(torch.ones(1, 8, 8)))  # killed before recording
    assert store.images()["image_id"].tolist() == [3, 1]
    assert len(store.regions()) == 4
    ids, read_maps = store.maps()
    assert ids.tolist() == [3, 1] and np.array_equal(read_maps, maps)
    assert store.skipped().to_dict("records") == [{"image_id": 7, "image": "images/7.png", "reason": "truncated"}]
    assert store.done_image_ids() == {1, 3, 7}
    assert ws.run(run)["n_done"] == 2 and ws.run(run)["n_skipped"] == 1
    # a resumed worker rewrites shard 1 over the unrecorded leftover
    path1 = store.write_shard(1, *_frames([5]), pool_maps(torch.ones(1, 8, 8)))
    ws.record_shard(run, 1, 1, path1)
    assert store.images()["image_id"].tolist() == [3, 1, 5]
    assert RunStore(store.run_dir).images()["image_id"].tolist() == [3, 1, 5]  # no catalog: folders
    assert not list(store.run_dir.glob(".*tmp*"))


def test_pool_maps_is_an_average_and_keeps_small_maps():
    maps = torch.zeros(1, 128, 128)
    maps[0, :2, :2] = 4.0
    pooled = pool_maps(maps)
    assert pooled[0, 0, 0] == 4.0 and pooled.sum() == 4.0
    assert pool_maps(torch.ones(2, 10, 12)).shape == (2, 10, 12)


def _hammer(root, run_id, worker, count):
    ws = Workspace(root)
    for i in range(count):
        ws.update_run(run_id, n_done=i)
        ws.record_shard(run_id, worker * 1000 + i, 1, f"shard-{i}")
        ws.runs()


def test_two_writer_processes_do_not_lock_or_corrupt(tmp_path, model_file, fake_dataset_opener):
    ws = Workspace(tmp_path / "ws")
    data = tmp_path / "data"
    data.mkdir()
    (data / "x").write_text("x")
    run = ws.create_run(ws.register_model(model_file), ws.register_dataset(data), "gradcam", {}, 5, 0)
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_hammer, args=(ws.root, run, k, 60)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(ws.shards(run)) == 120
    assert ws.integrity_check() == "ok"


def test_a_broken_dataset_is_refused_before_anything_is_stored(tmp_path):
    from PIL import Image

    data = write_dataset(tmp_path / "mine", n=4)
    mask = sorted((data / "masks").iterdir())[0]
    Image.new("L", (5, 5)).save(mask)
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(InputError) as caught:
        ws.register_dataset(data)
    assert str(mask) in str(caught.value) and "5x5" in str(caught.value)  # the user's own file, not a copy
    assert not (tmp_path / "ws" / "datasets").exists() or not any((tmp_path / "ws" / "datasets").iterdir())
    assert ws.datasets() == []


def test_second_registration_reads_no_file_and_a_changed_file_is_rehashed(tmp_path, monkeypatch):
    import analysis.store.workspace as workspace_module

    data = write_dataset(tmp_path / "mine", n=6)
    ws = Workspace(tmp_path / "ws")
    first = ws.register_dataset(data)
    reads = []
    real = workspace_module.file_sha256
    monkeypatch.setattr(workspace_module, "file_sha256", lambda path: reads.append(Path(path)) or real(path))
    assert Workspace(tmp_path / "ws").register_dataset(data) == first  # a new process: the catalog remembers
    assert reads == []
    image = sorted((data / "images").iterdir())[0]
    from PIL import Image

    Image.new("RGB", Image.open(image).size, (1, 2, 3)).save(image)
    os.utime(image, ns=(1, 1))  # a new mtime, whatever the filesystem's clock resolution
    changed = ws.register_dataset(data)
    assert changed != first and reads == [image.absolute()]  # only the changed file is read again
    # the workspace's own copy was recorded with its source's hashes: its content hash cost no reads
    copy = Path(ws.dataset(changed)["abspath"])
    assert len(list(copy.rglob("*.png"))) == 12 and reads == [image.absolute()]


def test_maps_of_some_images_reads_only_theirs(tmp_path):
    """The evidence stage asks for its sample's maps: the same rows as the full read, nothing else held."""
    store = RunStore(tmp_path / "run")  # no catalog: every shard folder counts
    first = pool_maps(torch.rand(2, 16, 16))
    second = pool_maps(torch.rand(1, 16, 16))
    store.write_shard(0, *_frames([3, 1]), first)
    store.write_shard(1, *_frames([5]), second)
    ids, maps = store.maps([5, 3, 99])
    assert ids.tolist() == [3, 5] and np.array_equal(maps, np.concatenate([first[:1], second]))
    all_ids, all_maps = store.maps()
    assert all_ids.tolist() == [3, 1, 5] and np.array_equal(all_maps[[0, 2]], maps)
    none_ids, none_maps = store.maps([99])
    assert len(none_ids) == 0 and len(none_maps) == 0
