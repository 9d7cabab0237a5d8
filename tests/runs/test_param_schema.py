"""`--param` is checked once, for every task, before a run exists: a misspelt name or a wrong type exits 2 with
one line naming the parameter and the accepted ones, and the catalog lists no new run (not even a failed one)."""
from __future__ import annotations

import json

import pytest

from analysis.cli import main
from explainers.errors import InputError
from explainers.registry import check_params
from sample_models import detection, segmenting, tagging
from tests.runs.helpers import write_dataset, write_model


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    base = tmp_path_factory.mktemp("tasks")
    coco = detection.write_coco(detection.make_scenes(4, seed=3, biased=True), base / "coco")
    return {
        "classification": (write_model(base / "cls"), write_dataset(base / "cls_data", n=4)),
        "multilabel": (tagging.WEIGHTS_DIR / "v1" / "model.pt2", tagging.generate(base / "tags", n=4)),
        "segmentation": (segmenting.WEIGHTS_DIR / "v1" / "model.pt2", segmenting.generate(base / "seg", n=4)),
        "detection": (detection.WEIGHTS_DIR / "biased" / "model.safetensors", coco),
    }


CASES = [  # (task, method or None: the task's default, --param, what the line must say)
    ("classification", "rise", "n_sample=50",
     "--param n_sample: not a parameter; rise takes n_masks, cells, p, seed, chunk, tolerance, min_masks, "
     "control_variate; the run takes target, layer"),
    ("classification", "integrated_gradients", "n_steps=abc",
     "--param n_steps=abc: integrated_gradients takes n_steps as a whole number >= 1"),
    ("classification", "integrated_gradients", "steps=abc", "not a parameter (did you mean n_steps?)"),
    ("classification", "rise", "p=0", "--param p=0: rise takes p as a number > 0 and <= 1"),
    ("classification", None, "region_shapley=-1", "parameter region_shapley=-1"),
    ("multilabel", "integrated_gradients", "n_step=4", "--param n_step: not a parameter (did you mean n_steps?)"),
    ("multilabel", "smoothgrad", "nt_samples=2.5", "--param nt_samples=2.5: smoothgrad takes nt_samples as a whole"),
    ("multilabel", None, "threshold=high", "parameter threshold='high'"),
    ("segmentation", None, "n_samples=4", "--param n_samples: not a parameter; gradcam takes no parameters; the run "
                                          "takes target, layer"),
    ("segmentation", None, "target=3", "parameter target=3"),
    ("segmentation", "saliency", "target=pred", "method 'saliency' does not take a segmentation target"),
    ("detection", "drise", "n_mask=200",
     "--param n_mask: not a parameter (did you mean n_masks?); drise takes n_masks"),
    ("detection", "drise", "n_masks=abc", "--param n_masks=abc: drise takes n_masks as a whole number >= 1"),
    ("detection", None, "score_threshold=2", "parameter score_threshold=2.0"),
]


@pytest.mark.parametrize("task, method, param, says", CASES)
def test_a_bad_param_exits_2_in_one_line_and_creates_no_run(tmp_path, capsys, task_files, task, method, param, says):
    model, data = task_files[task]
    ws = tmp_path / "ws"
    argv = ["run", "--model", model, "--data", data, "--n", 4, "--workspace", ws, "--no-progress",
            "--param", param] + (["--method", method] if method else [])
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("saliency-audit: error: ") and says in lines[0], err
    assert "Traceback" not in err
    assert main(["runs", "--format", "json", "--workspace", str(ws)]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_the_same_check_accepts_and_converts_good_values():
    assert check_params("integrated_gradients", {"n_steps": 4, "baseline": 0, "target": "pred"},
                        also=("target",)) == {"n_steps": 4, "baseline": 0.0, "target": "pred"}
    assert check_params("occlusion", {"window": None, "fill": 1}) == {"window": None, "fill": 1.0}
    assert check_params("gradient_shap", {"baselines": [0, 0.5]}) == {"baselines": [0.0, 0.5]}
    assert check_params("lrp", {"composite": "epsilon_plus"}) == {"composite": "epsilon_plus"}
    for method, params in [("lrp", {"composite": "zplus"}), ("rise", {"control_variate": 1}),
                           ("gradient_shap", {"baselines": [0, 2]}), ("smoothgrad", {"seed": True}),
                           ("drise", {"p": 1.0}), ("occlusion", {"tolerance": float("nan")})]:
        with pytest.raises(InputError, match=rf"--param {next(iter(params))}="):
            check_params(method, params)
