"""Power for moderate reliance: the moving-patch series audited at 1,000 images, with masks and without.

`docs/calibration.py` audits 200 images; issue 25 asks for >= 90% flags at >= 5 points of true reliance with
1,000 images and <= 5% false positives on clean models over >= 10 seeds, with and without masks. This script
trains the same models (`tests.report.power_audit`), audits each on `N` images (Grad-CAM, the default
evidence stage: the sample grows towards every image of the run while a region is undecided) once with
masks (the patch annotated) and once as a plain ImageFolder (grid and discovered regions), and appends one
row per audit to docs/calibration_power.csv (a stopped run keeps what it measured). `--table` prints the
markdown tables from the csv. Run from the repository root:
PYTHONPATH=. python docs/calibration_power.py [masks|maskfree]... (or `shapes`: the mask-free shapes series,
`sample_models.shapes_tag`, into docs/calibration_shapes.csv)
"""
from __future__ import annotations

import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RHOS = (0.75, 0.8, 0.85, 0.9, 1.0)
SEEDS = (0, 1, 2)
CLEAN_SEEDS = tuple(range(10))
N = 1000
HERE = Path(__file__).resolve().parent
CSV = HERE / "calibration_power.csv"
FIELDS = ("mode", "rho", "seed", "shuffle_drop", "cue_flagged", "any_flag", "flags", "cue_rank", "median_n",
          "cue_n", "shown_by", "described", "minutes")


def cue_regions(report: dict, mode: str) -> set[str]:
    """The regions that hold the cue: `patch` with masks; without, the discovered regions named as a corner
    patch and the grid's `border` ring (it holds the corner patch in every image)."""
    if mode == "masks":
        return {"patch"}
    return {"border"} | {d["name"] for d in report.get("discovered_regions") or []
                         if "corner" in d.get("description", "")}


SHAPES_JOBS = ([("clean: tag uncorrelated, shape moving", 0.5, True, s) for s in CLEAN_SEEDS]
               + [("clean: no tag, shape centred", None, False, s) for s in CLEAN_SEEDS]
               + [(f"biased: tag rho {rho}", rho, True, s) for rho in (0.9, 1.0) for s in SEEDS])


def shapes(n: int = N, only: list[int] | None = None) -> None:
    """The mask-free shapes series (`sample_models.shapes_tag`): clean models (tag present but uncorrelated,
    the shape moving; no tag, the shape centred) over ten seeds, biased ones (the tag points at the class with
    probability 0.9, 1) over three; audited without masks. The cue: a discovered region named as a corner
    patch. `only`: the indexes of `SHAPES_JOBS` to run (`shapes --only 0,1,2`)."""
    from analysis.store.workspace import Workspace
    from tests.report import maskfree_audit, power_audit

    root = Path(tempfile.mkdtemp(prefix="calibration-shapes-"))
    ws = Workspace(root / "ws")
    path = HERE / "calibration_shapes.csv"
    fields = ("case", "rho", "seed", "accuracy", "shuffle_drop", "cue_flagged", "any_flag", "flags", "cue_rank",
              "first_severity", "verdict", "median_n", "described", "minutes")
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        if new:
            writer.writeheader()
        for case, rho, moving, seed in [j for k, j in enumerate(SHAPES_JOBS) if only is None or k in only]:
            start = time.time()
            model, drop = maskfree_audit.trained(root, rho, seed, moving=moving)
            data = maskfree_audit.dataset(root, rho, n, moving=moving)
            report = power_audit.audit(ws, model, ws.register_dataset(data), n=n)
            cue = cue_regions(report, "maskfree")
            names = [flag_subject(fl) for fl in report["flags"]]
            hit = [fl for fl in report["flags"] if fl["region"] in cue]
            row = {"case": case, "rho": rho, "seed": seed, "accuracy": round(report["metrics"]["accuracy"], 4),
                   "shuffle_drop": None if drop is None else round(drop, 4), "cue_flagged": int(bool(hit)),
                   "any_flag": int(bool(names)), "flags": " ".join(names),
                   "cue_rank": names.index(hit[0]["region"]) + 1 if hit else "",
                   "first_severity": report["flags"][0]["severity"] if names else "",
                   "verdict": (report.get("verdict") or {}).get("status"),
                   "median_n": (report.get("sequential") or {}).get("median_n"), "described": described(report),
                   "minutes": round((time.time() - start) / 60, 2)}
            writer.writerow(row)
            f.flush()
            print(row, flush=True)


def flag_subject(flag: dict) -> str:
    """A flag's region, or "property:<name>" for an image-property finding (it has no region)."""
    return flag.get("region") or f"property:{flag.get('property')}"


def described(report: dict) -> str:
    """The flagged regions as the report names them (discovered ones by their description)."""
    return "; ".join(f"{flag_subject(fl)}: {fl.get('description') or fl.get('headline') or fl['severity']}"
                     for fl in report["flags"])


def main(modes: list[str], jobs: list[tuple[float, int]] | None = None) -> None:
    """`jobs`: (rho, seed) pairs to audit (`--jobs 0.8:0,0.5:3`; default: the whole series)."""
    from analysis.store.workspace import Workspace
    from tests.report import power_audit

    root = Path(tempfile.mkdtemp(prefix="calibration-power-"))
    ws = Workspace(root / "ws")
    jobs = jobs or ([(rho, SEEDS[0]) for rho in RHOS] + [(0.5, s) for s in CLEAN_SEEDS]
                    + [(rho, s) for s in SEEDS[1:] for rho in RHOS])
    new = not CSV.exists()
    with open(CSV, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
        if new:
            writer.writeheader()
        for rho, seed in jobs:
            model, drop = power_audit.trained(root, rho, seed)
            for mode in modes:
                start = time.time()
                data = power_audit.dataset(root, rho, N, masks=mode == "masks")
                report = power_audit.audit(ws, model, ws.register_dataset(data), n=N)
                cue = cue_regions(report, mode)
                names = [flag_subject(fl) for fl in report["flags"]]
                hit = [fl for fl in report["flags"] if fl["region"] in cue]
                ivs = report["interventions"]
                cue_n = max([(ivs.get(c, {}).get("sequential") or {}).get("n") or 0 for c in cue] or [0])
                row = {"mode": mode, "rho": rho, "seed": seed, "shuffle_drop": round(drop, 4),
                       "cue_flagged": int(bool(hit)), "any_flag": int(bool(names)), "flags": " ".join(names),
                       "cue_rank": names.index(hit[0]["region"]) + 1 if hit else "",
                       "median_n": (report.get("sequential") or {}).get("median_n"), "cue_n": cue_n,
                       "shown_by": hit[0]["evidence"].get("shown_by", "") if hit else "",
                       "described": described(report), "minutes": round((time.time() - start) / 60, 2)}
                writer.writerow(row)
                f.flush()
                print(row, flush=True)


def read() -> list[dict]:
    with open(CSV) as f:
        return list(csv.DictReader(f))


def tables(rows: list[dict]) -> str:
    out = []
    for mode in ("masks", "maskfree"):
        sel = [r for r in rows if r["mode"] == mode]
        if not sel:
            continue
        out += [f"**{'Masks given' if mode == 'masks' else 'Without masks'}** ({len(sel)} audits)", "",
                "| rho | models | true reliance, points (mean; min-max) | cue flagged | cue ranked first | "
                "median n (all regions) | n used on the cue (median) |", "|---|---|---|---|---|---|---|"]
        for rho in sorted({float(r["rho"]) for r in sel}):
            at = [r for r in sel if float(r["rho"]) == rho]
            drops = 100 * np.array([float(r["shuffle_drop"]) for r in at])
            first = sum(r["cue_rank"] == "1" for r in at)
            out.append(f"| {rho:.2f} | {len(at)} | {drops.mean():.1f} ({drops.min():.1f} to {drops.max():.1f}) | "
                       f"{sum(int(r['cue_flagged']) for r in at)}/{len(at)} | {first}/{len(at)} | "
                       f"{np.median([float(r['median_n'] or 0) for r in at]):.0f} | "
                       f"{np.median([float(r['cue_n'] or 0) for r in at]):.0f} |")
        bins = {"< 5 points (rho > 0.5)": lambda d, rho: rho > 0.5 and d < 5,
                ">= 5 points": lambda d, rho: d >= 5, "5 to 10 points": lambda d, rho: 5 <= d < 10}
        out += ["", "| true reliance | models | cue flagged |", "|---|---|---|"]
        for name, inside in bins.items():
            at = [r for r in sel if inside(100 * float(r["shuffle_drop"]), float(r["rho"]))]
            if at:
                out.append(f"| {name} | {len(at)} | {sum(int(r['cue_flagged']) for r in at)}/{len(at)} "
                           f"({np.mean([int(r['cue_flagged']) for r in at]):.0%}) |")
        clean = [r for r in sel if float(r["rho"]) == 0.5]
        if clean:
            out += ["", f"Clean models (rho = 0.5, {len(clean)} seeds): any flag {sum(int(r['any_flag']) for r in clean)}"
                        f"/{len(clean)}, on the cue {sum(int(r['cue_flagged']) for r in clean)}/{len(clean)}; "
                        f"flags: {'; '.join(r['flags'] for r in clean if r['flags']) or 'none'}.", ""]
    return "\n".join(out)


def shapes_table(path: Path = HERE / "calibration_shapes.csv") -> str:
    """Per case of the shapes series: accuracy, reliance, flags, the cue's rank and severity, verdicts."""
    if not path.exists():
        return ""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    out = ["| case | models | accuracy (min-max) | true reliance, points (mean) | any shortcut flag | cue flagged, "
           "ranked first | severity of the first flag | verdicts |", "|---|---|---|---|---|---|---|---|"]
    for case in dict.fromkeys(r["case"] for r in rows):
        at = [r for r in rows if r["case"] == case]
        acc = [float(r["accuracy"]) for r in at]
        drops = [100 * float(r["shuffle_drop"]) for r in at if r["shuffle_drop"]]
        verdicts = {v: sum(r["verdict"] == v for r in at) for v in dict.fromkeys(r["verdict"] for r in at)}
        severities = {v: sum(r["first_severity"] == v for r in at) for v in dict.fromkeys(
            r["first_severity"] for r in at if r["first_severity"])}
        out.append(f"| {case} | {len(at)} | {min(acc):.0%}-{max(acc):.0%} | "
                   f"{np.mean(drops):.1f} |" if drops else f"| {case} | {len(at)} | {min(acc):.0%}-{max(acc):.0%} | - |")
        out[-1] += (f" {sum(int(r['any_flag']) for r in at)}/{len(at)} | "
                    f"{sum(int(r['cue_flagged']) for r in at)}/{len(at)}, {sum(r['cue_rank'] == '1' for r in at)}"
                    f"/{len(at)} | {', '.join(f'{k} {v}' for k, v in severities.items()) or '-'} | "
                    f"{', '.join(f'{k} {v}' for k, v in verdicts.items())} |")
    flagged = [f"{r['case']} seed {r['seed']}: {r['described']}" for r in rows if r["any_flag"] == "1"
               and float(r["rho"] or 0) < 0.9]
    return "\n".join(out + ["", "Flags on clean models: " + ("; ".join(flagged) if flagged else "none") + "."])


NOTES_FILE = HERE / "calibration_power_notes.md"  # what the last run showed, in words (kept beside the csvs)


def section() -> str:
    """The section of docs/CALIBRATION.md on power at 1,000 images and the mask-free series (from the csvs and
    the notes file)."""
    NOTES = NOTES_FILE.read_text().strip() if NOTES_FILE.exists() else ""
    if not CSV.exists():
        return ""
    return f"""## Power at {N:,} images, with and without masks (issue 25)

Generated by `docs/calibration_power.py` (`--table` prints these from `docs/calibration_power.csv` and
`docs/calibration_shapes.csv`). The same moving-patch models as above, each audited on {N:,} images (Grad-CAM,
the default evidence stage: the sample grows by 100 images while a candidate is undecided, up to every image of
the run, no longer a fixed 400), once with masks (the `patch` annotated) and once as a plain ImageFolder (grid
cells and regions discovered from the maps; the cue counts as found when a flagged discovered region is named
as a corner patch). "median n": the images the candidates' interventions used. Which rows were re-run after
the last change to the evidence (and which are an earlier run's) is said below the tables.

{tables(read())}
### The mask-free shapes series

`sample_models/shapes_tag.py`: the class is a shape (filled rectangle or cross, random colour and size) at a
random position in the middle 60% of the image, or centred; a flat tag in a random corner points at the class
with probability rho (0.5: present but uncorrelated). Audited without masks on {N:,} images. Before the
object-or-cue test (README, "Without masks") the shape's areas were flagged on clean models; now a candidate is
a shortcut only when its colour against the rest of the image predicts the label or the model's answer.

{shapes_table()}

What this run shows and where it falls short (measured {time.strftime("%Y-%m-%d")} on a 2-core CPU shared with
other work at a load of 30-40; an audit took 2-8 minutes):
{NOTES}
"""


if __name__ == "__main__":
    if sys.argv[1:2] == ["--table"]:
        print(tables(read()))
        print(shapes_table())
    elif sys.argv[1:2] == ["shapes"]:
        shapes(only=[int(k) for k in sys.argv[3].split(",")] if sys.argv[2:3] == ["--only"] else None)
    else:
        args = sys.argv[1:]
        picked = None
        if "--jobs" in args:
            at = args.index("--jobs")
            picked = [(float(j.split(":")[0]), int(j.split(":")[1])) for j in args[at + 1].split(",")]
            args = args[:at] + args[at + 2:]
        main(args or ["masks", "maskfree"], picked)
