"""CPU seconds of a second explainer's audit on the same model and sample, with the first audit's
interventions reused and recomputed (`analysis.evidence.intervention_cache`).

    python -m bench.demo_interventions --n 200 --workspace /tmp/bench-interventions

The demo's cage v1 audited with Grad-CAM, then with plain gradients twice: once reading the interventions
the Grad-CAM audit left, once with that cache removed. CPU time (this process), not wall: it holds on a
shared machine.
"""
from __future__ import annotations

import argparse
import resource
import shutil
import time


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    from analysis.runs.engine import execute_run
    from analysis.store.workspace import Workspace
    from analysis.demo.build import WEIGHTS_DIR, demo_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--workspace", default="/tmp/bench-interventions")
    args = parser.parse_args(argv)
    folder = WEIGHTS_DIR / "cage" / "v1"
    for reuse in (True, False):
        shutil.rmtree(args.workspace, ignore_errors=True)
        ws = Workspace(args.workspace)
        data = ws.register_dataset(demo_dataset("cage", ws.root / "demo-data", args.n))
        model = ws.register_model(folder / "model.pt2", folder / "model.json", name="cage", version="v1")
        execute_run(ws, ws.create_run(model, data, "gradcam", {}, n=args.n, seed=0, name="g"), progress=False)
        if not reuse:
            shutil.rmtree(ws.root / "cache" / "interventions")
        cpu, wall = cpu_seconds(), time.time()
        execute_run(ws, ws.create_run(model, data, "saliency", {}, n=args.n, seed=0, name="s"), progress=False)
        print(f"saliency audit after gradcam, interventions {'reused' if reuse else 'recomputed'}: "
              f"{cpu_seconds() - cpu:.1f} s CPU, {time.time() - wall:.1f} s wall", flush=True)


if __name__ == "__main__":
    main()
