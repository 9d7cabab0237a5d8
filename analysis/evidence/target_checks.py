"""The runners of the checks registry (`analysis.evidence.checks`) for the tasks that explain several targets per
image: the tagger (each tag) and the segmenter (each class). Each is a thin call of the module that computes
it, reading the run from the `EvidenceContext`; the per-target task's evidence asks the registry which apply.

The context's `options`: `max_images` (the interventions' sample cap, the second explainer's and faithfulness'
images), `threshold` (a tagger's decision threshold), `target` (a segmenter's pixels: "pred" or "label"),
`explainer_params` (the method's own parameters) and `layer` (the run's given layer, if any).
"""
from __future__ import annotations

from analysis.evidence.checks import EvidenceContext


def _source(ctx: EvidenceContext) -> dict:
    """A segmenter's `source` (the pixels its targets were taken from); nothing for a tagger."""
    return {"source": ctx.options["target"]} if ctx.subject.task == "segmentation" else {}


def run_tag_interventions(ctx: EvidenceContext) -> dict:
    from analysis.evidence.tag_audit import tag_interventions

    return {"interventions": tag_interventions(ctx.loaded, ctx.dataset, ctx.store, threshold=ctx.options["threshold"],
                                               seed=ctx.seed, batch_size=ctx.batch_size)}


def run_segment_interventions(ctx: EvidenceContext) -> dict:
    from analysis.evidence.segment_audit import segment_interventions

    return {"interventions": segment_interventions(ctx.loaded, ctx.dataset, ctx.store, seed=ctx.seed,
                                                   batch_size=ctx.batch_size)}


def run_sanity(ctx: EvidenceContext) -> dict:
    from analysis.evidence.target_sanity import target_sanity

    return {"sanity": target_sanity(ctx.loaded, ctx.dataset, ctx.store, ctx.method, ctx.layer_name,
                                    ctx.options["explainer_params"], task=ctx.subject.task, seed=ctx.seed)}


def run_second_explainer(ctx: EvidenceContext) -> dict:
    from analysis.evidence.target_second_explainer import target_second_explainer

    return {"second_explainer": target_second_explainer(
        ctx.loaded, ctx.dataset, ctx.store, ctx.method, ctx.options["regions"], task=ctx.subject.task, seed=ctx.seed,
        max_images=ctx.options["max_images"], layer_name=ctx.options.get("layer"), batch_size=ctx.batch_size,
        **_source(ctx))}


def run_faithfulness(ctx: EvidenceContext) -> dict:
    from analysis.evidence.target_faithfulness import target_faithfulness

    return {"faithfulness": target_faithfulness(ctx.loaded, ctx.dataset, ctx.store, ctx.method, task=ctx.subject.task,
                                                seed=ctx.seed, max_images=ctx.options["max_images"],
                                                batch_size=ctx.batch_size, **_source(ctx))}
