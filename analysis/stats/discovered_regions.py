"""Candidate regions that follow a moving cue: salient components away from the core, grouped across images.

A fixed grid cell holds a cue that moves (a patch in a random corner) in only a fraction of the images, so
neither its attention nor its intervention is strong; no mask names it either. Here each image's map
(upsampled to the input) is thresholded at 0.6 of its maximum and cut into connected components
(`scipy.ndimage.label`); components whose peak lies in the core (the annotated core, or without masks the
assumed centre), that lie mostly in it, or that cover more than `max_area` of the image are dropped (a
coarse CAM blurs a corner cue into the centre, so the peak, not the whole blob, must be outside). Each remaining component is
described by *where it sits* relative to the frame (distance of its centre from the image centre and
from the nearest edge: the same for all four corners) and its size, then grouped across images SpRAy-style
(`analysis.stats.clustering`: symmetric k-NN graph, k from the Laplacian eigengap, spectral clustering;
clusters with near-identical mean descriptors are merged back).
The uniformity of what the map points at (the flat area of the image inside the component, `flat_areas`,
as a share of the pixels the map peaks on, capped at 1) goes into the name only: a colour cue's two colours must not split it. A group found in at least `min_share` of the images is a candidate region with its own per-image masks
(the union of that image's members; empty where the image has none). A candidate that stays inside one
fixed region of comparable size (a grid cell, an annotated region) is that region, already tested, and is
dropped. Its name says what is known ("small uniform patch, in one of 4 corners, 96% of images, all classes").

A coarse map peaks beside a small flat cue as often as on it, so a component next to a flat area is snapped
to that area (`snap_to_flat`): the region tested is the cue, not its neighbour. And the maps single a cue out
only in some of the images that hold it (at 5 points of reliance, 14-17% of them), so a candidate whose look
sets it apart is searched for in every other image at the places it was found (`extend_by_look`): the
interventions then move the cue wherever it is (without it, the fill had a sixth of the sample and the swap
put the donor's cue beside the recipient's own). The name keeps the share the maps single out; `share_tested`
and `n_extended` say where it was tested.

Alongside masks (cues nobody annotated), `searchable` names the pixels a candidate may hold: outside the
annotated core and outside every object-sized annotated region (those are tested whole). A label map
gives every pixel a region, so an unannotated cue sits in the scene (`background`, `skin`); that is where
discovery looks. The annotated core is trusted, so a component touching it (`max_core_overlap` 0.1) is
the object's own blob spread by the map's resolution and is dropped (clean background v5: the bird's
Grad-CAM blobs had 25-62% of their pixels on the bird, peaked just off it, and filling them flipped 62%
of predictions, a false shortcut); so is one that touches an object-sized annotated region (a ring
around an annotated tag is the tag's blur). Swaps never cover the recipient's core
(`analysis.evidence.intervention.swap_variants`): a cue transplanted where the other image's object is
would otherwise test the object.
"""
from __future__ import annotations

import warnings

import numpy as np

POSITIONS = [[f"{r}-{c}" for c in ("left", "centre", "right")] for r in ("top", "middle", "bottom")]
CORNERS = {"top-left", "top-right", "bottom-left", "bottom-right"}


def salient_components(maps: np.ndarray, images: np.ndarray, core: np.ndarray, *, max_area: float = 0.25,
                       min_pixels: int = 4, max_core_overlap: float = 0.75, level: float = 0.6,
                       searchable: np.ndarray | None = None) -> list[dict]:
    """Per image, the salient components away from the core.

    maps (N, H, W) positive saliency at input size; images (N, 3, H, W) in [0, 1]; core (N, H, W) bool;
    searchable (N, H, W) bool or None (everywhere): a component keeps only these pixels, and is dropped
    when more than `max_core_overlap` of it lies outside them.
    Returns [{image, mask (H, W) bool, features (4,), position, area, uniformity, mass}].
    """
    from scipy import ndimage

    n, h, w = maps.shape
    out = []
    for i in range(n):
        m = np.clip(maps[i], 0, None)
        top = m.max()
        if not top > 0:
            continue
        flat = None  # computed for the first component kept
        labelled, count = ndimage.label(m >= level * top)
        total = m.sum()
        for c in range(1, count + 1):
            mask = labelled == c
            pixels = int(mask.sum())
            if pixels < min_pixels or pixels > max_area * h * w:
                continue
            peak = np.unravel_index(np.argmax(np.where(mask, m, -1)), mask.shape)
            if core[i][peak] or core[i][mask].mean() > max_core_overlap:
                continue
            if searchable is not None:
                kept = mask & searchable[i]
                if kept.sum() < min_pixels or 1 - kept.sum() / pixels > max_core_overlap:
                    continue
                mask, pixels = kept, int(kept.sum())
                peak = np.unravel_index(np.argmax(np.where(mask, m, -1)), mask.shape)
            ys, xs = np.nonzero(mask)
            cy, cx = (ys.mean() + 0.5) / h, (xs.mean() + 0.5) / w
            centre = mask & (m >= 0.9 * m[peak])  # what the map peaks on: the cue, not the blur around it
            flat = flat_areas(images[i]) if flat is None else flat
            # a flat area in the component at least as large as the map's peak (a coarse peak sits beside the
            # cue as often as on it): capped at 1
            uniformity = float(min(1.0, (flat & mask).sum() / max(1, centre.sum())))
            snapped = snap_to_flat(mask, flat, core[i] if searchable is None else ~searchable[i] | core[i])
            if snapped is not None:
                mask, pixels = snapped, int(snapped.sum())
                ys, xs = np.nonzero(mask)
                cy, cx = (ys.mean() + 0.5) / h, (xs.mean() + 0.5) / w
            radial = float(np.hypot(cy - 0.5, cx - 0.5))
            edge = float(min(cy, cx, 1 - cy, 1 - cx))
            area = pixels / (h * w)
            out.append({"image": i, "mask": mask, "area": area, "uniformity": uniformity,
                        "peak_area": float(centre.sum() / (h * w)),
                        "position": POSITIONS[min(2, int(cy * 3))][min(2, int(cx * 3))],
                        "mass": float(m[mask].sum() / total),
                        "features": np.array([np.sqrt(area), radial, edge])})
    return out


def snap_to_flat(mask: np.ndarray, flat: np.ndarray, core: np.ndarray, *, reach: int = 2,
                 max_growth: float = 2.0) -> np.ndarray | None:
    """The flat areas (`flat_areas`) that a component touches or lies within `reach` pixels of, as its mask;
    None when there is none, or when they are more than `max_growth` times the component (a flat scene, a sky:
    not a patch) or touch the core.

    Why: a coarse map peaks beside a small flat cue as often as on it (a 4-pixel Grad-CAM cell on a 32-pixel
    image: the corner patch was 15% of its component's pixels at the median, none in a tenth of them), so
    filling or swapping the component left the cue in place; snapped, the region is the cue."""
    from scipy import ndimage

    if not flat.any():
        return None
    near = ndimage.binary_dilation(mask, iterations=reach)
    labelled, _ = ndimage.label(flat)
    touched = np.unique(labelled[near & flat])
    touched = touched[touched > 0]
    if not len(touched):
        return None
    out = np.isin(labelled, touched)
    if out.sum() > max_growth * mask.sum() or (out & core).any():
        return None
    return out


def group_components(components: list[dict], *, max_k: int = 5, seed: int = 0) -> np.ndarray:
    """Cluster labels per component (SpRAy-style spectral clustering on standardised descriptors)."""
    from sklearn.cluster import SpectralClustering

    from analysis.stats.clustering import eigengap_k, knn_affinity

    if len(components) < 8:
        return np.zeros(len(components), dtype=int)
    x = np.stack([c["features"] for c in components])
    x = (x - x.mean(0)) / np.where(x.std(0) > 1e-9, x.std(0), 1.0)
    affinity = knn_affinity(x, int(np.clip(round(np.sqrt(len(x))), 3, 10)))
    k, _ = eigengap_k(affinity, max_k)
    if k < 2:
        return np.zeros(len(components), dtype=int)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        labels = SpectralClustering(n_clusters=k, affinity="precomputed", random_state=seed,
                                    assign_labels="cluster_qr").fit_predict(affinity)
    return merge_close(labels, np.stack([c["features"] for c in components]))


def merge_close(labels: np.ndarray, features: np.ndarray, tolerance: float = 0.1) -> np.ndarray:
    """Merge clusters whose mean descriptors differ by < `tolerance` in every coordinate (natural units).

    Spectral clustering splits a homogeneous group arbitrarily (the eigengap of a noisy graph), and one
    cue split three ways would be three weak candidates."""
    labels = labels.copy()
    changed = True
    while changed:
        changed = False
        groups = np.unique(labels)
        means = {g: features[labels == g].mean(0) for g in groups}
        for a in groups:
            for b in groups:
                if a < b and np.all(np.abs(means[a] - means[b]) < tolerance):
                    labels[labels == b] = a
                    changed = True
                    break
            if changed:
                break
    return labels


def discover_regions(maps: np.ndarray, images: np.ndarray, labels: np.ndarray, core: np.ndarray,
                     fixed: dict[str, np.ndarray] | None = None, *, classes: list[str] | None = None,
                     min_share: float = 0.1, n_exemplars: int = 6, seed: int = 0,
                     searchable: np.ndarray | None = None, max_core_overlap: float = 0.75,
                     extend: bool = True) -> list[dict]:
    """Candidate regions [{name, description, masks (N, H, W) bool, share, positions, exemplars (rows), ...}].

    `fixed`: name -> (N, H, W) bool masks of the regions already tested (grid cells or annotated); a
    candidate >= 50% inside one of them, of at most 4x its area, in >= 80% of its images is dropped.
    `searchable`, `max_core_overlap`: see `salient_components` (alongside masks: the pixels outside the
    core and the object-sized annotated regions, and 0.1).
    """
    components = salient_components(maps, images, core, searchable=searchable, max_core_overlap=max_core_overlap)
    groups = group_components(components, seed=seed)
    n = len(maps)
    found = []
    for g in np.unique(groups):
        members = [c for c, k in zip(components, groups) if k == g]
        rows = sorted({c["image"] for c in members})
        if len(rows) < max(3, min_share * n):
            continue
        masks = np.zeros(maps.shape, dtype=bool)
        mass = np.zeros(n)
        for c in members:
            masks[c["image"]] |= c["mask"]
            mass[c["image"]] += c["mass"]
        if _inside_fixed(masks, rows, fixed or {}):
            continue
        if extend:
            masks = extend_by_look(masks, members, images)
        found.append({"masks": masks, "rows": rows, "members": members, "mass": mass})
    found.sort(key=lambda f: -len(f["rows"]))
    out = []
    for j, f in enumerate(found):
        description, summary = describe(f["members"], f["rows"], labels, n, classes)
        exemplars = sorted(f["rows"], key=lambda r: -f["mass"][r])[:n_exemplars]
        held = int(f["masks"].reshape(n, -1).any(1).sum())
        out.append({"name": f"discovered-{j + 1}", "description": description, "masks": f["masks"],
                    "rows": f["rows"], "exemplar_rows": exemplars, "n_extended": held - len(f["rows"]),
                    "share_tested": held / max(1, n), **summary})
    return out


def extend_by_look(masks: np.ndarray, members: list[dict], images: np.ndarray, *, max_places: int = 12,
                   slack: float = 2.0, selective: float = 0.5, floor: float = 1.0, max_models: int = 256
                   ) -> np.ndarray:
    """(N, H, W) bool: the candidate's masks, extended to the images where the maps did not single it out but
    one of its places holds what its members hold.

    The maps peak on a cue in only some images (a 5-point reliance: the corner patch was a component in 14-17%
    of them), while the cue is in most; the interventions on the other images then leave it in place (the fill
    has a sixth of the sample; the swap puts the donor's cue beside the recipient's own, which the model
    weighs against it: towards-donor 5.1% against 4.7% for the control). Each member's look is described as in
    `analysis.stats.cue_appearance` plus its flat share (`flat_areas`): the mean colour inside its mask
    against the rest of its image. Every other image is looked at through the group's places (one member
    mask per place, the places the members sit at, at most `max_places`) and given the place whose look is
    nearest to a member's, when that distance is within `slack` times the members' own spread (the 90th
    percentile of each member's distance to its nearest other member, in features scaled by the members'
    spread; at least `floor`; members more than 3 times the median distance from their nearest are left out
    as models: a component beside the cue; at most `max_models` members, drawn with a fixed seed). Only a look that sets the members apart is searched for: when that reach is
    `selective` (0.5) of the median distance of every place in the other images or more (a textured blob beside
    an object looks like anything else there), nothing is extended. Which images are extended depends on the
    pixels only, never on the model's outcomes."""
    from analysis.stats.cue_appearance import appearance

    n = len(images)
    member_rows = np.array([c["image"] for c in members])
    if len(members) < 4:
        return masks
    models = members if len(members) <= max_models else [members[k] for k in np.sort(
        np.random.default_rng(0).choice(len(members), max_models, replace=False))]  # memory: others x models
    flat = {}

    def look(rows: np.ndarray, place: np.ndarray) -> np.ndarray:
        place = np.broadcast_to(place, (len(rows),) + place.shape[-2:]) if place.ndim == 2 else place
        colour, _ = appearance(images[rows], place)
        share = np.array([(flat.setdefault(int(r), flat_areas(images[r])) & m).sum() / max(1, m.sum())
                          for r, m in zip(rows, place)])
        return np.column_stack([colour, share])

    reference = look(np.array([c["image"] for c in models]), np.stack([c["mask"] for c in models]))
    # members alike to the last digit (one flat colour on similar scenes) would make any other image far: a
    # difference under 0.02 in colour or 0.05 in flat share is none
    scale = np.maximum(reference.std(0), [0.02, 0.02, 0.02, 0.05])
    ref = reference / scale
    gaps = np.sqrt(((ref[:, None] - ref[None]) ** 2).sum(-1))
    np.fill_diagonal(gaps, np.inf)
    nearest = gaps.min(1)
    typical = nearest <= max(np.median(nearest), 1e-6) * 3  # members unlike the rest (a blob off the cue) are no model
    ref, nearest = ref[typical], nearest[typical]
    reach = max(floor, slack * float(np.quantile(nearest, 0.9)))
    by_place: dict[str, list[dict]] = {}
    for c in members:
        by_place.setdefault(c["position"], []).append(c)
    places = sorted(by_place.values(), key=len, reverse=True)[:max_places]
    prototypes = [sorted(group, key=lambda c: c["area"])[len(group) // 2]["mask"] for group in places]
    others = np.setdiff1d(np.arange(n), member_rows)
    if not len(others) or not prototypes:
        return masks
    best = np.full(len(others), np.inf)
    choice = np.zeros(len(others), dtype=int)
    every = []
    for k, place in enumerate(prototypes):
        feats = look(others, place) / scale
        distance = np.sqrt(((feats[:, None] - ref[None]) ** 2).sum(-1)).min(1)
        every.append(distance)
        better = distance < best
        best[better], choice[better] = distance[better], k
    if reach >= selective * float(np.median(np.concatenate(every))):
        return masks  # the members' look does not set them apart from what else sits at their places
    out = masks.copy()
    for row, k, d in zip(others, choice, best):
        if d <= reach:
            out[row] = prototypes[k]
    return out


def describe(members: list[dict], rows: list[int], labels: np.ndarray, n: int, classes=None) -> tuple[str, dict]:
    """("small uniform patch, in one of 4 corners, 96% of images, all classes", the numbers behind it)."""
    area = float(np.mean([c["area"] for c in members]))
    peak_area = float(np.mean([c["peak_area"] for c in members]))
    uniformity = float(np.mean([c["uniformity"] for c in members]))
    size = "small" if peak_area < 0.04 else "medium" if peak_area < 0.12 else "large"
    look = "uniform" if uniformity >= 0.5 else "textured"
    counts: dict[str, int] = {}
    for c in members:
        counts[c["position"]] = counts.get(c["position"], 0) + 1
    places = [p for p, k in sorted(counts.items(), key=lambda kv: -kv[1]) if k >= 0.05 * len(members)]
    if len(places) == 1:
        where = f"at the {places[0]}" + (" corner" if places[0] in CORNERS else "")
    elif set(places) <= CORNERS:
        where = f"in one of {len(places)} corners"
    elif "middle-centre" not in places:
        where = f"along the border ({len(places)} places)"
    else:
        where = f"in {len(places)} places"
    share = len(rows) / max(1, n)
    present = labels[rows]
    per_class = {}
    for value in np.unique(labels):
        name = classes[int(value)] if classes is not None else str(value)
        per_class[name] = float((present == value).sum() / max(1, (labels == value).sum()))
    common = [c for c, s in per_class.items() if s >= 0.5 * share]
    who = "all classes" if len(common) == len(per_class) else "mostly " + ", ".join(common)
    description = f"{size} {look} patch, {where}, {share:.0%} of images, {who}"
    return description, {"share": share, "area_mean": area, "uniformity": uniformity, "positions": places,
                         "position_counts": counts, "class_share": per_class}


def flat_areas(image: np.ndarray, *, tolerance: float = 0.06, min_pixels: int = 4) -> np.ndarray:
    """(H, W) bool: the pixels of flat areas of `image` (3, H, W) in [0, 1]. A pixel is flat when its four
    neighbours are within `tolerance` of it in every channel; flat pixels connected in groups of at least
    `min_pixels`, grown by one pixel (the area's own rim, whose outer neighbours differ), are the areas.

    Why not the spread of the peak's colours: a coarse map's peak (a 7x7 Grad-CAM cell upsampled) takes in
    several times the cue's area and sits beside it as often as on it, so a flat 5x5 patch on a noisy
    background was a minority of the peak's pixels and was named "textured" (uniformity 0.05); noise (two
    neighbours 0.12 apart on average) has no flat area at all."""
    from scipy import ndimage

    padded = np.pad(image, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = image.shape[1:]
    flat = np.ones((h, w), dtype=bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        flat &= (np.abs(padded[:, dy:dy + h, dx:dx + w] - image) <= tolerance).all(axis=0)
    labelled, count = ndimage.label(flat)
    if not count:
        return flat
    sizes = np.bincount(labelled.ravel(), minlength=count + 1)
    kept = (sizes >= min_pixels)[labelled] & flat
    return ndimage.binary_dilation(kept, structure=np.ones((3, 3), bool))


def _inside_fixed(masks: np.ndarray, rows: list[int], fixed: dict[str, np.ndarray]) -> bool:
    own = masks[rows].reshape(len(rows), -1)
    own_area = own.sum(1)
    for region in fixed.values():
        other = region[rows].reshape(len(rows), -1)
        inside = (own & other).sum(1) / np.maximum(own_area, 1)
        comparable = other.sum(1) <= 4 * np.maximum(own_area, 1)
        if np.mean((inside >= 0.5) & comparable) >= 0.8:
            return True
    return False


def searchable_pixels(masks: np.ndarray, core: np.ndarray, region_ids: dict[int, bool], *,
                      max_area: float = 0.25) -> np.ndarray:
    """(N, H, W) bool: where an unannotated cue can hide alongside masks.

    masks (N, H, W) region ids; core (N, H, W) bool; region_ids: every annotated id -> is it core. Outside
    the core and outside each non-core region covering at most `max_area` of the image on average (an
    object-sized region, tested whole: a component in it is that region); larger regions are the scene."""
    out = ~core
    for rid, is_core in region_ids.items():
        inside = masks == rid
        if not is_core and inside.mean() <= max_area:
            out &= ~inside
    return out
