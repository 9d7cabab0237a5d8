"""Property findings: the classifier's flagged property interventions as typed findings, beside the regions'.

A flagged result (`analysis.evidence.property_interventions`: moving the property of the other classes'
images towards the suspect class's value sends them to it, more than an equal-size control that leaves the
property put, Holm over the property tests) whose opposite move costs the class its own answers
(`corroborated`) becomes `Finding(kind="property")` with its deciding test (the
"towards" move) first, the model-free screen's association (`analysis.evidence.property_screen`) as the
second test, and the "away" move as the third. Its headline is the intervention's own sentence ("class h is
predicted from blur: blurring the other classes' images sends 56% of them to class h (control 2%, n = 100)").
"""
from __future__ import annotations

from analysis.report.policy import policy_of
from analysis.report.records import Finding, Slice, TestResult

POLICY = policy_of("classification")


def corroborated(result: dict) -> bool:
    """A flagged "towards" move (the other classes' images sent to the class) whose "away" move agrees: moving
    the class's own images the other way costs its right answers, the interval above 0. Why both: where the
    data ties a property to the object (the cage scenario's dogs are sharper and higher in contrast, their bars
    and fur), lowering the other classes' contrast strips what they are recognised by and sends them to the
    class without the class being read off contrast (cage v5: 32% sent to cat, its own images unmoved, 3%)."""
    away = result.get("away") or {}
    return bool(result.get("flagged")) and bool(away) and (away.get("interval") or [0])[0] > 0


def property_findings(properties: dict) -> list[dict]:
    """Findings (report-JSON shape) of the flagged and corroborated property interventions, strongest first."""
    screen = {(a["property"], a["class_name"]): a for a in (properties.get("screen") or {}).get("associations", [])}
    out = []
    for r in properties.get("interventions") or []:
        if not corroborated(r):
            continue
        towards = TestResult(name=f"{r['cue']} towards class {r['class_name']}", description=r["test"],
                             effect=r["effect"], interval=tuple(r["interval"]), p_value=r["p_value"],
                             p_value_corrected=r["p_value_holm"], correction="Holm over the property tests",
                             n=r["n"], slice=Slice(r["class_name"]), decision="shown",
                             control="an equal-size change that leaves the property put")
        tests = [towards]
        found = screen.get((r["property"], r["class_name"]))
        if found is not None:
            tests.append(TestResult(name="dataset screen", description=found["test"],
                                    effect=found["separation"] - 0.5, interval=(found["interval"][0] - 0.5,
                                                                               found["interval"][1] - 0.5),
                                    p_value=found["p_value"], p_value_corrected=found["p_value_holm"],
                                    correction="Holm over the screen's tests", n=found["n_class"] + found["n_rest"],
                                    slice=Slice(r["class_name"]),
                                    decision="shown" if found["flagged"] else "undecided"))
        away = r.get("away")
        if away:
            tests.append(TestResult(name=f"{r['cue']} away from class {r['class_name']}", description=away["test"],
                                    effect=away["effect"], interval=tuple(away["interval"]),
                                    p_value=away["p_value"], p_value_corrected=away["p_value_holm"],
                                    correction="Holm over the away tests", n=away["n"],
                                    slice=Slice(r["class_name"]), decision="shown"))
        screened = (f"; the data carries it too: {found['sentence']}" if found is not None and found["flagged"]
                    else "")
        out.append(Finding(kind="property", subject=r["property"], slice=Slice(r["class_name"]),
                           severity=POLICY.severity(r["effect"]), confidence="high",
                           headline=r["sentence"].rstrip(".") + screened, effect=r["effect"], tests=tuple(tests),
                           basis="property intervention",
                           evidence={"cue": r["cue"], "direction": r["direction"], "amount": r["amount"],
                                     "amount_source": r["amount_source"], "move_shift": r["move_shift"],
                                     "control_shift": r["control_shift"], "p_value_holm": r["p_value_holm"]}))
    out.sort(key=lambda f: -(f.effect or 0))
    return [f.to_json() for f in out]
