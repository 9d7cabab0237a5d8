"""`python -m bench.report_alone WORKSPACE [...]`: the report of a kept run, built alone in a fresh process.

Inside a run the report stage's RSS also holds what the evidence stage allocated before it (Python keeps freed
heap); built alone (`--keep` of `bench.ray_scaling` leaves the workspaces), the report's own peak RSS and time
show. Run it with `PYTHONPATH=<checkout>` to compare two checkouts on the same store. One JSON line per
workspace (its single run): images, seconds, RSS before and peak (sampled every 0.1 s), the clusters' sizes
and sampled maps, the load average.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import psutil


def measure(root: Path) -> dict:
    from analysis.report.build import build_report
    from analysis.store.workspace import Workspace

    workspace = Workspace(root)
    (run,) = workspace.runs()
    me = psutil.Process()
    before = peak = me.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, me.memory_info().rss)
            time.sleep(0.1)

    threading.Thread(target=sample, daemon=True).start()
    started = time.perf_counter()
    report = build_report(workspace.store(run["id"]))
    took = time.perf_counter() - started
    done.set()
    return {"n": report["run"]["n_images"], "report_s": round(took, 1), "rss_before_mib": round(before / 2 ** 20),
            "peak_rss_mib": round(max(peak, me.memory_info().rss) / 2 ** 20),
            "clusters": [[c["class"], c["size"], c.get("n_clustered")] for c in report.get("clusters", [])],
            "code": os.environ.get("PYTHONPATH"), "load_avg_1m": round(os.getloadavg()[0], 1)}


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        print(json.dumps(measure(Path(folder))), flush=True)
