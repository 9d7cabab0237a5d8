"""Shared fixtures. Tests run on CPU with 2 threads, deterministically."""
import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("SALIENCY_AUDIT_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
