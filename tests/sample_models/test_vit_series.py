"""The tiny ViT series (watermark scenario) is real ground truth like the CNN series, and audits as a user's ViT
would: a state dict with a card that names the architecture and no `target_layer`. The run prints the token
layer it found, the watermark is flagged on v1 and nothing is flagged on v5."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from analysis.cli import main
from sample_models.scenes import SCENARIOS, generate
from sample_models.train import (COUNTER_FRACTIONS, VIT_ARCHITECTURE, VIT_SCENARIO, VIT_WEIGHTS_DIR, evaluate,
                                 load_version, train_version)

FRESH_SEEDS = (201, 202)
VERSIONS = range(1, len(COUNTER_FRACTIONS) + 1)
TOKEN_LAYER = "blocks.1.ln_1"  # the last EncoderBlock's first norm


def vit(version: int):
    return load_version(VIT_SCENARIO, version, VIT_WEIGHTS_DIR, VIT_ARCHITECTURE)


def test_every_committed_file_matches_sha256sums():
    listed = dict(reversed(line.split("  ")) for line in (VIT_WEIGHTS_DIR / "SHA256SUMS").read_text().splitlines())
    assert set(listed) == {f"{VIT_SCENARIO}/v{v}/{name}" for v in VERSIONS for name in ("model.pt", "model.json")}
    for rel, digest in listed.items():
        assert hashlib.sha256((VIT_WEIGHTS_DIR / rel).read_bytes()).hexdigest() == digest, rel
    assert sum((VIT_WEIGHTS_DIR / rel).stat().st_size for rel in listed) < 1_500_000  # small enough to commit


def test_cards_name_the_architecture_and_no_target_layer():
    card = json.loads((VIT_WEIGHTS_DIR / VIT_SCENARIO / "v1" / "model.json").read_text())
    assert card == {"name": f"ViT {VIT_SCENARIO} v1", "task": "classification",
                    "classes": list(SCENARIOS[VIT_SCENARIO].classes), "input_size": [64, 64], "mean": [0.5] * 3,
                    "std": [0.5] * 3, "architecture": VIT_ARCHITECTURE}


def test_v1_takes_the_shortcut_and_v5_does_not():
    v1 = evaluate(vit(1), VIT_SCENARIO, n=600, seeds=FRESH_SEEDS)
    v5 = evaluate(vit(5), VIT_SCENARIO, n=600, seeds=FRESH_SEEDS)
    assert v1["accuracy_biased"] > 0.9 and v1["accuracy_flipped"] <= v1["accuracy_biased"] - 0.25, v1
    assert v5["accuracy_biased"] > 0.85 and v5["accuracy_biased"] - v5["accuracy_flipped"] < 0.1, v5


def test_vit_training_is_bitwise_deterministic():
    a, _ = train_version(VIT_SCENARIO, 2, n=64, epochs=1, architecture=VIT_ARCHITECTURE)
    b, _ = train_version(VIT_SCENARIO, 2, n=64, epochs=1, architecture=VIT_ARCHITECTURE)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


@pytest.mark.slow
def test_cli_run_finds_the_token_layer_and_flags_the_watermark_on_v1_only(tmp_path, capsys):
    data = generate(VIT_SCENARIO, tmp_path / "data", n=40, leak=0.9, seed=7)
    flags = {}
    for version in (1, 5):
        model = VIT_WEIGHTS_DIR / VIT_SCENARIO / f"v{version}" / "model.pt"
        code = main([str(a) for a in ("run", "--model", model, "--data", data, "--n", 40, "--workspace",
                                      tmp_path / "ws", "--method", "gradcam", "--no-progress")])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert f"target layer: {TOKEN_LAYER} (detected)" in err
        run_id = out.strip().splitlines()[-1]
        flags[version] = main(["check", run_id, "--workspace", str(tmp_path / "ws"), "--fail-on-flags"])
        flags[version] = (flags[version], capsys.readouterr().out)
    assert flags[1][0] == 3 and "region 'watermark'" in flags[1][1], flags[1]
    # v5 is not flagged; 40 images may be too few to rule an effect out (exit 4, with the candidate it could not
    # decide), never a broken model or explainer
    assert flags[5][0] in (0, 4) and "no shortcut flagged" in flags[5][1], flags[5]
    assert flags[5][0] == 0 or "is not ruled out" in flags[5][1] or "neither shows" in flags[5][1], flags[5]


def randomisation(method: str) -> dict:
    from analysis.evidence.sanity import model_randomisation
    from sample_models.scenes import render
    from sample_models.train import to_tensors

    model = vit(1)
    images, _ = to_tensors(render(VIT_SCENARIO, n=8, seed=11))
    result = model_randomisation(model, images, method)
    assert all(torch.equal(v, vit(1).state_dict()[k]) for k, v in model.state_dict().items()), "weights restored"
    return result


def test_gradient_weighted_attention_passes_the_model_randomisation_check():
    result = randomisation("transformer_attribution")
    assert result["stages"][0]["layer"] == "head" and result["stages"][0]["spearman_abs"] < 0.9
    assert result["passed"], result


def test_attention_rollout_ignores_the_head():
    """Rollout reads the attention probabilities only: re-initialising the classifier head changes nothing
    (Spearman exactly 1), the reason Chefer et al. weight the attention by gradients. The cascade over blocks
    then re-initialises the attention blocks themselves, which does move the rollout, so its overall verdict
    rests on those stages (a per-layer cascade failed it on the head and the MLPs alone)."""
    result = randomisation("attention_rollout")
    (head,) = [stage for stage in result["stages"] if stage["layer"] == "head"]  # the cascade runs over blocks
    assert head["spearman_abs"] == pytest.approx(1.0)
    assert any(stage["spearman_abs"] < 0.5 for stage in result["stages"] if stage["layer"] != "head"), result


def test_the_default_demo_includes_the_vit_series():
    from analysis.demo.build import DEFAULT_SCENARIOS, VIT_DEMO, demo_plan

    assert VIT_DEMO in DEFAULT_SCENARIOS
    vit = [a for a in demo_plan() if a.model_file.parent.parent == VIT_WEIGHTS_DIR / VIT_SCENARIO]
    assert sorted((a.version, a.method) for a in vit) == [(f"v{v}", "gradcam") for v in VERSIONS]
    assert {a.shown_as for a in vit} == {(VIT_DEMO, f"v{v}") for v in VERSIONS}  # one model's versions


@pytest.mark.slow
def test_the_demo_path_flags_the_watermark_on_vit_v1_and_nothing_on_v5(tmp_path):
    """As `saliency-audit demo` builds it (registration, engine, evidence, cached report), fewer images."""
    from analysis.report.build import cached_report
    from analysis.store.workspace import Workspace
    from analysis.demo.build import VIT_DEMO, build_demo

    workspace = Workspace(tmp_path / "ws")
    v1, v5 = build_demo(workspace, scenarios=(VIT_DEMO,), versions=(1, 5), n=48, log=lambda _: None)
    reports = {version: cached_report(run_id, workspace) for version, run_id in (("v1", v1), ("v5", v5))}
    assert {r["run"]["model"]["name"] for r in reports.values()} == {VIT_DEMO}
    assert [r["run"]["model"]["version"] for r in reports.values()] == ["v1", "v5"]
    assert all(r["run"]["target_layer"] == TOKEN_LAYER for r in reports.values())
    assert "watermark" in {f["region"] for f in reports["v1"]["flags"]}, reports["v1"]["flags"]
    assert reports["v5"]["flags"] == [], reports["v5"]["flags"]
