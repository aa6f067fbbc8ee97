"""Shared fixtures for gaze_rl's tests (opt-in: nothing here is autouse)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Runs a module's tests with one torch thread.

    Small CPU convolutions on 2 (often shared) cores: OpenMP's second thread costs far more
    than it gives (measured 5-20x slower PlainConv/NatureCNN forwards under load).
    Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
