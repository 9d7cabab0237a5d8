"""Dataset-level region tables: how much saliency each region receives, with confidence intervals.

Input is the run store's `images` frame and its long `regions` frame (schema in docs/ARCHITECTURE.md).
Every statistic is a mean over images, so the uncertainty that matters is which images were sampled:
the bootstrap resamples *image indices* once per slice and reuses that resample for every region and for
both mass and area, which keeps the regions' intervals consistent with each other and makes lift (a ratio
of means, `mass_mean / area_mean`) a paired statistic. A region absent from an image counts as mass 0,
area 0 there (it received none of that image's saliency).

Slices: overall (`class` None, `group` None), per class (the true `label`), per subgroup value
(`attr.<name>` columns give group `"name=value"`) and correct vs misclassified (`"correct=True"`).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from explainers.errors import InputError

REGION_COLUMNS = [
    "region", "role", "class", "group", "n", "mass_mean", "mass_ci_low", "mass_ci_high",
    "area_mean", "lift", "lift_ci_low", "lift_ci_high",
]
ACCURACY_COLUMNS = ["class", "group", "n", "correct", "accuracy", "ci_low", "ci_high"]

# Bound on bootstrap working memory: replicates x images x regions floats per chunk.
_CHUNK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class RegionMatrix:
    """Per-image mass and area as dense (images x regions) arrays, aligned with `image_ids`."""

    image_ids: np.ndarray
    regions: list[str]
    roles: list[str | None]
    mass: np.ndarray
    area: np.ndarray


def region_matrix(regions: pd.DataFrame, image_ids) -> RegionMatrix:
    """Pivot the long `regions` frame to (images x regions); missing image/region pairs are 0."""
    missing = {"image_id", "region", "mass", "area"} - set(regions.columns)
    if missing:
        raise InputError(f"regions table lacks columns {sorted(missing)}; it must follow the run-store schema")
    ids = np.asarray(image_ids)
    names = list(dict.fromkeys(regions["region"].tolist()))
    mass = regions.pivot_table(index="image_id", columns="region", values="mass", aggfunc="sum")
    area = regions.pivot_table(index="image_id", columns="region", values="area", aggfunc="sum")
    mass = mass.reindex(index=ids, columns=names).fillna(0.0).to_numpy(np.float64)
    area = area.reindex(index=ids, columns=names).fillna(0.0).to_numpy(np.float64)
    role_of = {}
    if "role" in regions.columns:
        for name, role in regions.drop_duplicates("region")[["region", "role"]].itertuples(index=False):
            role_of[name] = None if role is None or (isinstance(role, float) and math.isnan(role)) else role
    return RegionMatrix(ids, names, [role_of.get(n) for n in names], mass, area)


def bootstrap_means(values: np.ndarray, *, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, *values.shape[1:]) means of image-index resamples of `values` (first axis = images).

    One index draw per replicate serves all columns (regions, and mass and area stacked together).
    """
    n = values.shape[0]
    flat = values.reshape(n, -1)
    out = np.empty((n_boot, flat.shape[1]))
    chunk = max(1, _CHUNK_ELEMENTS // max(1, n * flat.shape[1]))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = flat[idx].mean(axis=1)
    return out.reshape((n_boot,) + values.shape[1:])


def slice_stats(mass: np.ndarray, area: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                level: float = 0.95) -> dict[str, np.ndarray]:
    """Mean mass, area and lift with percentile bootstrap CIs for one slice of images (rows)."""
    n = mass.shape[0]
    mass_mean, area_mean = mass.mean(axis=0), area.mean(axis=0)
    lift = _ratio(mass_mean, area_mean)
    alpha = (1.0 - level) / 2.0
    if n >= 2 and n_boot > 0:
        rng = np.random.default_rng(seed)
        boot = bootstrap_means(np.stack([mass, area], axis=2), n_boot=n_boot, rng=rng)
        boot_lift = _ratio(boot[..., 0], boot[..., 1])
        mass_lo, mass_hi = np.quantile(boot[..., 0], [alpha, 1 - alpha], axis=0)
        with warnings.catch_warnings():  # a region with area 0 everywhere has an all-NaN lift
            warnings.simplefilter("ignore", RuntimeWarning)
            lift_lo, lift_hi = np.nanquantile(boot_lift, [alpha, 1 - alpha], axis=0)
    else:  # one image: no spread to estimate
        mass_lo = mass_hi = mass_mean
        lift_lo = lift_hi = lift
    return {"n": n, "mass_mean": mass_mean, "mass_ci_low": mass_lo, "mass_ci_high": mass_hi,
            "area_mean": area_mean, "lift": lift, "lift_ci_low": lift_lo, "lift_ci_high": lift_hi}


def region_table(images: pd.DataFrame, regions: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> pd.DataFrame:
    """Tidy table, one row per (slice, region), columns `REGION_COLUMNS`."""
    if images.empty:
        return pd.DataFrame(columns=REGION_COLUMNS)
    matrix = region_matrix(regions, images["image_id"].to_numpy())
    rows = []
    for cls, group, mask in slices(images):
        if not mask.any():
            continue
        stats = slice_stats(matrix.mass[mask], matrix.area[mask], n_boot=n_boot, seed=seed, level=level)
        for j, name in enumerate(matrix.regions):
            rows.append({"region": name, "role": matrix.roles[j], "class": cls, "group": group,
                         "n": int(stats["n"]),
                         **{k: float(v[j]) for k, v in stats.items() if k != "n"}})
    return pd.DataFrame(rows, columns=REGION_COLUMNS)


def slices(images: pd.DataFrame):
    """(class, group, boolean row mask) for overall, each class, each subgroup value, correct/incorrect."""
    n = len(images)
    yield None, None, np.ones(n, dtype=bool)
    if "label" in images.columns:
        for cls in sorted(images["label"].dropna().astype(str).unique()):
            yield cls, None, (images["label"].astype(str) == cls).to_numpy()
    for col in attribute_columns(images):
        values = images[col]
        for value in sorted(values.dropna().astype(str).unique()):
            yield None, f"{col[len('attr.'):]}={value}", (values.astype(str) == value).to_numpy()
    if "correct" in images.columns:
        correct = images["correct"].astype(bool).to_numpy()
        for value in (True, False):
            yield None, f"correct={value}", correct == value


def attribute_columns(images: pd.DataFrame) -> list[str]:
    return [c for c in images.columns if c.startswith("attr.")]


def accuracy_table(images: pd.DataFrame, *, level: float = 0.95) -> pd.DataFrame:
    """Accuracy with a Wilson score interval, overall / per class / per subgroup value.

    Wilson rather than the normal approximation: subgroups are small and accuracies sit near 0 or 1,
    where the normal interval leaves [0, 1] or collapses to a point.
    """
    rows = []
    if "correct" not in images.columns:
        return pd.DataFrame(columns=ACCURACY_COLUMNS)
    for cls, group, mask in slices(images):
        if group is not None and group.startswith("correct="):
            continue
        correct = images["correct"].astype(bool).to_numpy()[mask]
        if correct.size == 0:
            continue
        k, n = int(correct.sum()), int(correct.size)
        low, high = wilson_interval(k, n, level=level)
        rows.append({"class": cls, "group": group, "n": n, "correct": k, "accuracy": k / n,
                     "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=ACCURACY_COLUMNS)


def wilson_interval(k: int, n: int, *, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n."""
    if n == 0:
        return (float("nan"), float("nan"))
    z = NormalDist().inv_cdf(0.5 + level / 2)  # the stdlib's: scipy.stats costs a reader 0.6 s of imports
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def table_records(table: pd.DataFrame) -> list[dict]:
    """Rows in the report-JSON shape (docs/FORMATS.md): `mass_ci` and `lift_ci` as pairs, NaN -> None."""
    out = []
    for row in table.to_dict("records"):
        out.append({
            "region": row["region"], "role": _none(row["role"]), "class": _none(row["class"]),
            "group": _none(row["group"]), "mass_mean": _num(row["mass_mean"]),
            "mass_ci": [_num(row["mass_ci_low"]), _num(row["mass_ci_high"])],
            "area_mean": _num(row["area_mean"]), "lift": _num(row["lift"]),
            "lift_ci": [_num(row["lift_ci_low"]), _num(row["lift_ci_high"])], "n": int(row["n"]),
        })
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _none(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _num(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value
