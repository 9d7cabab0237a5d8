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
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from explainers.base import Explainer, SaliencyBatch
from explainers.detection import (DetectionTarget, Detections, detection_similarity, similarities,
                                  targets_from_classes)
from explainers.errors import InputError
from explainers.params import Param
from explainers.registry import register
from explainers.rise import mask_chunks

Detector = Callable[[torch.Tensor], Sequence[Detections]]


@register
class DRISE(Explainer):
    """D-RISE for any detector `f(images (B,3,H,W) in [0,1]) -> list of {boxes, scores, probs}`.

    Wrap torchvision detectors with `explainers.detection.TorchvisionDetector` first.
    `batch_size` bounds how many masked images go through the detector at once.
    """

    name = "drise"
    family = "perturbation"
    black_box = True
    schema = (Param("n_masks", int, low=1), Param("cells", int, low=1),
              Param("p", float, low=0, high=1, open_low=True, open_high=True), Param("seed", int),
              Param("chunk", int, low=1), Param("batch_size", int, low=1), Param("center", bool))
    model_kind = "detector"

    def __init__(self, model: Detector, *, n_masks: int = 5000, cells: int = 16, p: float = 0.5, seed: int = 0,
                 chunk: int = 250, batch_size: int = 64, center: bool = True):
        if n_masks < 1 or cells < 1 or not 0 < p < 1 or chunk < 1 or batch_size < 1:
            raise InputError(f"drise: need n_masks >= 1, cells >= 1, 0 < p < 1, chunk >= 1, batch_size >= 1; got "
                             f"n_masks={n_masks}, cells={cells}, p={p}, chunk={chunk}, batch_size={batch_size}")
        super().__init__(model, n_masks=n_masks, cells=cells, p=p, seed=seed, chunk=chunk,
                         batch_size=batch_size, center=center)
        self.n_masks, self.cells, self.p, self.seed = n_masks, cells, p, seed
        self.chunk, self.batch_size, self.center = chunk, batch_size, center

    def masks(self, size: tuple[int, int], device: torch.device | str):
        """Yield the mask set in chunks; the same seed gives the same masks on the same device type."""
        return mask_chunks(self.n_masks, self.cells, self.p, self.seed, size, device, self.chunk)

    @torch.no_grad()
    def explain_detections(self, images: torch.Tensor, targets: Sequence[DetectionTarget | tuple],
                           masks: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Maps (T_b, H, W) for every target detection of every image, from one pass over the masks.

        `targets[b]` is a `DetectionTarget` or a `(boxes (T,4) xyxy, probs (T,C))` pair for image b.
        `masks` (N, H, W) replaces the generated set (tests, or a caller that shares masks across calls).
        """
        if images.ndim != 4:
            raise InputError(f"drise: images must be (B, 3, H, W), got shape {tuple(images.shape)}")
        b, _, h, w = images.shape
        if len(targets) != b:
            raise InputError(f"drise: {len(targets)} target lists for {b} images; give one (possibly empty) per image")
        targets = [t if isinstance(t, DetectionTarget) else DetectionTarget(*t) for t in targets]
        targets = [t.to(images.device) for t in targets]
        sums = [images.new_zeros(len(t), h * w) for t in targets]
        weight_sum = [images.new_zeros(len(t)) for t in targets]
        mask_sum = images.new_zeros(h * w)
        n_total = 0
        chunks = masks.to(images.device).split(self.chunk) if masks is not None else self.masks((h, w), images.device)
        for mask_chunk in chunks:
            weights = self._weights(images, targets, mask_chunk)  # per image (n, T)
            flat = mask_chunk.reshape(len(mask_chunk), -1)
            for i in range(b):
                sums[i] += weights[i].T @ flat
                weight_sum[i] += weights[i].sum(0)
            mask_sum += flat.sum(0)
            n_total += len(mask_chunk)
        maps = []
        for i in range(b):
            acc = sums[i]
            if self.center:  # sum_i (w_i - w_mean) M_i = sum_i w_i M_i - w_mean * sum_i M_i
                acc = acc - (weight_sum[i] / n_total)[:, None] * mask_sum[None, :]
            maps.append((acc / (n_total * self.p)).reshape(-1, h, w).float())
        return maps

    def _weights(self, images: torch.Tensor, targets: list[DetectionTarget], masks: torch.Tensor) -> list[torch.Tensor]:
        """Similarity weights (n_masks_in_chunk, T) per image; masked images go through the detector in batches."""
        b, n = images.shape[0], masks.shape[0]
        weights = [images.new_zeros(n, len(t)) for t in targets]
        # image-major order: a detector batch holds consecutive masks of one image (two at a boundary)
        for start in range(0, b * n, self.batch_size):
            pair = torch.arange(start, min(start + self.batch_size, b * n), device=images.device)
            img_idx, msk_idx = pair // n, pair % n
            outputs = self.model(images[img_idx] * masks[msk_idx][:, None])
            for i in img_idx.unique().tolist():
                rows = (img_idx == i).nonzero().flatten()
                if len(targets[i]):
                    weights[i][msk_idx[rows]] = similarities(targets[i], [outputs[r] for r in rows.tolist()])
        return weights

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
        maps = self.explain_detections(inputs, per_image)
        h, w = inputs.shape[-2:]
        out = torch.stack([m[0] if len(m) else inputs.new_zeros(h, w) for m in maps])
        scores = torch.stack([detection_similarity(t.to(inputs.device), d)[0] if len(t) else inputs.new_zeros(())
                              for t, d in zip(per_image, clean)])
        return SaliencyBatch(maps=out.float(), scores=scores.detach().float(), method=self.name)
