"""SpRAy-style strategy discovery (Lapuschkin et al. 2019, "Unmasking Clever Hans predictors").

Per class, images whose maps look alike are grouped: a shortcut used on part of a class (the horses with
a copyright tag) shows up as a cluster whose mean map departs from the class mean, even where no mask
names the region. Maps are pooled to `side` x `side`, their positive part scaled to sum 1 per image (for
clustering only: we compare *where* attention goes, not how strong it is), a symmetric k-nearest-neighbour
graph is built (k ~ sqrt(n), 3..10, so a strategy used by a tenth of a class is not wired into the rest) and k is chosen by the largest gap in the normalised Laplacian's spectrum (k <= `max_k`;
k = 1 means one strategy). Clusters are then cut by spectral clustering on the same graph. A cluster is
reported when the cosine distance of its mean map to the class mean exceeds `min_distance`, with its
closest-to-centre image ids as exemplars and, when region rows are given, the region whose mass rises most.
Classes larger than `SAMPLE_PER_CLASS` are clustered on a seeded sample, the rest assigned shard by shard, so
a report's memory and time here do not grow with the run.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd


def prepare_maps(maps: np.ndarray, side: int = 16) -> np.ndarray:
    """(N, side*side) positive part, pooled, normalised to sum 1 per image (zero maps stay zero)."""
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(np.asarray(maps, dtype=np.float32))[:, None]
    t = F.adaptive_avg_pool2d(t.clamp_min(0), (min(side, t.shape[-2]), min(side, t.shape[-1])))
    flat = t.flatten(1).numpy().astype(np.float64)
    total = flat.sum(1, keepdims=True)
    return np.divide(flat, total, out=np.zeros_like(flat), where=total > 0)


DENSE_UP_TO = 400  # images per class; above, the spectrum is computed sparse (dense eigvalsh is O(n^3))


def knn_affinity(x: np.ndarray, n_neighbors: int):
    """Symmetric k-NN graph as a sparse matrix: at most 2 * n_neighbors entries per row, whatever the class size."""
    from sklearn.neighbors import kneighbors_graph

    graph = kneighbors_graph(x, n_neighbors=min(n_neighbors, len(x) - 1), include_self=False)
    return graph.maximum(graph.T).tocsr()


def eigengap_k(affinity, max_k: int = 5) -> tuple[int, list[float]]:
    """k maximising the gap between consecutive smallest eigenvalues of the normalised Laplacian."""
    values = smallest_laplacian_eigenvalues(affinity, max_k + 1)
    gaps = np.diff(values)
    return int(np.argmax(gaps) + 1), values.round(6).tolist()


def smallest_laplacian_eigenvalues(affinity, count: int) -> np.ndarray:
    """The `count` smallest eigenvalues of L = I - D^-1/2 A D^-1/2, exact for any number of components.

    A disconnected graph's spectrum is the union of its components' spectra, and each component contributes
    exactly one zero: so each component is solved on its own, dense when small and with ARPACK on the sparse
    graph when large (a single Lanczos run over the whole graph can miss copies of a repeated eigenvalue, and
    the dense solver took minutes on a 2,500-image class, inside the dashboard's first render).
    """
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components
    from scipy.sparse.linalg import eigsh

    adjacency = sparse.csr_matrix(affinity, dtype=np.float64)
    degree = np.asarray(adjacency.sum(1)).ravel()
    inv = np.where(degree > 0, 1 / np.sqrt(np.where(degree > 0, degree, 1)), 0)
    normalised = (sparse.diags(inv) @ adjacency @ sparse.diags(inv)).tocsr()
    _, component = connected_components(normalised, directed=False)
    values = []
    for c in np.unique(component):
        members = np.flatnonzero(component == c)
        block = normalised[members][:, members]
        wanted = min(count, len(members))
        if len(members) <= DENSE_UP_TO:
            values.append(np.linalg.eigvalsh(np.eye(len(members)) - block.toarray())[:wanted])
        else:
            top = eigsh(block, k=wanted, which="LA", return_eigenvectors=False, tol=1e-10,
                        v0=np.random.default_rng(0).random(len(members)))
            values.append(1 - top)
    return np.sort(np.clip(np.concatenate(values), 0, None))[:count]


SAMPLE_PER_CLASS = 2000
"""Maps clustered per class. The k-NN graph and its spectrum cost time quadratic in a class's size (545 s and
3 GB of driver memory for a 40,000-image report), while the strategies SpRAy looks for are a share of the
class: a strategy used by 1% of a class still has ~20 maps among 2,000 (`min_cluster` is 3), and a cluster's
share is then known to within about 1 percentage point (binomial standard error at 2,000). Larger classes are
clustered on a seeded uniform sample of this size; their other images join the cluster that most of their
k nearest sampled maps belong to (the edges the k-NN graph would have given them), read shard by shard. Memory:
the samples' pooled maps (1 KiB a map), the member ids, one shard at a time."""


def spray_clusters(images: pd.DataFrame, maps, regions: pd.DataFrame | None = None, *, max_k: int = 5,
                   side: int = 16, n_neighbors: int | None = None, min_cluster: int = 3, min_distance: float = 0.1,
                   n_exemplars: int = 4, seed: int = 0, per_class: int = SAMPLE_PER_CLASS) -> list[dict]:
    """Departing clusters per class: [{class, cluster, size, k, distance, exemplars, eigenvalues, top_region,
    n_clustered}].

    `maps`: (image_ids, maps) arrays, or a run store (read with `maps(ids)` / `iter_maps()`, one shard at a
    time). A class of up to `per_class` images is clustered whole; above, on its sample (`SAMPLE_PER_CLASS`):
    `size`, `share`, `image_ids` and `top_region` then count every image of the class, `k`, `eigenvalues`,
    `distance` and `exemplars` come from the sample (`n_clustered` maps).
    """
    from sklearn.cluster import SpectralClustering

    if hasattr(maps, "iter_maps"):  # a run store: every explained image has its map
        source = maps
    else:
        source = _ArrayMaps(*maps)
        images = images[images["image_id"].astype(np.int64).isin(source.ids)]
    rng = np.random.default_rng(seed)
    members, sampled = {}, {}
    for cls in sorted(images["label"].astype(str).unique()):
        ids = images.loc[images["label"].astype(str) == cls, "image_id"].to_numpy(np.int64)
        members[cls] = ids
        if len(ids) >= max(2 * min_cluster, 4):
            sampled[cls] = ids if len(ids) <= per_class else ids[np.sort(rng.choice(len(ids), per_class, replace=False))]
    prepared = _prepared(source, np.concatenate(list(sampled.values())) if sampled else np.zeros(0, np.int64), side)
    out, assigners = [], {}
    for cls, class_ids in sampled.items():
        class_ids = class_ids[[i in prepared for i in class_ids.tolist()]]  # a store read while shards come in
        if len(class_ids) < max(2 * min_cluster, 4):
            continue
        x = np.stack([prepared[i] for i in class_ids.tolist()])
        neighbours = n_neighbors or int(np.clip(round(np.sqrt(len(x))), 3, 10))
        affinity = knn_affinity(x, neighbours)
        k, eigenvalues = eigengap_k(affinity, max_k)
        if k < 2:
            continue
        with warnings.catch_warnings():  # disconnected graphs are expected: they are the clusters
            warnings.filterwarnings("ignore", message="Graph is not fully connected")
            labels = SpectralClustering(n_clusters=k, affinity="precomputed", random_state=seed,
                                        assign_labels="cluster_qr").fit_predict(affinity)
        class_mean = x.mean(0)
        found = []
        for c in range(k):
            inside = np.flatnonzero(labels == c)
            if len(inside) < min_cluster:
                continue
            centre = x[inside].mean(0)
            distance = cosine_distance(centre, class_mean)
            if distance < min_distance:
                continue
            closest = inside[np.argsort(((x[inside] - centre) ** 2).sum(1))][:n_exemplars]
            found.append({"class": cls, "cluster": c, "k": k, "image_ids": class_ids[inside].tolist(),
                          "distance": float(distance), "exemplars": class_ids[closest].tolist(),
                          "eigenvalues": eigenvalues, "n_clustered": int(len(class_ids))})
        if found and len(class_ids) < len(members[cls]):
            assigners[cls] = (_assigner(x, labels, neighbours), np.setdiff1d(members[cls], class_ids), found)
        out += found
    if assigners:
        _assign_the_rest(source, assigners, side)
    for row in out:
        class_ids = members[row["class"]]
        if row["class"] in assigners:  # in the class's (table) order, as when the whole class is clustered
            row["image_ids"] = class_ids[np.isin(class_ids, row["image_ids"])].tolist()
        row.update(size=len(row["image_ids"]), share=len(row["image_ids"]) / len(class_ids),
                   top_region=_top_region(regions, row["image_ids"], class_ids.tolist()))
    return [{key: row[key] for key in ("class", "cluster", "k", "size", "share", "distance", "exemplars",
                                       "image_ids", "eigenvalues", "top_region", "n_clustered")} for row in out]


class _ArrayMaps:
    """(image_ids, maps) arrays read like a run store's shards: one chunk."""

    def __init__(self, ids, stack):
        self.ids, self.stack = np.asarray(ids, dtype=np.int64), stack

    def iter_maps(self):
        yield self.ids, self.stack


CHUNK = 4096  # maps per call of the pooling and of the assignment: few calls (each costs thread start-up), 64 MB


def _chunks(source, wanted: np.ndarray):
    """(ids, float16 maps) of the `wanted` images, gathered over shards into chunks of up to `CHUNK` maps."""
    ids, maps, count = [], [], 0
    for shard_ids, stack in source.iter_maps():
        keep = np.flatnonzero(np.isin(shard_ids, wanted))
        if len(keep):
            ids.append(shard_ids[keep])
            maps.append(stack[keep])
            count += len(keep)
        if count >= CHUNK:
            yield np.concatenate(ids), np.concatenate(maps)
            ids, maps, count = [], [], 0
    if count:
        yield np.concatenate(ids), np.concatenate(maps)


def _prepared(source, wanted: np.ndarray, side: int) -> dict[int, np.ndarray]:
    """{image_id: prepared map} for `wanted`, pooled chunk by chunk (1 KiB a map kept, never the 8 KiB stored map)."""
    out = {}
    for ids, stack in _chunks(source, wanted):
        out.update(zip(ids.tolist(), prepare_maps(stack, side)))
    return out


def _assigner(x: np.ndarray, labels: np.ndarray, neighbours: int):
    """The cluster most of an image's `neighbours` nearest sampled maps belong to (ties: the lower cluster)."""
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=min(neighbours, len(x))).fit(x, labels)


def _assign_the_rest(source, assigners: dict, side: int) -> None:
    """One pass over the maps, in chunks: each unsampled image of a sampled class joins its reported cluster's
    `image_ids` (an image assigned to an unreported cluster joins none)."""
    rows_of = {cls: {row["cluster"]: row for row in found} for cls, (_, _, found) in assigners.items()}
    rest = np.concatenate([r for _, r, _ in assigners.values()])
    for ids, stack in _chunks(source, rest):
        x = prepare_maps(stack, side)
        for cls, (assigner, class_rest, _) in assigners.items():
            keep = np.flatnonzero(np.isin(ids, class_rest))
            if not len(keep):
                continue
            for image_id, c in zip(ids[keep].tolist(), assigner.predict(x[keep])):
                if int(c) in rows_of[cls]:
                    rows_of[cls][int(c)]["image_ids"].append(image_id)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(1 - a @ b / denom) if denom > 0 else 1.0


def _top_region(regions: pd.DataFrame | None, member_ids, class_ids) -> dict | None:
    """The region whose mean mass rises most in the cluster relative to its whole class."""
    if regions is None or regions.empty:
        return None
    in_class = regions[regions["image_id"].isin(class_ids)]
    cluster = in_class[in_class["image_id"].isin(member_ids)].groupby("region")["mass"].mean()
    whole = in_class.groupby("region")["mass"].mean()
    rise = (cluster - whole).dropna()
    if rise.empty:
        return None
    name = rise.idxmax()
    return {"region": str(name), "cluster_mass": float(cluster[name]), "class_mass": float(whole[name])}
