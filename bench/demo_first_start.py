"""`python -m bench.demo_first_start [--workspace WS] [--port 8612] [demo options]`: the demo's first start as a
user meets it, timed from `saliency-audit dashboard --demo` on a fresh workspace to every audit done.

Polls every `--every` seconds: the dashboard's HTTP answer, the build's status file (`analysis.demo.status`:
audits done, the one running), the builder's CPU seconds (/proc, so a loaded machine's figure can be read
beside the wall time) and the 1-minute load average. Prints when the dashboard serves, the first audit runs,
the first complete series is done (the plan's first series, `analysis.demo.build.demo_plan`), v1 and v5 of
every series are done, and the whole demo is done, each with the load then and the load range since the start.
The install is not part of it (a venv with the project installed is assumed). Writes
bench/results/demo-first-start.json (events, each audit's wall and builder-CPU seconds, every poll), also when
stopped by SIGTERM or `--limit`; then stops the dashboard and a builder still running (a later start resumes
with --keep). A fresh workspace unless --keep.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def serving(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False


def cpu_seconds(pid) -> float | None:
    """User + system CPU seconds of a live process (and its waited-for children), None when gone."""
    try:
        fields = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError, ValueError):
        return None
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def per_audit(samples: list[dict]) -> list[dict]:
    """Each finished audit's wall and builder-CPU seconds (to the poll's resolution) and the load meanwhile."""
    out, since = [], None
    for before, after in zip(samples, samples[1:]):
        if since is None and before["current"]:
            since = before
        if since is not None and after["done"] > since["done"]:
            loads = [s["load"] for s in samples if since["s"] <= s["s"] <= after["s"]]
            out.append({"audit": since["current"], "wall_s": round(after["s"] - since["s"], 1),
                        "builder_cpu_s": round(after["builder_cpu_s"] - since["builder_cpu_s"], 1),
                        "load": [round(min(loads), 1), round(max(loads), 1)]})
            since = after if after["current"] else None
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", default="/tmp/bench-demo-first-start")
    parser.add_argument("--port", type=int, default=8612)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between polls")
    parser.add_argument("--limit", type=float, default=3600, help="give up after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the workspace (a resume, a later start)")
    parser.add_argument("--out", default="demo-first-start", help="results file name under bench/results")
    args, demo_args = parser.parse_known_args(argv)

    from analysis.demo.build import demo_plan
    from analysis.demo.status import read_status
    from analysis.cli import build_parser, _demo_choice

    plan = demo_plan(**_demo_choice(build_parser().parse_args(["demo", *demo_args])))
    first_series = sum(a.series == plan[0].series and not a.extra for a in plan)  # the plan puts it first, whole
    ends = sum(1 for a in plan if not a.extra and (a.series == plan[0].series or a.endpoint))
    workspace = Path(args.workspace)
    if not args.keep:
        shutil.rmtree(workspace, ignore_errors=True)
    command = [sys.executable, "-m", "analysis.cli", "dashboard", "--demo", "--workspace", str(workspace),
               "--port", str(args.port), *demo_args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    print(f"uptime at start: {os.popen('uptime').read().strip()}", flush=True)
    print(f"{len(plan)} audits; first series {plan[0].series} ({first_series} audits); v1 and v5 of every "
          f"series after {ends}", flush=True)
    stopped = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))  # stop polling; still write what was measured
    start = time.time()
    log = open(workspace.parent / f"{workspace.name}-dashboard.log", "w")
    dashboard = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    events: dict[str, dict] = {}
    samples = []
    builder_cpu = 0.0
    try:
        while time.time() - start < args.limit and not stopped:
            elapsed, load = time.time() - start, os.getloadavg()[0]
            status = read_status(workspace) or {}
            cpu = cpu_seconds(status.get("pid"))
            builder_cpu = cpu if cpu is not None else builder_cpu
            done, state = int(status.get("done") or 0), status.get("state")
            samples.append({"s": round(elapsed, 1), "load": load, "done": done, "state": state,
                            "current": status.get("current"), "builder_cpu_s": builder_cpu})

            def mark(name: str, reached: bool) -> None:
                if reached and name not in events:
                    loads = [s["load"] for s in samples]
                    events[name] = {"s": round(elapsed, 1), "builder_cpu_s": round(builder_cpu, 1),
                                    "load": round(load, 1), "load_range": [round(min(loads), 1), round(max(loads), 1)],
                                    "done": done}
                    print(f"{elapsed:7.1f} s  {name}  (builder CPU {builder_cpu:.0f} s, load {load:.1f}, "
                          f"{done} of {len(plan)} done)", flush=True)

            mark("dashboard serving (HTTP 200)", serving(args.port))
            mark("first audit running", bool(status.get("current")) or done > 0)
            mark(f"first complete series ({plan[0].series}, {first_series} audits)", done >= first_series)
            mark(f"v1 and v5 of every series ({ends} audits)", done >= ends)
            if state in ("done", "failed", "stopped") and status.get("updated", 0) >= start:  # not a former build's
                mark(f"the whole demo, {len(plan)} audits ({state})", True)
                break
            if not stopped:
                time.sleep(args.every)
    finally:
        os.killpg(dashboard.pid, signal.SIGTERM)  # the dashboard this started (its own session)
        dashboard.wait(30)
        log.close()
        status = read_status(workspace) or {}
        if status.get("state") == "building":  # stopped or out of time: the builder it started stops too (resumable)
            os.kill(int(status["pid"]), signal.SIGTERM)
    print(f"uptime at the end: {os.popen('uptime').read().strip()}", flush=True)
    result = {"plan": len(plan), "demo_args": demo_args, "events": events, "per_audit": per_audit(samples),
              "samples": samples, "failed": (read_status(workspace) or {}).get("failed")}
    out = ROOT / "bench" / "results" / f"{args.out}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
