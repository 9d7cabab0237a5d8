"""`python -m bench.one_forward [--n 512]`: the main pass's compute with one forward per image (the logits
read from the explainer's own forward, `explainers.targets.PredictedClass`) against the two it ran before
(a no-grad forward for the logits, then the explainer's forward), on the same model and images, in one
process, alternating rounds (median of `--rounds`).

Model: the benchmark tiny_cnn at 64 px exported to .pt2 with its card, Grad-CAM at `block3`, batches of 32:
what `bench.e2e`'s "forward/backward" stage runs. The two paths must give the same predictions and maps.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> dict:
    from analysis.runs.tasks.classification import forward_and_explain
    from bench.e2e import make_model
    from explainers.loading.models import load_model
    from explainers.registry import make_explainer

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="one_forward")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_model(make_model(Path(tmp), ["a", "b"]), device=args.device)
    explainer = make_explainer("gradcam", loaded.module, layer=loaded.layer(loaded.target_layer_name()))
    images = torch.rand(args.n, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(args.device)
    labels = torch.zeros(args.n, dtype=torch.long)

    def main_pass(one_forward: bool):
        explainer.observes_clean_output = one_forward  # the instance's own setting: the class is untouched
        outputs = []
        for i in range(0, args.n, args.batch_size):
            outputs.append(forward_and_explain(images[i:i + args.batch_size], labels[i:i + args.batch_size],
                                               loaded, explainer, "pred"))
        if args.device != "cpu":
            torch.cuda.synchronize()
        return outputs

    seconds = {True: [], False: []}
    main_pass(True), main_pass(False)  # warm-up
    for _ in range(args.rounds):
        for one in (False, True):
            start = time.perf_counter()
            outputs = main_pass(one)
            seconds[one].append(time.perf_counter() - start)
    one, two = main_pass(True), main_pass(False)
    same_targets = all(torch.equal(a[1], b[1]) for a, b in zip(one, two))
    max_map_diff = max(float((a[2] - b[2]).abs().max()) for a, b in zip(one, two))
    max_logit_diff = max(float((a[0] - b[0]).abs().max()) for a, b in zip(one, two))
    result = {"n_images": args.n, "batch_size": args.batch_size, "threads": args.threads, "device": args.device,
              "model": "tiny_cnn 64px, gradcam at block3",
              "two_forwards_seconds": statistics.median(seconds[False]),
              "one_forward_seconds": statistics.median(seconds[True]),
              "speedup": statistics.median(seconds[False]) / statistics.median(seconds[True]),
              "same_targets": same_targets, "max_map_diff": max_map_diff, "max_logit_diff": max_logit_diff}
    out = Path(__file__).parent / "results" / f"{args.out}.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
