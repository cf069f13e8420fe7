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
from pipeline.report.config import (
    DECISION_KEYS,
    JobArgs,
    ReportConfig,
    ReportJob,
    RunSettings,
    format_value,
)
from pipeline.report.outputs import (
    DecidedEpisodes,
    SourceEpisodes,
    curated_count,
    find_datasets,
    list_source,
    read_decided,
)
from pipeline.report.plots import episode_figure, success_histogram, voc_histogram
from pipeline.storage import join_uri, redact

INDEX_FILE = "index.html"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 980px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; } h3 { font-size: 1em; margin: 0; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; }
.episode { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em; margin: 0.8em 0; }
.episode.failed { border-color: #d62728; }
.meta, .note { font-size: 0.9em; color: #555; margin: 0.3em 0; }
.error { color: #b00; font-family: monospace; white-space: pre-wrap; }
.yes { color: #2ca02c; font-weight: bold; } .no { color: #d62728; font-weight: bold; }
img { max-width: 100%; }
"""


@dataclass(frozen=True)
class DatasetSummary:
    """One line of the index page."""

    dataset_id: str
    page: str  # path relative to the report folder
    episodes: int
    ok: int
    failed: int
    successes: int
    selected: int  # decided under the settings shown
    curated: int | None  # in the published curated version
    threshold: float
    origin: str  # the run whose settings decided, or why the defaults did


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(value)


def _page(title: str, body: list[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


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
    dataset_id: str, decided: DecidedEpisodes, curated: int | None, settings: RunSettings
) -> DatasetSummary:
    rows = decided.rows
    ok = [row for row in rows if row["status"] == "ok"]
    origin = f"run {settings.run_id}" if settings.run_id else settings.missing
    if settings.overridden(("success.threshold",)):
        origin = f"command line ({origin})"
    return DatasetSummary(
        dataset_id,
        f"{dataset_id}.html",
        len(rows),
        len(ok),
        len(rows) - len(ok),
        sum(bool(row["success"]) for row in ok),
        sum(bool(row["selected"]) for row in ok),
        curated,
        settings.cfg.success.threshold,
        origin,
    )


def _counts_table(summary: DatasetSummary, decided: DecidedEpisodes) -> list[str]:
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
) -> tuple[str, DatasetSummary]:
    """The HTML page of one dataset and its line for the index.

    Args:
        dataset_id: e.g. ``so100/pick_cube``.
        decided: its ``episodes.parquet`` rows, decided under ``settings`` (:func:`read_decided`).
        curated: episodes in its published curated version, None when there is none.
        settings: the publishing run's settings under the command line, with their origins.
        rcfg: report settings.
    """
    cfg, rows = settings.cfg, decided.rows
    ok = [row for row in rows if row["status"] == "ok"]
    summary = _summary(dataset_id, decided, curated, settings)
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
    ]
    shown = rows[: rcfg.max_episodes]
    body.append(f"<h2>Episodes ({len(shown)} of {len(rows)} shown)</h2>")
    if len(shown) < len(rows):
        body.append(f"<p class='note'>raise report.max_episodes (now {rcfg.max_episodes}) to see all.</p>")
    source = list_source(shown, cfg.source.storage_options)
    if shown and source.error:
        body.append(f"<p class='note'>frames: {html.escape(source.error)}</p>")
    body.extend(_episode_section(row, source, cfg, rcfg) for row in shown)
    return _page(f"TOPReward report: {dataset_id}", body), summary


def index_page(output_uri: str, summaries: list[DatasetSummary], overrides: list[str]) -> str:
    """The index: one line per dataset with its counts, the threshold that decided them, and a link."""
    given = ", ".join(item for item in overrides if not item.startswith("output."))
    body = [
        "<h1>TOPReward labels</h1>",
        f"<p class='meta'>outputs: {html.escape(output_uri)} · each dataset decided with the settings of "
        f"the run that published it{f', under {html.escape(given)}' if given else ''} · "
        f"written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC</p>",
        "<table id='datasets'><tr><th>dataset</th><th>episodes</th><th>scored</th><th>failed</th>"
        "<th>success</th><th>selected</th><th>curated</th><th>threshold</th><th>settings from</th></tr>",
    ]
    body.extend(
        f"<tr><td><a href='{html.escape(s.page)}'>{html.escape(s.dataset_id)}</a></td><td>{s.episodes}</td>"
        f"<td>{s.ok}</td><td>{s.failed}</td><td>{s.successes}</td><td>{s.selected}</td>"
        f"<td>{'none' if s.curated is None else s.curated}</td><td>{format_value(s.threshold)}</td>"
        f"<td>{html.escape(s.origin)}</td></tr>"
        for s in summaries
    )
    body.append("</table>")
    if not summaries:
        body.append(f"<p>No dataset: no &lt;robot&gt;/&lt;task&gt;/{EPISODES_FILE} under the outputs.</p>")
    return _page("TOPReward labels", body)


def _check(rcfg: ReportConfig) -> None:
    for ok, message in (
        (rcfg.strip_frames >= 1, "report.strip_frames must be >= 1"),
        (rcfg.thumb_height >= 8, "report.thumb_height must be >= 8"),
        (rcfg.max_episodes >= 0, "report.max_episodes must be >= 0"),
        (rcfg.dpi >= 10, "report.dpi must be >= 10"),
    ):
        if not ok:
            raise ConfigError(message)


def write_report(args: JobArgs[ReportJob], progress: Callable[[str], None] | None = None) -> str:
    """Write the report of every dataset under ``output.uri`` (or only ``job.dataset``).

    Each dataset is decided (:func:`pipeline.decision.decide`) with the settings of the run that
    published it, under the command line's overrides. Pages go to ``job.report.out`` (default
    ``<output.uri>/_report``), through fsspec with ``output.storage_options``; videos are read with
    ``source.storage_options``.

    Args:
        args: the command line (:func:`pipeline.report.config.load_job_config`).
        progress: called with one line per dataset: its counts and where its threshold came from.

    Returns:
        The URI of the index page.

    Raises:
        ConfigError: a report setting is out of range, or ``job.dataset`` has no episodes table.
    """
    job, base = args.job, args.base
    _check(job.report)
    options = base.output.storage_options
    outputs = OutputLayout(base.output.uri)
    datasets = find_datasets(base.output.uri, options)
    if job.dataset is not None:
        if job.dataset not in datasets:
            found = ", ".join(datasets) or "none"
            raise ConfigError(f"dataset={job.dataset}: no {EPISODES_FILE} there (found: {found})")
        datasets = [job.dataset]
    out = job.report.out or outputs.report
    summaries = []
    for dataset_id in datasets:
        layout = outputs.dataset(dataset_id)
        settings = args.settings(layout.base)
        decided = read_decided(layout.episodes, options, settings.cfg.success, settings.cfg.curation)
        page, summary = dataset_page(
            dataset_id, decided, curated_count(layout.base, options), settings, job.report
        )
        _write_text(join_uri(out, summary.page), page, options)
        summaries.append(summary)
        if progress is not None:
            progress(
                f"{dataset_id}: {summary.ok} scored, {summary.successes} success, {summary.selected} "
                f"selected; {settings.origin('success.threshold')}"
            )
    index = index_page(base.output.uri, summaries, args.overrides)
    return _write_text(join_uri(out, INDEX_FILE), index, options)


def _write_text(uri: str, text: str, storage_options: dict[str, Any]) -> str:
    # One step (temp + rename, or one PUT): a page opened while the report is rewritten is whole.
    write_bytes(text.encode(), uri, storage_options)
    return uri
