"""The fleet page: the report's ``index.html``, the page an operator opens first.

Fleet totals, the trend over the recorded runs (episodes scored, success rate and failures per run, one
inline PNG), the datasets the report could not read (file and reason), and one sortable line per
dataset, failing datasets first. Built only from what the report reads anyway (the episodes tables,
``_published.json`` and the run records under ``_runs/``); no video is opened for it. Sorting is a few
lines of inline JavaScript: the page has no external asset and opens from disk or a bucket download.
"""

from __future__ import annotations

import bisect
import html
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.layout import EPISODES_FILE
from pipeline.report.plots import trend_figure
from pipeline.report.shell import page

FLEET_STYLE = """
body { max-width: 1280px; }
.totals { display: flex; flex-wrap: wrap; gap: 0.6em; margin: 0.6em 0; }
.total { border: 1px solid #ddd; border-radius: 6px; padding: 0.3em 0.8em; }
.total b { display: block; font-size: 1.3em; }
table.sortable th { cursor: pointer; background: #f4f4f4; white-space: nowrap; }
table.sortable th[data-order=asc]::after { content: " \\25B2"; }
table.sortable th[data-order=desc]::after { content: " \\25BC"; }
table.sortable td.n { text-align: right; }
tr.failing td:first-child { border-left: 4px solid #d62728; }
#datasets { font-size: 0.85em; } #datasets td { white-space: nowrap; padding: 0.2em 0.45em; }
"""

# Clicking a heading sorts by its column (numbers by value, from data-sort when a cell has one);
# clicking again reverses.
SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead.rows[0].cells, body = table.tBodies[0];
  function key(row, col) {
    var cell = row.cells[col], text = cell.getAttribute("data-sort");
    if (text === null) { text = cell.textContent.trim(); }
    var number = Number(text);
    return text !== "" && !isNaN(number) ? number : text.toLowerCase();
  }
  Array.prototype.forEach.call(heads, function (head, col) {
    head.addEventListener("click", function () {
      var up = head.getAttribute("data-order") !== "asc";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("data-order"); });
      head.setAttribute("data-order", up ? "asc" : "desc");
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a, col), y = key(b, col);
        var c = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : typeof x === "number" ? -1 : 1;
        return up ? c : -c;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


@dataclass(frozen=True)
class Unreadable:
    """A dataset the report could not read: which file, and why."""

    dataset_id: str
    file: str
    reason: str

    def line(self) -> str:
        """``<dataset>: <file>: <reason>``."""
        return f"{self.dataset_id}: {self.file}: {self.reason}"


@dataclass(frozen=True)
class FleetLine:
    """One dataset's line on the fleet page.

    Attributes:
        dataset_id: e.g. ``so100/pick_cube``.
        page: its page, relative to the report folder.
        episodes, ok, failed, successes, selected: counts (success and selection decided under the
            settings shown).
        curated: episodes in its published curated version; None when there is none.
        flagged: episodes with at least one quality flag.
        threshold: the success threshold in effect.
        origin: the run whose settings decided, or why the defaults did.
        run_id: the run that last published it (its ``_published.json``); None when unknown.
    """

    dataset_id: str
    page: str
    episodes: int
    ok: int
    failed: int
    successes: int
    selected: int
    curated: int | None
    flagged: int
    threshold: float
    origin: str
    run_id: str | None

    @property
    def success_rate(self) -> float:
        """Successes among the scored episodes, in percent (NaN when none is scored)."""
        return 100.0 * self.successes / self.ok if self.ok else math.nan


def _time(value: Any) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass
class Trend:
    """The recorded runs, oldest first, and the success of the episodes each one scored.

    A run's counts come from its record (``datasets``: scored and failed; ``failures``). Its success
    rate is that of the episodes whose current scores it made (``scored_at`` between its start and the
    next run's), decided at the settings shown: the records hold counts, not decisions.
    """

    records: list[dict[str, Any]]
    starts: list[datetime] = field(init=False)
    successes: list[int] = field(init=False)
    judged: list[int] = field(init=False)

    def __post_init__(self) -> None:
        dated = [(start, r) for r in self.records if (start := _time(r.get("started_at"))) is not None]
        dated.sort(key=lambda pair: pair[0])
        self.records = [r for _, r in dated]
        self.starts = [start for start, _ in dated]
        self.successes = [0] * len(dated)
        self.judged = [0] * len(dated)

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        """Count the scored episodes of one dataset's decided rows against the run that scored them."""
        for row in rows:
            scored_at = row.get("scored_at")
            if row.get("status") != "ok" or not isinstance(scored_at, datetime):
                continue
            at = scored_at if scored_at.tzinfo else scored_at.replace(tzinfo=UTC)
            run = bisect.bisect_right(self.starts, at) - 1
            if run >= 0:
                self.judged[run] += 1
                self.successes[run] += bool(row.get("success"))

    def published_at(self, run_id: str | None) -> datetime | None:
        """When the run ended (else started); None for an unknown run."""
        for record in self.records:
            if run_id and record.get("run_id") == run_id:
                return _time(record.get("ended_at")) or _time(record.get("started_at"))
        return None

    def figure(self, dpi: int) -> str:
        """The trend plot as a PNG data URI."""
        scored = [
            sum(int(d.get("scored") or 0) for d in (r.get("datasets") or {}).values()) for r in self.records
        ]
        rates = [100.0 * s / j if j else math.nan for s, j in zip(self.successes, self.judged, strict=True)]
        return trend_figure(
            [f"{start:%m-%d}" for start in self.starts],
            scored,
            rates,
            [len(r.get("failures") or []) for r in self.records],
            [r.get("status") == "broken" for r in self.records],
            dpi,
        )


def _total(label: str, value: str, key: str) -> str:
    return f"<div class='total' data-total='{key}'><b>{html.escape(value)}</b>{html.escape(label)}</div>"


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def totals_section(lines: list[FleetLine], unreadable: list[Unreadable], trend: Trend) -> list[str]:
    """The fleet's totals, and the last run."""
    ok, successes = sum(s.ok for s in lines), sum(s.successes for s in lines)
    body = [
        "<div class='totals' id='totals'>",
        _total("datasets", str(len(lines)), "datasets"),
        _total("not readable", str(len(unreadable)), "unreadable"),
        _total("episodes", str(sum(s.episodes for s in lines)), "episodes"),
        _total("scored", str(ok), "scored"),
        _total("failed", str(sum(s.failed for s in lines)), "failed"),
        _total("success rate", _percent(successes, ok), "success-rate"),
        _total("curated", str(sum(s.curated or 0 for s in lines)), "curated"),
        _total("flagged", str(sum(s.flagged for s in lines)), "flagged"),
        "</div>",
    ]
    if trend.records:
        last = trend.records[-1]
        body.append(
            f"<p class='meta' id='last-run'>last run {html.escape(str(last.get('run_id')))}: "
            f"{html.escape(str(last.get('status')))}, started {trend.starts[-1]:%Y-%m-%d %H:%M} UTC, "
            f"{len(last.get('failures') or [])} failure(s) recorded.</p>"
        )
    return body


def trend_section(trend: Trend, dpi: int, note: str = "") -> list[str]:
    """The plot of the recorded runs, or why there is none."""
    body = [f"<h2>Runs ({len(trend.records)} recorded)</h2>"]
    if note:
        body.append(f"<p class='note'>{html.escape(note)}</p>")
    if not trend.records:
        return [*body, "<p>No run record under _runs/.</p>"]
    body.append(
        f"<img class='fleet-plot' data-plot='trend' alt='episodes scored, success rate and failures per run' "
        f"src='{trend.figure(dpi)}'>"
    )
    body.append(
        "<p class='meta'>Per run: episodes it scored and failures it recorded (its run record); success "
        "rate of the episodes whose current scores it made, decided at the settings shown.</p>"
    )
    return body


def unreadable_section(unreadable: list[Unreadable]) -> list[str]:
    """The datasets the report could not read, with the file and the reason."""
    if not unreadable:
        return []
    body = [
        f"<h2 id='unreadable-heading'>Not readable ({len(unreadable)})</h2>",
        "<table id='unreadable'><thead><tr><th>dataset</th><th>file</th><th>reason</th></tr></thead><tbody>",
    ]
    body.extend(
        f"<tr><td>{html.escape(u.dataset_id)}</td><td>{html.escape(u.file)}</td>"
        f"<td class='error'>{html.escape(u.reason)}</td></tr>"
        for u in unreadable
    )
    return [*body, "</tbody></table>"]


HEADINGS = (
    "dataset", "episodes", "scored", "failed", "success", "success rate", "selected", "curated",
    "flagged", "threshold", "last published", "settings from",
)  # fmt: skip


def _cell(text: str, sort: str | None = None, number: bool = False) -> str:
    attrs = (f" data-sort='{html.escape(sort)}'" if sort is not None else "") + (
        " class='n'" if number else ""
    )
    return f"<td{attrs}>{text}</td>"


def _line(s: FleetLine, published: datetime | None) -> str:
    counts = [s.episodes, s.ok, s.failed, s.successes]
    rate = s.success_rate
    when = f"{published:%Y-%m-%d %H:%M}" if published else "unknown"
    cells = [
        _cell(f"<a href='{html.escape(s.page)}'>{html.escape(s.dataset_id)}</a>", s.dataset_id),
        *(_cell(str(n), number=True) for n in counts),
        _cell(
            "n/a" if math.isnan(rate) else f"{rate:.1f}%", "-1" if math.isnan(rate) else f"{rate:.3f}", True
        ),
        _cell(str(s.selected), number=True),
        _cell("none" if s.curated is None else str(s.curated), str(s.curated or -1), True),
        _cell(str(s.flagged), number=True),
        _cell(f"{s.threshold:g}", number=True),
        _cell(
            f"<span title='{html.escape(s.run_id or '')}'>{when}</span>",
            published.isoformat() if published else "",
        ),
        _cell(html.escape(s.origin)),
    ]
    return f"<tr class='{'failing' if s.failed else 'passing'}'>{''.join(cells)}</tr>"


def datasets_table(lines: list[FleetLine], trend: Trend) -> list[str]:
    """Every dataset, failing ones first (most failed episodes first), then by name; sortable."""
    ordered = sorted(lines, key=lambda s: (-s.failed, s.dataset_id))
    head = "".join(f"<th>{h}</th>" for h in HEADINGS)
    body = [
        f"<h2>Datasets ({len(lines)})</h2>",
        "<p class='meta'>Failing datasets first; click a heading to sort.</p>",
        f"<table id='datasets' class='sortable'><thead><tr>{head}</tr></thead><tbody>",
    ]
    body.extend(_line(s, trend.published_at(s.run_id)) for s in ordered)
    body.append("</tbody></table>")
    if not lines:
        body.append(f"<p>No dataset: no &lt;robot&gt;/&lt;task&gt;/{EPISODES_FILE} under the outputs.</p>")
    return body


def fleet_page(
    output_uri: str,
    lines: list[FleetLine],
    unreadable: list[Unreadable],
    trend: Trend,
    overrides: list[str],
    dpi: int,
    trend_note: str = "",
) -> str:
    """The report's index: totals, the runs' trend, the unreadable datasets and the datasets table.

    Args:
        output_uri: where the outputs were read.
        lines: one per dataset written.
        unreadable: the datasets that could not be read.
        trend: the run records, with the success of the episodes each scored.
        overrides: the relabel ``key=value`` entries given on the command line.
        dpi: resolution of the trend plot.
        trend_note: why the run records could not be read ("" when they could).
    """
    given = ", ".join(item for item in overrides if not item.startswith("output."))
    body = [
        "<h1>TOPReward labels: fleet</h1>",
        f"<p class='meta'>outputs: {html.escape(output_uri)} · each dataset decided with the settings of "
        f"the run that published it{f', under {html.escape(given)}' if given else ''} · "
        f"written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC</p>",
        *totals_section(lines, unreadable, trend),
        *unreadable_section(unreadable),
        *trend_section(trend, dpi, trend_note),
        *datasets_table(lines, trend),
    ]
    return page("TOPReward labels: fleet", body, style=FLEET_STYLE, script=SORT_SCRIPT)
