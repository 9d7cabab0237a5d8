"""`python -m bench.cli_calls [--baseline SRC] [--rounds 7]`: wall seconds of the CLI's reads of a finished
audit (`report RUN --format json`, `check RUN`, `runs`), each a fresh process as a user or a CI gate runs it.

Issue 29's goal is <= 0.5 s per call: start-up (imports) is the whole cost of a call that reads a cached
report. `--baseline SRC` is another source tree of the project (e.g. `git archive <commit> | tar -x -C SRC`):
its calls are interleaved with this tree's (A B A B, same workspace), so load drifting over the run affects
both; the load average is printed beside each row (the machine may be shared).

The audit: `sample_models.scenes` "cage" images and a random-weight resnet18 state dict at `--size` px
(`bench.e2e`'s builders), `--n` images, Grad-CAM, all evidence.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {"report --format json": ["report", "{run}", "--format", "json"], "check": ["check", "{run}"],
            "runs": ["runs"]}


def finished_audit(folder: Path, n: int, size: int) -> str:
    from analysis.cli import main as cli
    from analysis.store.workspace import Workspace
    from bench.e2e import make_data, make_model

    data = make_data(folder / "data", n, size)
    classes = sorted({line.split(",")[1] for line in (data / "manifest.csv").read_text().splitlines()[1:]})
    model = make_model(folder / "model", classes, "resnet18", size)
    workspace = folder / "ws"
    assert cli(["run", "--model", str(model), "--data", str(data), "--n", str(n), "--workspace", str(workspace),
                "--no-progress"]) == 0
    return Workspace(workspace).runs()[0]["id"]


def call_seconds(source: Path, argv: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(source)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "analysis.cli", *argv], cwd=source, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another source tree of the project, interleaved")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cli_calls.json")
    args = parser.parse_args(argv)
    trees = {"this tree": ROOT, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    with tempfile.TemporaryDirectory() as tmp:
        run_id = finished_audit(Path(tmp), args.n, args.size)
        workspace = str(Path(tmp) / "ws")
        for source in trees.values():  # warm the file cache and each tree's bytecode once
            call_seconds(source, ["runs", "--workspace", workspace])
        rows = []
        for name, command in COMMANDS.items():
            call = [a.format(run=run_id) for a in command] + ["--workspace", workspace]
            seconds = {tree: [] for tree in trees}
            load = [os.getloadavg()[0]]
            for _ in range(args.rounds):
                for tree, source in trees.items():
                    seconds[tree].append(call_seconds(source, call))
            load.append(os.getloadavg()[0])
            for tree, values in seconds.items():
                rows.append({"command": name, "tree": tree, "median_s": statistics.median(values),
                             "best_s": min(values), "rounds": len(values), "load": [round(x, 2) for x in load]})
    result = {"n": args.n, "size": args.size, "cpus": os.cpu_count(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print("| command | tree | median s (best) | load average (start-end) |\n|---|---|---:|---|")
    for r in rows:
        print(f"| `{r['command']}` | {r['tree']} | {r['median_s']:.2f} ({r['best_s']:.2f}) | "
              f"{r['load'][0]:.1f}-{r['load'][1]:.1f} |")
    return result


if __name__ == "__main__":
    main()
