"""A property shortcut through the whole audit: a classifier that reads its class off blur, audited with Grad-CAM
from the CLI, is flagged by name (a `property` finding whose headline says blurring sends images to the class),
its verdict is flagged and `check --fail-on-flags` exits 3. Before, saliency maps of such a model showed nothing,
the report said "No shortcut flagged" and `check` exited 0 (Adebayo et al. 2022)."""
import json

import pytest
import torch

from analysis.cli import main
from sample_models import property_shortcut as ps

pytestmark = pytest.mark.slow
N = 240


@pytest.fixture(scope="module")
def blur_audit(tmp_path_factory):
    root = tmp_path_factory.mktemp("blur")
    net = ps.train("blur", 1.0, seed=0)
    (root / "model").mkdir()
    torch.save(net.state_dict(), root / "model" / "model.pt")
    (root / "model" / "model.json").write_text(json.dumps({
        "task": "classification", "classes": list(ps.CLASSES), "input_size": [ps.SIZE, ps.SIZE],
        "mean": [0.5] * 3, "std": [0.5] * 3, "architecture": "patch_net", "target_layer": "block3"}))
    data = ps.write_dataset(ps.render(N, "blur", 1.0, seed=300), root / "data")
    return root, data


def test_a_blur_shortcut_is_a_property_finding_and_the_verdict_flags_it(blur_audit, capsys):
    root, data = blur_audit
    ws = str(root / "ws")
    assert main(["run", "--model", str(root / "model" / "model.pt"), "--data", str(data), "--n", str(N),
                 "--workspace", ws, "--no-progress"]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["report", run_id, "--workspace", ws, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    found = [f for f in report["flags"] if f["kind"] == "property"]
    assert found and (found[0]["property"], found[0]["class"]) == ("sharpness", "h"), found
    assert found[0]["headline"].startswith("class h is predicted from blur: blurring the other classes' images sends")
    assert found[0]["tests"][0]["decision"] == "shown" and found[0]["tests"][1]["name"] == "dataset screen"
    assert report["verdict"]["status"] == "flagged"
    assert not any("global image properties" in line for line in report["verdict"]["not_tested"])
    assert main(["check", run_id, "--workspace", ws, "--fail-on-flags"]) == 3
    assert "property 'sharpness' (class h)" in capsys.readouterr().out
