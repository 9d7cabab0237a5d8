"""Runner memory stays flat over many batches: nothing a batch produced outlives its shard.

At each shard write we keep weak references to what the runner hands the store (image rows, region rows,
pooled maps): once later batches are written, every earlier one must be gone. Live torch tensors (the GC
tracks them) must not grow either: a runner keeping full-size maps would add one tensor per image.
"""
from __future__ import annotations

import gc
import weakref

import torch

from analysis.runs import runner
from analysis.store.shard_writer import ShardWriter
from analysis.store.workspace import Workspace

from .conftest import CORRUPT, N_IMAGES


def _live_tensors() -> int:
    gc.collect()
    return sum(type(o) in (torch.Tensor, torch.nn.Parameter) for o in gc.get_objects())


def test_memory_is_flat_over_sixty_batches(tmp_path, model_file, data_120, monkeypatch):
    ws = Workspace(tmp_path / "ws")
    run_id = ws.create_run(ws.register_model(model_file), ws.register_dataset(data_120), "gradcam",
                           {"target": "pred"}, n=N_IMAGES, seed=0)
    batches, tensors, still_alive = [], {}, {}
    real_submit = ShardWriter.submit

    def watching_submit(self, index, images, regions, maps, skipped, *, record):
        # Counted on the runner's thread between two batches, with no shard in flight: counting inside the
        # writer thread would race the next batch's computation.
        self.finish()
        batches.append([weakref.ref(images), weakref.ref(regions), weakref.ref(maps)])
        if len(batches) in (10, 59):
            tensors[len(batches)] = _live_tensors()
            still_alive[len(batches)] = sum(ref() is not None for refs in batches[:-2] for ref in refs)
        return real_submit(self, index, images, regions, maps, skipped, record=record)

    monkeypatch.setattr(ShardWriter, "submit", watching_submit)
    final = runner.execute_run(ws, run_id, batch_size=2, progress=False)
    assert final["n_done"] == N_IMAGES - len(CORRUPT) and len(batches) == 60
    assert still_alive == {10: 0, 59: 0}  # no earlier batch's rows or maps are held
    assert tensors[59] - tensors[10] <= 4, tensors  # keeping maps would add about 2 x 49 tensors
