"""The HTML report on a real relabel run (tiny model, local Ray): page structure, frames, notes, s3, and a
real headless Chromium rendering it."""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import os
import re
import shutil
import signal
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from devkit.synth import frame_code, write_v21_dataset
from jobs.report import main as report_main
from pipeline.config import load_config
from pipeline.layout import RECORD_FILE
from pipeline.quality import QualityConfig, delete_command, flagged_episodes
from pipeline.relabel import run
from pipeline.report import ReportConfig
from pipeline.report.outputs import find_datasets, list_source, read_episodes
from pipeline.report.pages import episode_thumbnails
from tests.conftest import BUCKET

pytestmark = pytest.mark.slow

DATASET = "fleet/report_ds"
LENGTHS = (20, 24, 22, 26)
CORRUPT, GONE = 1, 3  # episode 1's video is garbage (fails to score); episode 3's is deleted after scoring
CAMERA = "observation.images.front"
# matplotlib's default colours: C0 (#1f77b4) draws the histograms and progress curves, C1 (#ff7f0e) the
# raw log P curves of the episodes.
C0, C1 = np.array([0x1F, 0x77, 0xB4]), np.array([0xFF, 0x7F, 0x0E])


class _Images(HTMLParser):
    """Collects the <img> tags and the text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append({k: v or "" for k, v in attrs})
        if tag == "a":
            self.links.append(dict(attrs).get("href") or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


class _Cells(HTMLParser):
    """The text of every table cell, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.rows[-1].append("")
            self.in_cell = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self.in_cell = False

    def handle_data(self, data: str) -> None:
        if self.in_cell:
            self.rows[-1][-1] += data


def _parse(path: Path) -> _Images:
    parser = _Images()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _png(src: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(src[len(prefix) :])))
    assert image.format == "PNG"
    image.load()
    return image


@pytest.fixture(scope="module")
def relabelled(ray_session, tiny_model_dir, tmp_path_factory) -> dict:
    """A v2.1 dataset with one broken episode, relabelled for real, then published again by a second run
    whose threshold splits the scored episodes; then one scored episode's video goes."""
    tmp = tmp_path_factory.mktemp("report")
    root = write_v21_dataset(
        tmp / "fleet" / "report_ds", lengths=LENGTHS, fps=10, cameras=(CAMERA,), corrupt_episode=CORRUPT
    )
    output = tmp / "labels"
    overrides = [
        f"source.uris=[{root}]",
        f"output.uri={output}",
        f"model.path={tiny_model_dir}",
        "frames.height=64",
        "frames.width=64",
        "frames.max_frames=8",
        "prefixes.num=4",
    ]
    summary = run(load_config(overrides))
    assert summary.datasets[DATASET].failed == 1
    rows = read_episodes(str(output / DATASET / "episodes.parquet"), {})
    scores = sorted(row["success_score"] for row in rows if row["status"] == "ok")
    # Between the lowest two scores: one scored episode fails the threshold, the others pass. The second
    # run scores nothing (same config hash); it re-decides and publishes under this threshold.
    threshold = (scores[0] + scores[1]) / 2
    run(load_config([*overrides, f"success.threshold={threshold}"]))
    run_id = json.loads((output / DATASET / RECORD_FILE).read_text())["run_id"]
    (root / "videos" / "chunk-000" / CAMERA / f"episode_{GONE:06d}.mp4").unlink()
    return {
        "root": root,
        "output": output,
        "rows": rows,
        "scores": scores,
        "threshold": threshold,
        "run_id": run_id,
        "overrides": overrides,
    }


@pytest.fixture(scope="module")
def report(relabelled, tmp_path_factory) -> Path:
    """The report of the relabelled outputs, given nothing but output.uri, written to a local folder."""
    out = tmp_path_factory.mktemp("report-html")
    assert report_main([f"output.uri={relabelled['output']}", f"report.out={out}"]) == 0
    return out


def test_finds_datasets_not_bookkeeping(relabelled):
    # _state/<hash>/fleet/report_ds holds shards, never an episodes.parquet at depth two; only the dataset.
    assert find_datasets(str(relabelled["output"]), {}) == [DATASET]


def test_finds_datasets_by_listing_not_by_pattern(tmp_path):
    # Names from storage are taken literally: brackets and stars are no pattern, in the dataset's name or
    # in the output's own path.
    output = tmp_path / "labels[1]"
    for dataset in ("so100/pick[1]", "so100/pick*", "aloha/fold]"):
        (output / dataset).mkdir(parents=True)
        (output / dataset / "episodes.parquet").write_bytes(b"")
    (output / "so100" / "no_table").mkdir()
    (output / "so100" / "episodes.parquet").write_bytes(b"")  # at depth one: not a dataset
    (output / "_state" / "abc" / "episodes.parquet").mkdir(parents=True)  # bookkeeping, and a folder
    (output / "so100" / "pick1").mkdir()
    (output / "so100" / "pick1" / "episodes.parquet").mkdir()  # a folder named like the table
    assert find_datasets(str(output), {}) == ["aloha/fold]", "so100/pick*", "so100/pick[1]"]


def test_pages_hold_one_plot_per_scored_episode_and_the_dataset_plots(relabelled, report):
    rows = relabelled["rows"]
    ok = [row["episode_index"] for row in rows if row["status"] == "ok"]
    assert ok == [0, 2, 3]

    index = _parse(report / "index.html")
    assert f"{DATASET}.html" in index.links
    page_path = report / f"{DATASET}.html"
    page = _parse(page_path)
    episode_plots = [img for img in page.images if img.get("class") == "episode-plot"]
    assert [int(img["data-episode"]) for img in episode_plots] == ok
    dataset_plots = {img["data-plot"] for img in page.images if img.get("class") == "dataset-plot"}
    assert dataset_plots == {"success-histogram", "voc-histogram"}
    for img in page.images:
        image = np.asarray(_png(img["src"]).convert("RGB"))
        assert image.shape[0] > 100 and image.shape[1] > 200
        assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10  # drawn, not a blank canvas

    text = " ".join(page.text)
    raw = page_path.read_text(encoding="utf-8")
    # The corrupt episode is listed with its reason.
    assert "success at threshold" in text
    corrupt = next(row for row in rows if row["episode_index"] == CORRUPT)
    assert corrupt["error"] and corrupt["error"] in text
    # Episode 3's video is gone: a note on its section, the page still has its curves.
    assert text.count("frames not shown") == 1
    assert "file not found" in text
    assert raw.count("<span class='yes'>success</span>") == 2


def test_dataset_page_lists_flagged_episodes_and_the_delete_command(relabelled, report):
    # Episode 1's video is garbage: flagged "decode failed"; the command removes every flagged episode
    # from the (local) source root.
    raw = (report / f"{DATASET}.html").read_text(encoding="utf-8")
    flags = flagged_episodes(relabelled["rows"], QualityConfig(), load_config([]).success.window)
    assert flags["decode_failed"] == [CORRUPT]
    row = re.search(r"<tr data-flag='decode_failed'>(.*?)</tr>", raw).group(1)
    assert f"href='#episode-{CORRUPT}'" in row
    flagged = sorted({i for indices in flags.values() for i in indices})
    command = html.unescape(re.search(r"<pre class='command' id='delete-command'>(.*?)</pre>", raw).group(1))
    assert command == delete_command(DATASET, str(relabelled["root"]), flagged)
    assert "v2.1 dataset must be converted first" in raw
    assert _index_row(report)["flagged"] == str(len(flagged))


def _index_row(report: Path) -> dict[str, str]:
    """The index's line of the dataset, by column heading."""
    cells = _Cells()
    cells.feed((report / "index.html").read_text(encoding="utf-8"))
    heads, *lines = [[cell.strip() for cell in row] for row in cells.rows]
    return dict(zip(heads, next(line for line in lines if line[0] == DATASET), strict=True))


def test_report_takes_the_threshold_of_the_run_that_published(relabelled, report):
    # Only output.uri was given: the threshold is the publishing run's, which splits the three scored
    # episodes 2/1, never conf/relabel.yaml's. Index, page and cards agree, and so does the curated set.
    threshold, run_id = relabelled["threshold"], relabelled["run_id"]
    raw = (report / f"{DATASET}.html").read_text(encoding="utf-8")
    assert (
        f"Success threshold <b>{threshold:g}</b>: success.threshold {threshold:g} from run {run_id}." in raw
    )
    assert raw.count("<span class='no'>no success</span>") == 1
    assert raw.count("<span class='yes'>success</span>") == 2
    assert raw.count("curated: yes") == 2 and raw.count("curated: no") == 1
    assert "given on the command line" not in raw and "differ" not in raw
    line = _index_row(report)
    assert (line["success"], line["selected"], line["curated"]) == ("2", "2", "2")
    assert line["threshold"] == f"{threshold:g}" and line["settings from"] == f"run {run_id}"


def test_a_threshold_given_on_the_command_line_wins_and_is_announced(relabelled, tmp_path, capsys):
    lowest, run_id = relabelled["scores"][0], relabelled["run_id"]
    keys = [f"output.uri={relabelled['output']}", f"success.threshold={lowest - 1}", "report.max_episodes=0"]
    assert report_main([*keys, f"report.out={tmp_path}"]) == 0
    announced = (
        f"success.threshold={lowest - 1:g} given on the command line, overriding run {run_id}'s "
        f"{relabelled['threshold']:g}"
    )
    assert announced in capsys.readouterr().out
    text = "".join(_parse(tmp_path / f"{DATASET}.html").text)
    assert f"Success threshold {lowest - 1:g}: {announced}." in text
    # Every scored episode succeeds now; the published curated set is still the run's two.
    line = _index_row(tmp_path)
    assert (line["success"], line["selected"], line["curated"]) == ("3", "3", "2")
    assert line["settings from"] == f"command line (run {run_id})"
    assert "3 episode(s) selected at these settings, 2 in the published curated version" in text


def test_thumbnails_are_the_episode_frames(relabelled):
    cfg = load_config([])
    rows = relabelled["rows"]
    source = list_source(rows, {})
    rcfg = ReportConfig(strip_frames=5, thumb_height=64)
    frames, indices, note = episode_thumbnails(rows[2], source, cfg, rcfg)
    assert note == ""
    assert indices == [0, 5, 10, 16, 21]  # evenly spaced over 22 frames, first and last included
    assert [frame_code(frame) for frame in frames] == [(0, 2, i) for i in indices]


def test_report_reads_outputs_from_s3(relabelled, s3, s3_options, tmp_path):
    prefix = f"{BUCKET}/report-labels"
    s3.put(f"{relabelled['output']}/", prefix, recursive=True)
    storage = "{" + ", ".join(f"{k}: '{v}'" for k, v in s3_options.items()) + "}"
    code = report_main(
        [f"output.uri=s3://{prefix}", f"output.storage_options={storage}", f"dataset={DATASET}"]
    )
    assert code == 0
    s3.get(f"{prefix}/_report/", str(tmp_path), recursive=True)
    page = _parse(tmp_path / f"{DATASET}.html")
    assert sum(img.get("class") == "episode-plot" for img in page.images) == 3
    # The run record travelled with the outputs: the threshold is still the publishing run's.
    threshold = relabelled["threshold"]
    assert f"success.threshold {threshold:g} from run {relabelled['run_id']}" in " ".join(page.text)


def test_bad_keys_are_refused_by_name(relabelled, capsys):
    assert report_main([f"output.uri={relabelled['output']}", "report.strip_frame=3"]) == 2
    assert "report.strip_frame" in capsys.readouterr().err
    assert report_main([f"output.uri={relabelled['output']}", "sucess.threshold=1"]) == 2
    assert "sucess" in capsys.readouterr().err
    assert report_main([f"output.uri={relabelled['output']}", "dataset=no/such"]) == 2
    assert DATASET in capsys.readouterr().err


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _screenshot(browser: str, page: Path, out: Path, size: str) -> np.ndarray:
    """A headless Chromium screenshot of ``page``; every process it started is killed afterwards."""
    log = out.with_suffix(".log")
    command = [
        browser,
        "--headless",
        "--no-sandbox",  # CI containers run as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--hide-scrollbars",
        f"--screenshot={out}",
        f"--window-size={size}",
        page.as_uri(),
    ]
    with log.open("wb") as sink:
        # Its own session, so the zygote and renderers go with it; output to a file, as those children
        # would hold a pipe open.
        browser_process = subprocess.Popen(command, stdout=sink, stderr=sink, start_new_session=True)
        try:
            # Chromium logs "<n> bytes written to file" once the screenshot is complete. On a heavily loaded
            # machine its renderer has been seen to spin after that instead of exiting, so the test waits
            # for the screenshot, not for the exit (the deadline only keeps a broken browser from hanging).
            deadline = time.monotonic() + 300
            while browser_process.poll() is None and b"bytes written to file" not in log.read_bytes():
                assert time.monotonic() < deadline, f"no screenshot from Chromium: {log.read_text()}"
                time.sleep(0.2)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(browser_process.pid, signal.SIGKILL)
            browser_process.wait()
    assert out.exists(), log.read_text()
    return np.asarray(Image.open(out).convert("RGB"))


def test_report_renders_in_headless_chromium(report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on PATH: .ci/run installs it (apt-get install chromium)")
    index = _screenshot(browser, report / "index.html", tmp_path / "index.png", "800,400")
    assert index.shape == (400, 800, 3)
    assert index.std() > 5  # text and table lines on white, not a blank page

    shot = _screenshot(browser, report / f"{DATASET}.html", tmp_path / "page.png", "1000,2000")
    assert shot.shape == (2000, 1000, 3)
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 100
    # The browser decoded the inlined PNGs: the dataset histograms (C0) and the first episodes' log P
    # curves (C1) are on screen.
    for colour, pixels in ((C0, 2000), (C1, 200)):
        assert (np.abs(shot.astype(int) - colour).max(axis=2) <= 8).sum() > pixels
