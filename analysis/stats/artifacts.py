"""Register-like artifact tokens in a run: where they sit, how much of each region's saliency they carry, and
each region's attention recomputed without them.

The explainer marks outlier-norm patch tokens of the explained layer (`explainers.registers`, Darcet et al.
2024); the classification task stores, per image and region, the saliency mass and the area on those
tokens' patches (`artifact_mass`, `artifact_area`, same units as `mass` and `area`) and, per image, the same
over the whole image plus the token count (`artifact_tokens`). A region's share *without* the artifacts is
then exact arithmetic on those columns: the artifact patches are taken out of the image (their mass out of
the total, their pixels out of the area), so `mass' = (mass - artifact_mass) / (1 - image artifact_mass)` and
`area' = (area - artifact_area) / (1 - image artifact_area)`. The flag rule asks that a region's lift hold on
those (`analysis.report.flags`): a background region must not be flagged on the strength of artifact tokens
alone.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

IMAGE_ARTIFACT_COLUMNS = ["artifact_tokens", "artifact_mass", "artifact_area"]
REGION_ARTIFACT_COLUMNS = ["artifact_mass", "artifact_area"]
MOSTLY = 0.5  # "mostly in region X": at least this share of the artifact patches' area lies in X


def masked_artifact_shares(positive: np.ndarray, masks: np.ndarray, artifacts: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(per-region artifact mass, per-region artifact area, image artifact mass, image artifact area).

    `positive`: the map's positive part at the masks' resolution; `masks` (R, h, w) bool; `artifacts` (h, w)
    bool. Masses are shares of the image's positive mass, areas shares of its pixels, as in `region_shares`."""
    total = positive.sum()
    on = positive * artifacts
    flat = masks.reshape(len(masks), -1).astype(np.float64)
    mass = flat @ on.ravel() / total if total > 0 else np.zeros(len(masks))
    area = flat @ artifacts.ravel().astype(np.float64) / artifacts.size
    return mass, area, float(on.sum() / total) if total > 0 else 0.0, float(artifacts.mean())


def has_artifacts(images: pd.DataFrame, regions: pd.DataFrame) -> bool:
    """Whether the run recorded artifact tokens at all (a token-layer run with at least one artifact)."""
    return ("artifact_tokens" in images.columns and set(REGION_ARTIFACT_COLUMNS) <= set(regions.columns)
            and bool(images["artifact_tokens"].fillna(0).gt(0).any()))


def without_artifacts(images: pd.DataFrame, regions: pd.DataFrame) -> pd.DataFrame:
    """The regions frame with `mass` and `area` recomputed with the artifact patches taken out of each image."""
    per_image = images.set_index("image_id")[["artifact_mass", "artifact_area"]].astype(float).fillna(0.0)
    total_mass = regions["image_id"].map(per_image["artifact_mass"]).fillna(0.0).to_numpy()
    total_area = regions["image_id"].map(per_image["artifact_area"]).fillna(0.0).to_numpy()
    mass = regions["mass"].to_numpy(float) - regions["artifact_mass"].fillna(0.0).to_numpy(float)
    area = regions["area"].to_numpy(float) - regions["artifact_area"].fillna(0.0).to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        mass = np.where(total_mass < 1, mass / (1 - total_mass), 0.0)
        area = np.where(total_area < 1, area / (1 - total_area), 0.0)
        lift = np.where(area > 0, mass / np.where(area > 0, area, 1), np.nan)
    return regions.assign(mass=np.clip(mass, 0, None), area=np.clip(area, 0, None), lift=lift)


def artifact_summary(images: pd.DataFrame, regions: pd.DataFrame, table: pd.DataFrame,
                     clean_table: pd.DataFrame) -> dict:
    """The report's `artifacts`: how often, where, and per region the share of its saliency on artifact
    tokens with its lift with and without them (`table` / `clean_table`: overall rows of `region_table`)."""
    counts = images["artifact_tokens"].fillna(0).astype(int)
    with_any = counts.gt(0)
    ids = set(images["image_id"])
    rows = regions[regions["image_id"].isin(ids)]
    sums = rows.groupby("region", sort=False)[["mass", "artifact_mass", "artifact_area"]].sum()
    image_area = float(images["artifact_area"].fillna(0.0).sum())
    overall = _overall(table)
    clean = _overall(clean_table)
    per_region = []
    for region, row in sums.iterrows():
        per_region.append({
            "region": region,
            "artifact_share_of_mass": float(row["artifact_mass"] / row["mass"]) if row["mass"] > 0 else 0.0,
            "share_of_artifacts": float(row["artifact_area"] / image_area) if image_area > 0 else 0.0,
            "lift": overall.get(region, {}).get("lift"),
            "lift_ci_low": overall.get(region, {}).get("lift_ci_low"),
            "lift_without_artifacts": clean.get(region, {}).get("lift"),
            "lift_without_artifacts_ci_low": clean.get(region, {}).get("lift_ci_low"),
        })
    mostly = max(per_region, key=lambda r: r["share_of_artifacts"], default=None)
    mostly_in = mostly["region"] if mostly and mostly["share_of_artifacts"] >= MOSTLY else None
    rate = float(with_any.mean()) if len(images) else 0.0
    text = (f"register-like artifact tokens (outlier-norm tokens of the explained layer) on {rate:.0%} of images "
            f"({counts[with_any].mean() if with_any.any() else 0:.1f} per such image)")
    if mostly_in:
        text += f", mostly in region {mostly_in} ({mostly['share_of_artifacts']:.0%} of their area)"
    carried = [r for r in per_region if r["artifact_share_of_mass"] >= 0.05]
    if carried:
        text += "; share of a region's saliency on them: " + ", ".join(
            f"{r['region']} {r['artifact_share_of_mass']:.0%}" for r in
            sorted(carried, key=lambda r: -r["artifact_share_of_mass"]))
    return {"images_with_artifacts": rate, "n_images": int(len(images)),
            "tokens_per_image": float(counts[with_any].mean()) if with_any.any() else 0.0,
            "mostly_in": mostly_in, "regions": per_region, "text": text}


def _overall(table: pd.DataFrame) -> dict[str, dict]:
    if table is None or table.empty:
        return {}
    rows = table[table["class"].isna() & table["group"].isna()]
    return {r["region"]: {"lift": _num(r["lift"]), "lift_ci_low": _num(r["lift_ci_low"])}
            for r in rows.to_dict("records")}


def _num(value):
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)
