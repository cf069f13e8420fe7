"""The fleet page (the report's index) on 200 datasets and 30 nightly runs, generated directly with the
project's own schemas and writers (no relabel run): totals, trend, failing datasets first, sorting in a
real headless Chromium, page size; and a corrupt episodes.parquet that the report lists and gets past."""

from __future__ import annotations

import json
import os
import random
import subprocess
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from jobs.report import EXIT_UNREADABLE
from jobs.report import main as report_main
from pipeline.atomic import write_bytes, write_parquet
from pipeline.config import RelabelConfig, load_config
from pipeline.curated.pointer import Pointer, version_folder
from pipeline.decision import decide
from pipeline.labels import minmax_normalize, value_order_correlation
from pipeline.layout import POINTER_FILE, OutputLayout
from pipeline.publish import EPISODE_COLUMNS, PROTOCOL_VERSION
from pipeline.runrecord import RunRecord
from pipeline.sinks import SHARD_SCHEMA
from tests.test_report import _chromium, _screenshot

DATASETS, NIGHTS = 200, 30
FIRST_NIGHT = datetime(2026, 10, 27, 1, 30, tzinfo=UTC)
THRESHOLD = -2.0
PREFIXES = 6
PROJECT = Path(__file__).resolve().parent.parent


def _dataset_id(i: int) -> str:
    return f"robot{i % 7:02d}/task_{i:03d}"


def _episode_row(
    dataset_id: str, root: str, episode: int, night: int, rng: random.Random, failed: bool
) -> dict:
    """One episode as a shard holds it: scored on ``night`` (successes grow over the nights), or failed
    to decode."""
    video = f"{root}/videos/observation.images.front/chunk-000/file-000.mp4"
    length = rng.randint(20, 90)
    row = {
        "dataset_id": dataset_id, "root": root, "codebase_version": "v3.0", "episode_index": episode,
        "task": "pick up the red cube", "length": length, "fps": 10.0, "camera": "observation.images.front",
        "video_uri": video, "dataset_from_index": 0, "dataset_to_index": length, "fingerprint": f"f{episode}",
        "attempt": 1, "status": "ok", "error": "", "frames_decoded": 12, "bytes_read": 1000,
        "model": "Qwen/Qwen3-VL-8B-Instruct", "config_hash": "c0ffee",
        "scored_at": FIRST_NIGHT + timedelta(days=night, minutes=10),
    }  # fmt: skip
    if failed:
        row.update(status="failed", error=f"{dataset_id} episode {episode}: {video}: cannot read video (EOF)")
        return row
    end = -3.5 + 3.0 * (night / NIGHTS) + rng.uniform(-1.5, 1.5)
    raw = np.linspace(end - rng.uniform(0.5, 4.0), end, PREFIXES) + np.array(
        [rng.gauss(0, 0.2) for _ in range(PREFIXES)]
    )
    progress = minmax_normalize(raw)
    row.update(
        prefix_frame_indices=[int(i) for i in np.linspace(1, length - 1, PREFIXES)],
        log_p_true=raw.tolist(),
        log_p_false=(raw - 1).tolist(),
        progress=progress.tolist(),
        frame_progress=np.interp(np.arange(length), np.linspace(1, length - 1, PREFIXES), progress).tolist(),
        voc=value_order_correlation(progress),
    )
    return row


def _write_dataset(output: Path, i: int, run_ids: list[str], rng: random.Random, cfg: RelabelConfig) -> None:
    """``episodes.parquet`` (SHARD_SCHEMA rows decided and published as publish does) and
    ``_published.json`` naming one of the last nights' runs."""
    dataset_id = _dataset_id(i)
    layout = OutputLayout(str(output)).dataset(dataset_id)
    failing = i % 9 == 0
    rows = [
        _episode_row(
            dataset_id, f"/data/fleet/{dataset_id}", e, rng.randrange(NIGHTS), rng, failing and e % 4 == 1
        )
        for e in range(rng.randint(5, 15))
    ]
    table = decide(pa.Table.from_pylist(rows, schema=SHARD_SCHEMA), cfg.success, cfg.curation)
    write_parquet(table.select(list(EPISODE_COLUMNS)), layout.episodes, {})
    selected = sum(table.column("selected").to_pylist())
    if selected:  # the curated version publish would have made: its pointer and its info.json
        version = Pointer(1, version_folder(1))
        write_bytes(version.to_json(), f"{layout.curated}/{POINTER_FILE}", {})
        info = json.dumps({"total_episodes": selected}).encode()
        write_bytes(info, f"{layout.curated}/{version.root}/meta/info.json", {})
    record = {
        "protocol": PROTOCOL_VERSION,
        "digest": f"d{i}",
        "run_id": run_ids[max(0, len(run_ids) - 1 - i % 3)],
        "curated_episodes": selected,
        "curated_version": version_folder(1) if selected else None,
        "superseded": [],
        "threshold": THRESHOLD,
        "curation_enabled": True,
    }
    write_bytes(json.dumps(record).encode(), layout.record, {})


def _write_runs(output: Path, rng: random.Random) -> list[str]:
    """30 nightly run records through RunRecord, oldest first; night 12 broke."""
    cfg = asdict(load_config([f"output.uri={output}", f"success.threshold={THRESHOLD}"]))
    run_ids = []
    for night in range(NIGHTS):
        started = FIRST_NIGHT + timedelta(days=night)
        record = RunRecord(str(output), {}, "c0ffee", config=cfg, started_at=started)
        record.status = "broken" if night == 12 else "completed"
        record.ended_at = started + timedelta(minutes=50)
        for i in range(DATASETS):
            failed = rng.randint(0, 3) if i % 9 == 0 else 0
            record.datasets[_dataset_id(i)] = {"scored": rng.randint(0, 6), "failed": failed}
            record.failures += [{"dataset_id": _dataset_id(i), "error": "decode"}] * failed
        record.write()
        run_ids.append(record.run_id)
    return run_ids


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> dict:
    """200 published datasets (every 9th with failed episodes), 30 run records, and the report of them."""
    output = tmp_path_factory.mktemp("fleet") / "labels"
    rng = random.Random(7)
    run_ids = _write_runs(output, rng)
    cfg = load_config([f"success.threshold={THRESHOLD}"])  # once: a config load costs ~50 ms
    for i in range(DATASETS):
        _write_dataset(output, i, run_ids, rng, cfg)
    out = output / "_report"
    assert report_main([f"output.uri={output}", "report.max_episodes=0"]) == 0
    return {"output": output, "out": out, "run_ids": run_ids}


class _Table(HTMLParser):
    """Cells of one table by id, row by row, and the attributes of every element with an id."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id, self.inside, self.rows = table_id, False, []
        self.ids: dict[str, dict[str, str]] = {}
        self.images: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if "id" in found:
            self.ids[found["id"]] = found
        if tag == "img":
            self.images.append(found)
        if tag == "table":
            self.inside = found.get("id") == self.table_id
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.inside = False

    def handle_data(self, data: str) -> None:
        if self.inside and self.rows and self.rows[-1]:
            self.rows[-1][-1] += data


def _table(html_text: str, table_id: str) -> tuple[list[str], list[list[str]], _Table]:
    parser = _Table(table_id)
    parser.feed(html_text)
    heads, *rows = [[cell.strip() for cell in row] for row in parser.rows]
    return heads, rows, parser


@pytest.mark.slow
def test_fleet_page_lists_every_dataset_failing_first_and_stays_small(fleet):
    index = fleet["out"] / "index.html"
    size_kb = index.stat().st_size / 1024
    print(f"fleet index for {DATASETS} datasets x {NIGHTS} runs: {size_kb:.0f} KB")
    assert size_kb < 400  # target well under 1 MB
    text = index.read_text(encoding="utf-8")
    heads, rows, parser = _table(text, "datasets")
    assert len(rows) == DATASETS
    line = [dict(zip(heads, row, strict=True)) for row in rows]
    failing = [row for row in line if row["failed"] != "0"]
    assert len(failing) == len(range(0, DATASETS, 9))
    # Failing datasets first, most failed episodes first; then the others by name.
    assert line[: len(failing)] == sorted(failing, key=lambda r: (-int(r["failed"]), r["dataset"]))
    rest = [row["dataset"] for row in line[len(failing) :]]
    assert rest == sorted(rest)
    # Last published: the end of the run each _published.json names.
    first = next(row for row in line if row["dataset"] == _dataset_id(1))
    published = FIRST_NIGHT + timedelta(days=NIGHTS - 2, minutes=50)
    assert first["last published"] == f"{published:%Y-%m-%d %H:%M}"
    assert first["settings from"] == f"run {fleet['run_ids'][-2]}"
    assert f"<b>{DATASETS}</b>datasets" in text and "<b>0</b>not readable" in text
    scored = sum(int(row["scored"]) for row in line)
    assert f"<b>{scored}</b>scored" in text
    curated = [int(row["curated"]) for row in line if row["curated"] != "none"]
    assert curated and sum(curated) == sum(int(row["selected"]) for row in line)
    assert f"<b>{sum(curated)}</b>curated" in text
    trend = [img for img in parser.images if img.get("data-plot") == "trend"]
    assert len(trend) == 1 and f"Runs ({NIGHTS} recorded)" in text


@pytest.mark.slow
def test_trend_counts_come_from_the_run_records_and_tables(fleet):
    from pipeline.report.fleet import Trend
    from pipeline.report.outputs import read_decided
    from pipeline.runrecord import read_run_records

    trend = Trend(read_run_records(str(fleet["output"]), {}))
    assert [r["run_id"] for r in trend.records] == fleet["run_ids"]
    cfg = load_config([f"success.threshold={THRESHOLD}"])
    for i in range(DATASETS):
        path = fleet["output"] / _dataset_id(i) / "episodes.parquet"
        trend.add(read_decided(str(path), {}, cfg.success, cfg.curation).rows)
    assert sum(trend.judged) == sum(
        pa.parquet.read_table(fleet["output"] / _dataset_id(i) / "episodes.parquet")
        .column("status")
        .to_pylist()
        .count("ok")
        for i in range(DATASETS)
    )
    early, late = (
        sum(trend.successes[:10]) / sum(trend.judged[:10]),
        sum(trend.successes[-10:]) / sum(trend.judged[-10:]),
    )
    assert late > early  # the generated success grows over the nights, and so does the plotted rate


def _sorted_dom(browser: str, index: Path, heading: str, clicks: int, tmp: Path) -> list[list[str]]:
    """The datasets table after clicking ``heading`` ``clicks`` times, as Chromium's DOM has it."""
    page = tmp / f"sorted-{clicks}.html"
    click = (
        "<script>var th = Array.from(document.querySelectorAll('#datasets th'))"
        f".find(function (h) {{ return h.textContent === {json.dumps(heading)}; }});"
        f"for (var i = 0; i < {clicks}; i++) {{ th.click(); }}</script></body>"
    )
    page.write_text(index.read_text(encoding="utf-8").replace("</body>", click), encoding="utf-8")
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        start_new_session=True,
    ).stdout
    heads, rows, _ = _table(dom, "datasets")
    return [dict(zip(heads, row, strict=True)) for row in rows]


@pytest.mark.slow
def test_fleet_page_sorts_and_renders_in_headless_chromium(fleet, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on PATH: .ci/run installs it (apt-get install chromium)")
    index = fleet["out"] / "index.html"
    by_episodes = _sorted_dom(browser, index, "episodes", 1, tmp_path)
    counts = [int(row["episodes"]) for row in by_episodes]
    assert len(counts) == DATASETS and counts == sorted(counts)
    by_rate = _sorted_dom(browser, index, "success rate", 2, tmp_path)  # twice: descending
    rates = [float(row["success rate"].rstrip("%")) for row in by_rate if row["success rate"] != "n/a"]
    assert rates == sorted(rates, reverse=True)
    names = [row["dataset"] for row in _sorted_dom(browser, index, "dataset", 1, tmp_path)]
    assert names == sorted(names)

    shot = _screenshot(browser, index, tmp_path / "fleet.png", "1280,1400")
    assert shot.shape == (1400, 1280, 3)
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 50  # text, table and the trend plot
    # The trend's bars are drawn: matplotlib's C0 blue (scored) and C3 red (failures) are on screen.
    for colour in ((0x1F, 0x77, 0xB4), (0xD6, 0x27, 0x28)):
        assert (np.abs(shot.astype(int) - np.array(colour)).max(axis=2) <= 8).sum() > 300
    if os.environ.get("REPORT_SCREENSHOTS"):  # refresh the README's picture
        Image.open(tmp_path / "fleet.png").convert("RGB").quantize(64).save(
            PROJECT / "docs" / "img" / "fleet.png", optimize=True
        )


def test_a_corrupt_episodes_table_is_listed_and_the_others_are_written(tmp_path, capsys):
    output = tmp_path / "labels"
    rng = random.Random(1)
    run_ids = _write_runs_small(output)
    cfg = load_config([f"success.threshold={THRESHOLD}"])
    for i in (1, 2):
        _write_dataset(output, i, run_ids, rng, cfg)
    bad = output / "so100" / "broken"
    bad.mkdir(parents=True)
    (bad / "episodes.parquet").write_bytes(b"PAR1 this is not a parquet file")
    out = tmp_path / "report"
    code = report_main([f"output.uri={output}", f"report.out={out}", "report.max_episodes=0"])
    assert code == EXIT_UNREADABLE == 3
    printed = capsys.readouterr()
    assert f"NOT READ so100/broken: {bad / 'episodes.parquet'}: " in printed.out
    assert "1 dataset(s) not readable, 2 written" in printed.err
    assert f"so100/broken: {bad / 'episodes.parquet'}: ArrowInvalid" in printed.err
    for i in (1, 2):
        assert (out / f"{_dataset_id(i)}.html").exists()
    assert not (out / "so100" / "broken.html").exists()
    text = (out / "index.html").read_text(encoding="utf-8")
    heads, rows, _ = _table(text, "unreadable")
    assert heads == ["dataset", "file", "reason"]
    assert [row[:2] for row in rows] == [["so100/broken", str(bad / "episodes.parquet")]]
    assert rows[0][2].startswith("ArrowInvalid")
    assert "<b>1</b>not readable" in text
    assert len(_table(text, "datasets")[1]) == 2


def _write_runs_small(output: Path) -> list[str]:
    cfg = asdict(load_config([f"output.uri={output}", f"success.threshold={THRESHOLD}"]))
    record = RunRecord(str(output), {}, "c0ffee", config=cfg, started_at=FIRST_NIGHT)
    record.finish("completed")
    return [record.run_id]
