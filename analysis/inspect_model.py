"""`python -m analysis.inspect_model MODEL [--card CARD] --format json`: what the dashboard needs to know
about a model file (its format, spatial layers, the detected target layer), found in a separate process.

The dashboard never loads a model in its own process (a pickle-free format can still be slow, huge, or
crash the interpreter), so it runs this and reads one JSON line. Bad input: one line on stderr, exit 2.
"""
from __future__ import annotations

import argparse
import json
import sys

from explainers.errors import InputError


def inspect(model_path: str, card_path: str | None = None) -> dict:
    """A model file, a Hugging Face folder, or a zip of one (unpacked safely into a temporary folder)."""
    from pathlib import Path

    from explainers.loading.model_files import hf_folder_in_zip

    inner = hf_folder_in_zip(Path(model_path)) if Path(model_path).is_file() else None
    if inner is None:
        return _inspect(model_path, card_path)
    import tempfile

    from analysis.data.archive import safe_extract

    with tempfile.TemporaryDirectory() as tmp:
        folder = safe_extract(model_path, tmp, name="model")
        return _inspect(str(folder / inner if inner else folder), card_path)


def _inspect(model_path: str, card_path: str | None) -> dict:
    from explainers.layers import spatial_layers
    from explainers.loading.models import load_model, read_card

    card = read_card(model_path, card_path) if card_path else None
    loaded = load_model(model_path, card=card, device="cpu")
    layers = spatial_layers(loaded.net, tuple(loaded.card.input_size)) if loaded.supports_hooks else []
    return {"format": loaded.format, "supports_hooks": bool(loaded.supports_hooks),
            "layers": [name for name, _ in layers], "shapes": [list(shape[1:]) for _, shape in layers],
            "target_layer": loaded.target_layer_name() if loaded.supports_hooks else None,
            "classes": list(loaded.card.classes), "sha256": loaded.sha256}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.inspect_model", description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--card")
    parser.add_argument("--format", choices=["json"], default="json")
    args = parser.parse_args(argv)
    try:
        result = inspect(args.model, args.card)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
