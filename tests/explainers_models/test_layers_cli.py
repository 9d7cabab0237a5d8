"""`python -m explainers.list_layers MODEL` lists a model's spatial layers and marks the default."""
from __future__ import annotations

import torch

from explainers.list_layers import main

from .conftest import TinyCNN, write_card


def test_lists_layers_and_marks_default(tmp_path, capsys):
    torch.save(TinyCNN(3).state_dict(), tmp_path / "model.pt")
    write_card(tmp_path)
    assert main([str(tmp_path / "model.pt")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["stem\t(4, 16, 16)\t16x16 map", "act\t(4, 16, 16)\t16x16 map",
                     "block\t(8, 8, 8)\t8x8 map\t<- target layer", "block.0\t(8, 8, 8)\t8x8 map",
                     "block.1\t(8, 8, 8)\t8x8 map"]


def test_bad_model_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "model.pt").write_bytes(b"not a model")
    card = write_card(tmp_path, "card.json")
    assert main([str(tmp_path / "model.pt"), "--card", str(card)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model.pt: not a model file") and err.count("\n") == 1
