"""Reading a finished audit from the command line imports no tensor library (issue 29).

`report --format json`, `report --format csv`, `check` and `runs` on a finished audit read the catalog and
the cached report.json: they must not pay torch's import (seconds under load) for it. Checked by what a fresh
interpreter holds in `sys.modules` after the call, not by timing; the output must equal the in-process one.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.cli import main
from analysis.store.workspace import Workspace

from tests.runs.helpers import write_dataset, write_model

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "captum", "pandas", "pyarrow", "plotly", "ultralytics", "onnxruntime")
PROBE = """
import json, sys
from analysis.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "heavy": sorted(m for m in %r if m in sys.modules)}), file=sys.stderr)
""" % (HEAVY,)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    base = tmp_path_factory.mktemp("startup")
    model, data = write_model(base / "model"), write_dataset(base / "data", n=8)
    ws = base / "ws"
    assert main(["run", "--model", str(model), "--data", str(data), "--n", "8", "--workspace", str(ws),
                 "--batch-size", "4", "--no-progress"]) == 0
    run_id = Workspace(ws).runs()[0]["id"]
    return ws, run_id


def probe(*argv) -> tuple[str, dict]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *map(str, argv)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(proc.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [("report", "{run}", "--format", "json"), ("report", "{run}", "--format", "csv"),
                                  ("check", "{run}"), ("runs",), ("runs", "--format", "json")])
def test_reading_a_finished_audit_imports_no_tensor_library(finished, capsys, argv):
    ws, run_id = finished
    argv = [a.format(run=run_id) for a in argv] + ["--workspace", str(ws)]
    capsys.readouterr()
    assert main(argv) == 0
    in_process = capsys.readouterr().out
    out, state = probe(*argv)
    assert state == {"code": 0, "heavy": []}
    assert out == in_process
    if argv[0] == "report" and "json" in argv:
        report = json.loads(out)
        assert report["run"]["n_images"] == 8 and report["regions"]


def test_task_registry_imports_a_task_module_when_its_task_is_read():
    code = ("import sys; from analysis.runs import tasks; "
            "assert 'detection' in tasks.TASKS and list(tasks.TASKS)[:2] == ['classification', 'detection']; "
            "assert 'analysis.runs.tasks.detection' not in sys.modules and 'torch' not in sys.modules; "
            "task = tasks.get_task('detection'); assert task.name == 'detection' and task.model_kind == 'detector'; "
            "assert 'analysis.runs.tasks.detection' in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
