"""The curated set over many nights: appends stay O(new episodes), the newest small runs are packed into
a new version (other files kept), so files stay bounded and bytes written stay within 3x the data added;
the result opens in LeRobot and a publish stopped anywhere is completed byte for byte."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from lerobot.datasets.lerobot_dataset import LeRobotDataset

from bench.publish_depth import KINDS, base_dataset, file_kind, replicate_dataset, version_bytes
from devkit import synth
from devkit.fake_labels import commit_scores, job_for, lengths_of
from devkit.files import file_states, written_files
from pipeline.config import RelabelConfig
from pipeline.curated.builder import COMPACT_FANOUT, COMPACT_LEVELS, plan_compaction, write_curated_dataset
from pipeline.curated.pointer import resolve_curated
from pipeline.curated.store import Run
from pipeline.layout import CURATED_DIR, PROGRESS_FILE, RECORD_FILE
from pipeline.publish import publish_dataset
from pipeline.storage import upload_dataset
from tests.conftest import BUCKET, PROJECT_ROOT
from tests.publish_support import KILLED, Files, config

pytestmark = pytest.mark.slow

START, NIGHTS, LENGTH = 10, 100, 20
# Files of a small run: one data file, one episodes file, one mp4 per camera.
RUN_FILES = 2 + len(synth.DEFAULT_CAMERAS)
# info.json, stats.json, tasks.parquet, the progress file; and the pointer beside the versions.
SINGLE_FILES, POINTER = 4, 1
NO_GRACE = "publish.keep_superseded_s=0"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A v3.0 dataset of START + NIGHTS short episodes (10 recorded, the rest stream-copied)."""
    folder = tmp_path_factory.mktemp("src")
    base = base_dataset(folder / "base" / "bench" / "base", LENGTH)
    return replicate_dataset(base, folder / "fleet" / "arm", START + NIGHTS)


@functools.cache
def _config(output: str, extra: tuple[str, ...]) -> RelabelConfig:
    """One config per output and settings, loaded once however many nights publish with it."""
    return config(output, -1.0, None, NO_GRACE, *extra)


def _night(source: Path, output: Path, episodes: range, *extra: str):
    commit_scores(str(source), "fleet/arm", str(output), dict.fromkeys(episodes, 0.0), lengths_of(source), {})
    cfg = _config(str(output), extra)
    # As a nightly run does: the shards folded once the state folder holds more than compact_markers.
    job = job_for(str(source), "fleet/arm", str(output), {}, cfg.output.compact_markers)
    outcome = publish_dataset(job, cfg)
    assert outcome.status == "published", outcome.error
    return outcome


def _runs_after(nights: int) -> int:
    """Runs behind the pointer after ``nights`` appends of one episode on a first publish: the base, and
    the nights written in base COMPACT_FANOUT with the top level unbounded."""
    runs, left = 1, nights
    for _ in range(COMPACT_LEVELS):
        runs += left % COMPACT_FANOUT
        left //= COMPACT_FANOUT
    return runs + left


def test_plan_compaction_packs_like_a_counter_and_never_packs_a_base() -> None:
    base = [Run(0, 50, 999)]
    runs = base + [Run(50 + i, 51 + i, 0) for i in range(COMPACT_FANOUT - 2)]
    assert plan_compaction(runs, 1, COMPACT_FANOUT, COMPACT_LEVELS) is None  # fanout - 1 small runs
    runs.append(Run(runs[-1].stop, runs[-1].stop + 1, 0))
    assert plan_compaction(runs, 3, COMPACT_FANOUT, COMPACT_LEVELS) == Run(50, runs[-1].stop + 3, 1)
    # fanout - 1 runs of level 1 and fanout - 1 of level 0: one more cascades into one run of level 2.
    ones = [Run(10 + 8 * i, 18 + 8 * i, 1) for i in range(COMPACT_FANOUT - 1)]
    zeros = [Run(ones[-1].stop + i, ones[-1].stop + i + 1, 0) for i in range(COMPACT_FANOUT - 1)]
    assert plan_compaction([Run(0, 10, 999), *ones, *zeros], 1, COMPACT_FANOUT, 2) == Run(
        10, zeros[-1].stop + 1, 2
    )
    # The top level is never packed again; fanout 1 (or 0) never packs.
    tops = [Run(i, i + 1, 2) for i in range(COMPACT_FANOUT)]
    assert plan_compaction(tops, 0, COMPACT_FANOUT, 2) is None
    assert plan_compaction([Run(0, 1, 0)] * 20, 1, 1, 2) is None


def test_a_hundred_nights_stay_bounded_in_files_and_bytes_and_open_in_lerobot(
    source: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    first = _night(source, output, range(START))
    assert first.curated_mode == "rebuilt"
    curated = output / "fleet" / "arm" / CURATED_DIR
    start_bytes = version_bytes(curated)
    written = dict.fromkeys(KINDS, 0)
    files, modes = {}, []
    for night in range(1, NIGHTS + 1):
        before = file_states(curated)
        outcome = _night(source, output, range(START + night - 1, START + night))
        modes.append(outcome.curated_mode)
        after = file_states(curated)
        for relative, (size, linked) in written_files(before, after).items():
            if not linked:  # a file kept by a hard link: no byte written
                written[file_kind(relative)] += size
        files[night] = len(after)
        # The current version and, after a compaction, the superseded one (removed by the next night).
        current = RUN_FILES * _runs_after(night) + SINGLE_FILES
        previous = RUN_FILES * _runs_after(night - 1) + SINGLE_FILES
        assert files[night] == current + POINTER + (previous if outcome.curated_mode == "compacted" else 0), (
            night
        )
    assert modes.count("compacted") == NIGHTS // COMPACT_FANOUT
    assert set(modes) == {"appended", "compacted"}
    assert (files[10], files[100]) == (21, 45)  # without compaction: 4 more files a night, 405 on night 100

    # Bytes: the data and videos written over all nights are at most 3x the data and videos added (each
    # episode is written by its append and at most COMPACT_LEVELS compactions), measured against a
    # fresh publish of the whole selection.
    fresh = tmp_path / "fresh"
    _night(source, fresh, range(START + NIGHTS))
    added = {
        kind: size - start_bytes[kind]
        for kind, size in version_bytes(fresh / "fleet" / "arm" / CURATED_DIR).items()
    }
    assert written[KINDS[0]] <= (1 + COMPACT_LEVELS) * added[KINDS[0]], (written, added)
    # The episodes index and the single files are a per-night cost of LeRobot's format (one small
    # episodes file, info/stats/tasks/progress), not data: bounded per night, not by the data added.
    one_night_index = max(size for rel, (size, *_) in file_states(curated).items() if "meta/episodes/" in rel)
    assert written[KINDS[1]] <= (1 + COMPACT_LEVELS) * NIGHTS * one_night_index

    # The result is a LeRobot dataset of every episode in order, its frames the source's.
    root = Path(resolve_curated(str(curated)))
    dataset = LeRobotDataset("t/curated", root=root, video_backend="pyav")
    episodes = START + NIGHTS
    assert dataset.meta.total_episodes == episodes and len(dataset) == episodes * LENGTH
    camera = synth.DEFAULT_CAMERAS[0]
    for episode in (0, START, START + 7, START + 64, episodes - 1):  # base, packed runs, the last night
        for frame in (0, LENGTH - 1):
            item = dataset[episode * LENGTH + frame]
            assert int(item["index"]) == episode * LENGTH + frame
            pixels = (item[camera].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
            assert synth.frame_code(pixels) == (0, episode % 10, frame)
    progress = pq.read_table(root / PROGRESS_FILE)
    frames = pq.read_table(root / "data", columns=["index", "episode_index", "frame_index"])
    assert progress.select(["index", "episode_index", "frame_index"]).equals(frames.sort_by("index"))

    # The running stats equal a fresh aggregation of every episode (up to the last bits of the means).
    running = json.loads((root / "meta" / "stats.json").read_text())
    whole = json.loads(
        (
            Path(resolve_curated(str(fresh / "fleet" / "arm" / CURATED_DIR))) / "meta" / "stats.json"
        ).read_text()
    )
    assert running.keys() == whole.keys()
    for feature, stats in whole.items():
        for name, value in stats.items():
            if name in ("min", "max", "count"):
                assert running[feature][name] == value, (feature, name)
            else:
                np.testing.assert_allclose(
                    running[feature][name], value, rtol=1e-9, atol=1e-12, err_msg=f"{feature} {name}"
                )


# Stopped publishes ---------------------------------------------------------------------------------

SMALL = (6, 7, 5, 8, 6, 7, 5, 6, 7, 5, 6, 8)
# A first publish of 2 episodes, then one a night: night COMPACT_FANOUT compacts the nights before it.
FIRST = 2


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth.write_v30_dataset(tmp_path_factory.mktemp("small") / "fleet" / "arm", lengths=SMALL, fps=10)


def _contents(output: Path) -> dict[str, bytes]:
    """Every file of the curated folder (the dataset's own tables carry each night's commit time)."""
    return Files.of(output / "fleet" / "arm" / CURATED_DIR).content()


def _publish_nights(small: Path, output: Path, nights: range) -> None:
    for night in nights:
        episodes = range(FIRST) if night == 0 else range(FIRST + night - 1, FIRST + night)
        _night(small, output, episodes)


@pytest.fixture(scope="module")
def uninterrupted(small: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The outputs of a first publish and COMPACT_FANOUT + 1 nights, none of them stopped."""
    output = tmp_path_factory.mktemp("reference")
    _publish_nights(small, output, range(COMPACT_FANOUT + 2))
    return _contents(output)


def _stopped(small: Path, output: Path, night: int, step: str, occurrence: int, folder: Path) -> None:
    """Commits night ``night``'s episode and publishes it in a child process killed at a protocol step."""
    commit_scores(str(small), "fleet/arm", str(output), {FIRST + night - 1: 0.0}, lengths_of(small), {})
    spec = {
        "root": str(small),
        "dataset_id": "fleet/arm",
        "output": str(output),
        "options": {},
        "threshold": -1.0,
        "kill": [step, occurrence],
        "extra": [NO_GRACE],
    }
    (folder / "spec.json").write_text(json.dumps(spec))
    child = subprocess.run(
        [sys.executable, "-m", "tests.publish_support", "publish", str(folder / "spec.json")],
        cwd=PROJECT_ROOT,
        check=False,
    )
    assert child.returncode == KILLED


@pytest.mark.parametrize(
    ("night", "step", "occurrence", "readable"),
    [
        (3, "commit", 1, FIRST + 3),  # append: info.json written, stats.json not yet
        (COMPACT_FANOUT, "new-file", 6, FIRST + COMPACT_FANOUT - 1),  # compaction: files kept and written
        (COMPACT_FANOUT, "commit", 1, FIRST + COMPACT_FANOUT - 1),  # compaction: complete, pointer not yet
        (COMPACT_FANOUT, "pointer", 1, FIRST + COMPACT_FANOUT),  # compaction: named, record not written
    ],
)
def test_a_stopped_append_or_compaction_is_completed_byte_for_byte(
    night: int,
    step: str,
    occurrence: int,
    readable: int,
    small: Path,
    tmp_path: Path,
    uninterrupted: dict[str, bytes],
) -> None:
    output = tmp_path / "out"
    _publish_nights(small, output, range(night))
    _stopped(small, output, night, step, occurrence, tmp_path)
    curated = output / "fleet" / "arm" / CURATED_DIR
    dataset = LeRobotDataset("t/curated", root=resolve_curated(str(curated)), video_backend="pyav")
    assert dataset.meta.total_episodes == readable
    assert int(dataset[len(dataset) - 1]["index"]) == len(dataset) - 1
    # The stopped night again (its episode is committed), then the rest.
    outcome = publish_dataset(
        job_for(str(small), "fleet/arm", str(output), {}), config(str(output), -1.0, None, NO_GRACE)
    )
    assert outcome.status == "published", outcome.error
    _publish_nights(small, output, range(night + 1, COMPACT_FANOUT + 2))
    assert _contents(output) == uninterrupted


def test_a_version_from_before_runs_is_rewritten_once(small: Path, tmp_path: Path) -> None:
    """A version whose episodes index has no run columns (published before compaction) is replaced by a
    new version at the next change, after which nights append again."""
    output = tmp_path / "out"
    _publish_nights(small, output, range(2))
    curated = output / "fleet" / "arm" / CURATED_DIR
    root = Path(resolve_curated(str(curated)))
    for path in (root / "meta" / "episodes").rglob("*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(["topreward/run", "topreward/run_level"]), path)
    (output / "fleet" / "arm" / RECORD_FILE).unlink()
    assert _night(small, output, range(FIRST + 1, FIRST + 2)).curated_mode == "rebuilt"
    assert _night(small, output, range(FIRST + 2, FIRST + 3)).curated_mode == "appended"
    dataset = LeRobotDataset("t/curated", root=resolve_curated(str(curated)), video_backend="pyav")
    assert dataset.meta.total_episodes == FIRST + 3


@pytest.mark.parametrize("store", ["s3", "gcs"])
def test_compaction_on_object_stores_keeps_files_by_copies_inside_the_store(
    store: str, small: Path, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """On an object store the kept files of a compaction are copied by the store (S3 CopyObject, GCS
    rewrite), not sent by the publisher; the version opens in LeRobot after a pull."""
    if store == "s3":
        store_options, fs = request.getfixturevalue("s3_options"), request.getfixturevalue("s3")
    else:
        import gcsfs

        store_options = request.getfixturevalue("gcs_options")
        fs = gcsfs.GCSFileSystem(**store_options, use_listings_cache=False)
    source = upload_dataset(small, fs, f"{store}://{BUCKET}/compaction/source/fleet/arm")
    dest = f"{store}://{BUCKET}/compaction/out/fleet/arm/curated"
    options = {"source_options": store_options, "dest_options": store_options, "compact_fanout": 2}
    modes = []
    for night in range(6):
        chosen = list(range(FIRST + night))
        summary = write_curated_dataset(source, chosen, dest, **options)
        modes.append(summary.mode)
        if summary.mode == "compacted":
            # Only the newest runs' files were sent; the base's were copied inside the store.
            assert summary.bytes_carried > 0 and summary.rewritten >= 1
    # fanout 2: the 2nd appended run packs with the 1st; the 4th cascades into one run of level 2.
    assert modes == ["rebuilt", "appended", "compacted", "appended", "compacted", "appended"]
    assert summary.episodes == FIRST + 5
    local = tmp_path / "curated"
    fs.get(resolve_curated(dest, store_options) + "/", str(local), recursive=True)
    dataset = LeRobotDataset("t/curated", root=local, video_backend="pyav")
    assert dataset.meta.total_episodes == FIRST + 5 and len(dataset) == sum(SMALL[: FIRST + 5])
    camera = synth.DEFAULT_CAMERAS[1]
    for episode in range(FIRST + 5):
        last = dataset[sum(SMALL[: episode + 1]) - 1]
        pixels = (last[camera].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        assert synth.frame_code(pixels) == (1, episode, SMALL[episode] - 1)
    # Five nights, three runs behind the pointer (base, level 2, the last night's), one file each kind.
    assert len(list(local.rglob("*.mp4"))) == 3 * len(synth.DEFAULT_CAMERAS)
