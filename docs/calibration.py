"""Calibration of the shortcut flag on the moving-patch series (`sample_models.moving_patch`).

For each cue correlation rho and training seed: train the tiny model, measure its true reliance (the
accuracy lost when the patch's colour is shuffled to point at a random class, on 400 held-out images),
audit it (Grad-CAM, masks given, 100 images, the default evidence stage) and record whether the patch is
flagged and the evidence sample's size. Writes docs/calibration.csv, docs/calibration.png and prints the
table. Run: PYTHONPATH=. python docs/calibration.py  (about a minute per model on one CPU core).
"""
from __future__ import annotations

import csv
import sys
import tempfile
from pathlib import Path

import numpy as np

RHOS = (0.6, 0.7, 0.8, 0.85, 0.9, 1.0)
SEEDS = (0,)
CLEAN_SEEDS = (0, 1, 2)  # rho = 0.5: the cue carries no information (tests/report/test_power.py runs 10 seeds)
N = 100
HERE = Path(__file__).resolve().parent


def main() -> None:
    from analysis.store.workspace import Workspace
    from tests.report import power_audit

    root = Path(tempfile.mkdtemp(prefix="calibration-"))
    ws = Workspace(root / "ws")
    jobs = sorted({(rho, s) for rho in RHOS for s in SEEDS} | {(0.5, s) for s in CLEAN_SEEDS})
    rows = []
    for rho, seed in jobs:
        data_id = ws.register_dataset(power_audit.dataset(root, rho, N))
        model, drop = power_audit.trained(root, rho, seed)
        report = power_audit.audit(ws, model, data_id, n=N)
        patch = report["interventions"].get("patch", {})
        flagged = any(f["region"] == "patch" for f in report["flags"])
        rows.append({"rho": rho, "seed": seed, "shuffle_drop": round(drop, 4), "flagged": int(flagged),
                     "any_flag": int(bool(report["flags"])),
                     "n_used": (patch.get("sequential") or {}).get("n"),
                     "shown_by": next((f["evidence"].get("shown_by") for f in report["flags"]
                                       if f["region"] == "patch"), "")})
        print(rows[-1], flush=True)
    with open(HERE / "calibration.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    table = summary(rows)
    print(table)
    plot(rows)


def summary(rows: list[dict]) -> str:
    lines = ["| rho | models | true reliance (shuffle drop, mean) | flag rate | median n used |",
             "|---|---|---|---|---|"]
    for rho in sorted({r["rho"] for r in rows}):
        sel = [r for r in rows if r["rho"] == rho]
        lines.append(f"| {rho:.2f} | {len(sel)} | {np.mean([r['shuffle_drop'] for r in sel]):.3f} | "
                     f"{np.mean([r['flagged'] for r in sel]):.0%} | {np.median([r['n_used'] or 0 for r in sel]):.0f} |")
    clean = [r for r in rows if r["rho"] == 0.5]
    lines.append(f"\nfalse-positive rate on clean models (rho = 0.5, any flag): "
                 f"{np.mean([r['any_flag'] for r in clean]):.0%} over {len(clean)} seeds")
    return "\n".join(lines)


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    drop = np.array([r["shuffle_drop"] for r in rows])
    flag = np.array([r["flagged"] for r in rows])
    jitter = np.random.default_rng(0).uniform(-0.04, 0.04, len(rows))
    ax.scatter(100 * drop, flag + jitter, c=[r["rho"] for r in rows], cmap="viridis", s=22)
    ax.axvline(10, ls="--", c="grey", lw=0.8)
    ax.axvline(1, ls=":", c="grey", lw=0.8)
    ax.set_yticks([0, 1], ["not flagged", "flagged"])
    ax.set_xlabel("true reliance: accuracy lost when the cue is shuffled (points)")
    ax.set_title("Flag against true reliance (moving patch, Grad-CAM)", fontsize=9)
    fig.colorbar(ax.collections[0], ax=ax, label="cue correlation rho")
    fig.tight_layout()
    fig.savefig(HERE / "calibration.png")


if __name__ == "__main__":
    sys.exit(main())
