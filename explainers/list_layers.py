"""`python -m explainers.list_layers MODEL_PATH [--card model.json]`: the layers CAM methods can use (name,
output shape, and how it maps onto the image: a CNN map, or patch tokens with their prefix and grid), the
default CAM layer marked; when no default can be chosen the candidates are still listed (the reason on stderr),
since that is when the user needs them to set `target_layer`. Its own module: it loads models
(`explainers.loading.models`), which
use `explainers.layers`; the layer probing itself does not need the loader.
"""
from __future__ import annotations

import sys

from explainers.errors import InputError
from explainers.layers import layer_layouts
from explainers.loading.models import ModelCard, load_model


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m explainers.list_layers", description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--card", default=None)
    args = parser.parse_args(argv)
    try:
        card = ModelCard.from_json(args.card) if args.card else None
        loaded = load_model(args.model, card=card)
        if not loaded.supports_hooks:
            raise InputError(f"{args.model}: TorchScript models have no hookable layers; export a .pt2")
        try:
            default, why = loaded.target_layer_name(), None
        except InputError as exc:
            default, why = None, exc
        rows = layer_layouts(loaded.net, loaded.card.input_size, loaded.device)
        if not rows:
            raise why or InputError(f"{args.model}: no layer has a spatial output")
        for name, shape, layout in rows:
            print(f"{name}\t{tuple(shape[1:])}\t{layout.describe()}" + ("\t<- target layer" if name == default else ""))
        if why is not None:
            print(f"no default target layer: {why}", file=sys.stderr)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
