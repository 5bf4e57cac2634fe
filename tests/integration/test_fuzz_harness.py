"""The atheris harness `make fuzz` runs still works: a short run over its seeds finds nothing.

The harness is only run for minutes by hand, so nothing else would notice it
breaking: it once reported every input, the empty one first, as good records
lost, because instrumenting numpy and polars changed their results.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_a_short_fuzzing_run_over_the_seed_corpus_finds_no_failure(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    harness = [sys.executable, "-m", "tests.fuzz.ingest_fuzzer", str(corpus)]
    done = subprocess.run(
        [*harness, "-runs=300", "-seed=1", f"-artifact_prefix={tmp_path}/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "Done 300 runs" in output
    assert len(list(corpus.iterdir())) > 10  # the hostile catalogue was written as seeds
