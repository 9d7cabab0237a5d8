"""Decoding for every task: images to input tensors at the card's size, the next batch in a thread.

A corrupt file skips that image with the reason, never the run. Decoding batch k+1 overlaps the compute of
batch k (one prefetch thread: PIL decoding releases the GIL). For a CUDA run the batch is stacked into
pinned (page-locked) memory on that thread, so the runner's `.to(device, non_blocking=True)` is an
asynchronous DMA copy instead of a staged one.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

from analysis.runs.task import Decoded


def decode(dataset, card, items: list, pin: bool = False) -> Decoded:
    """`dataset.load(item)` and `explainers.preprocess.to_input` per item; failures become `skipped`.
    `pin`: the stacked inputs in pinned memory (for a copy to a CUDA device)."""
    import torch

    from explainers.preprocess import to_input

    kept, tensors, masks, skipped = [], [], [], []
    for item in items:
        try:
            image, mask = dataset.load(item)
            tensor = to_input(image, card)
        except Exception as exc:  # a corrupt file skips this image, never the run
            skipped.append((item, getattr(exc, "reason", None) or str(exc) or type(exc).__name__))
            continue
        if getattr(dataset, "has_masks", False) and mask is None:
            skipped.append((item, "no region mask for this image"))
            continue
        kept.append(item)
        tensors.append(tensor)
        masks.append(mask)
    inputs = torch.stack(tensors) if tensors else None
    if pin and inputs is not None and torch.cuda.is_available():
        inputs = inputs.pin_memory()
    return Decoded(kept, inputs, masks, skipped)


def prefetched(dataset, card, items: list, batch_size: int, pin: bool = False) -> Iterator[Decoded]:
    """`decode` of consecutive batches of `items`, batch k+1 decoded in a thread while batch k is used."""
    chunks = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    if not chunks:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
        pending = pool.submit(decode, dataset, card, chunks[0], pin)
        for k in range(len(chunks)):
            batch = pending.result()
            if k + 1 < len(chunks):
                pending = pool.submit(decode, dataset, card, chunks[k + 1], pin)
            yield batch
