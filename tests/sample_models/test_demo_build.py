"""The demo's plan and build bookkeeping, without auditing: the order the audits finish in, a finished build
found again without registering, a failing audit that does not stop the others."""
import pytest

import analysis.demo.build as demo
from analysis.store.workspace import Workspace
from analysis.demo.status import read_status


def test_the_plan_puts_one_whole_series_first_then_every_series_ends_then_the_rest():
    plan = demo.demo_plan()
    labels = [a.label for a in plan]
    assert len(plan) == 69 and len({a.name for a in plan}) == 69  # run names: each audit once
    assert labels[:5] == [f"doctor_nurse v{v} (gradcam)" for v in range(1, 6)]  # the first complete trend
    first_middle = labels.index("cage v2 (gradcam)")
    for series in ("cage", "watermark", "background", "blur", "ViT watermark", "tagger", "segmenter"):
        assert labels.index(f"{series} v1 (gradcam)") < first_middle
        assert labels.index(f"{series} v5 (gradcam)") < first_middle
    assert labels.index("boats_and_cars debiased (drise)") < first_middle
    assert labels.index("moving_patch clean (gradcam)") < first_middle  # the mask-free series' clean version
    assert [a.method for a in plan if a.series == "blur"] == ["gradcam"] * 5  # properties: one explainer
    second = [k for k, a in enumerate(plan) if a.method == "saliency"] + [labels.index(
        "boats_and_cars biased_onnx (drise)")]
    assert min(second) > max(k for k, a in enumerate(plan) if a.method == "gradcam")
    assert labels.index("cage v5 (saliency)") < labels.index("cage v3 (saliency)")
    assert labels.index("doctor_nurse v1 (saliency)") < labels.index("cage v1 (saliency)")


def test_the_plan_names_runs_as_before_and_follows_the_options():
    plan = demo.demo_plan(("watermark", "tagger"), methods=("gradcam",), versions=(1, 5), n=40)
    assert [(a.name, a.n) for a in plan] == [("watermark v1 gradcam", 40), ("watermark v5 gradcam", 40),
                                            ("tagger v1 gradcam", demo.TASK_IMAGES),
                                            ("tagger v5 gradcam", demo.TASK_IMAGES)]
    assert demo.plan_key(plan) != demo.plan_key(plan[:3])


@pytest.fixture
def fake_audits(monkeypatch):
    """execute_run replaced by one that marks the run done (or fails the audits asked to): the bookkeeping
    is what is tested here; the audits themselves are tested in tests/runs and tests/report."""
    failing, executed = set(), []

    def execute_run(workspace, run_id, **_):
        run = workspace.run(run_id)
        executed.append(run["name"])
        if run["name"] in failing:
            raise RuntimeError(f"{run['name']} broke")
        workspace.update_run(run_id, status="done")

    monkeypatch.setattr("analysis.runs.engine.execute_run", execute_run)
    return failing, executed


def test_a_failed_audit_is_recorded_the_others_finish_and_a_rerun_resumes(tmp_path, fake_audits):
    failing, executed = fake_audits
    ws = Workspace(tmp_path / "ws")
    options = dict(scenarios=("cage",), methods=("gradcam",), versions=(1, 3, 5), n=12, log=lambda _: None)
    failing.add("cage v3 gradcam")
    with pytest.raises(demo.DemoIncomplete, match="cage v3 \\(gradcam\\): cage v3 gradcam broke"):
        demo.build_demo(ws, record=True, **options)
    assert executed == ["cage v1 gradcam", "cage v3 gradcam", "cage v5 gradcam"]  # none skipped after the failure
    status = read_status(ws.root)
    assert (status["state"], status["done"], status["total"]) == ("failed", 2, 3)
    assert status["failed"] == [{"audit": "cage v3 (gradcam)", "error": "cage v3 gradcam broke"}]
    assert not demo.is_built(ws, demo.demo_plan(("cage",), methods=("gradcam",), versions=(1, 3, 5), n=12))

    failing.clear()
    executed.clear()
    run_ids = demo.build_demo(ws, record=True, **options)
    assert executed == ["cage v3 gradcam"]  # the finished ones are kept
    status = read_status(ws.root)
    assert (status["state"], status["done"], status["run_ids"]) == ("done", 3, run_ids)
    plan = demo.demo_plan(("cage",), methods=("gradcam",), versions=(1, 3, 5), n=12)
    assert demo.is_built(ws, plan)
    assert not demo.is_built(ws, demo.demo_plan(("cage",), methods=("gradcam",), versions=(1, 5), n=12))
    ws.delete_run(run_ids[0])
    assert not demo.is_built(ws, plan)  # a deleted audit is built again
