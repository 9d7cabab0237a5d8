"""One self-contained HTML file for a run's report (and optionally a version comparison).

Self-contained so it can be attached to a ticket or mailed: the charts are inline SVG, overlays are base64
PNGs, no script and no external requests. Every name in it (regions, classes, subgroups, runs, image
paths) comes from a user's upload, so every one goes through `html.escape`, in tables and in chart labels.
"""
from __future__ import annotations

import base64
import io
import json
from html import escape

import numpy as np

from analysis.report.comparison_records import Comparison, read_comparison
from analysis.report.records import NotJudged, RegionStat, Verdict, lower, upper
from analysis.report.sections import (Cluster, Faithfulness, MultipleTesting, ReportView, SanityCheck,
                                      SequentialDesign, read_report)
from analysis.report.svg_charts import region_bars, version_lines
from analysis.runs.tasks import view_of

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}
th{background:#f3f3f3}.verdict-flagged{color:#b00020}.verdict-clear{color:#1b7f3b}.verdict-cannot_judge{color:#c76b00}
.high{color:#b00020;font-weight:600}.medium{color:#c76b00;font-weight:600}.low{color:#555}
.muted{color:#777;font-size:.85rem}figure{display:inline-block;margin:.5rem;text-align:center}
figure img{width:160px;height:160px;image-rendering:pixelated;border:1px solid #ccc}
"""


def render_html(report: dict, *, comparison: dict | None = None, exemplars: list[dict] | None = None,
                title: str | None = None) -> str:
    """HTML for a report dict (docs/FORMATS.md keys; `subgroups`, `clusters`, `faithfulness` used when present),
    read once through the typed records (`analysis.report.sections.read_report`).

    `exemplars`: [{"image_id", "caption", "image": (H, W, 3) array in [0, 1] or uint8, "map": (h, w)}].
    """
    charts = _Charts()
    view = read_report(report)
    name = title or f"Saliency audit: {view.meta.title}"
    parts = [f"<h1>{escape(str(name))}</h1>", _run_summary(view)]
    if view.verdict is not None:
        parts.append(_verdict_section(view.verdict))
    flags, sections = VIEW_SECTIONS[task_view] if (task_view := view_of(view.meta.task)) in VIEW_SECTIONS else (
        _flags_table, None)
    parts.append("<h2>Shortcut flags</h2>" + _findings(view.findings) + flags(view))
    if sections is not None:
        parts.append(sections(view))
    if sections is not _interventions_section:  # the classifier's section holds its power lines itself
        parts.append(_power(view) + (f"<p class='muted'>{escape(view.multiple_testing.sentence() or '')}</p>"
                                     if view.multiple_testing else ""))
    if view.labels:
        parts.append("<h2>Your labels</h2><ul>" + "".join(
            f"<li>{escape(label.text)}{': ' + escape(label.note) if label.note else ''}</li>"
            for label in view.labels) + "</ul>")
    if view.subgroups:
        parts.append("<h2>Subgroup findings</h2><ul>" + "".join(
            f"<li>{escape(text)}</li>" for text in view.subgroups) + "</ul>")
    parts.append("<h2>Where the saliency goes</h2>" + charts.region_mass(view.overall_regions()))
    if view.artifacts:  # register-like tokens (`analysis.stats.artifacts`)
        parts.append(f"<p class='artifacts'>{escape(view.artifacts)}. A region's attention must hold "
                     "without them to count toward a flag.</p>")
    parts.append(_regions_table(view.regions))
    parts.append("<h2>Explainer checks</h2>" + _sanity_table(view.model_randomization,
                                                       any(n.key == "sanity" for n in view.not_judged))
                 + _faithfulness(view.faithfulness) + _not_judged(view.not_judged))
    if view.clusters:
        parts.append("<h2>Attention strategies (SpRAy clusters)</h2>" + _clusters_table(view.clusters))
    if exemplars:
        parts.append("<h2>Exemplars</h2>" + "".join(_figure(e) for e in exemplars))
    if comparison:
        parts.append("<h2>Version comparison</h2>" + render_comparison(comparison, charts))
    if view.skipped:
        parts.append(f"<h2>Skipped images ({len(view.skipped)})</h2>" + _table(
            ["image", "reason"], [[s.image, s.reason] for s in view.skipped[:200]]))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(str(name))}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")


def render_comparison_page(comparison: dict, title: str = "Saliency audit: version comparison") -> str:
    """A self-contained HTML document for `saliency-audit compare --format html`."""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>{render_comparison(comparison)}"
            "</body></html>")


def render_comparison(comparison: dict | Comparison, charts: "_Charts | None" = None) -> str:
    charts = charts or _Charts()
    typed = read_comparison(comparison)
    out = [f"<p>{escape(typed.summary)}</p>", charts.comparison(typed)]
    if (task_view := view_of(typed.task)) in COMPARISON_SECTIONS:
        return "".join(out) + COMPARISON_SECTIONS[task_view](typed)
    if typed.target_key is not None:  # a tagger's or segmenter's comparison (it names no task): per target
        return "".join(out) + _target_comparison(typed)
    rows = [[series.label, series.role or "", f"{change.from_run} → {change.to_run}", _pct(change.diff),
             _ci(change.diff_ci, pct=True), _p(change.p_value)]
            for series in typed.regions for change in series.changes]
    out.append(_table(["region", "role", "versions", "mass change", "95% CI", "p"], rows))
    if typed.map_similarity:
        out.append(_table(["versions", "images", "Spearman", "top-10% IoU"],
                          [[f"{s.from_run} → {s.to_run}", s.n, _num(s.spearman), _num(s.topk_iou)]
                           for s in typed.map_similarity]))
    accuracy = [a for a in typed.accuracy if a.target is None]
    if accuracy:
        out.append(_table(["run", "group", "n", "accuracy", "95% CI"],
                          [[a.run, a.group or "all", a.n, _pct(a.accuracy), _ci([a.ci_low, a.ci_high], pct=True)]
                           for a in accuracy]))
    return "".join(out)


def _detection_comparison(comparison: Comparison) -> str:
    """Context fills per version, per-class attention changes and recall (`analysis.report.detection_compare`)."""
    out = ["<h2>Context dependence per version</h2>", _table(
        ["run", "class", "region", "score drop", "control drop", "excess drop", "95% CI", "flagged"],
        [[c.run, c.target, c.region, _num(c.score_drop), _num(c.control_drop), _num(c.excess_drop),
          _ci(c.excess_drop_ci), c.severity or "no"] for c in comparison.context])]
    rows = [[cls, series.region, f"{change.from_run} → {change.to_run}", _pct(change.diff),
             _ci(change.diff_ci, pct=True), _p(change.p_value), change.n]
            for cls, regions in comparison.classes for series in regions for change in series.changes]
    out += ["<h2>Share of each class's saliency per region</h2>",
            _table(["class", "region", "versions", "mass change", "95% CI", "p", "images"], rows)]
    out += ["<h2>Recall per class</h2>", _table(
        ["run", "class", "objects", "recall", "95% CI"],
        [[r.run, r.target, r.n_objects, _pct(r.recall), _ci([r.ci_low, r.ci_high], pct=True)]
         for r in comparison.recall])]
    return "".join(out)


def _target_comparison(comparison: Comparison) -> str:
    """A tagger's or segmenter's fills per version: each (target, region)'s excess drop beyond its control."""
    noun = comparison.target_key or "target"
    rows = [[series.target, series.region, name, _num(effect.excess_drop), _ci(effect.excess_drop_ci),
             _p(effect.p_value), "yes" if effect.flagged else "no"]
            for series in comparison.effects for name, effect in zip(comparison.runs, series.effects)
            if effect is not None]
    return ("<h2>Region fills per version</h2>"
            + _table([noun, "region", "run", "excess drop", "95% CI", "p", "flagged"], rows))


class _Charts:
    """The report's charts as inline SVG (`analysis.report.svg_charts`): kilobytes, no script."""

    def region_mass(self, overall: list[RegionStat]) -> str:
        if not overall:
            return "<p class='muted'>No region rows.</p>"
        mass = [r.mass_mean or 0 for r in overall]
        ci = [r.mass_ci or (None, None) for r in overall]
        return region_bars([r.region for r in overall], mass,
                           [c[0] if c[0] is not None else m for c, m in zip(ci, mass)],
                           [c[1] if c[1] is not None else m for c, m in zip(ci, mass)],
                           [r.area_mean or 0 for r in overall])

    def comparison(self, comparison: Comparison) -> str:
        series = {s.label: [None if p is None or p.mass_mean is None else
                            (p.mass_mean, lower(p.mass_ci) or p.mass_mean,
                             upper(p.mass_ci) or p.mass_mean) for p in s.points]
                  for s in comparison.regions}
        return version_lines(list(comparison.runs), series) if comparison.runs and series else ""


def overlay_png(image, saliency, alpha: float = 0.5) -> str:
    """Base64 PNG: the image with the positive part of the map (scaled to its own max) in a heat colour."""
    from PIL import Image

    img = np.asarray(image, dtype=np.float32)
    if img.max() > 1.0:
        img = img / 255.0
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.shape[0] == 3 and img.shape[-1] != 3:
        img = img.transpose(1, 2, 0)
    sal = np.clip(np.asarray(saliency, dtype=np.float32), 0, None)
    sal = np.asarray(Image.fromarray(sal).resize((img.shape[1], img.shape[0]), Image.BILINEAR))
    sal = sal / sal.max() if sal.max() > 0 else sal
    heat = np.stack([np.clip(2 * sal, 0, 1), np.clip(2 * sal - 0.5, 0, 1), np.clip(1 - 2 * sal, 0, 1) * sal],
                    axis=2)
    blend = (1 - alpha * sal[..., None]) * img + alpha * sal[..., None] * heat
    buffer = io.BytesIO()
    Image.fromarray((np.clip(blend, 0, 1) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(exemplar: dict) -> str:
    data = overlay_png(exemplar["image"], exemplar["map"])
    caption = escape(str(exemplar.get("caption", exemplar.get("image_id", ""))))
    return f"<figure><img alt='{caption}' src='data:image/png;base64,{data}'><figcaption>{caption}</figcaption></figure>"


def _run_summary(view: ReportView) -> str:
    run, model, dataset = view.meta, view.meta.model, view.meta.dataset
    rows = [["method", run.method], ["parameters", json.dumps(run.params, sort_keys=True)],
            ["images", run.n_images], ["seed", run.seed],
            ["model", f"{model.name}{' ' + model.version if model.version else ''} ({model.sha256[:12]})"],
            ["dataset", f"{dataset.name} ({dataset.sha256[:12]})"],
            ["accuracy", _pct(view.metrics.accuracy)]]
    for name, used in view.metrics.budgets():  # an early-stopping explainer's per-image budget
        rows.append([f"{name} per image", f"median {used.median:.0f}, p90 {used.p90:.0f}, max {used.max:.0f}"])
    return _table(["", ""], rows)


def _verdict_section(verdict: Verdict) -> str:
    """The run's verdict first: its word, what it means, why, what a clear one could not see, the checks."""
    reasons = "".join(f"<li>{escape(r)}</li>" for r in verdict.reasons)
    blind = "".join(f"<li>{escape(r)}</li>" for r in verdict.not_tested)
    words = {"passed": "passed", "failed": "failed", "not_applicable": "not applicable", "not_run": "not run"}
    checks = _table(["check", "result", "detail"], [[c.name, words[c.status], c.detail] for c in verdict.checks])
    return (f"<h2>Verdict: <span class='verdict-{verdict.status}'>{escape(verdict.label)}</span></h2>"
            f"<p>{escape(verdict.summary)}</p><ul>{reasons}</ul>"
            + (f"<p class='muted'>What this audit could not see:</p><ul class='muted'>{blind}</ul>" if blind else "")
            + checks)


def _findings(findings) -> str:
    """Each finding as its headline and its evidence lines (`Finding.evidence_lines`, the dashboard's words)."""
    out = []
    for f in findings:
        lines = "".join(f"<li>{escape(line)}</li>" for line in f.evidence_lines())
        out.append(f"<div class='finding'><p><span class='{escape(f.severity)}'>{escape(f.severity.upper())}</span> "
                   f"{escape(f.headline)}</p><ul class='muted'>{lines}</ul></div>")
    return "".join(out)


def _flags_table(view: ReportView) -> str:
    if not view.flag_rows:
        return "<p>No shortcut flagged.</p>"
    rows = []
    for row in view.flag_rows:
        f, ev = row.finding, row.evidence
        if f.kind == "property":  # property findings: their headline and tests
            continue
        where = f.slice.target or f.slice.group or "all images"
        reasons = "; ".join([*([row.description] if row.description else []), *f.reasons])
        rows.append([f.subject, where, _Raw(f"<span class='{escape(f.severity)}'>{escape(f.severity)}</span>"),
                     f.confidence, _num(f.lift), _pct(ev.flip_rate), _pct(ev.control_flip_rate),
                     _pct(ev.accuracy_drop), _p(ev.p_value), f"{ev.shown_by or '–'} (Holm p {_p(ev.p_value_holm)})",
                     f"{ev.second_explainer or '–'}: {_num(ev.second_explainer_lift)}",
                     {True: "passed", False: "failed"}.get(ev.sanity_passed, "–"), reasons])
    return _table(["region", "where", "severity", "confidence", "lift", "flip rate", "control flips",
                   "accuracy drop", "p", "shown by", "second explainer lift", "sanity", "notes"], rows)


def _power(view: ReportView) -> str:
    """What each "no flag" rules out (every task's report bounds its unflagged tests)."""
    if not view.power:
        return ""
    return ("<h3>What a \"no flag\" could have missed</h3><ul>" + "".join(
        f"<li>{escape(p.text)}</li>" for p in view.power) + "</ul>")


def _interventions_section(view: ReportView) -> str:
    """Fill and swap per tested region, the power of each "no flag", discovered regions, the design and correction."""
    if not view.interventions:
        return ""
    rows = [[iv.region, iv.images, _pct(iv.accuracy_drop), _pct(iv.control_accuracy_drop), _p(iv.p_value),
             _pct(iv.flip_rate), _pct(iv.control_flip_rate), _pct(iv.swap_towards_donor),
             _pct(iv.swap_control_towards_donor), _pct(iv.swap_accuracy_drop), _p(iv.swap_p_value), iv.decision]
            for iv in view.interventions]
    parts = ["<h2>Interventions: fill and swap</h2>", _table(
        ["region", "n", "fill: accuracy drop", "control", "p", "fill: flips", "control flips",
         "swap: towards donor", "control", "swap: accuracy drop",
         "p", "sequential decision"], rows)]
    if view.sequential or view.multiple_testing:
        design, testing = view.sequential or SequentialDesign(), view.multiple_testing or MultipleTesting()
        parts.append(f"<p class='muted'>Sample: {escape(design.design)}; bounds: "
                     f"{escape(design.bounds)}; chunk {design.chunk}, cap {design.cap}. "
                     f"{escape(testing.sentence() or '')}</p>")
    parts.append(_power(view))
    if view.discovered:
        parts.append("<h3>Discovered regions (salient components away from the core and, with masks, outside "
                     "the object-sized annotated regions)</h3>" + _table(
            ["region", "description", "images", "lift (by construction)", "flagged", "verdict", "exemplar ids"],
            [[d.name, d.description, _pct(d.share), _num(d.lift), "yes" if view.flag_on(d.name) else "no",
              view.discovered_verdict(d.name)[1], ", ".join(str(i) for i in d.exemplars)] for d in view.discovered]))
    return "".join(parts)


def _regions_table(rows: tuple[RegionStat, ...]) -> str:
    body = [[r.region, r.role or "", r.slice.target or "", r.slice.group or "", r.n, _pct(r.mass_mean),
             _ci(r.mass_ci, pct=True), _pct(r.area_mean), _num(r.lift), _ci(r.lift_ci)] for r in rows]
    return _table(["region", "role", "class", "group", "n", "mass", "95% CI", "area", "lift", "lift 95% CI"], body)


def _sanity_table(mr: SanityCheck | None, not_judged: bool = False) -> str:
    if mr is None:  # a check the registry left out says why below
        return "" if not_judged else "<p class='muted'>Sanity check not run.</p>"
    head = (f"<p>Model-parameter randomisation ({escape(mr.method or '')}): similarity "
            f"{_num(mr.similarity)} (threshold {_num(mr.threshold)}) — <b>{mr.outcome}</b>. "
            f"<span class='muted'>{escape(mr.criterion)}</span></p>")
    stages = [[s.layer, s.n_randomised, _num(s.spearman_abs), _num(s.spearman), _num(s.ssim)] for s in mr.stages]
    return head + _table(["randomised up to", "layers", "Spearman |map|", "Spearman", "SSIM"], stages)


def _not_judged(left_out: tuple[NotJudged, ...]) -> str:
    """The registry's checks that did not run on this audit, each with why (a black box has no weights)."""
    if not left_out:
        return ""
    return "<h3>Not judged on this audit</h3><ul>" + "".join(
        f"<li>{escape(n.sentence())}</li>" for n in left_out) + "</ul>"


def _faithfulness(faith: Faithfulness | None) -> str:
    if faith is None:
        return ""
    return _table(["", "map", "random order"],
                  [["deletion AUC (lower is better)", _num(faith.deletion_auc), _num(faith.random_deletion_auc)],
                   ["insertion AUC (higher is better)", _num(faith.insertion_auc),
                    _num(faith.random_insertion_auc)]])


def _clusters_table(clusters: tuple[Cluster, ...]) -> str:
    rows = [[c.target, c.cluster, c.size, _pct(c.share), _num(c.distance), c.top_region,
             ", ".join(str(i) for i in c.exemplars)] for c in clusters]
    return _table(["class", "cluster", "images", "share of class", "distance from class mean", "rising region",
                   "exemplar ids"], rows)


def _detection_flags(view: ReportView) -> str:
    """Context flags of a detection run: the fill's score drop beyond its control fill, and recall."""
    if not view.flag_rows:
        return "<p>No context shortcut flagged.</p>"
    rows = []
    for row in view.flag_rows:
        f, ev = row.finding, row.evidence
        rows.append([f.slice.target, f.subject, _Raw(f"<span class='{escape(f.severity)}'>{escape(f.severity)}</span>"),
                     _num(ev.mass_outside), _num(f.lift), _num(ev.score_drop), _num(ev.control_drop),
                     _ci(ev.excess_drop_ci), f"{_pct(ev.recall_before)} → {_pct(ev.recall_after)}", ev.n])
    return ("<p class='muted'>A class is flagged on a context region when most of its D-RISE mass lies outside "
            "its boxes and filling the region (with the rest of the scene's colour) costs its detections more "
            "score than filling an equal area elsewhere (95% CI of the excess above the minimum).</p>"
            + _table(["class", "context region", "severity", "mass outside box", "lift", "score drop (fill)",
                      "score drop (control)", "excess 95% CI", "recall before → after", "detections"], rows))


def _detection_sections(view: ReportView) -> str:
    """One section per detected class: where its D-RISE mass goes (box vs each context region)."""
    out = []
    for cls in view.detection.classes:
        rows = [r for r in view.regions if r.slice.target == cls]
        recall = view.metrics.recall_of(cls)
        flagged = [f.subject for f in view.findings if f.slice.target == cls]
        out.append(f"<h3>Class {escape(str(cls))}</h3><p>{recall.n_detections} "
                   f"detections; recall {_pct(recall.recall)} {_ci(recall.ci, pct=True)} of "
                   f"{recall.n_objects} annotated objects"
                   + (f"; <span class='high'>flagged on {escape(', '.join(flagged))}</span>" if flagged else "")
                   + "</p>")
        out.append(_table(["region", "mass (share of D-RISE)", "95% CI", "area", "lift"],
                          [[r.region, _num(r.mass_mean), _ci(r.mass_ci), _num(r.area_mean), _num(r.lift)]
                           for r in rows]))
    return "<h2>Detections per class</h2>" + "".join(out) if out else ""


class _Raw(str):
    """Already-escaped HTML for a table cell."""


def _table(header: list, rows: list[list]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, _Raw) else escape(_s(c))}</td>" for c in row)
                   + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _s(value) -> str:
    return "" if value is None else str(value)


def _num(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def _pct(value) -> str:
    return "–" if value is None else f"{value:.1%}"


def _p(value) -> str:
    return "–" if value is None else (f"{value:.1e}" if value < 1e-3 else f"{value:.3f}")


def _ci(pair, pct: bool = False) -> str:
    if not pair or pair[0] is None or pair[1] is None:
        return "–"
    fmt = _pct if pct else _num
    return f"[{fmt(pair[0])}, {fmt(pair[1])}]"


# A task's own report sections, by the task's view name (`analysis.runs.tasks`): (flags section, extra sections)
# and the comparison section; a view not listed gets the flags table alone. The classifier's extra sections: fill
# and swap effects, the sequential design, power, discovered regions.
VIEW_SECTIONS = {"classification": (_flags_table, _interventions_section),
                 "detection": (_detection_flags, _detection_sections)}
COMPARISON_SECTIONS = {"detection": _detection_comparison}
