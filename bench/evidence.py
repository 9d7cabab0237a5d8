"""`python -m bench.evidence [--n 1000] [--rounds 2] [--model resnet18|cage-v1]`: the evidence stage against the
explainer pass, one process.

The issue's budget: the evidence stage (fill and swap interventions with their controls on the sequential
sample, discovered regions, second explainer, sanity, faithfulness) costs at most as much as the run's
explainer pass (Grad-CAM) on 1,000 images. Both are timed on the same loaded model, interleaved over
`--rounds` rounds after a warm-up, median reported: explainer = `explain` over the n images in batches of
32 (images decoded beforehand, as the runner's prefetch thread does); evidence = `compute_evidence` on the
finished run's store (its default cap, 400 images, 100 per look). Printed: evidence / explainer, and
interventions / explainer (the part the issue added: swaps and the sequential sample). With `--properties
both` (the default) the evidence runs twice per round, with the image-property screen and interventions
(`analysis.evidence.property_stage`, on in every classifier audit) and without (`properties=false`), all three
interleaved: the ratio with properties on and off, and the property part's own seconds.

Models: `resnet18` (default): `bench.e2e`'s random-weight torchvision resnet18 at 224 px on the cage
sample, where forwards are what costs. `cage-v1`: the committed shortcut model (a tiny CNN at 64 px): its
Grad-CAM pass over 1,000 images takes ~0.1 s, less than decoding the evidence sample, so its ratio measures
fixed costs, not forwards. Writes bench/results/evidence.json (or `--out` NAME.json).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where the model, explainer and evidence run")
    parser.add_argument("--model", choices=("resnet18", "cage-v1"), default="resnet18")
    parser.add_argument("--properties", choices=("both", "on", "off"), default="both",
                        help="evidence with the image-property stage, without it, or both (interleaved)")
    parser.add_argument("--out", default="evidence", help="results file name under bench/results (no suffix)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from analysis.evidence.stage import compute_evidence, load_subset
    from bench.e2e import stage_timers
    from analysis.runs.engine import execute_run
    from analysis.runs.tasks import task_of_run
    from analysis.store.workspace import Workspace
    from explainers.registry import make_explainer
    from explainers.targets import ClassTarget
    from sample_models.scenes import generate
    from sample_models.train import WEIGHTS_DIR

    root = Path(tempfile.mkdtemp(prefix="bench-evidence-"))
    ws = Workspace(root / "ws")
    data_folder = generate("cage", root / "cage", n=args.n, size=64, leak=0.9, seed=7)
    if args.model == "resnet18":
        from bench.e2e import make_model

        classes = sorted({line.split(",")[1] for line in (data_folder / "manifest.csv").read_text().splitlines()[1:]})
        model_path = make_model(root / "model", classes, "resnet18", 224)
        model_id = ws.register_model(model_path, model_path.with_name("model.json"))
    else:
        folder = WEIGHTS_DIR / "cage" / "v1"
        model_id = ws.register_model(folder / "model.pt2", folder / "model.json")
    run_id = ws.create_run(model_id, ws.register_dataset(data_folder), "gradcam", {}, n=args.n, seed=0)
    execute_run(ws, run_id, device=args.device, progress=False)
    run = ws.run(run_id)
    prepared = task_of_run(ws, run).prepare(ws, run, args.device)
    loaded, dataset, layer_name = prepared.loaded, prepared.dataset, prepared.target_layer
    store = ws.store(run_id)
    batch = load_subset(loaded, dataset, store.images())
    targets = torch.as_tensor(batch.images_frame["target_idx"].to_numpy().copy(), dtype=torch.long)
    inputs = batch.inputs.pin_memory() if args.device.startswith("cuda") else batch.inputs
    explainer = make_explainer("gradcam", loaded.module, layer=loaded.layer(loaded.target_layer_name()))

    def explain_pass():
        for start in range(0, len(inputs), 32):
            x = inputs[start:start + 32].to(args.device, non_blocking=True)
            explainer.explain(x, ClassTarget(targets[start:start + 32])).maps.cpu()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    import analysis.evidence.stage as stage_module

    real_property_evidence = stage_module.property_evidence

    def evidence_pass(properties: bool):
        property_s = []

        def timed_property_evidence(*a, **k):  # the property stage's own seconds (bench.e2e has no timer for it)
            start = time.perf_counter()
            try:
                return real_property_evidence(*a, **k)
            finally:
                property_s.append(time.perf_counter() - start)

        stage_module.property_evidence = timed_property_evidence
        try:
            with stage_timers() as seconds:
                evidence = compute_evidence(loaded, dataset, store, method="gradcam", layer_name=layer_name, seed=0,
                                            properties=properties)
        finally:
            stage_module.property_evidence = real_property_evidence
        parts.append({k: round(v, 3) for k, v in seconds.items() if k.startswith("evidence: ")}
                     | ({"evidence: image properties": round(sum(property_s), 3)} if property_s else {}))
        return evidence

    parts: list[dict] = []

    explain_pass()  # warm-up
    names = {"both": ["explainer", "evidence", "evidence, properties off"], "on": ["explainer", "evidence"],
             "off": ["explainer", "evidence, properties off"]}[args.properties]
    times = {name: [] for name in names}
    evidence = None
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # each first in turn: load drifts
            start = time.perf_counter()
            if name == "explainer":
                explain_pass()
            else:
                evidence = evidence_pass(properties=name == "evidence")
            times[name].append(time.perf_counter() - start)
    explain_s = statistics.median(times["explainer"])
    medians = {name: statistics.median(t) for name, t in times.items()}
    evidence_s = medians.get("evidence", medians.get("evidence, properties off"))
    interventions_s = statistics.median(p.get("evidence: interventions", 0.0) for p in parts)
    property_parts = [p["evidence: image properties"] for p in parts if "evidence: image properties" in p]
    result = {"n_images": len(batch.inputs), "model": args.model, "explainer_s": explain_s,
              "evidence_s": evidence_s, "interventions_s": interventions_s,
              "ratio_evidence_over_explainer": evidence_s / explain_s,
              "ratio_interventions_over_explainer": interventions_s / explain_s, "rounds": times,
              "evidence_s_by_properties": {"on": medians.get("evidence"),
                                           "off": medians.get("evidence, properties off")},
              "property_stage_s": statistics.median(property_parts) if property_parts else None,
              "load_average": os.getloadavg(),
              "evidence_parts_s": parts,
              "sequential": evidence["sequential"],
              "regions": {k: v["sequential"]["n"] for k, v in evidence["interventions"].items()}}
    out = Path(__file__).resolve().parent / "results" / f"{args.out}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"explainer pass (gradcam, {len(batch.inputs)} images): {explain_s:.2f} s; evidence stage: "
          f"{evidence_s:.2f} s; ratio evidence / explainer = {evidence_s / explain_s:.2f}, interventions / "
          f"explainer = {interventions_s / explain_s:.2f} "
          f"(images used per region: {result['regions']})")
    for name in names[1:]:
        print(f"{name}: {medians[name]:.2f} s, ratio to the explainer pass {medians[name] / explain_s:.2f}")
    if property_parts:
        print(f"image-property stage (screen + interventions): {result['property_stage_s']:.2f} s, "
              f"{result['property_stage_s'] / explain_s:.2f} of the explainer pass")
    print(f"load average (1, 5, 15 min) at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("evidence parts, seconds per round: " + "; ".join(
        ", ".join(f"{k[len('evidence: '):]} {v:.2f}" for k, v in round_parts.items()) for round_parts in parts))
    return result


if __name__ == "__main__":
    main()
