"""The verdict end to end, on models built to be broken and on the committed clean and biased ones.

A model whose output ignores its input and one that answers a single class used to get "No shortcut
flagged" and `check --fail-on-flags` exit 0; an explainer that is an edge detector passed as evidence. Each
now reads "cannot judge" in the report, the HTML, `check` (exit 4) and the dashboard's words, while the clean
doctor/nurse v5 stays clear (exit 0) and the biased v1 (it reads the hair) flagged (exit 3)."""
import json

import pytest
import torch
import torch.nn.functional as F

from analysis.cli import main
from analysis.report.build import build_report
from analysis.report.html import render_html
from analysis.report.records import Report
from analysis.runs.engine import execute_run
from analysis.store.workspace import Workspace
from explainers.base import Explainer, SaliencyBatch
from explainers.registry import METHODS
from explainers.targets import as_target
from sample_models.architectures import ARCHITECTURES
from sample_models.scenes import generate
from sample_models.train import WEIGHTS_DIR

pytestmark = pytest.mark.slow  # two 200-image and three 60-image audits with their evidence
N, N_BROKEN = 200, 60  # a clear verdict needs its candidates ruled out; a broken model shows at any size
SCENARIO = "doctor_nurse"


class EdgeDetector(Explainer):
    """An 'explainer' that never looks at the model: the image's gradient magnitude (Adebayo et al. 2018's
    point: such maps look plausible and pass no randomisation test)."""
    name = "edge_detector_for_test"
    family = "gradient"  # an image gradient: its second explainer is Grad-CAM, another family

    def explain(self, inputs, targets):
        gray = inputs.mean(dim=1)
        gx = F.pad(gray[..., :, 1:] - gray[..., :, :-1], (0, 1))
        gy = F.pad(gray[..., 1:, :] - gray[..., :-1, :], (0, 0, 0, 1))
        with torch.no_grad():
            scores = as_target(targets)(self.model(inputs))
        return SaliencyBatch(maps=(gx ** 2 + gy ** 2).sqrt(), scores=scores.detach(), method=self.name)


def _broken(folder, kind):
    """The clean v5 with its head replaced: constant logits (maps all zero), or a bias that answers one class."""
    source = WEIGHTS_DIR / SCENARIO / "v5"
    card = json.loads((source / "model.json").read_text())
    net = ARCHITECTURES[card["architecture"]](len(card["classes"]))
    net.load_state_dict(torch.load(source / "model.pt", weights_only=True))
    with torch.no_grad():
        if kind == "constant":
            net.fc.weight.zero_()
        else:
            net.fc.bias.copy_(torch.tensor([100.0, 0.0]))
    folder.mkdir()
    torch.save(net.state_dict(), folder / "model.pt")
    (folder / "model.json").write_text(json.dumps({**card, "name": f"{SCENARIO} {kind}"}))
    return folder / "model.pt"


@pytest.fixture(scope="module")
def audits(tmp_path_factory):
    root = tmp_path_factory.mktemp("verdicts")
    data = generate(SCENARIO, root / "data", n=N, seed=11)
    models = {"clean": WEIGHTS_DIR / SCENARIO / "v5" / "model.pt", "biased": WEIGHTS_DIR / SCENARIO / "v1" / "model.pt",
              "constant": _broken(root / "constant", "constant"), "one class": _broken(root / "one", "one class")}
    ws = Workspace(root / "ws")
    dataset = ws.register_dataset(data)
    runs = {name: ws.create_run(ws.register_model(path), dataset, "gradcam", n=N if name in ("clean", "biased")
                                else N_BROKEN, seed=0) for name, path in models.items()}
    METHODS[EdgeDetector.name] = EdgeDetector
    try:
        runs["edge detector"] = ws.create_run(ws.register_model(models["clean"]), dataset, EdgeDetector.name,
                                              n=N_BROKEN, seed=0)
        for run_id in runs.values():
            execute_run(ws, run_id, progress=False)
        yield ws, runs, {name: build_report(run_id, ws) for name, run_id in runs.items()}
    finally:
        METHODS.pop(EdgeDetector.name, None)


def _check(ws, run_id, capsys):
    code = main(["check", run_id, "--workspace", str(ws.root), "--fail-on-flags"])
    return code, capsys.readouterr().out


@pytest.mark.parametrize("name, status, code, words", [
    ("clean", "clear", 0, "ruled out"),
    ("biased", "flagged", 3, "depend on hair"),
    ("constant", "cannot_judge", 4, "predicts the same class for every image"),
    ("one class", "cannot_judge", 4, "predicts the same class for every image"),
    ("edge detector", "cannot_judge", 4, "barely change when the model's weights are randomised"),
])
def test_each_model_gets_its_verdict_everywhere(audits, capsys, name, status, code, words):
    ws, runs, reports = audits
    verdict = Report.from_json(reports[name]).verdict
    assert verdict.status == status, verdict
    assert any(words in reason for reason in verdict.reasons), verdict.reasons
    html = render_html(reports[name])
    assert f"Verdict: <span class='verdict-{status}'>{verdict.label}</span>" in html
    exit_code, out = _check(ws, runs[name], capsys)
    assert exit_code == code and out.startswith(f"verdict: {verdict.label.lower()}"), out


def test_the_constant_model_s_maps_are_named_as_degenerate(audits):
    _, _, reports = audits
    checks = {c["name"]: c for c in reports["constant"]["verdict"]["checks"]}
    assert checks["maps"]["status"] == "failed" and "every map is zero" in checks["maps"]["detail"]
    assert checks["predictions"]["status"] == "failed"


def test_a_collapsed_version_never_reads_as_a_fix_in_compare(audits, capsys):
    ws, runs, _ = audits
    code = main(["compare", runs["biased"], runs["one class"], "--workspace", str(ws.root)])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and [v["status"] for v in result["verdicts"]] == ["flagged", "cannot_judge"]
    assert result["summary"].startswith(f"{result['runs'][1]} cannot be judged (the model predicts the same class")
