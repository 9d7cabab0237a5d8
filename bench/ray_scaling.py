"""`python -m bench.ray_scaling --sizes 2000,10000 [--workers 2]`: the Ray backend on a local cluster (issue 26).

Per size, in a fresh driver process (so peak RSS is that size's own): generate `cage` scenes (64 px, the
sample model's size) in a separate process, register them and the sample `cage/v1` model, then
`run_with_ray` Grad-CAM over every image on a local Ray instance with `--workers` single-threaded actors.
A thread samples every 0.2 s the driver's RSS and the actors' summed RSS, and the run's catalog stage, which
splits the wall time into the main pass (`explaining`), the evidence stage and the report, and the recorded
image count, which gives the steady rate (from the first recorded shard on: actor start-up excluded). Printed as one
JSON line per size; `--out FILE` appends them to FILE (JSONL). Numbers depend on what else the machine runs:
throughput per worker is what to read, against the same machine's local backend if needed.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
EVIDENCE_IMAGES = 400  # the evidence stage decodes its whole sample on the driver (default: every image of the run)


def generate(folder: Path, n: int) -> None:
    """In a child process: `render` keeps every scene in memory, which must not count in the driver's RSS.
    A folder already there (`--data`) is reused: 100,000 scenes take minutes to draw and write."""
    if (folder / "manifest.csv").is_file():
        return
    tmp = folder.with_name(folder.name + ".tmp")
    code = (f"from sample_models.scenes import generate; generate('cage', {str(tmp)!r}, {n}, size=64, seed=7)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    os.replace(tmp, folder)


class Sampler(threading.Thread):
    """Driver RSS, actors' RSS and the run's stage, every `period` seconds."""

    def __init__(self, root: Path, run_id: str, period: float = 0.2):
        super().__init__(daemon=True)
        self.root, self.run_id, self.period = root, run_id, period
        self.samples: list[tuple[float, str | None, int, int, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        from analysis.store.workspace import Workspace

        workspace, me = Workspace(self.root), psutil.Process()
        while not self.done.is_set():
            row = workspace.run(self.run_id)
            stage, n_recorded = row.get("stage"), (row.get("n_done") or 0) + (row.get("n_skipped") or 0)
            actors = 0
            for process in psutil.process_iter(["cmdline", "memory_info"]):
                if any("ShardWorker" in part for part in process.info["cmdline"] or ()):
                    actors += process.info["memory_info"].rss if process.info["memory_info"] else 0
            self.samples.append((time.perf_counter(), stage, me.memory_info().rss, actors, n_recorded))
            time.sleep(self.period)
        workspace.close()


def measure(n: int, workers: int, batch_size: int, scratch: Path, device: str = "cpu",
            data_root: Path | None = None, evidence_images: int | None = EVIDENCE_IMAGES) -> dict:
    from analysis.runs.ray_backend import run_with_ray
    from analysis.store.workspace import Workspace

    data = (data_root or scratch) / f"cage-{n}"
    started = time.perf_counter()
    generate(data, n)
    generated = time.perf_counter() - started
    workspace = Workspace(scratch / f"ws-{n}")
    started = time.perf_counter()
    model_id = workspace.resolve_model(str(ROOT / "sample_models" / "weights" / "cage" / "v1" / "model.pt"))
    dataset_id = workspace.resolve_dataset(str(data))
    registered = time.perf_counter() - started
    params = {"target": "pred", **({"evidence_images": evidence_images} if evidence_images else {})}
    run_id = workspace.create_run(model_id, dataset_id, "gradcam", params, n=n, seed=0)
    rss_before = psutil.Process().memory_info().rss
    sampler = Sampler(workspace.root, run_id)
    sampler.start()
    started = time.perf_counter()
    final = run_with_ray(workspace, run_id, None, workers, device=device, batch_size=batch_size,
                         progress=False)
    ended = time.perf_counter()
    sampler.done.set()
    sampler.join()
    samples = sampler.samples

    def phase(names) -> list:
        return [s for s in samples if names(s[1])]

    explain = phase(lambda stage: stage == "explaining")
    report = phase(lambda stage: stage == "report")
    evidence = phase(lambda stage: stage not in (None, "explaining", "report"))
    t_explain_end = evidence[0][0] if evidence else (report[0][0] if report else ended)
    t_report = report[0][0] if report else ended
    explain_s = t_explain_end - started
    first = next((s for s in explain if s[4] > 0), None)  # the first shard recorded: actors are up
    last = explain[-1] if explain else None
    steady = (last[4] - first[4]) / (last[0] - first[0]) if first and last and last[0] > first[0] else None
    mib = 1 / 2 ** 20
    return {
        "n": n, "workers": workers, "device": device, "batch_size": batch_size, "evidence_images": evidence_images,
        "n_done": final["n_done"],
        "n_skipped": final["n_skipped"], "generate_s": round(generated, 1), "register_s": round(registered, 1),
        "explain_s": round(explain_s, 1), "evidence_s": round(t_report - t_explain_end, 1),
        "report_s": round(ended - t_report, 1), "total_s": round(ended - started, 1),
        "images_per_s": round(final["n_done"] / explain_s, 1),
        "images_per_s_per_worker": round(final["n_done"] / explain_s / workers, 1),
        "startup_s": round(first[0] - started, 1) if first else None,
        "steady_images_per_s_per_worker": round(steady / workers, 1) if steady else None,
        "driver_rss_before_mib": round(rss_before * mib),
        "driver_peak_rss_explain_mib": round(max((s[2] for s in explain), default=0) * mib),
        "driver_peak_rss_evidence_mib": round(max((s[2] for s in evidence), default=0) * mib),
        "driver_peak_rss_report_mib": round(max((s[2] for s in report), default=0) * mib),
        "driver_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "actors_peak_rss_mib": round(max((s[3] for s in explain), default=0) * mib),
        "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,10000")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cuda: one GPU per worker")
    parser.add_argument("--out", help="append the JSON lines to this file")
    parser.add_argument("--data", help="keep the generated datasets here (cage-N) and reuse them")
    parser.add_argument("--evidence-images", type=int, default=EVIDENCE_IMAGES,
                        help="the run's evidence_images parameter (0: the tool's default, every image)")
    parser.add_argument("--keep", help="keep each size's workspace here (ws-N), e.g. to time its report again")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a single size, in this process
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory(prefix="ray-scaling-") as scratch:
            result = measure(args.one, args.workers, args.batch_size, Path(args.keep or scratch).resolve(),
                             args.device, Path(args.data).resolve() if args.data else None, args.evidence_images)
            print(json.dumps(result), flush=True)
        return
    for n in (int(s) for s in args.sizes.split(",")):
        result = subprocess.run([sys.executable, "-m", "bench.ray_scaling", "--one", str(n), "--workers",
                                 str(args.workers), "--batch-size", str(args.batch_size), "--device",
                                 args.device, *(["--data", args.data] if args.data else []),
                                 *(["--keep", args.keep] if args.keep else []), "--evidence-images",
                                 str(args.evidence_images)], cwd=ROOT,
                                capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if result.returncode:
            sys.exit(f"size {n} failed:\n{result.stderr[-4000:]}")
        line = result.stdout.strip().splitlines()[-1]
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(line + "\n")


if __name__ == "__main__":
    main()
