"""Shared by the detection run, report and dashboard tests: CLI helpers and the run's size."""
from pathlib import Path

from analysis.cli import main
from sample_models.detection import WEIGHTS_DIR

N_IMAGES = 24
N_MASKS = 200


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_args(ws: Path, version: str, data: Path, *extra) -> list:
    return ["run", "--model", WEIGHTS_DIR / version / "model.safetensors", "--data", data, "--n", N_IMAGES,
            "--param", f"n_masks={N_MASKS}", "--workspace", ws, "--batch-size", 8, "--no-progress", *extra]


