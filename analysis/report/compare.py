"""Version comparison: did retraining move the model's attention off the shortcut, and what did it cost?

Given runs in order (v1, v2, ...), usually on the same image sample: per region and run the overall
`mass_mean`, `mass_ci`, `lift` (with CI); between consecutive runs the change in mean mass with a test
on per-image mass. When the runs share images the test is paired (sign-flip permutation of the per-image
differences, which is exact in distribution under "no change" for each image); otherwise an unpaired
permutation of the pooled values. Maps of consecutive versions are compared image by image (Spearman rank
correlation, IoU of the top-k% pixels), and subgroup accuracies are listed per version. `summary` says it
in words, for the regions and subgroups that changed significantly. Regions discovered from the maps are
numbered per audit; `discovered_tracks` matches them across versions.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.stats.aggregate import accuracy_table, region_matrix, slice_stats
from analysis.report.flags import effective_roles
from analysis.report.policy import policy_of

POLICY = policy_of("classification")


def compare_runs(stores, names=None, *, n_boot: int = 1000, n_perm: int = 4000, seed: int = 0,
                 top_fraction: float = 0.1, alpha: float = POLICY.alpha, maps: bool = True) -> dict:
    """`maps=False` leaves `map_similarity` empty: ranking every pixel of two 5,000-image runs is seconds of
    CPU that the dashboard's Compare page, which does not show it, would pay on its first render."""
    stores = list(stores)
    names = [str(n) for n in (names or [getattr(s, "run_id", None) or f"run{i + 1}" for i, s in enumerate(stores)])]
    ids = [getattr(s, "run_id", None) for s in stores]  # names can collide; scripts key on ids
    frames = [(s.images(), s.regions()) for s in stores]
    per_run = [_overall(images, regions, n_boot=n_boot, seed=seed) for images, regions in frames]

    regions: dict[str, dict] = {}
    for k, (name, run) in enumerate(zip(names, per_run)):
        for region, row in run["rows"].items():
            entry = regions.setdefault(region, {"role": row["role"], "runs": [None] * len(stores), "changes": []})
            entry["runs"][k] = {"run": name, "run_id": ids[k], **{key: row[key] for key in
                                ("mass_mean", "mass_ci", "area_mean", "lift", "lift_ci", "n")}}
    for region, entry in regions.items():
        for k in range(1, len(stores)):
            a, b = per_run[k - 1], per_run[k]
            if region not in a["rows"] or region not in b["rows"]:
                continue
            entry["changes"].append({"from": names[k - 1], "to": names[k], **mass_change(
                a["ids"], a["mass"][region], b["ids"], b["mass"][region], n_perm=n_perm, n_boot=n_boot,
                seed=seed)})

    similarity = [{"from": names[k - 1], "to": names[k],
                   **map_similarity(stores[k - 1].maps(), stores[k].maps(), top_fraction)}
                  for k in range(1, len(stores))] if maps else []

    accuracy = []
    for name, run_id, (images, _) in zip(names, ids, frames):
        table = accuracy_table(images)
        for row in table.to_dict("records"):
            accuracy.append({"run": name, "run_id": run_id, **{k: _clean(v) for k, v in row.items()}})
    result = {"runs": names, "run_ids": ids, "regions": regions, "map_similarity": similarity, "accuracy": accuracy}
    result["summary"] = summarise(result, alpha=alpha)
    return result


def flagged_versions(names: list[str], reports: list[dict]) -> dict[str, list[str]]:
    """Per version (by its name in the comparison), what its audit's findings name (a region, or an image
    property), in report order, read through the typed records."""
    from analysis.report.records import Report

    return {name: list(dict.fromkeys(f.subject for f in Report.from_json(report).findings))
            for name, report in zip(names, reports)}


def flags_sentence(flagged: dict[str, list[str]]) -> str:
    """"flagged: v1 on cage and background, v2 on cage; no flag: v3, v4"; empty for no versions."""
    def listed(regions: list[str]) -> str:
        return regions[0] if len(regions) == 1 else f"{', '.join(regions[:-1])} and {regions[-1]}"

    marked = [f"{name} on {listed(regions)}" for name, regions in flagged.items() if regions]
    clear = [name for name, regions in flagged.items() if not regions]
    parts = ([f"flagged: {', '.join(marked)}"] if marked else []) + ([f"no flag: {', '.join(clear)}"] if clear else [])
    return "; ".join(parts)


def with_flags(result: dict, reports: list[dict]) -> dict:
    """A comparison with `flagged` (region names per version, from each run's report) and its summary ending
    in which versions are flagged; `reports` in the order of `result["runs"]`."""
    names = [run["name"] if isinstance(run, dict) else run for run in result.get("runs", [])]
    flagged = flagged_versions(names, reports)
    sentence = flags_sentence(flagged)
    summary = result.get("summary") or ""
    joint = "\n" if "\n" in summary else "; "  # a summary of lines gains a line, a sentence a clause
    return {**result, "flagged": flagged, "summary": joint.join(part for part in (summary, sentence) if part)}


def discovered_tracks(reports: list[dict], *, min_score: float = 0.25) -> list[list[str | None]]:
    """The same discovered cue across versions: per track, its region name in each report (None where that
    version's audit did not discover it), in the order of `reports`.

    Discovered regions are numbered per audit (a cue is `discovered-2` in v1 and `discovered-1` in v3), so
    they are matched on what they hold: a track's latest region and a new one score the Jaccard overlap of
    the images that hold them times the overlap of their position histograms (corners vs border vs centre);
    pairs are taken best first, at least `min_score`, each region at most once. Audits of the same
    validation sample (the compare page's case) share image ids; audits of disjoint samples match nothing."""
    tracks: list[list[str | None]] = []
    latest: list[dict] = []
    for k, report in enumerate(reports):
        found = list(report.get("discovered_regions") or [])
        pairs = sorted(((_track_score(latest[t], d), t, j) for t in range(len(tracks)) for j, d in enumerate(found)),
                       key=lambda p: -p[0])
        taken_t, taken_j = set(), set()
        for score, t, j in pairs:
            if score >= min_score and t not in taken_t and j not in taken_j:
                tracks[t][k], latest[t] = found[j]["name"], found[j]
                taken_t.add(t)
                taken_j.add(j)
        for j, d in enumerate(found):
            if j not in taken_j:
                tracks.append([None] * len(reports))
                tracks[-1][k] = d["name"]
                latest.append(d)
    return tracks


def _track_score(a: dict, b: dict) -> float:
    ids_a, ids_b = set(a.get("image_ids") or []), set(b.get("image_ids") or [])
    if not ids_a or not ids_b:
        return 0.0
    jaccard = len(ids_a & ids_b) / len(ids_a | ids_b)
    pa, pb = a.get("position_counts") or {}, b.get("position_counts") or {}
    ta, tb = sum(pa.values()) or 1, sum(pb.values()) or 1
    places = sum(min(pa.get(p, 0) / ta, pb.get(p, 0) / tb) for p in set(pa) | set(pb)) if pa and pb else 1.0
    return jaccard * places


def mass_change(ids_a, mass_a, ids_b, mass_b, *, n_perm: int = 4000, n_boot: int = 1000, seed: int = 0) -> dict:
    """Change in mean mass from run a to run b; paired on shared image ids when there are any."""
    rng = np.random.default_rng(seed)
    common, ia, ib = np.intersect1d(ids_a, ids_b, return_indices=True)
    if len(common) >= 2:
        d = mass_b[ib] - mass_a[ia]
        observed = d.mean()
        null = _sign_flip_means(rng, d, n_perm)
        boot = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
        paired = True
    else:
        pooled = np.concatenate([mass_a, mass_b])
        observed = mass_b.mean() - mass_a.mean()
        null = np.empty(n_perm)
        for j in range(n_perm):
            perm = rng.permutation(pooled)
            null[j] = perm[len(mass_a):].mean() - perm[:len(mass_a)].mean()
        boot = (mass_b[rng.integers(0, len(mass_b), (n_boot, len(mass_b)))].mean(1)
                - mass_a[rng.integers(0, len(mass_a), (n_boot, len(mass_a)))].mean(1))
        paired = False
    p = (1 + np.sum(np.abs(null) >= abs(observed) - 1e-15)) / (n_perm + 1)
    return {"diff": float(observed), "diff_ci": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
            "p_value": float(p), "paired": paired, "n": int(len(common) if paired else len(mass_a) + len(mass_b))}


def _sign_flip_means(rng, d: np.ndarray, n_perm: int, block: int = 256) -> np.ndarray:
    """The mean of `d` under `n_perm` random sign flips: the draws `rng.choice([-1.0, 1.0], (n_perm, n))` makes
    (0 / 1 here, in blocks: the same stream), as matrix-vector products of blocks of flips instead of one
    (n_perm, n) matrix of products (160 MB at 5,000 images; 8x the CPU). Equal to ~1e-17."""
    blocks = [rng.integers(0, 2, size=(min(block, n_perm - start), len(d))).astype(np.float64) @ d
              for start in range(0, n_perm, block)]
    return (2.0 * np.concatenate(blocks) - d.sum()) / len(d)


def map_similarity(maps_a, maps_b, top_fraction: float = 0.1) -> dict:
    """Mean per-image Spearman and top-k% IoU over the images both runs explained."""
    from analysis.evidence.sanity import spearman  # imports torch: only where maps are compared

    ids_a, a = maps_a
    ids_b, b = maps_b
    common, ia, ib = np.intersect1d(ids_a, ids_b, return_indices=True)
    if len(common) == 0 or a.shape[1:] != b.shape[1:]:
        return {"n": 0, "spearman": None, "topk_iou": None, "top_fraction": top_fraction}
    a, b = a[ia].astype(np.float32), b[ib].astype(np.float32)
    rho = spearman(a, b)
    iou = topk_iou(a, b, top_fraction)
    return {"n": int(len(common)), "spearman": float(rho.mean()), "topk_iou": float(iou.mean()),
            "top_fraction": top_fraction}


def topk_iou(a: np.ndarray, b: np.ndarray, fraction: float) -> np.ndarray:
    """Per-image IoU of the top `fraction` pixels of two map stacks (N, h, w)."""
    flat_a, flat_b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    k = max(1, int(round(fraction * flat_a.shape[1])))
    top_a = np.zeros(flat_a.shape, dtype=bool)
    top_b = np.zeros(flat_b.shape, dtype=bool)
    np.put_along_axis(top_a, np.argsort(-flat_a, axis=1, kind="stable")[:, :k], True, axis=1)
    np.put_along_axis(top_b, np.argsort(-flat_b, axis=1, kind="stable")[:, :k], True, axis=1)
    return (top_a & top_b).sum(1) / (top_a | top_b).sum(1)


def mass_shift(entry: dict, alpha: float) -> tuple[str, dict, dict] | None:
    """("rose" | "fell", first run's row, last run's row) when a non-core region's saliency mass changed
    significantly (some version-to-version change with p < alpha); None otherwise. Shared by every task's
    comparison summary."""
    runs = [r for r in entry["runs"] if r is not None]
    if entry["role"] == "core" or len(runs) < 2 or not any(c["p_value"] < alpha for c in entry["changes"]):
        return None
    return ("fell" if runs[-1]["mass_mean"] < runs[0]["mass_mean"] else "rose"), runs[0], runs[-1]


def rate_shifts(rates: pd.DataFrame, first: str, last: str, key: str, value: str) -> pd.DataFrame:
    """Rows of `key` whose rate `value` (with Wilson `ci_low`, `ci_high`) moved between the runs named
    `first` and `last` beyond overlapping intervals: `value_a`, `value_b` and `delta` per row."""
    merged = rates[rates["run"] == first].merge(rates[rates["run"] == last], on=key, suffixes=("_a", "_b"))
    merged = merged.dropna(subset=[f"{value}_a", f"{value}_b"])
    merged["delta"] = merged[f"{value}_b"] - merged[f"{value}_a"]
    return merged[(merged["ci_low_b"] > merged["ci_high_a"]) | (merged["ci_high_b"] < merged["ci_low_a"])]


def summarise(result: dict, *, alpha: float = POLICY.alpha) -> str:
    """Plain-language lines: shortcut-candidate attention that moved significantly, subgroup accuracy shifts."""
    names = result["runs"]
    lines = []
    for region, entry in result["regions"].items():
        shift = mass_shift(entry, alpha)
        if shift is None:
            continue
        verb, first, last = shift
        lines.append(f"attention on {region} {verb} from {first['mass_mean']:.0%} to {last['mass_mean']:.0%} "
                     f"of saliency mass between {first['run']} and {last['run']}")
    acc = pd.DataFrame(result["accuracy"])
    if len(acc) and len(names) >= 2:
        moved = rate_shifts(acc[acc["group"].notna()], names[0], names[-1], "group", "accuracy")
        if len(moved):
            for row in moved.reindex(moved["delta"].abs().sort_values(ascending=False).index).head(3) \
                    .to_dict("records"):
                verb = "rose" if row["delta"] > 0 else "fell"
                lines.append(f"accuracy on {row['group']} {verb} from {row['accuracy_a']:.0%} to "
                             f"{row['accuracy_b']:.0%}")
    if not lines:
        return f"no significant change in attention on shortcut candidates between {names[0]} and {names[-1]}" \
            if names else ""
    return "; ".join(lines)


def _overall(images: pd.DataFrame, regions: pd.DataFrame, *, n_boot: int, seed: int) -> dict:
    if images.empty:
        return {"rows": {}, "ids": np.zeros(0), "mass": {}}
    matrix = region_matrix(regions, images["image_id"].to_numpy())
    stats = slice_stats(matrix.mass, matrix.area, n_boot=n_boot, seed=seed)
    roles = effective_roles(matrix.regions, matrix.roles)
    rows, mass = {}, {}
    for j, name in enumerate(matrix.regions):
        rows[name] = {"role": roles[j], "mass_mean": float(stats["mass_mean"][j]),
                      "mass_ci": [float(stats["mass_ci_low"][j]), float(stats["mass_ci_high"][j])],
                      "area_mean": float(stats["area_mean"][j]), "lift": _clean(stats["lift"][j]),
                      "lift_ci": [_clean(stats["lift_ci_low"][j]), _clean(stats["lift_ci_high"][j])],
                      "n": int(stats["n"])}
        mass[name] = matrix.mass[:, j]
    return {"rows": rows, "ids": matrix.image_ids, "mass": mass}


def _clean(value):
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
