"""The renderers read the typed records (`analysis.report.sections`, `comparison_records`), never the report
dict: no `.get(` in the HTML report or the dashboard's view modules except on the few things that are not a
report, each allowed by its receiver's name with the reason. A `.get(` on a report dict put back fails here.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RENDERERS = [ROOT / "analysis/report/html.py", ROOT / "dashboard/views.py", ROOT / "dashboard/detection_views.py",
             ROOT / "dashboard/components.py", ROOT / "dashboard/version_marks.py",
             *sorted((ROOT / "dashboard/task_views").glob("*.py")),
             *(ROOT / "dashboard/app_pages" / page for page in ("report.py", "compare.py", "overview.py", "trust.py"))]

ALLOWED = {  # receiver -> why its `.get(` is not a report dict's
    "st.query_params": "the page's URL parameters",
    "status": "the demo build's status (dashboard.data.demo_status)",
    "catalog_row": "a row of the runs catalog (model name and version, dataset, method)",
    "info": "the catalog's run info (dashboard.data.run_info)",
    "card": "the model card (dashboard.data.model_card)",
    "arrays": "a run's stored per-target maps",
    "detection_row": "a row of the run's stored detections table",
    "exemplar": "an exemplar picture the caller of render_html passes (image, map, caption)",
    "order": "a version-position lookup the view builds itself",
    "cue_of": "a cue-number lookup the view builds itself",
    "os.environ": "the environment (the Compare page's MLflow tracking URI)",
    "labels_of": "the Compare page's version labels, built from the catalog",
    "label_of": "the Bias report's labels by region, built from the typed labels",
    "data.run_info(r)": "the catalog's run info of a chosen run",
    "task_views.REPORT_BODIES": "a task's own report body, by view name",
    "task_views.COMPARISON_BODIES": "a task's own comparison body, by view name",
    "data.maps_of(run_id, version, (image_id,))": "the stored maps of the images on screen",
    "row": "a row of the gallery table (a dataframe record)",
    "data.demo_status() or {}": "the demo build's status",
}


def report_gets(source: str) -> list[tuple[int, str]]:
    """(line, receiver) of every `.get(` call whose receiver is neither allowed nor a dict written in place."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            receiver = node.func.value
            if isinstance(receiver, ast.Dict):  # a lookup table written in place: {True: "passed"}.get(...)
                continue
            name = ast.unparse(receiver)
            if name not in ALLOWED:
                found.append((node.lineno, name))
    return sorted(found)


def test_the_check_sees_a_report_get_and_lets_the_allowed_ones_pass():
    source = ("rows = report.get('regions') or []\nx = (report.get('run') or {}).get('method')\n"
              "y = st.query_params.get('run')\nz = {True: 'passed'}.get(flag)\n")
    assert report_gets(source) == [(1, "report"), (2, "report"), (2, "report.get('run') or {}")]


@pytest.mark.parametrize("path", RENDERERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_renderers_read_attributes_not_report_keys(path):
    offenders = report_gets(path.read_text())
    assert not offenders, f"{path.relative_to(ROOT)}: .get( on {offenders}; read the typed records instead"


def test_every_allowed_receiver_is_still_used():
    """An allowance nobody needs any more is removed, so the list cannot grow into a loophole."""
    used = set()
    for path in RENDERERS:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
                used.add(ast.unparse(node.func.value))
    assert set(ALLOWED) <= used, sorted(set(ALLOWED) - used)
