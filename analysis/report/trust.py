"""How far to trust each explainer of a run: its sanity check, its faithfulness against a random order, and
its role as the second explainer, gathered per method with one word (trustworthy / doubtful / not checked), and
the explainer checks the registry did not judge on this audit, with the reason."""
from __future__ import annotations

from analysis.evidence.faithfulness import verdicts
from analysis.report.sections import read_report

TRUST_KEYS = ("sanity", "faithfulness", "second_explainer")  # the registry's checks of the explainer itself


def explainer_trust(report: dict) -> list[dict]:
    """Per explainer: {method, verdict (trustworthy / doubtful / not checked), checks [{name, passed, text}]}.

    The sanity check's own pass mark and `analysis.evidence.faithfulness.verdicts` (each AUC beside a random order's)
    decide; this gathers them per method. The word per method is the same the CLI's and the HTML report's
    checks rest on, decided here once (the dashboard used to decide it in its own process)."""

    view = read_report(report)
    run_method = view.meta.method or "explainer"
    methods: dict[str, list[dict]] = {}
    for check in view.sanity:
        numbers = (f" (similarity {check.similarity:.2f}, must be below {check.threshold:.2f})"
                   if check.similarity is not None and check.threshold is not None else "")
        text = ("its maps change when the model's weights are randomised" if check.passed else
                "its maps barely change when the model's weights are randomised: they show the image, not the "
                "model" if check.passed is not None else "the randomisation check was not judged") + numbers
        methods.setdefault(check.method or run_method, []).append(
            {"name": check.name.replace("_", " "), "passed": check.passed, "text": text})
    if view.faithfulness is not None:
        for v in verdicts(view.faithfulness.to_json()):
            text = (f"{v['measure']} score {v['score']:.3f} against {v['random']:.3f} for a random pixel order "
                    f"({v['direction']}): " + ("better than random" if v["better_than_random"]
                                               else "no better than random"))
            methods.setdefault(view.faithfulness.method or run_method, []).append(
                {"name": v["measure"], "passed": v["better_than_random"], "text": text})
    second = view.second_explainer
    if second is not None and second.lifts:
        lifts = ", ".join(f"{entry.region} {entry.lift:.2f}" for entry in second.lifts if entry.lift is not None)
        methods.setdefault(second.method, []).append(
            {"name": "second explainer", "passed": None,
             "text": f"used to cross-check the flags; its lift per region: {lifts or 'none measured'}"})
    for left_out in view.not_judged:  # checks the registry did not run, with why (a black box: no weights)
        if left_out.key in TRUST_KEYS:
            methods.setdefault(run_method, []).append({"name": left_out.check, "passed": None,
                                                       "text": f"not judged: {left_out.reason}"})
    out = []
    for method, checks in methods.items():
        judged = [c["passed"] for c in checks if c["passed"] is not None]
        verdict = "not checked" if not judged else "trustworthy" if all(judged) else "doubtful"
        out.append({"method": method, "verdict": verdict, "checks": checks})
    return out
