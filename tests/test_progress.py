"""Progress a person can follow, and a summary that shows the first error of each kind."""

from __future__ import annotations

import logging

import pytest

from pipeline.catalog import EpisodeRecord
from pipeline.failures import (
    CREDENTIALS_HINT,
    episode_spans,
    failure_lines,
    looks_like_credentials,
    reason_key,
)
from pipeline.progress import ScoringProgress, format_duration, progress_line, quiet_ray_data
from pipeline.relabel import DatasetSummary, RunSummary, format_summary, missing_sources
from pipeline.runrecord import RunRecord


def test_progress_line_has_done_failed_rate_and_eta():
    assert progress_line(40, 2, 100, 117.0) == (
        "scoring: 40/100 episodes done, 2 failed, 1,231 episodes/h, ETA 3 min"
    )
    assert (
        progress_line(0, 0, 100, 30.0)
        == "scoring: 0/100 episodes done, 0 failed, first results pending (30 s in)"
    )
    assert progress_line(100, 0, 100, 50.0).endswith("ETA 0 s")
    assert [format_duration(s) for s in (0, 44.6, 60, 179, 3600, 7500)] == [
        "0 s", "45 s", "1 min", "3 min", "1 h 00 min", "2 h 05 min",
    ]  # fmt: skip


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_scoring_progress_logs_on_its_own_clock(caplog):
    clock = _Clock()
    logger = logging.getLogger("test.progress")
    with (
        caplog.at_level(logging.INFO, logger="test.progress"),
        ScoringProgress(10, interval_s=3600, clock=clock, logger=logger) as progress,
    ):
        clock.now += 90
        for ok in (True, True, False):
            progress.add(ok)
        assert progress.line() == "scoring: 3/10 episodes done, 1 failed, 120 episodes/h, ETA 4 min"
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0] == "scoring: started, 10 episodes pending; progress every 1 h 00 min"
    assert messages[-1] == "scoring: finished after 2 min, 3/10 episodes done, 1 failed"


def test_scoring_progress_writes_a_line_every_interval_without_results(caplog):
    with caplog.at_level(logging.INFO, logger="pipeline.progress"), ScoringProgress(5, interval_s=0.05):
        import time

        time.sleep(0.3)
    pending = [r for r in caplog.records if "first results pending" in r.getMessage()]
    assert len(pending) >= 2


def test_ray_data_progress_is_off_unless_debug():
    import ray.data

    ctx = ray.data.DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.print_on_execution_start, ctx.execution_options.verbose_progress)
    try:
        quiet_ray_data("INFO")
        assert not ctx.enable_progress_bars and not ctx.enable_operator_progress_bars
        assert not ctx.print_on_execution_start and not ctx.execution_options.verbose_progress
        quiet_ray_data("debug")
        assert ctx.enable_progress_bars and ctx.print_on_execution_start
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start = saved[:2]
        ctx.execution_options.verbose_progress = saved[2]


SHARD = "writing a shard under s3://out/_state/h/lab/x: NoCredentialsError: Unable to locate credentials"


def test_repeats_collapse_under_the_first_error_with_its_episode():
    errors = [f"lab/x episode {i}: {SHARD} [attempt 1]" for i in (3, 4, 5, 6, 9, *range(20, 30))]
    errors.insert(2, "lab/x episode 7: s3://in/lab/x/videos/file-007.mp4: file not found [attempt 2]")
    errors.append("lab/x episode 8: s3://in/lab/x/videos/file-008.mp4: file not found [attempt 2]")
    lines = failure_lines("lab/x", errors)
    assert lines == [
        f"lab/x: FAILED lab/x episode 3: {SHARD} [attempt 1]",
        "lab/x:   and 14 more like it (episodes 4-6, 9, 20-29)",
        "lab/x: FAILED lab/x episode 7: s3://in/lab/x/videos/file-007.mp4: file not found [attempt 2]",
        "lab/x:   and 1 more like it (episodes 8)",
    ]
    assert reason_key(errors[0]) == reason_key(errors[1]) != reason_key(errors[2])
    assert episode_spans(range(0, 100, 2), limit=3) == "0, 2, 4, ..."


def test_too_many_kinds_are_counted():
    lines = failure_lines("d/x", [f"d/x: reason {chr(65 + i)}" for i in range(8)], max_kinds=5)
    assert (
        len(lines) == 6 and lines[-1] == "d/x:   and 3 more failure(s) of 3 other kind(s): see the run record"
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("NoCredentialsError: Unable to locate credentials", True),
        ("PermissionError: Access Denied", True),
        ("ClientError: An error occurred (403) when calling the HeadObject operation: Forbidden", True),
        ("HttpError: Anonymous caller does not have storage.objects.get access, HTTP 403", True),
        ("lab/x episode 403: file not found", False),
        ("OSError: [Errno 28] No space left on device", False),
    ],
)
def test_credentials_failures_are_recognised(error, expected):
    assert looks_like_credentials([error]) is expected


def _summary(**datasets: DatasetSummary) -> RunSummary:
    return RunSummary("h", 10.0, {d.dataset_id: d for d in datasets.values()})


def test_summary_shows_first_error_once_and_the_credentials_hint():
    d = DatasetSummary("lab/x", failed=15)
    d.errors = [f"lab/x episode {i}: {SHARD} [attempt 1]" for i in range(15)]
    text = format_summary(_summary(x=d))
    assert f"lab/x: FAILED lab/x episode 0: {SHARD} [attempt 1]" in text
    assert "lab/x:   and 14 more like it (episodes 1-14)" in text
    assert text.count("NoCredentialsError") == 1 and text.count(CREDENTIALS_HINT) == 1
    assert "--runtime-env-json" in CREDENTIALS_HINT


def test_missing_sources_are_the_not_found_roots_themselves():
    def failed(root: str, reason: str) -> EpisodeRecord:
        return EpisodeRecord(dataset_id="a/b", root=root, codebase_version="", status="failed", error=reason)

    records = [
        failed("s3://fleet/typo", "typo: s3://fleet/typo/meta/info.json: not found"),
        failed("s3://fleet/ok/bad", "ok/bad: s3://fleet/ok/bad/meta/info.json: not found"),
        failed("s3://fleet/down", "down: s3://fleet/down/meta/info.json: EndpointConnectionError: ..."),
    ]
    uris = ["s3://fleet/typo/", "s3://fleet/ok", "s3://fleet/down"]
    assert missing_sources(uris, records) == ["s3://fleet/typo/"]


def test_nothing_succeeded_needs_failures_and_no_published_episode():
    from pipeline.publish import PublishOutcome

    def outcome(status: str) -> PublishOutcome:
        error = "lab/z: s3://out/lab/z/episodes.parquet: storage down" if status == "failed" else ""
        return PublishOutcome("lab/x", status, error, "", "", None, 0, 0.0, True)

    failed = DatasetSummary("lab/x", failed=3, publish=outcome("published"))
    assert _summary(x=failed).nothing_succeeded
    done = DatasetSummary("lab/y", skipped=2, publish=outcome("unchanged"))
    assert not _summary(x=failed, y=done).nothing_succeeded
    assert not _summary(y=DatasetSummary("lab/y", skipped=2, publish=outcome("unchanged"))).nothing_succeeded
    unpublished = DatasetSummary("lab/z", scored=2, publish=outcome("failed"))
    assert _summary(z=unpublished).nothing_succeeded


def test_run_record_statuses():
    record = RunRecord("/nonexistent", {}, "h")
    with pytest.raises(ValueError, match="not one of"):
        record.finish("aborted")
