"""Progress of replay/rebuild: on stderr for a person at a terminal, never in a pipe unless asked."""

from __future__ import annotations

import pytest

from pipelines.archive.progress import NoProgress
from pipelines.cli.progress import RichProgress, progress_shown

pytestmark = pytest.mark.unit


def test_forced_progress_shows_each_phase_with_counts_and_eta_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with progress_shown(True, quiet=False) as report:
        assert isinstance(report, RichProgress)
        report.phase("reading the archive (messages)", total=40)
        report.advance(40)
        report.phase("inserting the rebuilt rollups", total=3)
        report.advance(3)
    out, err = capsys.readouterr()
    assert out == ""
    assert "reading the archive (messages)" in err
    assert "40/40" in err
    assert "3/3" in err
    assert "eta" in err


@pytest.mark.parametrize(("progress", "quiet"), [(None, False), (False, False), (True, True)])
def test_no_progress_in_a_pipe_when_turned_off_or_quiet(
    capsys: pytest.CaptureFixture[str], progress: bool | None, quiet: bool
) -> None:
    # pytest captures stderr: not a terminal, so the default is off too.
    with progress_shown(progress, quiet) as report:
        assert isinstance(report, NoProgress)
        report.phase("replaying (messages)", total=5)
        report.advance(5)
    assert capsys.readouterr() == ("", "")
