"""Calibration of the shortcut flag on the moving-patch series (`sample_models.moving_patch`).

For each cue correlation rho and training seed: train the tiny model, measure its true reliance (the
accuracy lost when the patch's colour is shuffled to point at a random class, on 400 held-out images),
audit it through the real engine (Grad-CAM, masks given, `N` images, the default evidence stage) and
record whether the patch is flagged, which test showed it and the evidence sample's size. Clean models
(rho = 0.5: the colour carries no information) over `CLEAN_SEEDS` give the false-positive rate, per region.
Writes docs/calibration.csv, docs/calibration.png and docs/CALIBRATION.md (the table, the rates and the
wall time). Run from the repository root: PYTHONPATH=. python docs/calibration.py
"""
from __future__ import annotations

import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RHOS = (0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
SEEDS = (0, 1, 2)
CLEAN_SEEDS = tuple(range(10))  # rho = 0.5
N = 200  # images audited (the evidence sample's cap: two looks of 100)
REGIONS = ("patch", "background")  # the non-core regions (the bar is the core)
HERE = Path(__file__).resolve().parent


def main() -> None:
    from analysis.store.workspace import Workspace
    from tests.report import power_audit

    start = time.time()
    root = Path(tempfile.mkdtemp(prefix="calibration-"))
    ws = Workspace(root / "ws")
    # a first seed of every rho, the clean seeds, then the other seeds: a run stopped early still spans the series
    jobs = ([(rho, SEEDS[0]) for rho in RHOS] + [(0.5, s) for s in CLEAN_SEEDS]
            + [(rho, s) for s in SEEDS[1:] for rho in RHOS])
    rows = []
    for rho, seed in jobs:
        data_id = ws.register_dataset(power_audit.dataset(root, rho, N))
        model, drop = power_audit.trained(root, rho, seed)
        report = power_audit.audit(ws, model, data_id, n=N)
        flags = {f["region"]: f for f in report["flags"]}
        patch = report["interventions"].get("patch", {})
        rows.append({"rho": rho, "seed": seed, "shuffle_drop": round(drop, 4),
                     **{f"flagged_{r}": int(r in flags) for r in REGIONS}, "any_flag": int(bool(flags)),
                     "n_used": (patch.get("sequential") or {}).get("n"),
                     "decision": (patch.get("sequential") or {}).get("decision"),
                     "shown_by": (flags.get("patch") or {}).get("evidence", {}).get("shown_by", "")})
        print(rows[-1], flush=True)
        write_csv(rows)  # after every model: a stopped run keeps what it measured (`--from-csv` writes the doc)
    minutes = (time.time() - start) / 60
    plot(rows)
    write_document(document(rows, minutes))
    print(document(rows, minutes))


def write_csv(rows: list[dict]) -> None:
    with open(HERE / "calibration.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def summary(rows: list[dict]) -> str:
    lines = ["| rho | models | true reliance: shuffle drop, points (mean; min-max) | `patch` flag rate | "
             "median n used | shown by |", "|---|---|---|---|---|---|"]
    for rho in sorted({r["rho"] for r in rows}):
        sel = [r for r in rows if r["rho"] == rho]
        drops = 100 * np.array([r["shuffle_drop"] for r in sel])
        shown = sorted({r["shown_by"] for r in sel if r["shown_by"]})
        lines.append(f"| {rho:.2f} | {len(sel)} | {drops.mean():.1f} ({drops.min():.1f} to {drops.max():.1f}) | "
                     f"{np.mean([r['flagged_patch'] for r in sel]):.0%} | "
                     f"{np.median([r['n_used'] or 0 for r in sel]):.0f} | {', '.join(shown) or '-'} |")
    return "\n".join(lines)


RELIANCE_BINS = {"<= 1 point": lambda d: d <= 1, "1 to 5 points": lambda d: 1 < d < 5,
                 "5 to 10 points": lambda d: 5 <= d < 10, ">= 10 points": lambda d: d >= 10}


def by_reliance(rows: list[dict]) -> str:
    """Flag rate in bins of true reliance: the issue's thresholds (<= 1 point: must not flag; >= 10: must)."""
    lines = ["| true reliance | models | `patch` flag rate |", "|---|---|---|"]
    for name, inside in RELIANCE_BINS.items():
        sel = [r for r in rows if inside(100 * r["shuffle_drop"])]
        if sel:
            lines.append(f"| {name} | {len(sel)} | {np.mean([r['flagged_patch'] for r in sel]):.0%} |")
    return "\n".join(lines)


def false_positives(rows: list[dict]) -> str:
    clean = [r for r in rows if r["rho"] == 0.5]
    per_region = ", ".join(f"`{r}` {sum(c[f'flagged_{r}'] for c in clean)}/{len(clean)}" for r in REGIONS)
    return (f"False positives on clean models (rho = 0.5, {len(clean)} training seeds): any region "
            f"{sum(c['any_flag'] for c in clean)}/{len(clean)} ({per_region}; the core `bar` is never flagged).")


def document(rows: list[dict], minutes: float) -> str:
    return f"""# Calibration of the shortcut flag

Generated by `docs/calibration.py` (run `PYTHONPATH=. python docs/calibration.py` from the repository root;
this run: {len(rows)} of the {len(RHOS) * len(SEEDS) + len(CLEAN_SEEDS)} planned models, {minutes:.1f} minutes on a
2-core CPU{"" if len(rows) == len(RHOS) * len(SEEDS) + len(CLEAN_SEEDS) else
", stopped early: a first seed of every rho comes first, then the clean seeds, then the other seeds"}). Series: `sample_models/moving_patch.py`, a flat patch
in a random corner whose colour points at the true class with probability rho (0.5: no information).
True reliance: the accuracy a model loses when every patch's colour is shuffled to point at a random class
(400 held-out images). Audit: Grad-CAM, masks given, {N} images, the default evidence stage (fill and swap
against equal-area controls, sequential sample in chunks of 100, Holm over all tests, alpha 0.01).

{summary(rows)}

{by_reliance(rows)}

{false_positives(rows)}

![flag against true reliance](calibration.png)

Tests that fail when power drops or the false-positive rate rises (`tests/report/test_power.py`, marked
`slow`): a model whose shuffle drop is 10 to 15 points (rho 0.85) is flagged on `patch` by Grad-CAM, plain
gradients and RISE (`test_partial_reliance_is_flagged_by_cam_gradient_and_perturbation_methods`); ten clean
models (shuffle drop <= 1 point each) never flag `patch`
(`test_clean_models_over_ten_seeds_never_flag_the_cue_and_state_their_power`) and flag any region at most 5% of
the time (`test_clean_models_over_ten_seeds_are_flagged_at_most_five_percent_on_any_region`).

Per model: `docs/calibration.csv`.

{power_section()}"""


def power_section() -> str:
    """docs/calibration_power.py's section (1,000 images, with and without masks), when it has been run."""
    sys.path.insert(0, str(HERE))
    from calibration_power import section

    return section()


def property_section() -> str:
    """The property shortcuts' section (written by docs/property_calibration.py), kept when this page is rewritten."""
    import re

    path = HERE / "CALIBRATION.md"
    found = re.search(r"\n<!-- property-calibration -->.*?<!-- /property-calibration -->\n", path.read_text(), re.S) \
        if path.exists() else None
    return found.group(0) if found else ""


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=120)
    drop = 100 * np.array([r["shuffle_drop"] for r in rows])
    flag = np.array([r["flagged_patch"] for r in rows])
    jitter = np.random.default_rng(0).uniform(-0.04, 0.04, len(rows))
    points = ax.scatter(drop, flag + jitter, c=[r["rho"] for r in rows], cmap="viridis", s=22, zorder=3)
    # the rate per bin of true reliance (the thresholds), at the bin's mean reliance: reliance need
    # not grow with rho (a seed may learn the core instead), so a line per rho would mislead
    centre, rate = [], []
    for inside in RELIANCE_BINS.values():
        sel = np.array([bool(inside(d)) for d in drop])
        if sel.any():
            centre.append(drop[sel].mean())
            rate.append(flag[sel].mean())
    ax.plot(centre, rate, "-o", c="black", lw=1, ms=3, label="flag rate per reliance bin (<=1, 1-5, 5-10, >=10)")
    ax.axvline(10, ls="--", c="grey", lw=0.8)
    ax.axvline(1, ls=":", c="grey", lw=0.8)
    ax.set_yticks([0, 0.5, 1], ["0 (not flagged)", "0.5", "1 (flagged)"])
    ax.set_xlabel("true reliance: accuracy lost when the cue is shuffled (points)")
    ax.set_ylabel("`patch` flag rate")
    ax.set_title("Flag against true reliance (moving patch, Grad-CAM)", fontsize=9)
    ax.legend(fontsize=7, loc="center right")
    fig.colorbar(points, ax=ax, label="cue correlation rho")
    fig.tight_layout()
    fig.savefig(HERE / "calibration.png")


def from_csv() -> None:
    """The plot and the doc again from docs/calibration.csv (the time given is the run's, passed as argv[2])."""
    with open(HERE / "calibration.csv") as f:
        rows = [{k: (float(v) if k in ("rho", "shuffle_drop") else int(v) if k not in ("decision", "shown_by")
                     and v != "" else v or None if k == "n_used" else v) for k, v in r.items()}
                for r in csv.DictReader(f)]
    plot(rows)
    write_document(document(rows, float(sys.argv[2]) if len(sys.argv) > 2 else float("nan")))


def write_document(text: str) -> None:
    """docs/CALIBRATION.md: this calibration, then the sections other scripts write, kept: the property
    shortcuts' (`docs/property_calibration.py`) and the other tasks' (`docs/target_calibration.py`)."""
    path, marker = HERE / "CALIBRATION.md", "## Taggers, segmenters and detectors"
    old = path.read_text() if path.exists() else ""
    kept = marker + old.split(marker, 1)[1] if marker in old else ""
    path.write_text(text + property_section() + ("\n" + kept if kept else ""))


if __name__ == "__main__":
    sys.exit(from_csv() if sys.argv[1:2] == ["--from-csv"] else main())
