"""D-RISE (Petsiuk et al., CVPR 2021): black-box saliency for object detectors.

Random masks M_i (RISE: a coarse Bernoulli grid, bilinearly upsampled, randomly shifted) are applied to the
image; the detector runs on each masked image; the weight of mask i for a target detection t is the best
match among the masked image's proposals j:

    w_it = max_j IoU(box_t, box_j) * cos(probs_t, probs_j) * objectness_j

and the map is S_t = sum_i w_it M_i / (N p).

Cost is paid once: one mask set serves every image of a batch, and every target of an image is scored from
the same masked forwards. Masks come from RISE's `mask_chunks`: cells and shifts drawn up front from the seed,
full-resolution masks built on the device one chunk at a time, so memory stays at `chunk` masks and the set
depends only on the seed (not on `chunk`).

`center=True` (default) uses `w_it - mean_i(w_it)` instead of `w_it`. The uncentred map carries a constant
offset (mean weight x mask density) that holds nearly all of its positive mass, so region shares of the
uncentred map track region *area*; centring keeps only what the masks' presence changes. Ranking of pixels is
the same up to mask-density noise. `center=False` is the paper's formula.

Stopping at convergence (issue 29), RISE's rule per detection: the centred map is RISE's control-variate
estimator up to scale and a constant (sum (w - mean w) M / (N p) = (N - 1) / N x its covariance term), so
`explainers.rise.MaskSums` keeps the running sums and `relative_standard_error` estimates each detection's
expected relative L2 distance to the map of infinitely many masks (uncentred: the plain estimator's).
Every `min_masks` masks a detection whose estimate is below `tolerance` keeps its map at that count; an
image leaves the detector's batches when all its detections have stopped (an image without targets never
enters them). `n_masks` is the ceiling, not the cost; `tolerance=0` uses all of them. A detection's map and
its count do not depend on the other detections or images of the call: the same as explaining it alone.
`explain_detections_with_counts` also returns the masks each detection used and its estimated error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from explainers.base import Explainer, SaliencyBatch
from explainers.detection import (DetectionTarget, Detections, detection_similarity, similarities,
                                  targets_from_classes)
from explainers.errors import InputError
from explainers.params import Param
from explainers.registry import register
from explainers.rise import MaskSums, checkpoints, draw_cells, mask_chunks, smooth_masks

Detector = Callable[[torch.Tensor], Sequence[Detections]]


@dataclass
class DriseMaps:
    """Per image: maps (T_b, H, W), masks used (T_b,) and estimated relative error (T_b,; NaN when unchecked)."""
    maps: list[torch.Tensor]
    masks_used: list[torch.Tensor]
    estimated_error: list[torch.Tensor]


@register
class DRISE(Explainer):
    """D-RISE for any detector `f(images (B,3,H,W) in [0,1]) -> list of {boxes, scores, probs}`.

    Wrap torchvision detectors with `explainers.detection.TorchvisionDetector` first.
    `batch_size` bounds how many masked images go through the detector at once; `chunk` how many masks are
    held at full resolution; convergence is checked every `min_masks` masks (module docstring).
    """

    name = "drise"
    family = "perturbation"
    black_box = True
    schema = (Param("n_masks", int, low=1), Param("cells", int, low=1),
              Param("p", float, low=0, high=1, open_low=True, open_high=True), Param("seed", int),
              Param("chunk", int, low=1), Param("batch_size", int, low=1), Param("center", bool))
    model_kind = "detector"

    def __init__(self, model: Detector, *, n_masks: int = 5000, cells: int = 16, p: float = 0.5, seed: int = 0,
                 chunk: int = 250, batch_size: int = 64, center: bool = True, tolerance: float = 0.3,
                 min_masks: int = 250):
        if (n_masks < 1 or cells < 1 or not 0 < p < 1 or chunk < 1 or batch_size < 1 or min_masks < 1
                or not tolerance >= 0):
            raise InputError(f"drise: need n_masks >= 1, cells >= 1, 0 < p < 1, chunk >= 1, batch_size >= 1, "
                             f"min_masks >= 1, tolerance >= 0 (0: use all n_masks); got n_masks={n_masks}, "
                             f"cells={cells}, p={p}, chunk={chunk}, batch_size={batch_size}, min_masks={min_masks}, "
                             f"tolerance={tolerance}")
        super().__init__(model, n_masks=n_masks, cells=cells, p=p, seed=seed, chunk=chunk,
                         batch_size=batch_size, center=center, tolerance=float(tolerance), min_masks=min_masks)
        self.n_masks, self.cells, self.p, self.seed = n_masks, cells, p, seed
        self.chunk, self.batch_size, self.center = chunk, batch_size, center
        self.tolerance, self.min_masks = float(tolerance), min_masks

    def fixed_budget(self, n_masks: int) -> "DRISE":
        """The same explainer with every one of `n_masks` masks (tolerance 0): the sanity check gives a randomised
        detector's maps, which are noise and never converge, the count the original maps needed."""
        return DRISE(self.model, **{**self.params, "n_masks": int(n_masks), "tolerance": 0.0})

    def masks(self, size: tuple[int, int], device: torch.device | str):
        """Yield the mask set in chunks; the same seed gives the same masks on the same device type."""
        return mask_chunks(self.n_masks, self.cells, self.p, self.seed, size, device, self.chunk)

    def explain_detections(self, images: torch.Tensor, targets: Sequence[DetectionTarget | tuple],
                           masks: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Maps (T_b, H, W) for every target detection of every image, from one pass over the masks.

        `targets[b]` is a `DetectionTarget` or a `(boxes (T,4) xyxy, probs (T,C))` pair for image b.
        `masks` (N, H, W) replaces the generated set (tests, or a caller that shares masks across calls); the
        stopping rule applies to it as to the generated set.
        """
        return self.explain_detections_with_counts(images, targets, masks).maps

    @torch.no_grad()
    def explain_detections_with_counts(self, images: torch.Tensor, targets: Sequence[DetectionTarget | tuple],
                                       masks: torch.Tensor | None = None) -> DriseMaps:
        """`explain_detections`, with the masks each detection used and its estimated error."""
        if images.ndim != 4:
            raise InputError(f"drise: images must be (B, 3, H, W), got shape {tuple(images.shape)}")
        b, _, h, w = images.shape
        if len(targets) != b:
            raise InputError(f"drise: {len(targets)} target lists for {b} images; give one (possibly empty) per image")
        targets = [t if isinstance(t, DetectionTarget) else DetectionTarget(*t) for t in targets]
        targets = [t.to(images.device) for t in targets]
        counts = [len(t) for t in targets]
        device = images.device
        owner = torch.repeat_interleave(torch.arange(b, device=device), torch.tensor(counts, device=device))
        n = len(masks) if masks is not None else self.n_masks
        if masks is not None:
            masks = masks.to(device)
        else:
            grids, shifts = draw_cells(n, self.cells, self.p, self.seed, device)
        checking = self.tolerance > 0
        sums = MaskSums(len(owner), h, w, device, control_variate=self.center, errors=checking)
        maps = images.new_zeros(len(owner), h, w)
        used = torch.full((len(owner),), n, dtype=torch.long, device=device)
        error = torch.full((len(owner),), float("nan"), device=device)
        active = torch.arange(len(owner), device=device)  # rows (image, target) still moving
        done = 0
        for check in checkpoints(n, self.min_masks if checking else n):
            if not len(active):
                break
            moving = owner[active].unique().tolist()  # images with a detection still moving, ascending
            for start in range(done, check, self.chunk):
                stop = min(start + self.chunk, check)
                chunk = (masks[start:stop] if masks is not None
                         else smooth_masks(grids[start:stop], shifts[start:stop], h, w))
                weights = self._weights(images[moving], [targets[i] for i in moving], chunk)  # (k, rows)
                sums.add(active, weights[:, _positions(owner, active, moving, counts)], chunk)
            done = check
            if checking:
                error[active] = sums.error(active, check)
            finished = torch.ones_like(active, dtype=torch.bool) if check == n else error[active] < self.tolerance
            rows = active[finished]
            used[rows] = check
            maps[rows] = (sums.centred(rows, check, self.p) if self.center
                          else sums.estimate(rows, check, self.p))
            active = active[~finished]
        split = lambda t: list(t.split(counts))  # noqa: E731
        return DriseMaps(split(maps.float()), split(used.cpu()), split(error.cpu()))

    def _weights(self, images: torch.Tensor, targets: list[DetectionTarget], masks: torch.Tensor) -> torch.Tensor:
        """Similarity weights (k masks, all targets of all images in order): the masked images go through the
        detector `batch_size` at a time, image-major (a detector batch holds consecutive masks of one image,
        two at a boundary); each image's outputs are scored against its targets in one padded expression."""
        b, n = images.shape[0], masks.shape[0]
        per_image = [[] for _ in range(b)]
        for start in range(0, b * n, self.batch_size):
            stop = min(start + self.batch_size, b * n)
            first, last = start // n, (stop - 1) // n
            pieces = [images[i] * masks[max(start - i * n, 0):min(stop - i * n, n), None]
                      for i in range(first, last + 1)]
            masked = pieces[0] if len(pieces) == 1 else torch.cat(pieces)  # one image: no second copy
            outputs = list(self.model(masked))
            offset = 0
            for i in range(first, last + 1):
                k = min(stop - i * n, n) - max(start - i * n, 0)
                per_image[i].extend(outputs[offset:offset + k])
                offset += k
        return torch.cat([similarities(t, dets) if len(t) else images.new_zeros(n, 0)
                          for t, dets in zip(targets, per_image)], dim=1)

    def explain(self, inputs: torch.Tensor, targets) -> SaliencyBatch:
        """One target per image: a `DetectionTarget` with B boxes, or class indices (the top-scoring detection of
        that class on the clean image is explained; an image without one gets a zero map and score 0)."""
        with torch.no_grad():
            clean = list(self.model(inputs))
        if isinstance(targets, DetectionTarget):
            per_image = targets.split()
        else:
            per_image = targets_from_classes(clean, targets)
        if len(per_image) != inputs.shape[0]:
            raise InputError(f"drise: {len(per_image)} targets for {inputs.shape[0]} images; give one per image")
        explained = self.explain_detections_with_counts(inputs, per_image)
        h, w = inputs.shape[-2:]
        out = torch.stack([m[0] if len(m) else inputs.new_zeros(h, w) for m in explained.maps])
        used = torch.tensor([int(u[0]) if len(u) else 0 for u in explained.masks_used])
        scores = torch.stack([detection_similarity(t.to(inputs.device), d)[0] if len(t) else inputs.new_zeros(())
                              for t, d in zip(per_image, clean)])
        return SaliencyBatch(maps=out.float(), scores=scores.detach().float(), method=self.name,
                             extras={"masks_used": used})


def _positions(owner: torch.Tensor, active: torch.Tensor, moving: list[int], counts: list[int]) -> torch.Tensor:
    """Columns of `_weights(images[moving], ...)` (all targets of the moving images, in order) that hold the
    rows `active` (indices into every image's targets, in order)."""
    starts = torch.tensor([0] + counts, device=owner.device).cumsum(0)[:-1]  # first row of each image
    sizes = torch.tensor([counts[i] for i in moving], device=owner.device)
    column_start = torch.zeros(len(counts), dtype=torch.long, device=owner.device)
    column_start[moving] = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    image = owner[active]
    return column_start[image] + active - starts[image]
