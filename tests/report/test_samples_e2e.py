"""End to end on the sample scenarios: v1 flagged, v5 not, core never;
the mask-free path names the watermark's grid cell; comparison shows shortcut mass falling v1 -> v5."""
import pytest

from tests.report import samples_audit

N = 48
SCENARIOS = ["cage", "doctor_nurse", "watermark", "background"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from analysis.store.workspace import Workspace

    root = tmp_path_factory.mktemp("samples")
    return root, Workspace(root / "ws")


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_v1_shortcut_flagged_v5_not_core_never(workspace, scenario):
    from analysis.report.compare import compare_runs

    root, ws = workspace
    data = samples_audit.make_dataset(scenario, root / scenario, N)
    data_id = ws.register_dataset(data)
    stores = {}
    for version in ("v1", "v5"):
        store, _, findings = samples_audit.audit(ws, samples_audit.model_file(scenario, version), data_id, n=N)
        stores[version] = store
        core = {r["region"] for r in findings["regions"] if r["role"] == "core"}
        assert not core & {f["region"] for f in findings["flags"]}
        if version == "v1":
            assert findings["flags"], f"{scenario} v1: no shortcut flagged"
            shortcut = findings["flags"][0]["region"]
        else:
            assert not findings["flags"], findings["flags"]
    comparison = compare_runs([stores["v1"], stores["v5"]], ["v1", "v5"], n_boot=200, n_perm=999)
    runs = comparison["regions"][shortcut]["runs"]
    assert runs[1]["mass_mean"] < runs[0]["mass_mean"]


@pytest.mark.slow
def test_mask_free_watermark_names_the_right_cell(workspace):
    root, ws = workspace
    data = samples_audit.make_dataset("watermark", root / "wm-masks", N)
    expected_cell = samples_audit.region_centroid_cell(data, "watermark")
    plain = samples_audit.image_folder_copy(data, root / "wm-plain")
    _, _, findings = samples_audit.audit(ws, samples_audit.model_file("watermark", "v1"),
                                         ws.register_dataset(plain), n=N)
    flagged = [f["region"] for f in findings["flags"]]
    assert flagged and flagged[0] in (expected_cell, "border"), flagged


@pytest.mark.slow
def test_watermark_mass_falls_across_the_retraining_series(workspace):
    from analysis.report.compare import compare_runs

    root, ws = workspace
    data_id = ws.register_dataset(samples_audit.make_dataset("watermark", root / "wm-series", N))
    versions = ["v1", "v2", "v3", "v4", "v5"]
    stores = [samples_audit.audit(ws, samples_audit.model_file("watermark", v), data_id, n=N)[0] for v in versions]
    comparison = compare_runs(stores, versions, n_boot=200, n_perm=999)
    mass = [run["mass_mean"] for run in comparison["regions"]["watermark"]["runs"]]
    assert mass[0] > 5 * mass[-1], mass
    assert all(later <= earlier + 0.01 for earlier, later in zip(mass, mass[1:])), mass
    first = comparison["regions"]["watermark"]["changes"][0]
    assert first["from"] == "v1" and first["to"] == "v2" and first["p_value"] < 0.01
    assert "watermark" in comparison["summary"]
