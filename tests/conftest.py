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


def usage_error(capsys, argv: list[str]) -> str:
    """The stderr of `gaze-rl <argv>`, which must exit with a usage error (code 2).

    A plain function (`from conftest import ...`: pytest puts tests/ on sys.path) so the call sites
    read as before; gaze_rl.cli is imported on first use, not when pytest loads this file.
    """
    from gaze_rl.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def error_of(capsys, argv: list[str]) -> str:
    """`usage_error` as one line of words: tyro draws its own parse errors in a box, and this
    compares the words, not the layout."""
    return " ".join(usage_error(capsys, argv).replace("│", " ").split())


def one_line_error(capsys, argv: list[str]) -> str:
    """`usage_error`, which must be exactly one line (what the CLI prints for a ConfigError, before
    anything starts), without its newline."""
    lines = usage_error(capsys, argv).strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]
