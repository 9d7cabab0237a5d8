"""The Streamlit process every user shares does not import torch to draw pages that compute no tensor: torch
costs it hundreds of MB of memory and seconds of start-up (bench/README.md has the figures). Each page is run
under AppTest in a fresh interpreter over a workspace with finished audits (reports cached, as a run leaves
them: building one computes SpRAy clusters, which does need torch), and asked whether torch came in.
The method list the new-audit page offers comes from a torch-free copy, kept equal to the registry here."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from analysis.runs.methods import BUILTIN_KINDS
from tests.dashboard.workspace_builder import build_workspace

REPO = Path(__file__).resolve().parents[2]
TORCH_FREE = ("app_pages/overview.py", "app_pages/upload.py", "app_pages/new_audit.py")  # compare, report, trust: not yet

PROBE = """
import json, os, sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(os.path.join(sys.argv[1], "dashboard", "app.py"), default_timeout=120)
at.run()
seen = {"home": ["torch" in sys.modules, [e.message for e in at.exception]]}
for page in sys.argv[2:]:
    at.switch_page(page).run()
    seen[page] = ["torch" in sys.modules, [e.message for e in at.exception]]
print(json.dumps(seen))
"""


def test_pages_that_compute_no_tensor_do_not_import_torch(tmp_path):
    from analysis.report.build import cached_report
    from analysis.store.workspace import Workspace

    root = tmp_path / "ws"
    build_workspace(root)
    ws = Workspace(root)
    for run in ws.runs():  # as `saliency-audit run` leaves them: the report cached beside each finished run
        cached_report(ws.store(run["id"]), ws)
    ws.close()
    done = subprocess.run([sys.executable, "-c", PROBE, str(REPO), *TORCH_FREE], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO),
                                                           SALIENCY_AUDIT_WORKSPACE=str(root)))
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {page: [False, []] for page in ("home", *TORCH_FREE)}


def test_the_torch_free_method_list_is_the_registry():
    from explainers.registry import METHODS, load_builtin_methods

    load_builtin_methods()
    assert BUILTIN_KINDS == {name: cls.model_kind for name, cls in METHODS.items()}
