"""End to end: `saliency-audit run` on an exported model and a masked dataset, report, resume, bad input."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from analysis.cli import main
from analysis.store.workspace import Workspace

from tests.runs.helpers import expected_region_table, write_dataset, write_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    base = tmp_path_factory.mktemp("files")
    return {"model": write_model(base / "model"), "data": write_dataset(base / "data", n=12, corrupt=(5,)),
            "base": base}


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_run_then_report_matches_planted_map_exactly(tmp_path, files, capsys):
    ws = tmp_path / "ws"
    code, out, err = run_cli(capsys, "run", "--model", files["model"], "--data", files["data"], "--n", 50,
                             "--workspace", ws, "--batch-size", 4, "--no-progress")
    assert code == 0, err
    run_id = out.strip().splitlines()[-1]
    assert run_id.startswith("r-")
    assert "target layer: features (card)" in err

    code, out, err = run_cli(capsys, "report", run_id, "--format", "json", "--workspace", ws)
    assert code == 0, err
    report = json.loads(out)
    expected = expected_region_table(files["data"], skip=(5,))
    overall = {r["region"]: r for r in report["regions"] if r["class"] is None and r["group"] is None}
    assert set(overall) == set(expected)
    for name, values in expected.items():
        for key in ("mass_mean", "area_mean", "lift"):
            np.testing.assert_allclose(overall[name][key], values[key], rtol=0, atol=1e-6, err_msg=f"{name}.{key}")
        assert overall[name]["n"] == 11
    assert overall["animal"]["role"] == "core" and overall["cage"]["role"] is None
    # the model always predicts "cat": accuracy is the share of cats among the 11 readable images
    assert report["metrics"]["accuracy"] == pytest.approx(6 / 11)
    assert report["run"]["n_images"] == 11 and report["run"]["method"] == "gradcam"
    assert report["run"]["model"]["sha256"] and report["run"]["dataset"]["sha256"]
    assert [s["image"] for s in report["skipped"]] == ["images/005.png"]
    assert report["skipped"][0]["reason"]

    store = Workspace(ws).store(run_id)
    images = store.images()
    assert sorted(images["image_id"]) == [i for i in range(12) if i != 5]
    assert set(images["pred"]) == {"cat"} and set(images["attr.in_cage"]) == {"yes", "no"}
    ids, maps = store.maps()
    assert maps.shape == (11, 16, 16) and maps.dtype == np.float16
    assert Workspace(ws).run(run_id)["status"] == "done"
    assert Workspace(ws).run(run_id)["target_layer"] == "features"

    # the same command again: same run, nothing recomputed
    code, out, _ = run_cli(capsys, "run", "--model", files["model"], "--data", files["data"], "--n", 50,
                           "--workspace", ws, "--no-progress")
    assert code == 0 and out.strip().splitlines()[-1] == run_id
    assert len(Workspace(ws).store(run_id).images()) == 11

    code, out, _ = run_cli(capsys, "runs", "--format", "json", "--workspace", ws)
    assert [r["id"] for r in json.loads(out)] == [run_id]


def _catalog_rows(ws: Path, run_id: str) -> int:
    try:
        return len(Workspace(ws).shards(run_id))
    except sqlite3.Error:
        return 0


def _run_args(ws: Path, model: Path, data: Path) -> list[str]:
    return ["run", "--model", str(model), "--data", str(data), "--n", "40", "--workspace", str(ws),
            "--batch-size", "1", "--no-progress"]


@pytest.mark.slow
def test_kill_minus_nine_then_resume_equals_uninterrupted(tmp_path, files, capsys):
    data = write_dataset(tmp_path / "data40", n=40, seed=3, corrupt=(7,))
    interrupted, clean = tmp_path / "ws1", tmp_path / "ws2"
    worker = subprocess.Popen([sys.executable, "-m", "analysis.cli", *_run_args(interrupted, files["model"], data)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    deadline = time.time() + 120
    run_id = None
    while time.time() < deadline and worker.poll() is None:
        runs = Workspace(interrupted).runs() if (interrupted / "catalog.sqlite").exists() else []
        if runs and _catalog_rows(interrupted, runs[0]["id"]) >= 1:
            run_id = runs[0]["id"]
            break
        time.sleep(0.01)
    worker.send_signal(signal.SIGKILL)
    _, worker_err = worker.communicate()
    assert run_id is not None, f"the worker recorded no shard before the deadline: {worker_err[-2000:]}"
    partial = Workspace(interrupted).run(run_id)
    assert partial["status"] == "interrupted" and partial["n_done"] + partial["n_skipped"] < 40  # really cut short

    # the same command again resumes; a fresh workspace gives the uninterrupted run
    code, out, err = run_cli(capsys, *_run_args(interrupted, files["model"], data))
    assert code == 0, err
    assert out.strip().splitlines()[-1] == run_id
    code, out, err = run_cli(capsys, *_run_args(clean, files["model"], data))
    assert code == 0, err

    a, b = Workspace(interrupted).store(run_id), Workspace(clean).store(out.strip().splitlines()[-1])
    rows_a = a.regions().sort_values(["image_id", "region"]).reset_index(drop=True)
    rows_b = b.regions().sort_values(["image_id", "region"]).reset_index(drop=True)
    assert not a.images()["image_id"].duplicated().any()
    assert sorted(a.images()["image_id"]) == sorted(b.images()["image_id"]) == [i for i in range(40) if i != 7]
    assert (rows_a[["image_id", "region"]] == rows_b[["image_id", "region"]]).all().all()
    np.testing.assert_allclose(rows_a[["mass", "area"]].to_numpy(), rows_b[["mass", "area"]].to_numpy(), atol=1e-7)
    assert a.skipped()["image_id"].tolist() == [7]
    final = Workspace(interrupted).run(run_id)
    assert final["status"] == "done" and final["n_done"] == 39 and final["n_skipped"] == 1
    assert Workspace(interrupted).integrity_check() == "ok"


@pytest.mark.parametrize("extra, needle", [
    (["--method", "nosuchmethod"], "unknown method"),
    (["--method", "drise"], "explains detectors, not classifiers"),
    (["--layer", "nosuchlayer"], "nosuchlayer"),
])
def test_bad_run_options_exit_2_with_one_line(tmp_path, files, capsys, extra, needle):
    code, out, err = run_cli(capsys, "run", "--model", files["model"], "--data", files["data"],
                             "--workspace", tmp_path / "ws", "--no-progress", *extra)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err


def test_missing_model_file_exits_2(tmp_path, files, capsys):
    code, _, err = run_cli(capsys, "run", "--model", tmp_path / "absent.pt2", "--data", files["data"],
                           "--workspace", tmp_path / "ws")
    assert code == 2 and "absent.pt2" in err and len(err.strip().splitlines()) == 1


def test_labels_not_in_card_classes_exit_2_before_compute(tmp_path, files, capsys):
    data = write_dataset(tmp_path / "bad", n=4, bad_label="horse")
    ws = tmp_path / "ws"
    code, _, err = run_cli(capsys, "run", "--model", files["model"], "--data", data, "--workspace", ws,
                           "--no-progress")
    assert code == 2 and "horse" in err and len(err.strip().splitlines()) == 1
    assert f"dataset {data} has 1 problem" in err and str(ws) not in err  # the user's folder, not the copy
    (run,) = Workspace(ws).runs()
    assert run["status"] == "failed" and "horse" in run["error"] and run["n_done"] == 0


def test_cam_on_torchscript_asks_for_pt2(tmp_path, files, capsys):
    model = write_model(tmp_path / "ts", torchscript=True)
    code, _, err = run_cli(capsys, "run", "--model", model, "--data", files["data"], "--workspace",
                           tmp_path / "ws", "--no-progress")
    assert code == 2 and ".pt2" in err and len(err.strip().splitlines()) == 1


def test_a_batch_one_pt2_audits_image_by_image_to_the_dynamic_exports_numbers(tmp_path, files, capsys):
    """mlflow.pytorch.log_model's default (one-image) input example fixes the export's batch at 1: it runs, one
    image per forward, to the same region table; CAM methods, which hook a layer, are refused with the fix."""
    import torch

    from tests.runs.helpers import RedChannelNet, SIZE

    folder = tmp_path / "batch1"
    folder.mkdir()
    model = folder / "model.pt2"
    torch.export.save(torch.export.export(RedChannelNet().eval(), (torch.rand(1, 3, SIZE, SIZE),)), model)
    (folder / "model.json").write_text((files["model"].parent / "model.json").read_text())
    ws = tmp_path / "ws"
    code, _, err = run_cli(capsys, "run", "--model", model, "--data", files["data"], "--workspace", ws,
                           "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "dynamic batch" in err and "input_example" in err and "--method saliency" in err
    tables = []
    for path in (model, files["model"]):
        code, out, err = run_cli(capsys, "run", "--model", path, "--data", files["data"], "--method", "saliency",
                                 "--n", 50, "--workspace", ws, "--batch-size", 4, "--no-progress")
        assert code == 0, err
        code, report, _ = run_cli(capsys, "report", out.strip().splitlines()[-1], "--workspace", ws)
        tables.append({(r["region"], r["class"], r["group"]): (r["mass_mean"], r["area_mean"])
                       for r in json.loads(report)["regions"]})
    assert set(tables[0]) == set(tables[1]) and len(tables[0]) >= 3
    for key, values in tables[1].items():
        np.testing.assert_allclose(tables[0][key], values, rtol=1e-5, atol=1e-7, err_msg=str(key))


@pytest.mark.parametrize("method", ["guided_backprop", "lrp"])
def test_module_type_methods_on_torchscript_ask_for_pt2(tmp_path, files, capsys, method):
    """Guided backprop and LRP change the backward pass of layers by type; TorchScript hides the types, so they
    would silently be something else: refused in one line naming the fix."""
    model = write_model(tmp_path / "ts", torchscript=True)
    code, _, err = run_cli(capsys, "run", "--model", model, "--data", files["data"], "--method", method,
                           "--workspace", tmp_path / "ws", "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"method '{method}'" in err and "TorchScript" in err and "as a .pt2" in err

def test_report_of_unknown_run_and_missing_pieces_exit_2(tmp_path, capsys):
    code, _, err = run_cli(capsys, "report", "r-nope", "--workspace", tmp_path / "ws")
    assert code == 2 and "r-nope" in err


def test_nan_model_output_skips_the_image(tmp_path, files, monkeypatch):
    """An image whose logits are NaN is listed as skipped with the reason; the others are explained."""
    import torch

    from analysis.runs import engine
    from analysis.runs.tasks import classification

    real_prepare = classification.TASK.prepare

    def poisoned_prepare(*args, **kwargs):
        prepared = real_prepare(*args, **kwargs)
        module = prepared.loaded.module
        original_forward = module.forward

        def forward(x):
            out = original_forward(x)
            bad = torch.isclose(x[:, 0, 0, 0], first_pixel)  # image 000 only
            return torch.where(bad[:, None], torch.full_like(out, float("nan")), out)

        module.forward = forward
        return prepared

    from PIL import Image
    first_pixel = torch.tensor(np.asarray(Image.open(files["data"] / "images" / "000.png"))[0, 0, 0] / 255.0, dtype=torch.float32)
    monkeypatch.setattr(classification.TASK, "prepare", poisoned_prepare)
    ws = Workspace(tmp_path / "ws")
    run_id = ws.create_run(ws.register_model(files["model"]), ws.register_dataset(files["data"]), "saliency",
                           {"target": "pred"}, n=50, seed=0)
    final = engine.execute_run(ws, run_id, batch_size=4, progress=False)
    skipped = ws.store(run_id).skipped().set_index("image_id")["reason"].to_dict()
    assert "NaN" in skipped[0] and 5 in skipped and final["n_done"] == 10


@pytest.mark.slow
def test_background_job_cancel_keeps_shards_and_resumes(tmp_path, files):
    from analysis.store.jobs import cancel_job, job_alive, start_job
    from analysis.runs.engine import execute_run

    data = write_dataset(tmp_path / "data40", n=40, seed=4)
    ws = Workspace(tmp_path / "ws")
    run_id = ws.create_run(ws.register_model(files["model"]), ws.register_dataset(data), "gradcam",
                           {"target": "pred"}, n=40, seed=0)
    pid = start_job(ws.root, run_id, "cpu", batch_size=1)
    assert ws.run(run_id)["pid"] == pid and job_alive(pid)
    deadline = time.time() + 120
    while time.time() < deadline and job_alive(pid) and not ws.shards(run_id):
        time.sleep(0.01)
    assert ws.shards(run_id), (ws.run_dir(run_id) / "worker.log").read_text()[-2000:]
    assert cancel_job(ws, run_id)
    while job_alive(pid) and time.time() < deadline:
        time.sleep(0.05)
    assert not job_alive(pid)
    cancelled = ws.run(run_id)
    assert cancelled["status"] == "cancelled" and 0 < cancelled["n_done"] < 40
    kept = set(ws.store(run_id).images()["image_id"])
    final = execute_run(ws, run_id, progress=False)
    assert final["status"] == "done" and final["n_done"] == 40
    images = ws.store(run_id).images()
    assert kept <= set(images["image_id"]) and not images["image_id"].duplicated().any()


def test_finished_run_keeps_its_report_until_its_inputs_change(tmp_path, files, capsys, monkeypatch):
    import analysis.report.build as report_module

    ws = tmp_path / "ws"
    code, out, err = run_cli(capsys, "run", "--model", files["model"], "--data", files["data"], "--n", 50,
                             "--workspace", ws, "--batch-size", 4, "--no-progress")
    assert code == 0, err
    run_id = out.strip().splitlines()[-1]
    workspace = Workspace(ws)
    store = workspace.store(run_id)
    written = json.loads((store.run_dir / "report.json").read_text())["report"]  # left by the worker
    assert written == json.loads(json.dumps(report_module.build_report(run_id, workspace)))

    def must_not_rebuild(*_args, **_kwargs):
        raise AssertionError("report rebuilt although nothing changed")

    monkeypatch.setattr(report_module, "build_report", must_not_rebuild)
    assert report_module.cached_report(run_id, workspace) == {**written, "labels": []}  # + the catalog's labels
    evidence = store.evidence()
    evidence["interventions"] = {}
    store.write_evidence(evidence)  # new evidence: the cached report is stale
    with pytest.raises(AssertionError, match="rebuilt"):
        report_module.cached_report(run_id, workspace)


def test_every_stage_after_the_main_pass_is_named_on_stderr(tmp_path, files, capsys):
    """With progress on, the evidence parts (each look of the interventions, the second explainer, sanity,
    faithfulness) and the report each print a `stage:` line, in order, so a long post-pass wait says what
    it is doing."""
    code, _out, err = run_cli(capsys, "run", "--model", files["model"], "--data", files["data"], "--n", 50,
                              "--workspace", tmp_path / "ws", "--batch-size", 4)
    assert code == 0, err
    stages = [line.split(" (")[0] for line in err.splitlines() if line.startswith("stage: ")]
    looks = [s for s in stages if s.startswith("stage: evidence: interventions, look ")]
    assert looks and looks[0].startswith("stage: evidence: interventions, look 1 of ")
    order = ["stage: evidence", looks[0], "stage: evidence: second explainer", "stage: evidence: sanity",
             "stage: evidence: faithfulness", "stage: report"]
    assert [stages.index(s) for s in order] == sorted(stages.index(s) for s in order), stages


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_run_on_cuda_gives_the_cpu_region_table(tmp_path, files, capsys):
    """The hot loop's CUDA path (pinned batches from the decode thread, non-blocking copies) gives the same
    region shares as the CPU run."""
    tables = {}
    for device in ("cpu", "cuda"):
        ws = tmp_path / device
        code, out, err = run_cli(capsys, "run", "--model", files["model"], "--data", files["data"], "--n", 50,
                                 "--workspace", ws, "--batch-size", 4, "--no-progress", "--device", device)
        assert code == 0, err
        code, out, err = run_cli(capsys, "report", out.strip().splitlines()[-1], "--format", "json",
                                 "--workspace", ws)
        assert code == 0, err
        tables[device] = {r["region"]: r["mass_mean"] for r in json.loads(out)["regions"]
                          if r["class"] is None and r["group"] is None}
    assert set(tables["cpu"]) == set(tables["cuda"])
    for name, value in tables["cpu"].items():
        assert tables["cuda"][name] == pytest.approx(value, abs=1e-4), name


def test_a_card_with_extra_fields_runs_and_its_own_name_is_in_the_warning(tmp_path, files, capsys):
    """The card the user names (not the workspace's model.json copy) is in the one warning line per extra
    field; the audit runs; nothing is registered for a card that cannot be used."""
    card = json.loads((files["model"].parent / "model.json").read_text())
    extra = tmp_path / "tagnet-card.json"
    extra.write_text(json.dumps({**card, "version": "v3", "owner": "vision team"}))
    ws = tmp_path / "ws"
    code, out, err = run_cli(capsys, "run", "--model", files["model"], "--card", extra, "--data", files["data"],
                             "--n", 6, "--workspace", ws, "--no-progress")
    assert code == 0, err
    assert "saliency-audit: warning: tagnet-card.json: unknown field 'owner' is ignored" in err
    assert "version" not in err.split("known fields")[0] and "model.json" not in err
    (run,) = Workspace(ws).runs()
    assert run["status"] == "done" and run["model_version"] == "v3"

    broken = tmp_path / "broken-card.json"
    broken.write_text(json.dumps({**card, "classes": []}))
    empty = tmp_path / "ws-empty"
    code, _, err = run_cli(capsys, "run", "--model", files["model"], "--card", broken, "--data", files["data"],
                           "--workspace", empty, "--no-progress")
    assert code == 2 and err.strip() == ("saliency-audit: error: broken-card.json: 'classes' must be a non-empty "
                                         "list of names")
    assert Workspace(empty).models() == [] and Workspace(empty).runs() == [] and Workspace(empty).datasets() == []
    assert not (empty / "models").exists() or not any((empty / "models").iterdir())

    code, _, err = run_cli(capsys, "run", "--model", files["model"], "--data", files["data"], "--method", "drise",
                           "--workspace", empty, "--no-progress")
    assert code == 2 and "explains detectors" in err
    assert Workspace(empty).models() == []  # a method the model's task cannot take: refused before registering


def test_a_cli_run_after_a_rename_keeps_the_name_and_says_which_model_it_used(tmp_path, files, capsys):
    ws = tmp_path / "ws"
    workspace = Workspace(ws)
    ui_card = {**json.loads((files["model"].parent / "model.json").read_text()), "mean": [0.5, 0.5, 0.5]}
    staged = tmp_path / "uploads" / "tmpab12cd34" / files["model"].name  # what Upload registers
    staged.parent.mkdir(parents=True)
    staged.write_bytes(files["model"].read_bytes())
    (staged.parent / "model.json").write_text(json.dumps({**ui_card, "mean": [0.5, 0.5, 0.5]}, indent=1))
    file_card = tmp_path / "card.json"
    file_card.write_text(json.dumps({**ui_card, "mean": [0.5, 0.5, 0.5], "name": "file-name", "version": 1}))
    model_id = workspace.register_model(staged, staged.parent / "model.json", name="cage-net", version="v7")
    code, out, err = run_cli(capsys, "run", "--model", files["model"], "--card", file_card, "--data",
                             files["data"], "--n", 6, "--workspace", ws, "--no-progress")
    assert code == 0, err
    assert f"using the registered model cage-net v7 ({model_id})" in err
    assert [(m["id"], m["name"], m["version"]) for m in Workspace(ws).models()] == [(model_id, "cage-net", "v7")]
    assert Workspace(ws).runs()[0]["model_id"] == model_id
