"""`python -m bench.e2e [--n 2000]`: `saliency-audit run` with Grad-CAM end to end, time split by stage, and
the run cache (the same command again).

The run is profiled with cProfile, which sees only the main thread. Decoding runs in the runner's prefetch
thread and shard writing (parquet + npz + fsync) in its writer thread, so the main thread's waits on them
(`Future.result`; the writer's is `ShardWriter.finish` less the catalog insert it makes) are the decoding and
writing that did NOT overlap with compute. Their totals are timed separately: decoding by the same `_decode`
calls again on one thread, writing by a timer around `RunStore.write_shard` during the run. Stages on the main
thread: forward/backward (`explain` + the logits forward), region shares (`_region_rows`), record shard
(catalog). A runner without the writer thread shows its writes under "write shard (main thread)".
Data: `sample_models.scenes.generate("cage", ...)` when installed, else random 64x64 scenes with three mask
regions. Model: the benchmark tiny_cnn, exported to .pt2 with a card.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.models import build

STAGES = {  # stage -> functions (file suffix, name) whose cumulative main-thread time it is
    "setup (register files, load model, validate)": [("workspace.py", "resolve_model"),
                                                     ("workspace.py", "resolve_dataset"), ("runner.py", "prepare")],
    "future waits": [("_base.py", "result")],
    "explain batch": [("runner.py", "_explain_batch")],
    "region shares": [("runner.py", "_region_rows")],
    "write shard (main thread)": [("store.py", "write_shard")],
    "writer finish": [("shard_writer.py", "finish")],
    "record shard (catalog)": [("workspace.py", "record_shard")],
    "evidence (interventions, 2nd explainer, sanity, faithfulness)": [("runner.py", "evidence_stage")],
    "report (finish_run)": [("runner.py", "finish_run")],
}


def make_data(folder: Path, n: int) -> Path:
    try:
        from sample_models.scenes import generate

        return generate("cage", folder, n=n, size=64)
    except ImportError:
        rng = np.random.default_rng(0)
        (folder / "images").mkdir(parents=True), (folder / "masks").mkdir()
        lines = ["image,label,mask"]
        for i in range(n):
            mask = np.zeros((64, 64), np.uint8)
            top, left = rng.integers(0, 40, size=2)
            mask[top:top + 24, left:left + 24], mask[:, :8] = 1, 2
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"images/{i:05d}.png")
            Image.fromarray(mask).save(folder / f"masks/{i:05d}.png")
            lines.append(f"images/{i:05d}.png,{['cat', 'dog'][i % 2]},masks/{i:05d}.png")
        (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
        (folder / "regions.json").write_text(json.dumps({"regions": {
            "0": {"name": "background"}, "1": {"name": "animal", "role": "core"}, "2": {"name": "cage"}}}))
        return folder


def make_model(folder: Path, classes: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model = build("tiny_cnn")
    example = torch.rand(2, 3, 64, 64)
    path = folder / "model.pt2"
    torch.export.save(torch.export.export(model.net, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},)), path)
    (folder / "model.json").write_text(json.dumps({
        "task": "classification", "classes": classes, "input_size": [64, 64], "mean": [0.5] * 3,
        "std": [0.25] * 3, "target_layer": model.layer_name}))
    return path


def stage_seconds(profile: cProfile.Profile) -> dict[str, float]:
    stats = pstats.Stats(profile).stats
    out = {}
    for stage, functions in STAGES.items():
        total = 0.0
        for (filename, _line, name), (_cc, _nc, _tt, cumulative, callers) in stats.items():
            if any(filename.endswith(suffix) and name == wanted for suffix, wanted in functions):
                total += cumulative
        out[stage] = total
    # forward + backward + pooling the maps: the batch's work other than region shares
    out["forward/backward"] = out.pop("explain batch") - out["region shares"]
    finish = out.pop("writer finish")
    out["write wait (not overlapped)"] = max(0.0, finish - out["record shard (catalog)"]) if finish else 0.0
    out["decode wait (not overlapped)"] = max(0.0, out.pop("future waits") - out["write wait (not overlapped)"])
    return out


class WriteTimer:
    """Total seconds spent in `RunStore.write_shard`, on whichever thread it runs."""

    def __init__(self):
        from analysis.store.run_store import RunStore

        self.seconds, self.calls, self._real = 0.0, 0, RunStore.write_shard
        timer = self

        def timed(store, *args, **kwargs):
            start = time.perf_counter()
            try:
                return timer._real(store, *args, **kwargs)
            finally:
                timer.seconds += time.perf_counter() - start
                timer.calls += 1
        RunStore.write_shard = timed

    def restore(self) -> None:
        from analysis.store.run_store import RunStore

        RunStore.write_shard = self._real


def decode_seconds(workspace_root: Path, run_id: str) -> float:
    from analysis.runs.runner import _decode
    from analysis.store.workspace import Workspace
    from explainers.models import load_model

    workspace = Workspace(workspace_root)
    run = workspace.run(run_id)
    dataset = workspace.open_dataset(run["dataset_id"])
    card = load_model(workspace.model(run["model_id"])["abspath"]).card
    start = time.perf_counter()
    for i in range(0, len(dataset.items), 32):
        _decode(dataset, card, dataset.items[i:i + 32])
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    from analysis.cli import main as cli

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="e2e", help="result basename in bench/results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_data(tmp / "data", args.n)
        classes = sorted({line.split(",")[1] for line in (data / "manifest.csv").read_text().splitlines()[1:]})
        model = make_model(tmp / "model", classes)
        command = ["run", "--model", str(model), "--data", str(data), "--method", "gradcam", "--n", str(args.n),
                   "--workspace", str(tmp / "ws"), "--no-progress"]
        profile = cProfile.Profile()
        writes = WriteTimer()
        start = time.perf_counter()
        profile.enable()
        try:
            cli(command)
        finally:
            profile.disable()
            writes.restore()
        wall = time.perf_counter() - start
        stages = stage_seconds(profile)
        from analysis.store.workspace import Workspace

        workspace = Workspace(tmp / "ws")
        (run,) = workspace.runs()
        shards = workspace.shards(run["id"])
        start = time.perf_counter()
        cli(command)  # the same identity: the catalog returns the finished run, nothing is recomputed
        cached = time.perf_counter() - start
        decode_total = decode_seconds(tmp / "ws", run["id"])
        result = {
            "n_images": args.n, "threads": args.threads, "wall_seconds": wall, "images_per_s": args.n / wall,
            "stages_main_thread_seconds": stages, "decode_total_seconds_single_thread": decode_total,
            "decode_overlapped_seconds": max(0.0, decode_total - stages["decode wait (not overlapped)"]),
            "write_total_seconds": writes.seconds, "shards_written": writes.calls,
            "write_overlapped_seconds": max(0.0, writes.seconds - stages["write shard (main thread)"]
                                            - stages["write wait (not overlapped)"]),
            "cache": {"second_run_seconds": cached, "same_run_id": len(workspace.runs()) == 1,
                      "shards_unchanged": workspace.shards(run["id"]) == shards, "n_done": run["n_done"]},
        }
    out = Path(__file__).parent / "results" / f"{args.out}.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
