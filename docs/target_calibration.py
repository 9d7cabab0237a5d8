"""Calibration of the tagger, segmenter and detector flags on their committed series.

Series: the tagger v1..v5 (`sample_models.tagging`: the water strip leaks the boat tag at 1.0 down to 0.5),
the segmenter v1..v5 (`sample_models.segmenting`: an object sits on its home band at 1.0 down to 0.5) and the
detector biased / debiased (`sample_models.detection`). Each is audited through the real engine on freshly
generated data (`N` images, one dataset per data seed in `DATA_SEEDS`), Grad-CAM for the tagger and the
segmenter, D-RISE for the detector, and its true reliance on the cue is measured on other fresh scenes:
- tagger: a tag's accuracy with the water where it was trained (leak 1) minus with the water flipped against
  the boat on every image (`tagging.tag_accuracy(..., flip=True)`), 400 scenes;
- segmenter: a class's IoU with every object on its home band minus with every object on the other band
  (`segmenting.class_ious`), 200 scenes;
- detector: a class's recall (score >= 0.5, IoU >= 0.5) on its home band minus on the other band, 200 scenes.
The cue of boat is the water, of car the road (the tagger's car has no cue: any flag on it is a false
positive). Writes docs/target_calibration.csv after every audit, then its section of docs/CALIBRATION.md
(everything from `MARKER` on; `--from-csv [MINUTES]` writes it again from the CSV). Run from the repository
root: PYTHONPATH=. python docs/target_calibration.py
"""
from __future__ import annotations

import csv
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N = 200
DATA_SEEDS = (31, 32)
CLEAN_SEEDS = tuple(range(33, 41))  # the clean ends again, on 8 more data seeds: 10 in all
RELIANCE_SEED = 900
DRISE_MASKS = 500  # half D-RISE's default: the CPU budget of this calibration
CUES = {"tagger": {"boat": "water"}, "segmenter": {"boat": "water", "car": "road"},
        "detector": {"boat": "water", "car": "road"}}
TARGETS = ("boat", "car")
HERE = Path(__file__).resolve().parent
CSV = HERE / "target_calibration.csv"
MARKER = "## Taggers, segmenters and detectors"


@functools.cache
def tagger_reliance(version: int) -> dict:
    import torch

    from sample_models import tagging
    from sample_models.architectures import ARCHITECTURES

    net = ARCHITECTURES[tagging.ARCHITECTURE](len(tagging.TAGS))
    net.load_state_dict(torch.load(tagging.WEIGHTS_DIR / f"v{version}" / "model.pt", weights_only=True))
    net.eval()
    home = tagging.tag_accuracy(net, RELIANCE_SEED, leak=1.0)
    flipped = tagging.tag_accuracy(net, RELIANCE_SEED + 1, flip=True)
    return {t: home[t] - flipped[t] for t in TARGETS}


@functools.cache
def segmenter_reliance(version: int) -> dict:
    import torch

    from sample_models import segmenting
    from sample_models.architectures import ARCHITECTURES

    net = ARCHITECTURES[segmenting.ARCHITECTURE](len(segmenting.CLASSES))
    net.load_state_dict(torch.load(segmenting.WEIGHTS_DIR / f"v{version}" / "model.pt", weights_only=True))
    net.eval()
    home, away = segmenting.class_ious(net, RELIANCE_SEED, 1.0), segmenting.class_ious(net, RELIANCE_SEED, 0.0)
    return {t: home[t] - away[t] for t in TARGETS}


@functools.cache
def detector_reliance(version: str) -> dict:
    from sample_models import detection

    detector = detection.load_detector(version)
    home = detection.recall(detector, detection.make_scenes(200, RELIANCE_SEED, biased=True, p_context=1.0))
    away = detection.recall(detector, detection.make_scenes(200, RELIANCE_SEED, biased=True, p_context=0.0))
    return {t: home[t] - away[t] for t in TARGETS}


def jobs() -> list[tuple[str, str, int]]:
    """(series, version, data seed): the ends of every series and the segmenter's v2 (boat at 20 points) first,
    on each data seed, then the middle versions, then the clean ends (tagger v5, segmenter v5, the debiased
    detector) on `CLEAN_SEEDS` more data seeds; a run stopped early still spans the ends."""
    first = [("segmenter", "v1"), ("segmenter", "v5"), ("segmenter", "v2"), ("detector", "biased"),
             ("detector", "debiased"), ("tagger", "v1"), ("tagger", "v5")]
    middle = [(s, f"v{k}") for s in ("segmenter", "tagger") for k in (3, 4)] + [("tagger", "v2")]
    clean = [("segmenter", "v5"), ("detector", "debiased"), ("tagger", "v5")]
    return ([(s, v, seed) for seed in DATA_SEEDS for s, v in first] + [(s, v, seed) for seed in DATA_SEEDS
                                                                       for s, v in middle]
            + [(s, v, seed) for seed in CLEAN_SEEDS for s, v in clean])


def dataset(root: Path, series: str, seed: int) -> Path:
    folder = root / f"data-{series}-{seed}"
    if folder.exists():
        return folder
    if series == "tagger":
        from sample_models import tagging

        return tagging.generate(folder, n=N, seed=seed)
    if series == "segmenter":
        from sample_models import segmenting

        return segmenting.generate(folder, n=N, seed=seed)
    from sample_models import detection

    return detection.write_coco(detection.make_scenes(N, seed, biased=True), folder)


def model_files(series: str, version: str) -> tuple[Path, Path]:
    from sample_models import detection, segmenting, tagging

    if series == "detector":
        folder = detection.WEIGHTS_DIR / version
        return folder / "model.safetensors", folder / "model.json"
    folder = {"tagger": tagging, "segmenter": segmenting}[series].WEIGHTS_DIR / version
    return folder / "model.pt2", folder / "model.json"


def audit_one(ws, root: Path, series: str, version: str, seed: int) -> dict:
    from analysis.report.build import build_report
    from analysis.runs.engine import execute_run

    start = time.time()
    data_id = ws.register_dataset(dataset(root, series, seed))
    model_id = ws.register_model(*model_files(series, version))
    method, params = ("drise", {"n_masks": DRISE_MASKS}) if series == "detector" else ("gradcam", {})
    run_id = ws.create_run(model_id, data_id, method, params, n=N, seed=0)
    execute_run(ws, run_id, progress=False)
    report = build_report(ws.store(run_id), ws, n_boot=200)
    reliance = (detector_reliance(version) if series == "detector" else
                tagger_reliance(int(version[1:])) if series == "tagger" else segmenter_reliance(int(version[1:])))
    flags = {(str(f.get("class")), str(f.get("region"))) for f in report.get("flags") or []}
    verdict = report.get("verdict") or {}
    row = {"series": series, "version": version, "data_seed": seed, "method": method,
           "verdict": verdict.get("status"), "verdict_reason": ((verdict.get("reasons") or [""])[0])[:160],
           "flags": ";".join(sorted(f"{c}/{r}" for c, r in flags)), "minutes": round((time.time() - start) / 60, 2)}
    by_pair = {(str(f.get("class")), str(f.get("region"))): f for f in report.get("flags") or []}
    power = {(str(p.get("class")), str(p.get("region"))): p for p in report.get("power") or []}
    for target in TARGETS:
        cue = CUES[series].get(target)
        row[f"reliance_{target}"] = round(float(reliance[target]), 4)
        row[f"cue_{target}"] = cue or ""
        row[f"flagged_{target}_cue"] = int(cue is not None and (target, cue) in flags)
        row[f"flagged_{target}_other"] = int(any(c == target and r != cue for c, r in flags))
        deciding = ((by_pair.get((target, cue)) or {}).get("tests") or [{}])[0]
        row[f"test_{target}_cue"] = deciding.get("name") or ""  # the flag's deciding test: fill, swap, context fill
        row[f"p_holm_{target}_cue"] = deciding.get("p_value_corrected") or ""
        bound = power.get((target, cue)) or {}  # an unflagged cue: what its tests could still have missed
        row[f"power_{target}_cue"] = bound.get("lost_excess_upper", bound.get("excess_drop_upper", ""))
    return row


def main() -> None:
    from analysis.store.workspace import Workspace

    start = time.time()
    root = Path(tempfile.mkdtemp(prefix="target-calibration-"))
    ws = Workspace(root / "ws")
    rows = []
    order = jobs()[::-1] if "--reverse" in sys.argv else jobs()  # a second worker from the other end
    for series, version, seed in order:
        try:
            rows.append(audit_one(ws, root, series, version, seed))
        except Exception as exc:  # one failed audit is a row, not a lost calibration
            rows.append({"series": series, "version": version, "data_seed": seed, "verdict": "error",
                         "verdict_reason": f"{type(exc).__name__}: {exc}"[:160]})
        print(json.dumps(rows[-1]), flush=True)
        write_csv(rows)
    minutes = (time.time() - start) / 60
    print(f"total {minutes:.1f} minutes", flush=True)
    write_section(rows, minutes)


def write_csv(rows: list[dict]) -> None:
    names = list(dict.fromkeys(k for r in rows for k in r))
    path = Path(sys.argv[sys.argv.index("--csv") + 1]) if "--csv" in sys.argv else CSV
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _pct(values) -> str:
    values = [v for v in values if v not in ("", None)]
    return f"{100 * np.mean([float(v) for v in values]):.0f}%" if values else "-"


def _points(values) -> str:
    values = [100 * float(v) for v in values if v not in ("", None)]
    if not values:
        return "-"
    return f"{np.mean(values):.1f}" if len(values) == 1 or max(values) - min(values) < 0.05 else \
        f"{np.mean(values):.1f} ({min(values):.1f} to {max(values):.1f})"


def tables(rows: list[dict]) -> str:
    """Per series: a row per version with true reliance, the cue's flag rate, other flags and the verdicts."""
    out = []
    for series in ("tagger", "segmenter", "detector"):
        sel = [r for r in rows if r["series"] == series and r.get("verdict") != "error"]
        if not sel:
            continue
        cues = CUES[series]
        head = " | ".join(f"{t} reliance (points) | {t} on {cues[t]} flagged" if t in cues else
                          f"{t} reliance (points) | {t} flagged (any region)" for t in TARGETS)
        out += [f"**{series}**", "", f"| version | audits | {head} | verdicts |",
                "|---|---|" + "---|---|" * len(TARGETS) + "---|"]
        for version in sorted({r["version"] for r in sel}):
            part = [r for r in sel if r["version"] == version]
            cells = []
            for t in TARGETS:
                flagged = [int(r[f"flagged_{t}_cue"]) if t in cues else
                           int(r[f"flagged_{t}_other"]) for r in part]
                tests = sorted({r.get(f"test_{t}_cue") for r in part if r.get(f"test_{t}_cue")})
                cells += [_points(r[f"reliance_{t}"] for r in part),
                          f"{sum(flagged)}/{len(flagged)}" + (f" ({', '.join(tests)})" if tests else "")]
            verdicts = ", ".join(f"{v} {sum(r['verdict'] == v for r in part)}"
                                 for v in ("flagged", "clear", "cannot_judge") if any(r["verdict"] == v for r in part))
            out.append(f"| {version} | {len(part)} | {' | '.join(cells)} | {verdicts} |")
        out.append("")
    errors = [r for r in rows if r.get("verdict") == "error"]
    if errors:
        out.append(f"Audits that failed: {len(errors)} ({'; '.join(r['verdict_reason'] for r in errors[:3])}).")
    return "\n".join(out)


NOTES = """What these numbers allow (the run of issue 24: 48 audits, 123 audit-minutes in two workers, 80 minutes
of wall clock):
- The segmenter's car / road, missed before (0/2 at 83 points of reliance: the flat fill's mean colour is a
  blue-grey that left most car pixels found, McNemar p = 1), is flagged on both data seeds by the swap (the road
  given the look of a boat's surroundings; corrected p 2e-27 on seed 31). The boat at 20 points (v2), missed
  before (clear / cannot judge), is flagged on both seeds by the swap (net drop 13 and 15 points of pixel
  accuracy, corrected p 0.004 and 8e-5), and v2's car (12 points) on one of two.
- The segmenter's v3 car / road (3.6 points of IoU reliance, trained with the car on the road 75% of the time)
  is flagged on one seed of two (swap, net 8 points, corrected p 0.008): the swap measures the share of the
  car's pixels lost when its road looks like water, which moves more than the IoU of a car moved onto real
  water; a flag on a partly biased version, not on a clean one.
- Clean ends over 10 data seeds each (tagger v5, segmenter v5, the debiased detector; one training seed each):
  none of the 30 audits flagged anything, all 30 clear. No off-cue flag in 48 audits (the tagger's car, 20
  points of flip-reliance on v1 that filling the water does not move, never flagged).
- The detector's flags now rest on the exact McNemar test on lost detections, Holm over its 4 (class, region)
  tests: the biased detector's boats and cars flagged on both seeds (boats lost 100% vs 0% under the control,
  corrected p 4e-73). The debiased one reads clear on 10 of 10 seeds; its power lines say what that rules out:
  filling the water could still remove at most 10 to 20% of its boat detections beyond the control (95% upper
  bounds, about 170 detections), the road at most 1 to 7% of its cars. The clear verdict itself reads the
  excess score drop's interval (below 0.10 of D-RISE score), a tighter scale than the lost share.
- The tagger is flagged from 27 points of reliance (v4) up, on both seeds, v5 (7 points) clear on 10 of 10,
  with a power line of at most 3 to 5 points of the boat tag's probability.
- Still not the classification table's design: one training seed per version, so a flag rate at a given
  reliance rests on one model; the clean ends' 10 seeds are data seeds, not training seeds.
"""


def section(rows: list[dict], minutes: float) -> str:
    planned = len(jobs())
    seeds = sorted({int(r["data_seed"]) for r in rows if r.get("data_seed") not in ("", None)})
    return f"""{MARKER}

Generated by `docs/target_calibration.py` (this run: {len(rows)} of the {planned} planned audits, {minutes:.0f}
minutes on a shared 2-core CPU whose load average stood near 28; per audit: `docs/target_calibration.csv`;
`--from-csv MINUTES` rewrites this section from it). Each committed version (one training seed each) is audited
through the engine on {N} freshly generated images per data seed (data seeds {", ".join(map(str, seeds))}; the
ends of each series and the segmenter's v2 come first on seeds {" and ".join(map(str, DATA_SEEDS))}, then the
middle versions, then the clean ends on more seeds, so a stopped run still spans the ends), with Grad-CAM
(tagger, segmenter) or D-RISE at {DRISE_MASKS} masks (detector) and each task's default evidence: the tagger's
region fill against an equal-area control; the segmenter's fill and its swap (the region given the look of
another class's surroundings, from another image, against the same donor pixels on an equal-area control); the
detector's surround fill against an equal-area control fill, tested on lost detections. Every task: exact
one-sided McNemar tests, Holm over the run's tests, alpha 0.01, the policy's minimum effect
(`analysis/report/policy.py`: 5 points; detectors 0.10 of D-RISE score), the verdict of
`analysis/report/verdict.py`. True reliance is measured apart, on other fresh scenes, by moving the cue: the
tagger's tag accuracy with the water where it was trained minus with the water flipped against the boat (400
scenes); the segmenter's class IoU and the detector's class recall with every object on its home band minus on
the other band (200 scenes). Cues: boat -> water, car -> road (the tagger's car has none: a flag on it is a false
positive). Flag columns count audits (versions x data seeds), with the flags' deciding tests in brackets;
reliance is one number per version.

{tables(rows)}
Clean ends (tagger v5, segmenter v5, the debiased detector): {clean_summary(rows)}.
Off-cue flags (a target flagged on any region but its cue, the tagger's car on anything): {off_cue(rows)}.

{NOTES}"""


CLEAN = {("tagger", "v5"), ("segmenter", "v5"), ("detector", "debiased")}


def clean_summary(rows: list[dict]) -> str:
    """The clean ends (little or no reliance): audits with any flag, over how many data seeds."""
    sel = [r for r in rows if (r["series"], r["version"]) in CLEAN and r.get("verdict") != "error"]
    flagged = [r for r in sel if r.get("flags")]
    seeds = sorted({int(r["data_seed"]) for r in sel})
    verdicts = ", ".join(f"{v} {sum(r['verdict'] == v for r in sel)}" for v in ("clear", "cannot_judge", "flagged")
                         if any(r["verdict"] == v for r in sel))
    return (f"{len(flagged)} of {len(sel)} audits flagged anything ({verdicts}; data seeds "
            f"{', '.join(map(str, seeds))})" + (": " + "; ".join(f"{r['series']} {r['version']} seed {r['data_seed']}: "
                                                              f"{r['flags']}" for r in flagged) if flagged else ""))


def off_cue(rows: list[dict]) -> str:
    sel = [r for r in rows if r.get("verdict") != "error"]
    return f"{sum(int(r['flagged_boat_other']) + int(r['flagged_car_other']) > 0 for r in sel)} of {len(sel)} audits"


def write_section(rows: list[dict], minutes: float) -> None:
    """Replace docs/CALIBRATION.md's section from `MARKER` to the next `## ` heading (the sections around it stay)."""
    path = HERE / "CALIBRATION.md"
    text = path.read_text()
    head, _, rest = text.partition(MARKER)
    after = rest.find("\n## ")
    tail = rest[after + 1:] if after >= 0 else ""
    path.write_text(head.rstrip() + "\n\n" + section(rows, minutes).rstrip() + "\n" + ("\n" + tail if tail else ""))


def from_csv() -> None:
    """`--from-csv MINUTES [OTHER.csv ...]`: the section from the CSV, merged first with other workers' CSVs
    (each audit once, in `jobs()` order)."""
    rows = []
    for path in [CSV, *map(Path, sys.argv[3:])]:
        with open(path) as f:
            rows += list(csv.DictReader(f))
    order = {(s, v, str(seed)): k for k, (s, v, seed) in enumerate(jobs())}
    unique = {(r["series"], r["version"], str(r["data_seed"])): r for r in rows}
    rows = sorted(unique.values(), key=lambda r: order.get((r["series"], r["version"], str(r["data_seed"])), 10**6))
    write_csv(rows)
    write_section(rows, float(sys.argv[2]) if len(sys.argv) > 2 else float("nan"))


if __name__ == "__main__":
    sys.exit(from_csv() if sys.argv[1:2] == ["--from-csv"] else main())
