"""A catalog writer process for the interleaving tests: reads one JSON request per line, runs its operations
on the workspace as soon as the shared start time comes, answers one JSON line with each operation's outcome.

Outcomes: "ok", "refused: <message>" (an InputError: a clean, expected refusal, e.g. deleting what another
process deleted first) or "error: <traceback>" (anything else: what the tests fail on). Torch-free, so a few
of them start in a second. Operations (lists, first the verb):
  ["register_dataset", PATH]        ["register_model", PATH]
  ["create_run", MODEL_ID, DATASET_ID, SEED]   ["claim", MODEL_ID, DATASET_ID, SEED] (claim, one shard, done)
  ["label", DATASET_ID, REGION, VERDICT]      ["rename", "model"|"dataset"|"run", ID, NAME]
  ["delete_dataset", ID]  ["delete_model", ID]  ["delete_run", MODEL_ID, DATASET_ID, SEED]
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback

from analysis.store.workspace import Workspace
from explainers.errors import InputError


def run_op(ws: Workspace, op: list) -> str:
    verb, *args = op
    if verb == "register_dataset":
        ws.register_dataset(args[0])
    elif verb == "register_model":
        ws.register_model(args[0])
    elif verb == "create_run":
        ws.create_run(args[0], args[1], "gradcam", n=4, seed=args[2])
    elif verb == "claim":
        run_id = ws.create_run(args[0], args[1], "gradcam", n=4, seed=args[2])
        if ws.claim_run(run_id, os.getpid(), "cpu") is None:
            ws.record_shard(run_id, 0, 4, "shard-00000", n_done=4, n_skipped=0)
            ws.update_run(run_id, status="done", pid=None)
    elif verb == "label":
        ws.set_label(*args)
    elif verb == "rename":
        kind, row_id, name = args
        getattr(ws, f"rename_{kind}")(row_id, name)
    elif verb in ("delete_dataset", "delete_model"):
        getattr(ws, verb)(args[0])
    elif verb == "delete_run":
        ws.delete_run(_run_id(ws, *args))
    else:
        raise ValueError(f"unknown operation {verb}")
    return "ok"


def _run_id(ws: Workspace, model_id: str, dataset_id: str, seed: int) -> str:
    for run in ws.runs():
        if run["model_id"] == model_id and run["dataset_id"] == dataset_id and run["seed"] == seed:
            return run["id"]
    raise InputError("no such run")


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        ws = Workspace(request["root"])
        time.sleep(max(0.0, request["start_at"] - time.time()))
        outcomes = []
        for op in request["ops"]:
            try:
                outcomes.append(run_op(ws, op))
            except InputError as exc:
                outcomes.append(f"refused: {exc}")
            except Exception:
                outcomes.append(f"error: {traceback.format_exc()}")
        ws.close()
        print(json.dumps(outcomes), flush=True)


if __name__ == "__main__":
    main()
