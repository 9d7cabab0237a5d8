"""Shared fixtures for the fault tests: the planted-map model and datasets of tests/runs, built once."""
from __future__ import annotations

import pytest

from tests.runs.helpers import write_dataset, write_model

N_IMAGES = 120
CORRUPT = (7, 61)  # truncated PNGs: skipped with a reason in every run


@pytest.fixture(scope="session")
def model_file(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def data_120(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data120"), n=N_IMAGES, seed=11, corrupt=CORRUPT)


@pytest.fixture(scope="session")
def data_12(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data12"), n=12, seed=0, corrupt=(5,))


@pytest.fixture(scope="session")
def zygote(tmp_path_factory):
    from .forking import Zygote

    process = Zygote(tmp_path_factory.mktemp("zygote") / "zygote.log")
    yield process
    process.close()
