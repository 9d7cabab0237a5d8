"""`python -m bench.e2e [--n 500]`: the end-to-end efficiency of `saliency-audit run` (issue 15).

efficiency = wall of the *bare Grad-CAM pass* over the same images / wall of `saliency-audit run` (registration,
main pass, evidence, report). The bare pass is what a user would write in a dozen lines: decode each file,
resize to the card's size, normalise, one forward + backward to the layer per batch of 32, the CAM. Both run
in this process, interleaved (bare, ours, bare; the ratio uses the mean of the two bare passes), so machine
load drifting over the run affects both: the ratio is what to read, absolute seconds were taken under load.

Stages of ours are timed by wrapping the functions that make them (whatever thread they run on): setup
(register files, load model, validate), main pass (the rest of `_execute` before evidence), each evidence part
(interventions, image properties, folding the model for prediction, second explainer, sanity, faithfulness,
the rest: candidates, masks, summaries) and the report (`finish_run`). Then the same command again (the
catalog returns the finished run: the cache) and `report --format html` of the finished audit (seconds, MB).
`python -m bench.small_audit` is the same question for a small audit through a fresh CLI process.

`--register N`: registration alone, on N files: `sha256sum` over the same files (MB/s, the bound), the first
registration in a fresh workspace, and the second (the cache keyed by path, size and mtime).

Data: `sample_models.scenes.generate("cage", ...)` at `--image-size` px (upscaled to the model's `--size`).
Model: a random-weight torchvision `--model` (resnet18) state dict with a card, Grad-CAM at `layer4`.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import subprocess
import tempfile
import time
from pathlib import Path

import torch

STAGE_FUNCTIONS = {  # stage -> (module, attribute) whose wall time it is; nested ones are subtracted below
    "register": [("analysis.store.workspace", "Workspace.resolve_dataset"),
                 ("analysis.store.workspace", "Workspace.resolve_model")],
    "prepare": [("analysis.runs.tasks.classification", "ClassificationTask.prepare")],
    "evidence": [("analysis.runs.engine", "run_evidence")],
    "evidence: decode sample": [("analysis.evidence.stage", "load_subset")],
    "evidence: discovery": [("analysis.evidence.stage", "discovered_regions")],
    "evidence: interventions": [("analysis.evidence.stage", "run_trials")],
    "evidence: second explainer": [("analysis.evidence.stage", "second_explainer_lifts")],
    "evidence: sanity": [("analysis.evidence.stage", "model_randomisation")],
    "evidence: faithfulness": [("analysis.evidence.stage", "deletion_insertion")],
    "evidence: properties": [("analysis.evidence.stage", "property_evidence")],
    "evidence: fold model": [("analysis.evidence.stage", "folded_for_prediction")],
    "report": [("analysis.runs.engine", "finish_run")],
    "execute": [("analysis.runs.engine", "execute_run")],
}


@contextlib.contextmanager
def stage_timers():
    """Wrap every STAGE_FUNCTIONS entry with a timer; yields {stage: seconds}."""
    seconds = {stage: 0.0 for stage in STAGE_FUNCTIONS}
    restore = []
    for stage, targets in STAGE_FUNCTIONS.items():
        for module_name, attribute in targets:
            owner = importlib.import_module(module_name)
            *path, name = attribute.split(".")
            for part in path:
                owner = getattr(owner, part)
            real = getattr(owner, name, None)
            if real is None:
                continue

            def timed(*args, _real=real, _stage=stage, **kwargs):
                start = time.perf_counter()
                try:
                    return _real(*args, **kwargs)
                finally:
                    seconds[_stage] += time.perf_counter() - start
            setattr(owner, name, timed)
            restore.append((owner, name, real))
    try:
        yield seconds
    finally:
        for owner, name, real in reversed(restore):
            setattr(owner, name, real)


def make_data(folder: Path, n: int, size: int) -> Path:
    from sample_models.scenes import generate

    return generate("cage", folder, n=n, size=size)


def make_model(folder: Path, classes: list[str], arch: str, size: int) -> Path:
    import torchvision

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = torchvision.models.get_model(arch, weights=None, num_classes=len(classes))
    path = folder / "model.pt"
    torch.save(net.state_dict(), path)
    (folder / "model.json").write_text(json.dumps({
        "task": "classification", "classes": classes, "input_size": [size, size], "architecture": arch,
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "target_layer": "layer4"}))
    return path


def bare_pass(data: Path, model_path: Path, device: str, batch_size: int = 32, limit: int | None = None) -> float:
    """Seconds of the dozen-line Grad-CAM: decode, resize, normalise, forward + backward to layer4, CAM."""
    import numpy as np
    import torchvision
    from PIL import Image

    card = json.loads(model_path.with_name("model.json").read_text())
    net = torchvision.models.get_model(card["architecture"], weights=None, num_classes=len(card["classes"]))
    net.load_state_dict(torch.load(model_path, weights_only=True))
    net.eval().to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    mean = torch.tensor(card["mean"], device=device)[:, None, None]
    std = torch.tensor(card["std"], device=device)[:, None, None]
    size = tuple(card["input_size"])
    kept = {}
    # frozen weights, so the graph starts at the layer: the backward stops there, as ours does
    net.layer4.register_forward_hook(lambda _m, _i, out: kept.__setitem__("a", out.requires_grad_(True)))
    files = [data / line.split(",")[0] for line in (data / "manifest.csv").read_text().splitlines()[1:]][:limit]
    start = time.perf_counter()
    for i in range(0, len(files), batch_size):
        arrays = [np.asarray(Image.open(f).convert("RGB").resize(size[::-1], Image.BILINEAR), np.float32) / 255
                  for f in files[i:i + batch_size]]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(device)
        x = (x - mean) / std
        with torch.enable_grad():
            logits = net(x)
            activation = kept["a"]
            score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
            (grad,) = torch.autograd.grad(score, activation)
        cam = torch.relu((grad.mean((2, 3), keepdim=True) * activation).sum(1, keepdim=True))
        torch.nn.functional.interpolate(cam, size=size, mode="bilinear", align_corners=False).cpu()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def ours(data: Path, model_path: Path, workspace: Path, n: int, device: str) -> tuple[float, dict, list[str]]:
    from analysis.cli import main as cli

    command = ["run", "--model", str(model_path), "--data", str(data), "--method", "gradcam", "--n", str(n),
               "--workspace", str(workspace), "--no-progress", "--device", device]
    with stage_timers() as seconds:
        start = time.perf_counter()
        cli(command)
        wall = time.perf_counter() - start
    stages = {"register files": seconds["register"], "load model, validate": seconds["prepare"],
              "main pass": seconds["execute"] - seconds["prepare"] - seconds["evidence"] - seconds["report"],
              **{k: v for k, v in seconds.items() if k.startswith("evidence")}, "report": seconds["report"]}
    parts = sum(v for k, v in seconds.items() if k.startswith("evidence: "))
    stages["evidence: rest (candidates, masks, summaries)"] = max(0.0, seconds["evidence"] - parts)
    stages["other (CLI, imports)"] = max(0.0, wall - seconds["register"] - seconds["execute"])
    return wall, stages, command


def evidence_sample(workspace: Path) -> dict:
    """What the evidence stage sized itself to: the sequential sample's images used, each region's
    decision and images, the faithfulness steps (the forwards the evidence stage paid for)."""
    from analysis.store.workspace import Workspace

    ws = Workspace(workspace)
    evidence = ws.store(ws.runs()[0]["id"]).evidence()
    ws.close()
    return {"n_used": (evidence.get("sequential") or {}).get("n_used"),
            "regions": {name: {"decision": r["sequential"]["decision"], "n": r["sequential"]["n"]}
                        for name, r in (evidence.get("interventions") or {}).items()},
            "faithfulness": {k: (evidence.get("faithfulness") or {}).get(k) for k in ("n", "steps", "n_scored")},
            "second_explainer_n": (evidence.get("second_explainer") or {}).get("n")}


def e2e(args) -> dict:
    from analysis.cli import main as cli

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_data(tmp / "data", args.n, args.image_size)
        classes = sorted({line.split(",")[1] for line in (data / "manifest.csv").read_text().splitlines()[1:]})
        model = make_model(tmp / "model", classes, args.model, args.size)
        bare_pass(data, model, args.device, limit=64)  # warm-up: page cache, allocator, kernels
        bare = [bare_pass(data, model, args.device)]
        wall, stages, command = ours(data, model, tmp / "ws", args.n, args.device)
        sample = evidence_sample(tmp / "ws")
        html = report_html_seconds(tmp / "ws", tmp / "report.html")
        bare.append(bare_pass(data, model, args.device))
        start = time.perf_counter()
        cli(command)  # the same identity: the catalog returns the finished run, nothing is recomputed
        cached = time.perf_counter() - start
    bare_mean = sum(bare) / len(bare)
    return {"n_images": args.n, "model": args.model, "size": args.size, "image_size": args.image_size,
            "device": args.device, "threads": args.threads, "bare_pass_seconds": bare,
            "ours_wall_seconds": wall, "efficiency": bare_mean / wall, "stages_seconds": stages,
            "second_run_seconds": cached, "evidence_sample": sample, "html_report": html}


def report_html_seconds(workspace: Path, out: Path) -> dict:
    """`report RUN --format html --out FILE` on the finished audit, in this process (imports warm): seconds, MB."""
    from analysis.cli import main as cli
    from analysis.store.workspace import Workspace

    ws = Workspace(workspace)
    run_id = ws.runs()[0]["id"]
    ws.close()
    start = time.perf_counter()
    cli(["report", run_id, "--format", "html", "--out", str(out), "--workspace", str(workspace)])
    return {"seconds": time.perf_counter() - start, "megabytes": out.stat().st_size / 1e6}


def registration(args) -> dict:
    from analysis.store.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_data(tmp / "data", args.register, args.image_size)
        files = sorted(str(p) for p in data.rglob("*") if p.is_file())
        megabytes = sum(Path(f).stat().st_size for f in files) / 1e6
        start = time.perf_counter()
        subprocess.run(["xargs", "-0", "sha256sum"], input="\0".join(files).encode(), check=True,
                       stdout=subprocess.DEVNULL)
        sha256sum = time.perf_counter() - start
        workspace = Workspace(tmp / "ws")
        start = time.perf_counter()
        workspace.register_dataset(data)
        first = time.perf_counter() - start
        start = time.perf_counter()
        workspace.register_dataset(data)
        second = time.perf_counter() - start
    return {"n_files": len(files), "megabytes": megabytes, "sha256sum_seconds": sha256sum,
            "sha256sum_mb_per_s": megabytes / sha256sum, "first_seconds": first,
            "first_mb_per_s": megabytes / first, "second_seconds": second}


def print_table(result: dict) -> None:
    if "efficiency" in result:
        print(f"\n{result['n_images']} images, {result['model']} at {result['size']} px, {result['device']}: "
              f"bare pass {', '.join(f'{s:.1f}' for s in result['bare_pass_seconds'])} s, ours "
              f"{result['ours_wall_seconds']:.1f} s, efficiency {result['efficiency']:.2f}")
        print("| stage | seconds | share |\n|---|---|---|")
        for stage, seconds in result["stages_seconds"].items():
            print(f"| {stage} | {seconds:.1f} | {seconds / result['ours_wall_seconds']:.0%} |")
        print(f"| same command again (cache) | {result['second_run_seconds']:.1f} | |")
        print(f"| `report --format html` (not in the wall) | {result['html_report']['seconds']:.2f} | "
              f"{result['html_report']['megabytes']:.3f} MB |")
        stages = result["stages_seconds"]
        print(f"evidence / main pass (the audit's explainer pass) = {stages['evidence'] / stages['main pass']:.2f}; "
              f"interventions / main pass = {stages['evidence: interventions'] / stages['main pass']:.2f}")
        print(f"evidence sample: {json.dumps(result['evidence_sample'])}")
    if "n_files" in result:
        print(f"\nregistration of {result['n_files']} files ({result['megabytes']:.0f} MB): sha256sum "
              f"{result['sha256sum_seconds']:.2f} s ({result['sha256sum_mb_per_s']:.0f} MB/s), first "
              f"{result['first_seconds']:.2f} s ({result['first_mb_per_s']:.0f} MB/s), second "
              f"{result['second_seconds']:.2f} s")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="images in the audit (0: skip the e2e part)")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=224, help="the model's input size")
    parser.add_argument("--image-size", type=int, default=64, help="side of the generated image files")
    parser.add_argument("--register", type=int, default=0, help="also time registering this many files")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="e2e", help="result basename in bench/results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {}
    if args.n:
        result.update(e2e(args))
    if args.register:
        result.update(registration(args))
    out = Path(__file__).parent / "results" / f"{args.out}.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print_table(result)
    return result


if __name__ == "__main__":
    main()
