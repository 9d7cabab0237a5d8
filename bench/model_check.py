"""How long the Upload page's model check takes: the first click (the warm helper starting) and the next ones.

`python -m bench.model_check --repeats 3 [--old] [--browser]` times, on one small exported model (the
tagged-shapes CNN of the dashboard tests, a 0.04 MB .pt2), in one process, round after round:
- cold: a new `analysis.warm_inspector.WarmInspector` and its first `inspect` (a click the moment the page
  opened: the helper's imports, then a child's check), wall seconds and the CPU seconds of the helper and its
  child (from /proc: what the same start takes on a quiet core);
- warm: the next `inspect` of that helper (a child forked from it), wall and CPU;
- with `--old`: `python -m analysis.inspect_model MODEL --card CARD`, what every check paid before issue 28;
- once, the split of a cold check (one process, `time.perf_counter` and CPU): `import torch`, the imports
  `torch.export.load` triggers, and the check itself;
- with `--browser`: Chromium against the product's `streamlit run`, from the click on "Check and register the
  model" to "Registered model" on the page (the first click a few seconds after the page opened, then again).
The load average is printed beside every number: on a shared machine it decides most wall times.
Results go to bench/results/model_check.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

SPLIT = """
import json, time, sys
c0, t0 = time.process_time(), time.perf_counter(); import torch; c1, t1 = time.process_time(), time.perf_counter()
import torch.export, torch._export.serde.serialize; c2, t2 = time.process_time(), time.perf_counter()
from analysis.inspect_model import inspect
inspect(sys.argv[1], sys.argv[2]); c3, t3 = time.process_time(), time.perf_counter()
print(json.dumps({"import_torch_s": t1 - t0, "export_imports_s": t2 - t1, "check_s": t3 - t2,
                  "import_torch_cpu_s": c1 - c0, "export_imports_cpu_s": c2 - c1, "check_cpu_s": c3 - c2}))
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _load() -> float:
    return round(os.getloadavg()[0], 1)


def _cpu(pid: int) -> float:
    """CPU seconds of a process and its reaped children (utime + stime + cutime + cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def helper_round(model: Path, card: Path) -> dict:
    """A fresh helper's first check (the first click) and its next one: wall and CPU seconds, and the load."""
    from analysis.warm_inspector import WarmInspector

    warm = WarmInspector()
    started = time.perf_counter()
    assert "error" not in warm.inspect(model, card)
    cold_s = time.perf_counter() - started
    pid = warm._process.pid
    cold_cpu = _cpu(pid)
    started = time.perf_counter()
    assert "error" not in warm.inspect(model, card)
    warm_s = time.perf_counter() - started
    warm_cpu = _cpu(pid) - cold_cpu
    warm._stop()
    return {"cold_s": round(cold_s, 2), "cold_cpu_s": round(cold_cpu, 2), "warm_s": round(warm_s, 2),
            "warm_cpu_s": round(warm_cpu, 2), "load": _load()}


def cold(model: Path, card: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "analysis.inspect_model", str(model), "--card", str(card)], check=True,
                   capture_output=True, cwd=REPO, env=_env())
    return time.perf_counter() - started


def split(model: Path, card: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", SPLIT, str(model), str(card)], check=True, capture_output=True,
                         text=True, cwd=REPO, env=_env()).stdout
    return {k: round(v, 2) for k, v in json.loads(out.strip().splitlines()[-1]).items()}


def browser(folder: Path, model: Path, clicks: int) -> list[float]:
    from playwright.sync_api import expect, sync_playwright

    from dashboard.launch import free_port, streamlit_command, wait_until_serving

    port = free_port()
    env = {**_env(), "SALIENCY_AUDIT_WORKSPACE": str(folder / "workspace")}
    with open(folder / "streamlit.log", "wb") as log:
        server = subprocess.Popen(streamlit_command(port, {}), cwd=folder, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        times = []
        try:
            wait_until_serving(port, timeout=60)
            with sync_playwright() as pw:
                chromium = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
                page = chromium.new_context(viewport={"width": 1400, "height": 1800}).new_page()
                for k in range(clicks):
                    page.goto(f"http://127.0.0.1:{port}/upload", timeout=60_000)
                    expect(page.get_by_text("Model file", exact=False).first).to_be_visible(timeout=60_000)
                    inputs = page.locator("input[type='file']")
                    inputs.nth(0).set_input_files(str(model))
                    inputs.nth(1).set_input_files(str(model.parent / "model.json"))
                    expect(page.get_by_label("Classes, one per line", exact=False)).to_have_value(
                        "circle\nsquare", timeout=30_000)
                    page.get_by_label("Name", exact=True).fill(f"net{k}")
                    page.get_by_label("Name", exact=True).press("Enter")
                    page.wait_for_timeout(1500)
                    started = time.perf_counter()
                    page.get_by_role("button", name="Check and register the model").click()
                    expect(page.get_by_text("Registered model", exact=False)).to_be_visible(timeout=180_000)
                    times.append(round(time.perf_counter() - started, 2))
                chromium.close()
        finally:
            server.terminate()
            server.wait(timeout=20)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.model_check", description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--old", action="store_true", help="also time the per-check process of before issue 28")
    parser.add_argument("--browser", action="store_true")
    args = parser.parse_args(argv)
    sys.path[:0] = [str(REPO), str(REPO / "tests" / "dashboard")]
    from workspace_builder import write_tag_model

    folder = Path(tempfile.mkdtemp(prefix="model-check-"))
    model = write_tag_model(folder / "tagnet", 1)
    card = model.parent / "model.json"
    result: dict = {"model_bytes": model.stat().st_size, "rounds": [], "old_process_s": []}
    result["cold_split"] = {**split(model, card), "load": _load()}
    print("split", result["cold_split"], flush=True)
    for _ in range(args.repeats):
        result["rounds"].append(helper_round(model, card))
        print("helper", result["rounds"][-1], flush=True)
        if args.old:
            result["old_process_s"].append({"s": round(cold(model, card), 2), "load": _load()})
            print("old process", result["old_process_s"][-1], flush=True)
    if args.browser:
        result["browser_click_to_registered_s"] = browser(folder, model, args.repeats)
        result["browser_load"] = _load()
    out = HERE / "results" / "model_check.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
