"""The Streamlit process's cost to every user: its RSS and its first page's time, and whether torch is in it.

Starts the real `saliency-audit dashboard` (from the checkout given, so an older tree can be measured beside
this one), opens the overview page in headless Chromium, then the Upload page, then Compare, and after each
(once the page's script has finished: Streamlit's running indicator gone) reads the Streamlit child's VmRSS and
whether libtorch is mapped. "First page" is the seconds from the browser's request
to the page title being drawn, on a workspace with finished audits whose reports are cached.

    python -m bench.dashboard_process --workspace WS [--tree OLD_CHECKOUT] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from dashboard.launch import free_port, wait_until_serving

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


def _streamlit_child(pid: int) -> int:
    """The Streamlit server: the launched process itself once it has exec'd `streamlit run` (the launcher does
    since issue 27's signal work), else its child (older trees)."""
    for _ in range(600):
        if b"streamlit" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
        for task in Path(f"/proc/{pid}/task").iterdir():
            children = (task / "children").read_text().split()
            if children:
                return int(children[0])
        time.sleep(0.05)
    raise RuntimeError("the dashboard started no Streamlit process")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _has_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def measure(tree: Path, workspace: Path) -> dict:
    from playwright.sync_api import sync_playwright

    port = free_port()
    cli = subprocess.Popen([sys.executable, "-m", "analysis.cli", "dashboard", "--workspace", str(workspace),
                            "--port", str(port)], cwd=tree, env=dict(os.environ, PYTHONPATH=str(tree)),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until_serving(port, timeout=120)
        child = _streamlit_child(cli.pid)
        out = {"idle_rss_mib": _rss_mib(child)}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            for name, path, title in (("overview", "", "Saliency Audit"), ("upload", "upload", "Upload"),
                                      ("compare", "compare", "Compare versions")):
                start = time.perf_counter()
                page.goto(f"http://127.0.0.1:{port}/{path}", timeout=120_000)
                page.get_by_role("heading", name=title).first.wait_for(timeout=120_000)
                out[f"{name}_s"] = time.perf_counter() - start
                page.locator("[data-testid='stStatusWidget']").wait_for(state="detached", timeout=600_000)
                time.sleep(1.0)  # let the script run finish before reading memory
                out[f"{name}_rss_mib"] = _rss_mib(child)
                out[f"{name}_torch"] = _has_torch(child)
            browser.close()
        return out
    finally:
        os.killpg(cli.pid, signal.SIGTERM)
        cli.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--tree", type=Path, default=REPO, help="checkout whose dashboard is measured")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds = [measure(args.tree.resolve(), args.workspace.resolve()) for _ in range(args.rounds)]
    summary = {key: (statistics.median(r[key] for r in rounds) if not key.endswith("_torch")
                     else all(r[key] for r in rounds)) for key in rounds[0]}
    print(json.dumps({"tree": str(args.tree), "rounds": rounds, "median": summary}, indent=1))


if __name__ == "__main__":
    main()
