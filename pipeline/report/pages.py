"""The HTML report: one self-contained page per dataset (figures inlined as PNG) and an index page.

No server and nothing fetched: every image is a data URI and the style sheet is inline, so a page can be
mailed, attached to a ticket or opened from a bucket download as is.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pipeline.atomic import write_bytes
from pipeline.config import ConfigError, RelabelConfig
from pipeline.frames.decode import decode_frames
from pipeline.layout import EPISODES_FILE, OutputLayout
from pipeline.quality import episode_flags, flagged_episodes
from pipeline.report.config import (
    DECISION_KEYS,
    JobArgs,
    ReportConfig,
    ReportJob,
    RunSettings,
    format_value,
)
from pipeline.report.flagged import flagged_count, flags_section
from pipeline.report.fleet import FleetLine, Trend, Unreadable, fleet_page
from pipeline.report.outputs import (
    DecidedEpisodes,
    SourceEpisodes,
    curated_count,
    find_datasets,
    list_source,
    read_decided,
)
from pipeline.report.plots import episode_figure, success_histogram, voc_histogram
from pipeline.report.shell import page
from pipeline.runrecord import read_run_records
from pipeline.storage import join_uri, redact

INDEX_FILE = "index.html"


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(value)


def episode_thumbnails(
    row: dict[str, Any], source: SourceEpisodes, cfg: RelabelConfig, rcfg: ReportConfig
) -> tuple[np.ndarray | None, list[int], str]:
    """Thumbnails of one episode from its source video, evenly spaced from its first to its last frame.

    Returns:
        ``(frames, raw frame indices, "")``, or ``(None, [], reason)`` when they cannot be had.
    """
    record = source.records.get(int(row["episode_index"]))
    if record is None:
        # A dataset-wide reason is stated once above the episodes, not repeated on each.
        return None, [], "" if source.error else "the episode is no longer in the source dataset"
    indices = np.unique(np.round(np.linspace(0, record.length - 1, rcfg.strip_frames)).astype(np.int64))
    height, width = source.frame_shape or (rcfg.thumb_height, rcfg.thumb_height)
    size = (rcfg.thumb_height, max(1, round(rcfg.thumb_height * width / height)))
    try:
        clip = decode_frames(
            record.video_uri,
            indices / record.fps,
            record.from_timestamp,
            size,
            cfg.source.storage_options,
            cfg.source.block_size,
            fps=record.fps,
        )
    except Exception as err:  # a missing or broken video is a note on the page, never a failed report
        return None, [], redact(str(err), cfg.source.storage_options)
    return clip.frames, [int(i) for i in indices], ""


def _episode_section(
    row: dict[str, Any], source: SourceEpisodes, cfg: RelabelConfig, rcfg: ReportConfig
) -> str:
    """One episode's card; its success and selection are the decided ones in ``row``."""
    index = int(row["episode_index"])
    head = f"Episode {index} · {html.escape(str(row['status']))}"
    task = html.escape(str(row.get("task") or ""))
    meta = f"task: “{task}” · {row.get('length')} frames"
    flags = episode_flags(row, rcfg.quality, cfg.success.window)
    if flags:
        head += f" · <span class='flags'>flagged: {', '.join(f.replace('_', ' ') for f in flags)}</span>"
    if row["status"] != "ok":
        error = html.escape(str(row.get("error") or ""))
        return (
            f"<section class='episode failed' id='episode-{index}'><h3>{head}</h3>"
            f"<p class='meta'>{meta}</p><p class='error'>{error}</p></section>"
        )
    threshold = cfg.success.threshold
    score = row.get("success_score")
    verdict = "<span class='yes'>success</span>" if row["success"] else "<span class='no'>no success</span>"
    voc = row.get("voc")
    voc_text = f"{voc:.3f}" if _finite(voc) else "undefined (constant progress)"
    score_text = f"{score:.3f}" if _finite(score) else "n/a"
    meta += (
        f" · success score {score_text} vs threshold {threshold:g} → {verdict} · VOC {voc_text}"
        f" · curated: {'yes' if row['selected'] else 'no'}"
    )
    frames, frame_indices, note = episode_thumbnails(row, source, cfg, rcfg)
    plot = episode_figure(
        frames,
        frame_indices,
        list(row.get("prefix_frame_indices") or []),
        list(row.get("progress") or []),
        list(row.get("log_p_true") or []),
        int(row["length"]),
        score if _finite(score) else math.nan,
        threshold,
        cfg.success.window,
        rcfg.dpi,
    )
    parts = [
        f"<section class='episode' id='episode-{index}'><h3>{head}</h3><p class='meta'>{meta}</p>",
        f"<img class='episode-plot' data-episode='{index}' alt='episode {index}: frames, progress and "
        f"log P per prefix' src='{plot}'>",
    ]
    if note:
        parts.append(f"<p class='note'>frames not shown: {html.escape(note)}</p>")
    parts.append("</section>")
    return "".join(parts)


def settings_paragraphs(settings: RunSettings) -> list[str]:
    """Where the threshold and the other decision settings came from, and what an override means."""
    cfg = settings.cfg
    source = f"run {settings.run_id}" if settings.run_id else "the defaults"
    # The paragraph names the run once; a key given on the command line says so in full.
    others = [
        settings.origin(key) if settings.overridden((key,)) else f"{key} {format_value(settings.value(key))}"
        for key in (*DECISION_KEYS[1:], "model.path")
    ]
    body = [
        f"<p id='threshold'>Success threshold <b>{cfg.success.threshold:g}</b>: "
        f"{html.escape(settings.origin('success.threshold'))}. An episode succeeds when its success score "
        f'(mean raw log P("True") over the last {cfg.success.window} prefixes) is above it.</p>',
        f"<p class='meta' id='settings'>Decided with the settings of {html.escape(source)}: "
        f"{html.escape('; '.join(others))}.</p>",
    ]
    overridden = settings.overridden(DECISION_KEYS)
    if overridden and settings.run_id:
        body.append(
            f"<p class='note'>{html.escape(', '.join(overridden))} given on the command line: this page "
            f"shows what they would decide; the published labels and curated set are run "
            f"{html.escape(settings.run_id)}'s.</p>"
        )
    return body


def _summary(
    dataset_id: str, decided: DecidedEpisodes, curated: int | None, settings: RunSettings, flagged: int
) -> FleetLine:
    rows = decided.rows
    ok = [row for row in rows if row["status"] == "ok"]
    origin = f"run {settings.run_id}" if settings.run_id else settings.missing
    if settings.overridden(("success.threshold",)):
        origin = f"command line ({origin})"
    return FleetLine(
        dataset_id=dataset_id,
        page=f"{dataset_id}.html",
        episodes=len(rows),
        ok=len(ok),
        failed=len(rows) - len(ok),
        successes=sum(bool(row["success"]) for row in ok),
        selected=sum(bool(row["selected"]) for row in ok),
        curated=curated,
        flagged=flagged,
        threshold=settings.cfg.success.threshold,
        origin=origin,
        run_id=settings.run_id,
    )


def _counts_table(summary: FleetLine, decided: DecidedEpisodes) -> list[str]:
    curated = "none published" if summary.curated is None else str(summary.curated)
    body = [
        "<table><tr><th>episodes</th><th>scored</th><th>failed</th><th>success at threshold</th>"
        "<th>selected at these settings</th><th>curated (published)</th></tr>"
        f"<tr><td>{summary.episodes}</td><td>{summary.ok}</td><td>{summary.failed}</td>"
        f"<td>{summary.successes}</td><td>{summary.selected}</td><td>{curated}</td></tr></table>"
    ]
    if summary.selected != (summary.curated or 0):
        body.append(
            f"<p class='note'>{summary.selected} episode(s) selected at these settings, "
            f"{summary.curated or 0} in the published curated version.</p>"
        )
    if decided.stale:
        body.append(
            f"<p class='note'>{decided.stale} stored success or selection label(s) differ from the decision "
            "at these settings; a relabel run with them re-decides the published files.</p>"
        )
    return body


def _failed_section(failed: list[dict[str, Any]]) -> list[str]:
    body = [f"<h2>Failed episodes ({len(failed)})</h2>"]
    if not failed:
        return [*body, "<p>none</p>"]
    body.append("<table id='failed'><tr><th>episode</th><th>reason</th></tr>")
    body.extend(
        f"<tr><td><a href='#episode-{row['episode_index']}'>{row['episode_index']}</a></td>"
        f"<td class='error'>{html.escape(str(row.get('error') or ''))}</td></tr>"
        for row in failed
    )
    body.append("</table>")
    return body


def _dataset_figures(ok: list[dict[str, Any]], cfg: RelabelConfig, rcfg: ReportConfig) -> list[str]:
    scores = [row["success_score"] for row in ok if _finite(row.get("success_score"))]
    vocs = [row["voc"] for row in ok if _finite(row.get("voc"))]
    body = ["<h2>Dataset</h2><div class='figures'>"]
    if scores:
        body.append(
            f"<img class='dataset-plot' data-plot='success-histogram' alt='success score histogram' "
            f"src='{success_histogram(scores, cfg.success.threshold, rcfg.dpi)}'>"
        )
    if ok:
        body.append(
            f"<img class='dataset-plot' data-plot='voc-histogram' alt='VOC distribution' "
            f"src='{voc_histogram(vocs, rcfg.dpi)}'>"
        )
    body.append("</div>")
    if vocs:
        body.append(
            f"<p class='meta'>VOC mean {np.mean(vocs):.3f}, median {np.median(vocs):.3f}"
            f"{f', {len(ok) - len(vocs)} undefined' if len(vocs) < len(ok) else ''}.</p>"
        )
    return body


def dataset_page(
    dataset_id: str,
    decided: DecidedEpisodes,
    curated: int | None,
    settings: RunSettings,
    rcfg: ReportConfig,
) -> tuple[str, FleetLine]:
    """The HTML page of one dataset and its line on the fleet page.

    Args:
        dataset_id: e.g. ``so100/pick_cube``.
        decided: its ``episodes.parquet`` rows, decided under ``settings`` (:func:`read_decided`).
        curated: episodes in its published curated version, None when there is none.
        settings: the publishing run's settings under the command line, with their origins.
        rcfg: report settings.
    """
    cfg, rows = settings.cfg, decided.rows
    ok = [row for row in rows if row["status"] == "ok"]
    flags = flagged_episodes(rows, rcfg.quality, cfg.success.window)
    summary = _summary(dataset_id, decided, curated, settings, flagged_count(flags))
    models = sorted({str(row.get("model")) for row in ok if row.get("model")})
    body = [
        "<p><a href='../index.html'>← all datasets</a></p>",
        f"<h1>{html.escape(dataset_id)}</h1>",
        f"<p class='meta'>model: {html.escape(', '.join(models) or 'n/a')} · "
        f"report written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC</p>",
        *_counts_table(summary, decided),
        *settings_paragraphs(settings),
        *_dataset_figures(ok, cfg, rcfg),
        *_failed_section([row for row in rows if row["status"] != "ok"]),
        *flags_section(dataset_id, rows, flags, rcfg.quality, cfg.success.window),
    ]
    shown = rows[: rcfg.max_episodes]
    body.append(f"<h2>Episodes ({len(shown)} of {len(rows)} shown)</h2>")
    if len(shown) < len(rows):
        body.append(f"<p class='note'>raise report.max_episodes (now {rcfg.max_episodes}) to see all.</p>")
    source = list_source(shown, cfg.source.storage_options)
    if shown and source.error:
        body.append(f"<p class='note'>frames: {html.escape(source.error)}</p>")
    body.extend(_episode_section(row, source, cfg, rcfg) for row in shown)
    return page(f"TOPReward report: {dataset_id}", body), summary


def _check(rcfg: ReportConfig) -> None:
    problems = [
        message
        for ok, message in (
            (rcfg.strip_frames >= 1, "report.strip_frames must be >= 1"),
            (rcfg.thumb_height >= 8, "report.thumb_height must be >= 8"),
            (rcfg.max_episodes >= 0, "report.max_episodes must be >= 0"),
            (rcfg.dpi >= 10, "report.dpi must be >= 10"),
        )
        if not ok
    ]
    problems += rcfg.quality.check()
    if problems:
        raise ConfigError(problems[0])


@dataclass(frozen=True)
class ReportResult:
    """What a report wrote.

    Attributes:
        uri: The page to open: the fleet index, or the one dataset's page when ``dataset=`` was given.
        written: One line per dataset whose page was written.
        unreadable: The datasets that could not be read (file and reason); their pages were not written.
    """

    uri: str
    written: list[FleetLine]
    unreadable: list[Unreadable]


class _NotRead(Exception):
    """One dataset could not be read: the file, and why."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file, self.reason = file, reason


def _reading[T](file: str, options: dict[str, Any], read: Callable[[], T]) -> T:
    """``read()``, any error in it becoming :class:`_NotRead` naming ``file`` (secrets redacted)."""
    try:
        return read()
    except Exception as err:  # one dataset's bad file is listed on the fleet page, never a stopped report
        raise _NotRead(file, redact(f"{type(err).__name__}: {err}", options)) from err


def _report_dataset(
    args: JobArgs[ReportJob], dataset_id: str, out: str, trend: Trend
) -> tuple[FleetLine, RunSettings]:
    """Read, decide and write one dataset's page; its rows count towards ``trend``.

    Raises:
        _NotRead: a file of the dataset could not be read, or its page could not be drawn or written.
    """
    options, rcfg = args.base.output.storage_options, args.job.report
    layout = OutputLayout(args.base.output.uri).dataset(dataset_id)
    settings = _reading(layout.record, options, lambda: args.settings(layout.base))
    cfg = settings.cfg
    decided = _reading(
        layout.episodes, options, lambda: read_decided(layout.episodes, options, cfg.success, cfg.curation)
    )
    curated = _reading(layout.curated, options, lambda: curated_count(layout.base, options))
    text, line = _reading(
        layout.episodes, options, lambda: dataset_page(dataset_id, decided, curated, settings, rcfg)
    )
    uri = join_uri(out, line.page)
    _reading(uri, options, lambda: _write_text(uri, text, options))
    trend.add(decided.rows)
    return line, settings


def _read_trend(output_uri: str, options: dict[str, Any]) -> tuple[Trend, str]:
    """The run records under ``_runs/``, or none and why."""
    try:
        return Trend(read_run_records(output_uri, options)), ""
    except Exception as err:  # the fleet page says so; the datasets are still reported
        reason = redact(f"{type(err).__name__}: {err}", options)
        return Trend([]), f"run records not readable: {reason}"


def run_report(args: JobArgs[ReportJob], progress: Callable[[str], None] | None = None) -> ReportResult:
    """Write the page of every dataset it can read under ``output.uri`` (or only ``job.dataset``) and
    the fleet index (:mod:`pipeline.report.fleet`).

    Each dataset is decided (:func:`pipeline.decision.decide`) with the settings of the run that
    published it, under the command line's overrides. A dataset whose files cannot be read is listed
    (file and reason) on the index and through ``progress``; the others are written. Pages go to
    ``job.report.out`` (default ``<output.uri>/_report``), through fsspec with
    ``output.storage_options``; videos are read with ``source.storage_options``. With ``job.dataset``
    only that page is written and the fleet index is left as it was.

    Args:
        args: the command line (:func:`pipeline.report.config.load_job_config`).
        progress: called with one line per dataset: its counts and where its threshold came from, or
            ``NOT READ <dataset>: <file>: <reason>``.

    Raises:
        ConfigError: a report setting is out of range, or ``job.dataset`` has no episodes table.
    """
    job, base = args.job, args.base
    _check(job.report)
    options = base.output.storage_options
    datasets = find_datasets(base.output.uri, options)
    if job.dataset is not None and job.dataset not in datasets:
        found = ", ".join(datasets) or "none"
        raise ConfigError(f"dataset={job.dataset}: no {EPISODES_FILE} there (found: {found})")
    out = job.report.out or OutputLayout(base.output.uri).report
    trend, trend_note = _read_trend(base.output.uri, options) if job.dataset is None else (Trend([]), "")
    written, unreadable = [], []
    for dataset_id in [job.dataset] if job.dataset is not None else datasets:
        try:
            line, settings = _report_dataset(args, dataset_id, out, trend)
        except _NotRead as err:
            unreadable.append(Unreadable(dataset_id, err.file, err.reason))
            _say(progress, f"NOT READ {unreadable[-1].line()}")
            continue
        written.append(line)
        _say(
            progress,
            f"{dataset_id}: {line.ok} scored, {line.successes} success, {line.selected} selected, "
            f"{line.flagged} flagged; {settings.origin('success.threshold')}",
        )
    if job.dataset is not None:
        return ReportResult(join_uri(out, f"{job.dataset}.html"), written, unreadable)
    index = fleet_page(
        base.output.uri, written, unreadable, trend, args.overrides, job.report.dpi, trend_note
    )
    return ReportResult(_write_text(join_uri(out, INDEX_FILE), index, options), written, unreadable)


def write_report(args: JobArgs[ReportJob], progress: Callable[[str], None] | None = None) -> str:
    """:func:`run_report`, returning the URI of the page to open."""
    return run_report(args, progress).uri


def _say(progress: Callable[[str], None] | None, line: str) -> None:
    if progress is not None:
        progress(line)


def _write_text(uri: str, text: str, storage_options: dict[str, Any]) -> str:
    # One step (temp + rename, or one PUT): a page opened while the report is rewritten is whole.
    write_bytes(text.encode(), uri, storage_options)
    return uri
