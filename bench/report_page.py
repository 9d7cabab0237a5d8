"""How long the bias-report page takes for a large run: engine report, page script, and a real browser.

`python -m bench.report_page --n 5000` audits n images of the cage scenario with Grad-CAM (once; the workspace
is kept) and then times, cold and warm:
- the report itself: `build_report` from the shards (bootstrap CIs, clustering) and `cached_report` (report.json);
- the page script under `streamlit.testing.v1.AppTest` (every tab's code runs on every render in Streamlit);
- Chromium against the product's own `streamlit run` command: navigation to "Images explained" shown, to the
  first chart drawn, and to the gallery's first image after clicking its tab.
Results go to bench/results/report_page.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def audited_workspace(root: Path, n: int) -> tuple[str, float | None]:
    """The workspace with one finished n-image Grad-CAM run; (run id, seconds the audit took or None if reused)."""
    from analysis.runs.engine import execute_run
    from analysis.store.workspace import Workspace
    from sample_models.scenes import generate
    from sample_models.train import WEIGHTS_DIR

    workspace = Workspace(root)
    data = root.parent / f"cage-{n}"
    if not (data / "manifest.csv").is_file():
        generate("cage", data, n=n, leak=0.9, seed=11)
    dataset_id = workspace.register_dataset(data)
    folder = WEIGHTS_DIR / "cage" / "v1"
    model_id = workspace.register_model(folder / "model.pt2", folder / "model.json")
    run_id = workspace.create_run(model_id, dataset_id, "gradcam", {}, n=n, seed=0, name=f"cage v1 gradcam {n}")
    if workspace.run(run_id)["status"] == "done":
        return run_id, None
    start = time.perf_counter()
    execute_run(workspace, run_id, progress=True)
    return run_id, time.perf_counter() - start


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


def time_page_script(root: Path, run_id: str) -> dict:
    from streamlit.testing.v1 import AppTest

    from analysis.store.workspace import ENV_VAR

    os.environ[ENV_VAR] = str(root)
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=600)
    at.query_params["run"] = run_id
    at.run()
    start = time.perf_counter()
    at.switch_page("app_pages/report.py").run()
    cold = time.perf_counter() - start
    assert not at.exception, [e.message for e in at.exception]
    start = time.perf_counter()
    at.run()
    return {"page_script_cold_s": cold, "page_script_warm_s": time.perf_counter() - start}


def time_browser(root: Path, run_id: str) -> dict:
    from playwright.sync_api import expect, sync_playwright

    from analysis.store.workspace import ENV_VAR
    from dashboard.launch import free_port, streamlit_command, wait_until_serving

    port = free_port()
    env = {**os.environ, ENV_VAR: str(root), "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(streamlit_command(port), env=env, cwd=root, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    out = {}
    try:
        wait_until_serving(port, timeout=120)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            for visit in ("cold", "warm"):
                start = time.perf_counter()
                page.goto(f"http://127.0.0.1:{port}/report?run={run_id}", timeout=600_000)
                expect(page.get_by_text("Images explained")).to_be_visible(timeout=600_000)
                out[f"browser_{visit}_summary_s"] = time.perf_counter() - start
                expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=600_000)
                out[f"browser_{visit}_first_chart_s"] = time.perf_counter() - start
                click = time.perf_counter()
                page.get_by_role("tab", name="Gallery").click()
                expect(page.locator("[data-testid='stImage'] img").first).to_be_visible(timeout=600_000)
                out[f"browser_{visit}_gallery_after_click_s"] = time.perf_counter() - click
            page.screenshot(path=str(HERE / "results" / "report_page.png"), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/bench-report-page/workspace"))
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args(argv)
    run_id, audit_s = audited_workspace(args.workspace, args.n)
    result = {"n": args.n, "run_id": run_id, "audit_s": audit_s, "load_average": os.getloadavg()[0]}
    from analysis.store.workspace import Workspace

    # Worst case first: no report.json (a run whose worker died before writing it), empty Streamlit caches.
    (Workspace(args.workspace).run_dir(run_id) / "report.json").unlink(missing_ok=True)
    result |= time_page_script(args.workspace, run_id)
    result |= time_report(args.workspace, run_id)
    if not args.no_browser:
        result |= time_browser(args.workspace, run_id)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "report_page.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
