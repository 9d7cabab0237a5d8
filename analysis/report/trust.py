"""How far to trust each explainer of a run: its sanity check, its faithfulness against a random order, and
its role as the second explainer, gathered per method with one word (trustworthy / doubtful / not checked), and
the explainer checks the registry did not judge on this audit, with the reason."""
from __future__ import annotations

from analysis.evidence.faithfulness import verdicts
from analysis.report.records import not_judged

TRUST_KEYS = ("sanity", "faithfulness", "second_explainer")  # the registry's checks of the explainer itself


def explainer_trust(report: dict) -> list[dict]:
    """Per explainer: {method, verdict (trustworthy / doubtful / not checked), checks [{name, passed, text}]}.

    The sanity check's own pass mark and `analysis.evidence.faithfulness.verdicts` (each AUC beside a random order's)
    decide; this gathers them per method. The word per method is the same the CLI's and the HTML report's
    checks rest on, decided here once (the dashboard used to decide it in its own process)."""

    methods: dict[str, list[dict]] = {}
    for check, result in (report.get("sanity") or {}).items():
        if not isinstance(result, dict):
            continue
        method = result.get("method") or (report.get("run") or {}).get("method") or "explainer"
        similarity, threshold = result.get("similarity"), result.get("threshold")
        numbers = (f" (similarity {similarity:.2f}, must be below {threshold:.2f})"
                   if isinstance(similarity, (int, float)) and isinstance(threshold, (int, float)) else "")
        passed = result.get("passed")
        text = ("its maps change when the model's weights are randomised" if passed else
                "its maps barely change when the model's weights are randomised: they show the image, not the "
                "model" if passed is not None else "the randomisation check was not judged") + numbers
        methods.setdefault(method, []).append({"name": check.replace("_", " "), "passed": passed, "text": text})
    faithfulness = report.get("faithfulness") or {}
    if isinstance(faithfulness, dict) and faithfulness:
        method = faithfulness.get("method") or (report.get("run") or {}).get("method") or "explainer"
        for v in verdicts(faithfulness):
            text = (f"{v['measure']} score {v['score']:.3f} against {v['random']:.3f} for a random pixel order "
                    f"({v['direction']}): " + ("better than random" if v["better_than_random"]
                                               else "no better than random"))
            methods.setdefault(method, []).append({"name": v["measure"], "passed": v["better_than_random"],
                                                   "text": text})
    second = report.get("second_explainer") or {}
    if second.get("method") and second.get("regions"):
        lifts = ", ".join(f"{region} {entry.get('lift'):.2f}" for region, entry in second["regions"].items()
                          if isinstance((entry or {}).get("lift"), (int, float)))
        methods.setdefault(second["method"], []).append(
            {"name": "second explainer", "passed": None,
             "text": f"used to cross-check the flags; its lift per region: {lifts or 'none measured'}"})
    for left_out in not_judged(report):  # checks the registry did not run, with why (a black box: no weights)
        if left_out.key in TRUST_KEYS:
            method = (report.get("run") or {}).get("method") or "explainer"
            methods.setdefault(method, []).append({"name": left_out.check, "passed": None,
                                                   "text": f"not judged: {left_out.reason}"})
    out = []
    for method, checks in methods.items():
        judged = [c["passed"] for c in checks if c["passed"] is not None]
        verdict = "not checked" if not judged else "trustworthy" if all(judged) else "doubtful"
        out.append({"method": method, "verdict": verdict, "checks": checks})
    return out
