"""`python -m bench.small_audit [--n 200] [--rounds 3] [--parallel 2]`: a small audit as a user runs it (issue 29).

Goal: a 200-image audit of a small CNN in <= 3x its explainer pass + 2 s. The audit is `saliency-audit run` in a
fresh process (start-up, registration, main pass, evidence, report: the CLI wall), on the sample `cage` scenes
at 64 px with the shipped `cage v1` TinyCNN and Grad-CAM. The explainer pass is the same explainer in this
process (imports warm): decode each file, `to_input`, Grad-CAM on batches of 32 through the loaded model.
Rounds interleave: pass, audit, pass (the ratio uses the mean of the passes around it), each audit in a new
workspace (else the catalog returns the finished run). The stages of the audit come from its stderr, each line
stamped on arrival: up to `target layer:` (start-up, registration, loading the model), to `stage: evidence`
(main pass), each `stage: evidence: <part>`, `stage: report`, and the exit (report, teardown).

`--baseline SRC`: another source tree of the project (`git archive <commit> | tar -x -C SRC`): its audit runs in
the same rounds (pass, audit, baseline audit, pass), so before and after share the load.

`--parallel 2`: the same audit twice at once (two processes, two workspaces) on the machine's cores, after the
single rounds: how each stage scales when two audits share the CPUs. Load average printed beside every row.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "sample_models" / "weights" / "cage" / "v1" / "model.pt"


def explainer_pass(data: Path, model: Path, batch_size: int = 32) -> float:
    """Seconds of decode + to_input + Grad-CAM over the data's images (the audit's own explainer, no store)."""
    import torch
    from PIL import Image

    from explainers.loading.models import load_model
    from explainers.preprocess import to_input
    from explainers.registry import make_explainer
    from explainers.targets import PredictedClass

    loaded = load_model(model)
    explainer = make_explainer("gradcam", loaded.module, layer=loaded.layer(loaded.target_layer_name()))
    files = [data / line.split(",")[0] for line in (data / "manifest.csv").read_text().splitlines()[1:]]
    start = time.perf_counter()
    for i in range(0, len(files), batch_size):
        inputs = torch.stack([to_input(Image.open(f), loaded.card) for f in files[i:i + batch_size]])
        explainer.explain(inputs, PredictedClass()).maps.cpu()
    return time.perf_counter() - start


def audit(data: Path, model: Path, workspace: Path, n: int, source: Path = ROOT) -> dict:
    """CLI wall and stage seconds of one `saliency-audit run` in a fresh process, from the tree `source`."""
    command = [sys.executable, "-m", "analysis.cli", "run", "--model", str(model), "--data", str(data),
               "--method", "gradcam", "--n", str(n), "--workspace", str(workspace)]
    marks = []
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=source, env={**os.environ, "PYTHONPATH": str(source)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        for piece in line.split("\r"):
            if piece.startswith(("target layer:", "stage:")):
                name = "target layer" if piece.startswith("target layer") else piece[len("stage: "):].split(" (")[0].strip()
                marks.append((name.split(",")[0], time.perf_counter() - start))
    proc.wait()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"audit exited {proc.returncode}")
    return {"wall": wall, "stages": stage_seconds(marks, wall)}


def stage_seconds(marks: list[tuple[str, float]], wall: float) -> dict[str, float]:
    """{stage: seconds} from the (line, seconds since start) marks of an audit's stderr: each stage lasts until
    the next mark; before `target layer` is start-up + registration + loading, the report runs to the exit."""
    stages, previous, label = {}, 0.0, "start-up, registration, load model"
    for name, at in marks + [("exit", wall)]:
        stages[label] = stages.get(label, 0.0) + at - previous
        previous = at
        label = "main pass" if name == "target layer" else name
    return stages


def startup_seconds() -> float:
    """A CLI call that does nothing but start: `saliency-audit --help`."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "analysis.cli", "--help"], cwd=ROOT, check=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=2, help="audits at once after the single rounds (0: skip)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baseline", type=Path, help="another source tree of the project, its audit interleaved")
    parser.add_argument("--out", default="small-audit")
    args = parser.parse_args(argv)
    import torch

    from sample_models.scenes import generate

    torch.set_num_threads(args.threads)
    result = {"n": args.n, "model": "cage v1 (TinyCNN, 64 px)", "rounds": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = generate("cage", tmp / "data", n=args.n, size=64)
        explainer_pass(data, MODEL)  # warm-up: page cache, kernels
        for k in range(args.rounds):
            before = explainer_pass(data, MODEL)
            load = os.getloadavg()[0]
            run = audit(data, MODEL, tmp / f"ws{k}", args.n)
            base = audit(data, MODEL, tmp / f"base{k}", args.n, args.baseline.resolve()) if args.baseline else None
            after = explainer_pass(data, MODEL)
            bare = (before + after) / 2
            row = {"explainer_pass": [before, after], "cli_wall": run["wall"], "stages": run["stages"],
                   "budget_3x_plus_2": 3 * bare + 2, "ratio": run["wall"] / bare,
                   "startup": startup_seconds(), "load": [load, os.getloadavg()[0]]}
            if base is not None:
                row["baseline"] = {"cli_wall": base["wall"], "stages": base["stages"], "ratio": base["wall"] / bare}
                print(f"round {k} baseline: audit {base['wall']:.2f} s: "
                      + ", ".join(f"{s} {v:.2f}" for s, v in base["stages"].items()), flush=True)
            result["rounds"].append(row)
            print(f"round {k}: pass {before:.2f}/{after:.2f} s, audit {run['wall']:.2f} s (budget "
                  f"{row['budget_3x_plus_2']:.2f} s), start-up {row['startup']:.2f} s, load {row['load']}: "
                  + ", ".join(f"{s} {v:.2f}" for s, v in run["stages"].items()), flush=True)
        if args.parallel:
            out, threads = [None] * args.parallel, []
            load = os.getloadavg()[0]
            for j in range(args.parallel):
                def one(j=j):
                    out[j] = audit(data, MODEL, tmp / f"par{j}", args.n)
                threads.append(threading.Thread(target=one))
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            result["parallel"] = {"audits": out, "load": [load, os.getloadavg()[0]]}
            print(f"{args.parallel} at once, load {result['parallel']['load']}: " + "; ".join(
                f"audit {r['wall']:.2f} s: " + ", ".join(f"{s} {v:.2f}" for s, v in r["stages"].items())
                for r in out), flush=True)
    walls = [r["cli_wall"] for r in result["rounds"]]
    passes = [statistics.mean(r["explainer_pass"]) for r in result["rounds"]]
    result["median"] = {"cli_wall": statistics.median(walls), "explainer_pass": statistics.median(passes),
                        "ratio": statistics.median(r["ratio"] for r in result["rounds"]),
                        "stages": {s: statistics.median(r["stages"].get(s, 0.0) for r in result["rounds"])
                                   for s in result["rounds"][0]["stages"]}}
    if args.baseline:
        result["median"]["baseline"] = {
            "cli_wall": statistics.median(r["baseline"]["cli_wall"] for r in result["rounds"]),
            "ratio": statistics.median(r["baseline"]["ratio"] for r in result["rounds"]),
            "stages": {s: statistics.median(r["baseline"]["stages"].get(s, 0.0) for r in result["rounds"])
                       for s in result["rounds"][0]["baseline"]["stages"]}}
    m = result["median"]
    print(f"median: audit {m['cli_wall']:.2f} s, explainer pass {m['explainer_pass']:.2f} s, budget "
          f"{3 * m['explainer_pass'] + 2:.2f} s, ratio {m['ratio']:.1f}")
    (ROOT / "bench" / "results" / f"{args.out}.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
