"""Fixtures shared by the unit tests: synthetic training pictures and one torch thread."""

import pytest
import torch
from synthetic import write_pictures


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: these models are tiny, and on a shared 2-core machine two threads that spin-wait
    for each other are 10x slower than one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    """12 synthetic 128x128 training images, JPEG and PNG."""
    d = tmp_path_factory.mktemp("images")
    write_pictures(d, 12)
    return str(d)
