"""What every command pays at start, whatever it does."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

_THREADS_AFTER_NUMPY = (
    "import os, pipelines.cli.main, numpy; "
    "print(os.environ['OPENBLAS_NUM_THREADS'], len(os.listdir('/proc/self/task')))"
)


def _run(env: dict[str, str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _THREADS_AFTER_NUMPY], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def test_numpy_starts_no_blas_threads_under_the_cli() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    assert _run(env) == ["1", "1"]


def test_a_blas_thread_count_the_user_set_is_kept() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    assert _run({**env, "OPENBLAS_NUM_THREADS": "2"})[0] == "2"
