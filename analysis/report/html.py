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

from analysis.report.records import Report, Verdict
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
    """HTML for a report dict (docs/FORMATS.md keys; `subgroups`, `clusters`, `faithfulness` used when present).

    `exemplars`: [{"image_id", "caption", "image": (H, W, 3) array in [0, 1] or uint8, "map": (h, w)}].
    """
    charts = _Charts()
    run = report.get("run") or {}
    name = title or f"Saliency audit: {run.get('name') or run.get('id') or 'run'}"
    parts = [f"<h1>{escape(str(name))}</h1>", _run_summary(report)]
    view = view_of(run.get("task"))
    typed = Report.from_json(report)
    if typed.verdict is not None:
        parts.append(_verdict_section(typed.verdict))
    flags, sections = VIEW_SECTIONS.get(view, (_report_flags, None))
    parts.append("<h2>Shortcut flags</h2>" + _findings(typed.findings) + flags(report))
    if sections is not None:
        parts.append(sections(report))
    if report.get("labels"):
        parts.append("<h2>Your labels</h2><ul>" + "".join(
            f"<li>{escape(str(label.get('text', '')))}{': ' + escape(str(label['note'])) if label.get('note') else ''}"
            "</li>" for label in report["labels"]) + "</ul>")
    if report.get("subgroups"):
        parts.append("<h2>Subgroup findings</h2><ul>" + "".join(
            f"<li>{escape(str(f.get('text', '')))}</li>" for f in report["subgroups"]) + "</ul>")
    parts.append("<h2>Where the saliency goes</h2>" + charts.region_mass(report.get("regions") or []))
    if report.get("artifacts"):  # register-like tokens (`analysis.stats.artifacts`)
        parts.append(f"<p class='artifacts'>{escape(report['artifacts']['text'])}. A region's attention must hold "
                     "without them to count toward a flag.</p>")
    parts.append(_regions_table(report.get("regions") or []))
    parts.append("<h2>Explainer checks</h2>" + _sanity_table(report.get("sanity") or {})
                 + _faithfulness(report.get("faithfulness") or {}))
    if report.get("clusters"):
        parts.append("<h2>Attention strategies (SpRAy clusters)</h2>" + _clusters_table(report["clusters"]))
    if exemplars:
        parts.append("<h2>Exemplars</h2>" + "".join(_figure(e) for e in exemplars))
    if comparison:
        parts.append("<h2>Version comparison</h2>" + render_comparison(comparison, charts))
    if report.get("skipped"):
        parts.append(f"<h2>Skipped images ({len(report['skipped'])})</h2>" + _table(
            ["image", "reason"], [[s.get("image"), s.get("reason")] for s in report["skipped"][:200]]))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(str(name))}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")


def render_comparison_page(comparison: dict, title: str = "Saliency audit: version comparison") -> str:
    """A self-contained HTML document for `saliency-audit compare --format html`."""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>{render_comparison(comparison)}"
            "</body></html>")


def render_comparison(comparison: dict, charts: "_Charts | None" = None) -> str:
    charts = charts or _Charts()
    out = [f"<p>{escape(str(comparison.get('summary', '')))}</p>", charts.comparison(comparison)]
    if view_of(comparison.get("task")) in COMPARISON_SECTIONS:
        return "".join(out) + COMPARISON_SECTIONS[view_of(comparison.get("task"))](comparison)
    rows = []
    for region, entry in (comparison.get("regions") or {}).items():
        for change in entry.get("changes", []):
            rows.append([region, entry.get("role") or "", f"{change['from']} → {change['to']}",
                         _pct(change["diff"]), _ci(change.get("diff_ci"), pct=True), _p(change["p_value"])])
    out.append(_table(["region", "role", "versions", "mass change", "95% CI", "p"], rows))
    sims = comparison.get("map_similarity") or []
    if sims:
        out.append(_table(["versions", "images", "Spearman", "top-10% IoU"],
                          [[f"{s['from']} → {s['to']}", s["n"], _num(s["spearman"]), _num(s["topk_iou"])]
                           for s in sims]))
    acc = [a for a in comparison.get("accuracy") or [] if a.get("class") is None]
    if acc:
        out.append(_table(["run", "group", "n", "accuracy", "95% CI"],
                          [[a["run"], a.get("group") or "all", a["n"], _pct(a["accuracy"]),
                            _ci([a["ci_low"], a["ci_high"]], pct=True)] for a in acc]))
    return "".join(out)


def _detection_comparison(comparison: dict) -> str:
    """Context fills per version, per-class attention changes and recall (`analysis.report.detection_compare`)."""
    out = ["<h2>Context dependence per version</h2>", _table(
        ["run", "class", "region", "score drop", "control drop", "excess drop", "95% CI", "flagged"],
        [[c["run"], c["class"], c["region"], _num(c["score_drop"]), _num(c["control_drop"]), _num(c["excess_drop"]),
          _ci(c["excess_drop_ci"]), c["severity"] or "no"] for c in comparison.get("context") or []])]
    rows = []
    for cls, regions in (comparison.get("classes") or {}).items():
        for region, entry in regions.items():
            for change in entry.get("changes", []):
                rows.append([cls, region, f"{change['from']} → {change['to']}", _pct(change["diff"]),
                             _ci(change.get("diff_ci"), pct=True), _p(change["p_value"]), change["n"]])
    out += ["<h2>Share of each class's saliency per region</h2>",
            _table(["class", "region", "versions", "mass change", "95% CI", "p", "images"], rows)]
    out += ["<h2>Recall per class</h2>", _table(
        ["run", "class", "objects", "recall", "95% CI"],
        [[r["run"], r["class"], r["n_objects"], _pct(r["recall"]), _ci([r["ci_low"], r["ci_high"]], pct=True)]
         for r in comparison.get("recall") or []])]
    return "".join(out)


class _Charts:
    """The report's charts as inline SVG (`analysis.report.svg_charts`): kilobytes, no script."""

    def region_mass(self, rows: list[dict]) -> str:
        overall = [r for r in rows if r.get("class") is None and r.get("group") is None]
        if not overall:
            return "<p class='muted'>No region rows.</p>"
        mass = [r["mass_mean"] or 0 for r in overall]
        ci = [r.get("mass_ci") or [None, None] for r in overall]
        return region_bars([str(r["region"]) for r in overall], mass,
                           [c[0] if c[0] is not None else m for c, m in zip(ci, mass)],
                           [c[1] if c[1] is not None else m for c, m in zip(ci, mass)],
                           [r.get("area_mean") or 0 for r in overall])

    def comparison(self, comparison: dict) -> str:
        runs = [str(r) for r in comparison.get("runs") or []]
        series = {}
        for region, entry in (comparison.get("regions") or {}).items():
            series[str(region)] = [None if r is None or r.get("mass_mean") is None else
                                   (r["mass_mean"], (r.get("mass_ci") or [None, None])[0] or r["mass_mean"],
                                    (r.get("mass_ci") or [None, None])[1] or r["mass_mean"])
                                   for r in entry["runs"]]
        return version_lines(runs, series) if runs and series else ""


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


def _run_summary(report: dict) -> str:
    run, metrics = report.get("run") or {}, report.get("metrics") or {}
    model, dataset = run.get("model") or {}, run.get("dataset") or {}
    rows = [["method", run.get("method")], ["parameters", json.dumps(run.get("params") or {}, sort_keys=True)],
            ["images", run.get("n_images")], ["seed", run.get("seed")],
            ["model", f"{model.get('name', '')}{' ' + str(model['version']) if model.get('version') else ''} "
                      f"({str(model.get('sha256', ''))[:12]})"],
            ["dataset", f"{dataset.get('name', '')} ({str(dataset.get('sha256', ''))[:12]})"],
            ["accuracy", _pct(metrics.get("accuracy"))]]
    for column in ("masks_used", "windows_used"):  # an early-stopping explainer's per-image budget
        if isinstance(metrics.get(column), dict):
            used = metrics[column]
            rows.append([column.replace("_", " ") + " per image",
                         f"median {used['median']:.0f}, p90 {used['p90']:.0f}, max {used['max']:.0f}"])
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


def _flags_table(flags: list[dict]) -> str:
    if not flags:
        return "<p>No shortcut flagged.</p>"
    rows = []
    for f in (f for f in flags if f.get("kind") != "property"):  # property findings: their headline and tests
        ev = f.get("evidence") or {}
        where = f.get("class") or f.get("group") or "all images"
        reasons = "; ".join([*([f["description"]] if f.get("description") else []), *(f.get("reasons") or [])])
        rows.append([f["region"], where, _Raw(f"<span class='{escape(f['severity'])}'>{escape(f['severity'])}</span>"),
                     f.get("confidence", ""), _num(f.get("lift")), _pct(ev.get("flip_rate")),
                     _pct(ev.get("control_flip_rate")), _pct(ev.get("accuracy_drop")), _p(ev.get("p_value")),
                     f"{ev.get('shown_by') or '–'} (Holm p {_p(ev.get('p_value_holm'))})",
                     f"{ev.get('second_explainer') or '–'}: {_num(ev.get('second_explainer_lift'))}",
                     {True: "passed", False: "failed"}.get(ev.get("sanity_passed"), "–"), reasons])
    return _table(["region", "where", "severity", "confidence", "lift", "flip rate", "control flips",
                   "accuracy drop", "p", "shown by", "second explainer lift", "sanity", "notes"], rows)


def _interventions_section(report: dict) -> str:
    """Fill and swap per tested region, the power of each "no flag", discovered regions, the design and correction."""
    interventions = report.get("interventions") or {}
    if not interventions:
        return ""
    rows = []
    for region, iv in interventions.items():
        swap, seq = iv.get("swap") or {}, iv.get("sequential") or {}
        n = seq.get("n", iv.get("n"))
        if seq.get("n_fill") is not None and seq.get("n_fill") != seq.get("n_swap"):
            n = f"{seq['n_fill']} filled, {seq['n_swap']} swapped"
        rows.append([region, n, _pct(iv.get("accuracy_drop")),
                     _pct((iv.get("control") or {}).get("accuracy_drop")), _p(iv.get("p_value")),
                     _pct(iv.get("flip_rate")), _pct((iv.get("control") or {}).get("flip_rate")),
                     _pct(swap.get("towards_donor_rate")), _pct((swap.get("control") or {}).get("towards_donor_rate")),
                     _pct(swap.get("accuracy_drop")), _p(swap.get("p_value")), seq.get("decision", "")])
    parts = ["<h2>Interventions: fill and swap</h2>", _table(
        ["region", "n", "fill: accuracy drop", "control", "p", "fill: flips", "control flips",
         "swap: towards donor", "control", "swap: accuracy drop",
         "p", "sequential decision"], rows)]
    design, testing = report.get("sequential") or {}, report.get("multiple_testing") or {}
    if design or testing:
        parts.append(f"<p class='muted'>Sample: {escape(str(design.get('design', '')))}; bounds: "
                     f"{escape(str(design.get('bounds', '')))}; chunk {design.get('chunk')}, cap {design.get('cap')}. "
                     f"Multiple testing: {escape(str(testing.get('method', '')))} over {testing.get('n_tests')} tests "
                     f"({escape(str(testing.get('family', '')))}), alpha {testing.get('alpha')}.</p>")
    if report.get("power"):
        parts.append("<h3>What a \"no flag\" could have missed</h3><ul>" + "".join(
            f"<li>{escape(p['text'])}</li>" for p in report["power"]) + "</ul>")
    if report.get("discovered_regions"):
        flagged = {f["region"] for f in report.get("flags") or []}
        parts.append("<h3>Discovered regions (salient components away from the core and, with masks, outside "
                     "the object-sized annotated regions)</h3>" + _table(
            ["region", "description", "images", "lift (by construction)", "flagged", "exemplar ids"],
            [[d["name"], d["description"], _pct(d.get("share")), _num((d.get("attention") or {}).get("lift")),
              "yes" if d["name"] in flagged else "no", ", ".join(str(i) for i in d.get("exemplars", []))]
             for d in report["discovered_regions"]]))
    return "".join(parts)


def _regions_table(rows: list[dict]) -> str:
    body = [[r["region"], r.get("role") or "", r.get("class") or "", r.get("group") or "", r["n"],
             _pct(r["mass_mean"]), _ci(r.get("mass_ci"), pct=True), _pct(r.get("area_mean")),
             _num(r.get("lift")), _ci(r.get("lift_ci"))] for r in rows]
    return _table(["region", "role", "class", "group", "n", "mass", "95% CI", "area", "lift", "lift 95% CI"], body)


def _sanity_table(sanity: dict) -> str:
    mr = sanity.get("model_randomization") or {}
    if not mr:
        return "<p class='muted'>Sanity check not run.</p>"
    head = (f"<p>Model-parameter randomisation ({escape(str(mr.get('method', '')))}): similarity "
            f"{_num(mr.get('similarity'))} (threshold {_num(mr.get('threshold'))}) — "
            f"<b>{ {True: 'passed', False: 'failed'}.get(mr.get('passed'), 'not judged')}</b>. "
            f"<span class='muted'>{escape(str(mr.get('criterion', '')))}</span></p>")
    stages = [[s["layer"], s.get("n_randomised"), _num(s["spearman_abs"]), _num(s["spearman"]), _num(s["ssim"])]
              for s in mr.get("stages", [])]
    return head + _table(["randomised up to", "layers", "Spearman |map|", "Spearman", "SSIM"], stages)


def _faithfulness(faith: dict) -> str:
    if not faith:
        return ""
    return _table(["", "map", "random order"],
                  [["deletion AUC (lower is better)", _num(faith.get("deletion_auc")),
                    _num(faith.get("random_deletion_auc"))],
                   ["insertion AUC (higher is better)", _num(faith.get("insertion_auc")),
                    _num(faith.get("random_insertion_auc"))]])


def _clusters_table(clusters: list[dict]) -> str:
    rows = [[c["class"], c["cluster"], c["size"], _pct(c.get("share")), _num(c["distance"]),
             (c.get("top_region") or {}).get("region", ""), ", ".join(str(i) for i in c.get("exemplars", []))]
            for c in clusters]
    return _table(["class", "cluster", "images", "share of class", "distance from class mean", "rising region",
                   "exemplar ids"], rows)


def _detection_flags(report: dict) -> str:
    """Context flags of a detection run: the fill's score drop beyond its control fill, and recall."""
    flags = report.get("flags") or []
    if not flags:
        return "<p>No context shortcut flagged.</p>"
    rows = []
    for f in flags:
        ev = f.get("evidence") or {}
        rows.append([f.get("class"), f["region"], _Raw(f"<span class='{escape(str(f['severity']))}'>"
                                                       f"{escape(str(f['severity']))}</span>"),
                     _num(ev.get("mass_outside")), _num(f.get("lift")), _num(ev.get("score_drop")),
                     _num(ev.get("control_drop")), _ci(ev.get("excess_drop_ci")),
                     f"{_pct(ev.get('recall_before'))} → {_pct(ev.get('recall_after'))}", ev.get("n")])
    return ("<p class='muted'>A class is flagged on a context region when most of its D-RISE mass lies outside "
            "its boxes and filling the region (with the rest of the scene's colour) costs its detections more "
            "score than filling an equal area elsewhere (95% CI of the excess above the minimum).</p>"
            + _table(["class", "context region", "severity", "mass outside box", "lift", "score drop (fill)",
                      "score drop (control)", "excess 95% CI", "recall before → after", "detections"], rows))


def _detection_sections(report: dict) -> str:
    """One section per detected class: where its D-RISE mass goes (box vs each context region)."""
    out = []
    metrics = report.get("metrics") or {}
    for cls in (report.get("detection") or {}).get("classes", []):
        rows = [r for r in report.get("regions") or [] if r.get("class") == cls]
        recall = (metrics.get("recall") or {}).get(cls) or {}
        flagged = [f["region"] for f in report.get("flags") or [] if f.get("class") == cls]
        out.append(f"<h3>Class {escape(str(cls))}</h3><p>{(metrics.get('n_detections') or {}).get(cls, 0)} "
                   f"detections; recall {_pct(recall.get('recall'))} {_ci(recall.get('ci'), pct=True)} of "
                   f"{recall.get('n_objects', 0)} annotated objects"
                   + (f"; <span class='high'>flagged on {escape(', '.join(flagged))}</span>" if flagged else "")
                   + "</p>")
        out.append(_table(["region", "mass (share of D-RISE)", "95% CI", "area", "lift"],
                          [[r["region"], _num(r["mass_mean"]), _ci(r["mass_ci"]), _num(r["area_mean"]),
                            _num(r["lift"])] for r in rows]))
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


def _report_flags(report: dict) -> str:
    return _flags_table(report.get("flags") or [])


# A task's own report sections, by the task's view name (`analysis.runs.tasks`): (flags section, extra sections)
# and the comparison section; a view not listed gets the flags table alone. The classifier's extra sections: fill
# and swap effects, the sequential design, power, discovered regions.
VIEW_SECTIONS = {"classification": (_report_flags, _interventions_section),
                 "detection": (_detection_flags, _detection_sections)}
COMPARISON_SECTIONS = {"detection": _detection_comparison}
