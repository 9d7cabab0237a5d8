"""A person's label on a region discovered from the maps follows the same cue to later versions (issue 25)."""
from analysis.report.labels import label_checks, origin_discoveries

CORNERS = {"top-left": 30, "top-right": 25, "bottom-left": 25, "bottom-right": 20}
BORDER = {"top-centre": 20, "middle-left": 20}


def _found(name, ids, positions, lift):
    return {"name": name, "description": f"{name} cue", "image_ids": list(ids), "position_counts": positions,
            "attention": {"lift": lift, "lift_ci": [lift - 0.5, lift + 0.5]}}


def _report(run_id, version, found, flags=()):
    return {"run": {"id": run_id, "model": {"name": "tag-net", "version": version}}, "regions": [],
            "discovered_regions": found, "flags": [{"region": r} for r in flags]}


V1 = _report("run-1", "v1", [_found("discovered-1", range(100), CORNERS, 4.0),
                             _found("discovered-2", range(40), BORDER, 2.0)], flags=["discovered-1"])
# v2 numbers the same corner cue discovered-2; its discovered-1 is the border strip
V2 = _report("run-2", "v2", [_found("discovered-1", range(0, 45), BORDER, 1.5),
                             _found("discovered-2", range(10, 70), CORNERS, 3.0)], flags=["discovered-2"])
V3 = _report("run-3", "v3", [_found("discovered-1", range(500, 540), BORDER, 1.2)])  # the corner cue is gone
LABEL = {"region": "discovered-1", "verdict": "legitimate", "note": "the logo is fine", "run_id": "run-1",
         "model_id": "m-1", "model_name": "tag-net", "model_version": "v1"}


def test_a_label_on_a_discovered_region_carries_to_the_matched_region_of_a_later_version():
    origins = {"run-1": V1["discovered_regions"]}
    on_v1 = label_checks([LABEL], V1, origins)[0]
    assert (on_v1["region"], on_v1["labelled_region"], on_v1["flagged"]) == ("discovered-1", "discovered-1", True)
    assert on_v1["text"] == "labelled legitimate on tag-net v1: 4.0x attention on tag-net v1, not counted as a shortcut"

    on_v2 = label_checks([LABEL], V2, origins)[0]
    # the same corner cue is v2's discovered-2, not v2's discovered-1 (the border strip, which keeps no label)
    assert (on_v2["region"], on_v2["labelled_region"], on_v2["flagged"], on_v2["lift"]) == \
        ("discovered-2", "discovered-1", True, 3.0)
    assert on_v2["text"] == ("labelled legitimate on tag-net v1 as discovered-1: 3.0x attention on tag-net v2, not "
                             "counted as a shortcut")

    on_v3 = label_checks([LABEL], V3, origins)[0]
    assert on_v3["region"] is None and on_v3["flagged"] is False
    assert on_v3["text"] == ("labelled legitimate on tag-net v1: discovered-1 (discovered-1 cue) was "
                             "not discovered in this audit (no region here holds the same images at the same places)")


def test_the_dashboards_open_findings_drop_the_carried_legitimate_region_only():
    from dashboard.views import open_findings

    report = {**V2, "labels": label_checks([LABEL], V2, {"run-1": V1["discovered_regions"]})}
    report["flags"] = [{"region": "discovered-1"}, {"region": "discovered-2"}]
    assert [f.region for f in open_findings(report)] == ["discovered-1"]


def test_a_label_whose_audit_is_gone_is_not_applied_by_name():
    """Without the audit it was set on, v2's discovered-1 (another cue) must not inherit the label."""
    row = label_checks([LABEL], V2, {})[0]
    assert row["region"] is None and row["flagged"] is False
    assert "cannot be matched" in row["text"]


def test_fixed_regions_keep_matching_by_name():
    label = {**LABEL, "region": "border", "verdict": "shortcut"}
    report = {**V2, "regions": [{"region": "border", "class": None, "group": None, "lift": 2.5,
                                 "lift_ci": [2.0, 3.0]}]}
    row = label_checks([label], report, {})[0]
    assert (row["region"], row["still_attended"]) == ("border", True)
    assert row["text"] == "labelled shortcut on tag-net v1: still 2.5x attention on tag-net v2"


def test_origin_discoveries_read_the_labelled_audits_evidence(tmp_path):
    import json

    class Store:
        def __init__(self, run_id):
            self.run_id = run_id

        def evidence(self):
            path = tmp_path / f"{self.run_id}.json"
            return json.loads(path.read_text()) if path.exists() else {}

    class Workspace:
        def store(self, run_id):
            return Store(run_id)

    (tmp_path / "run-1.json").write_text(json.dumps({"discovered_regions": V1["discovered_regions"]}))
    labels = [LABEL, {**LABEL, "run_id": "run-gone"}, {**LABEL, "region": "border", "run_id": "run-2"}]
    assert origin_discoveries(Workspace(), labels) == {"run-1": V1["discovered_regions"], "run-gone": []}
