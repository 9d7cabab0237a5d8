"""First renders of the dashboard's pages on 5,000-image audits: Overview, Bias report and Compare.

`python -m bench.report_page --n 5000 [--baseline TREE] [--rounds 3] [--browser]` audits n images of the cage
scenario with Grad-CAM for cage v1 and v2 (once; the workspace is kept: a series for Compare and the Overview's
trend), then times:
- the report itself: `build_report` from the shards (bootstrap CIs, clustering) and `cached_report` (report.json);
- each page's **first render** under `streamlit.testing.v1.AppTest`, each in a fresh Python process that has
  already served one page (of an empty workspace: Streamlit, pandas and the pages' modules are imported, as on
  a running server), with every cache empty: wall seconds, the process's CPU seconds (what a quiet machine
  would take) and the load average. With `--baseline TREE` (another checkout, e.g. `git archive main`) the
  same page of that tree runs in alternation with this one, round by round;
- with `--browser`: Chromium against the product's `streamlit run`, a fresh server per page, from navigation
  to the page's content drawn (Overview: its finding's picture, the server's first page; Bias report and
  Compare: the first chart, navigated to after the Overview was drawn, as a person arrives at them), then the
  same navigation again with warm caches (what the browser, the session and the page's drawing cost alone); a
  full-page screenshot of each lands in bench/results/page-<page>-<tree>.png (the baseline's too).
Results go to bench/results/report_page.json (`--rounds 0 --browser`: report_page_browser.json).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def audited_workspace(root: Path, n: int, versions: tuple[str, ...] = ("v1", "v2")) -> tuple[list[str], float | None]:
    """The workspace with one finished n-image Grad-CAM run per cage version (a series for Compare and the
    Overview's trend); (run ids in version order, seconds the audits took or None if all were reused)."""
    from analysis.runs.engine import execute_run
    from analysis.store.workspace import Workspace
    from sample_models.scenes import generate
    from sample_models.train import WEIGHTS_DIR

    workspace = Workspace(root)
    data = root.parent / f"cage-{n}"
    if not (data / "manifest.csv").is_file():
        generate("cage", data, n=n, leak=0.9, seed=11)
    dataset_id = workspace.register_dataset(data)
    run_ids, spent = [], None
    for version in versions:
        folder = WEIGHTS_DIR / "cage" / version
        model_id = workspace.register_model(folder / "model.pt2", folder / "model.json")
        run_id = workspace.create_run(model_id, dataset_id, "gradcam", {}, n=n, seed=0,
                                      name=f"cage {version} gradcam {n}")
        run_ids.append(run_id)
        if workspace.run(run_id)["status"] != "done":
            start = time.perf_counter()
            execute_run(workspace, run_id, progress=True)
            spent = (spent or 0.0) + time.perf_counter() - start
    return run_ids, spent


def time_report(root: Path, run_id: str) -> dict:
    from analysis.report.build import build_report, cached_report
    from analysis.store.workspace import Workspace

    workspace = Workspace(root)
    store = workspace.store(run_id)
    start = time.perf_counter()
    report = build_report(store, workspace)
    built = time.perf_counter() - start
    cached_report(store, workspace)  # leaves report.json as the worker does
    start = time.perf_counter()
    cached_report(store, workspace)
    return {"build_report_s": built, "cached_report_s": time.perf_counter() - start,
            "n_images": report["run"]["n_images"], "n_flags": len(report["flags"])}


PAGES = {"overview": "app_pages/overview.py", "report": "app_pages/report.py", "compare": "app_pages/compare.py"}

# One first render in a fresh process: serve a page of an empty workspace first (imports, as on a running
# server), then switch to the audited workspace with empty caches and time the page's script.
FIRST_RENDER = """
import json, os, sys, time
from streamlit.testing.v1 import AppTest
tree, workspace, empty, page, run_id = sys.argv[1:6]
os.environ["SALIENCY_AUDIT_WORKSPACE"] = empty
at = AppTest.from_file(os.path.join(tree, "dashboard", "app.py"), default_timeout=600)
at.run()
os.environ["SALIENCY_AUDIT_WORKSPACE"] = workspace
at.query_params["run"] = run_id
at.switch_page(page)
wall, cpu = time.perf_counter(), time.process_time()
at.run()
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
warm = time.perf_counter()
at.run()
print(json.dumps({"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "warm_s": round(time.perf_counter() - warm, 2),
                  "load": round(os.getloadavg()[0], 1), "charts": len(at.get("plotly_chart")),
                  "images": len(at.get("image")), "exception": [e.message for e in at.exception]}))
"""


def first_render(tree: Path, root: Path, page: str, run_id: str) -> dict:
    """One page's first render (cold caches, warm imports) in a fresh process running `tree`'s dashboard."""
    empty = root.parent / "empty-workspace"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", FIRST_RENDER, str(tree), str(root), str(empty), PAGES[page], run_id],
                         cwd=tree, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def time_first_renders(root: Path, run_ids: list[str], rounds: int, baseline: Path | None) -> dict:
    """Per page and tree: every round's numbers and the median wall / CPU, the trees alternating in each round."""
    trees = {"this": REPO} | ({"baseline": baseline} if baseline else {})
    found: dict = {page: {name: [] for name in trees} for page in PAGES}
    for k in range(rounds):
        for page in PAGES:
            for name, tree in (list(trees.items()) if k % 2 == 0 else list(trees.items())[::-1]):
                found[page][name].append(first_render(tree, root, page, run_ids[-1]))
                print(page, name, found[page][name][-1], flush=True)
    summary = {}
    for page, by_tree in found.items():
        for name, rows in by_tree.items():
            summary[f"{page}_{name}"] = {
                "wall_median_s": statistics.median(r["wall_s"] for r in rows),
                "cpu_median_s": statistics.median(r["cpu_s"] for r in rows),
                "warm_median_s": statistics.median(r["warm_s"] for r in rows),
                "loads": [r["load"] for r in rows], "rounds": rows}
    return summary


def time_browser(root: Path, run_ids: list[str], tree: Path = REPO, name: str = "this") -> dict:
    """Per page, a fresh `streamlit run` of `tree` and a fresh Chromium page: seconds from navigation to the
    page's content drawn, and a full-page screenshot (`page-<page>-<name>.png`)."""
    from playwright.sync_api import expect, sync_playwright

    from analysis.store.workspace import ENV_VAR
    from dashboard.launch import APP, free_port, streamlit_command, wait_until_serving

    content = {"overview": "[data-testid='stImage'] img", "report": ".js-plotly-plot",
               "compare": ".js-plotly-plot"}
    url = {"overview": "/", "report": f"/report?run={run_ids[-1]}", "compare": "/compare"}
    out = {}
    for page in PAGES:
        port = free_port()
        env = {**os.environ, ENV_VAR: str(root), "PYTHONPATH": str(tree)}
        command = [str(tree / "dashboard" / "app.py") if c == str(APP) else c for c in streamlit_command(port)]
        server = subprocess.Popen(command, env=env, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until_serving(port, timeout=120)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
                tab = browser.new_page(viewport={"width": 1400, "height": 1800})
                if page != "overview":  # a person arrives from the Overview: the server has run a page
                    tab.goto(f"http://127.0.0.1:{port}/", timeout=600_000)
                    expect(tab.locator(content["overview"]).first).to_be_visible(timeout=600_000)
                start = time.perf_counter()
                tab.goto(f"http://127.0.0.1:{port}{url[page]}", timeout=600_000)
                expect(tab.locator(content[page]).first).to_be_visible(timeout=600_000)
                out[f"browser_{page}_{name}_s"] = round(time.perf_counter() - start, 2)
                out[f"browser_{page}_{name}_load"] = round(os.getloadavg()[0], 1)
                start = time.perf_counter()  # again, caches warm: what the browser and the session cost alone
                tab.goto(f"http://127.0.0.1:{port}{url[page]}", timeout=600_000)
                expect(tab.locator(content[page]).first).to_be_visible(timeout=600_000)
                out[f"browser_{page}_{name}_again_s"] = round(time.perf_counter() - start, 2)
                print(page, name, out[f"browser_{page}_{name}_s"], "s, again", out[f"browser_{page}_{name}_again_s"],
                      "s, load", out[f"browser_{page}_{name}_load"], flush=True)
                tab.wait_for_timeout(1500)  # let the rest of the page settle before the picture
                tab.screenshot(path=str(HERE / "results" / f"page-{page}-{name}.png"), full_page=True)
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/bench-report-page/workspace"))
    parser.add_argument("--baseline", type=Path, help="another checkout whose pages run in alternation")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--browser", action="store_true")
    parser.add_argument("--no-report", action="store_true", help="skip timing build_report")
    args = parser.parse_args(argv)
    run_ids, audit_s = audited_workspace(args.workspace, args.n)
    (args.workspace.parent / "empty-workspace").mkdir(exist_ok=True)
    result = {"n": args.n, "run_ids": run_ids, "audit_s": audit_s, "load_average": os.getloadavg()[0]}
    if not args.no_report:
        result |= time_report(args.workspace, run_ids[-1])  # leaves report.json, as the worker does
    if args.rounds:
        result["first_render"] = time_first_renders(args.workspace, run_ids, args.rounds, args.baseline)
    (HERE / "results").mkdir(exist_ok=True)
    if args.browser:
        result |= time_browser(args.workspace, run_ids)
        if args.baseline:
            result |= time_browser(args.workspace, run_ids, args.baseline, "baseline")
    out = HERE / "results" / ("report_page.json" if args.rounds else "report_page_browser.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "first_render"}, indent=2))
    for name, row in result.get("first_render", {}).items():
        print(f"{name:20s} wall {row['wall_median_s']:6.2f} s  cpu {row['cpu_median_s']:5.2f} s  "
              f"warm {row['warm_median_s']:5.2f} s  load {row['loads']}")


if __name__ == "__main__":
    main()
