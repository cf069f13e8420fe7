"""Publishing only what changed: no-op runs touch nothing, new episodes are appended, drops rebuild,
one dataset's failure stays its own, and equal inputs give equal bytes. Real Ray tasks, real files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from lerobot.datasets.lerobot_dataset import LeRobotDataset

from devkit import synth
from devkit.fake_labels import commit_scores, job_for, lengths_of
from pipeline.curated.pointer import resolve_curated
from pipeline.layout import CURATED_DIR, POINTER_FILE, PROGRESS_FILE, RECORD_FILE
from pipeline.publish import publish_all
from tests.publish_support import Files, config

pytestmark = pytest.mark.slow

LENGTHS = (12, 15, 10, 14, 11, 13)
PASS, FAIL = 0.0, -5.0  # success scores either side of the threshold used below
THRESHOLD = -1.0


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth.write_v30_dataset(tmp_path_factory.mktemp("src") / "fleet" / "arm", lengths=LENGTHS, fps=10)


class Connect:
    """The ``connect`` callback: counts calls (Ray is already up in the test session)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def _publish(
    root: Path, output: Path, threshold: float = THRESHOLD, connect: Connect | None = None, *extra: str
):
    cfg = config(str(output), threshold, None, *extra)
    (outcome,) = publish_all([job_for(str(root), "fleet/arm", str(output), {})], cfg, connect or Connect())
    return outcome


def _current(base: Path) -> Path:
    """The curated version the pointer names."""
    return Path(resolve_curated(str(base / CURATED_DIR)))


def _assert_curated_lines_up(base: Path, sources: list[int]) -> None:
    """The current curated version opens, holds these source episodes in order, and its progress file
    lines up."""
    curated = _current(base)
    dataset = LeRobotDataset("t/curated", root=curated, video_backend="pyav")
    assert dataset.meta.total_episodes == len(sources)
    assert len(dataset) == sum(LENGTHS[s] for s in sources)
    last = dataset[len(dataset) - 1]
    code = synth.frame_code(
        (last[synth.DEFAULT_CAMERAS[0]].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    )
    assert code == (0, sources[-1], LENGTHS[sources[-1]] - 1)
    progress = pq.read_table(curated / PROGRESS_FILE)
    frames = pq.read_table(curated / "data", columns=["index", "episode_index", "frame_index"])
    assert progress.select(["index", "episode_index", "frame_index"]).equals(frames.sort_by("index"))
    # commit_scores wrote progress 0..1 over each episode: it starts at 0 on every episode's first frame.
    starts = progress.filter(pq.read_table(curated / PROGRESS_FILE)["frame_index"].to_numpy() == 0)
    assert np.all(starts["progress_sparse"].to_numpy() == 0)


def test_noop_run_touches_nothing_and_new_episodes_append(ray_session, source: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    lengths = lengths_of(source)
    commit_scores(str(source), "fleet/arm", str(output), {0: PASS, 1: FAIL, 2: PASS}, lengths, {})
    first = _publish(source, output)
    assert (first.status, first.curated_mode, first.curated_episodes) == ("published", "rebuilt", 2)
    base = output / "fleet" / "arm"
    assert first.curated_uri == str(base / CURATED_DIR / "v000001")
    _assert_curated_lines_up(base, [0, 2])

    before = Files.of(base)
    connect = Connect()
    again = _publish(source, output, connect=connect)
    assert again.status == "unchanged" and connect.calls == 0  # decided from one small read: no Ray
    assert again.curated_episodes == 2
    assert Files.of(base) == before  # bytes and mtimes

    # New episodes arrive: they are appended; every file already published keeps its bytes and mtime.
    commit_scores(str(source), "fleet/arm", str(output), {3: PASS, 4: FAIL, 5: PASS}, lengths, {})
    grown = _publish(source, output)
    assert (grown.curated_mode, grown.curated_added, grown.curated_episodes) == ("appended", 2, 4)
    after = Files.of(base)
    version = f"{CURATED_DIR}/v000001"
    kept = {p for p in before.found if p.startswith(f"{version}/") and p.endswith((".mp4", ".parquet"))}
    kept -= {f"{version}/meta/tasks.parquet", f"{version}/{PROGRESS_FILE}"}
    assert kept and all(after.found[p] == before.found[p] for p in kept)
    assert after.found[f"{CURATED_DIR}/{POINTER_FILE}"] == before.found[f"{CURATED_DIR}/{POINTER_FILE}"]
    new_videos = [p for p in set(after.found) - set(before.found) if p.endswith(".mp4")]
    assert len(new_videos) == len(synth.DEFAULT_CAMERAS)
    assert all(p.startswith(f"{version}/") for p in new_videos)  # appended in place
    _assert_curated_lines_up(base, [0, 2, 3, 5])
    lines = "\n".join(grown.describe())
    assert "curated appended +2 ep" in lines and "(4 ep)" in lines
    assert pq.read_table(base / PROGRESS_FILE).num_rows == sum(LENGTHS)


def test_dropped_episodes_make_a_new_version_and_the_superseded_one_goes_later(
    ray_session, source: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    scores = {0: PASS, 1: -0.5, 2: PASS, 3: -0.5}
    commit_scores(str(source), "fleet/arm", str(output), scores, lengths_of(source), {})
    assert _publish(source, output).curated_episodes == 4
    base = output / "fleet" / "arm"
    curated = base / CURATED_DIR
    v1 = Files.of(curated / "v000001")

    # A stricter threshold drops episodes 1 and 3: a new version, complete before the pointer names it.
    strict = _publish(source, output, -0.1)
    assert (strict.curated_mode, strict.curated_episodes) == ("rebuilt", 2)
    assert strict.curated_uri == str(curated / "v000002") == str(_current(base))
    _assert_curated_lines_up(base, [0, 2])
    # The superseded version stays whole for readers that resolved the pointer before the switch.
    assert Files.of(curated / "v000001") == v1
    assert sorted(p.name for p in curated.iterdir()) == [POINTER_FILE, "v000001", "v000002"]

    # Within publish.keep_superseded_s nothing changes: a no-op run leaves it.
    assert _publish(source, output, -0.1).status == "unchanged"
    assert (curated / "v000001").exists()
    # Once it is due, the next run removes it and touches nothing else.
    before = Files.of(curated / "v000002")
    due = _publish(source, output, -0.1, None, "publish.keep_superseded_s=0")
    assert (due.status, due.curated_mode, due.bytes_written) == ("published", "unchanged", 0)
    assert sorted(p.name for p in curated.iterdir()) == [POINTER_FILE, "v000002"]
    assert Files.of(curated / "v000002") == before
    assert _publish(source, output, -0.1, None, "publish.keep_superseded_s=0").status == "unchanged"

    # No episode selected: the pointer names none and "0 selected" is stated.
    none = _publish(source, output, 10.0, None, "publish.keep_superseded_s=0")
    assert none.curated_uri is None and resolve_curated(str(curated)) is None
    assert "fleet/arm: curated   0 selected at threshold 10" in none.describe()
    back = _publish(source, output, -0.1, None, "publish.keep_superseded_s=0")
    assert (back.curated_mode, back.curated_uri) == ("rebuilt", str(curated / "v000003"))
    assert sorted(p.name for p in curated.iterdir()) == [POINTER_FILE, "v000003"]
    _assert_curated_lines_up(base, [0, 2])


def test_a_broken_source_fails_alone_naming_the_file(ray_session, source: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(source, tmp_path / "fleet" / "broken")
    data_file = broken / "data" / "chunk-000" / "file-000.parquet"
    data_file.write_bytes(data_file.read_bytes()[:200])  # truncated
    output = tmp_path / "out"
    lengths = lengths_of(source)
    commit_scores(str(source), "fleet/arm", str(output), {0: PASS}, lengths, {})
    commit_scores(str(broken), "fleet/broken", str(output), {0: PASS}, lengths, {})
    jobs = [
        job_for(str(broken), "fleet/broken", str(output), {}),
        job_for(str(source), "fleet/arm", str(output), {}),
    ]
    bad, good = publish_all(jobs, config(str(output), THRESHOLD), Connect())
    assert good.status == "published" and good.curated_episodes == 1
    assert bad.status == "failed"
    assert bad.error.startswith(f"fleet/broken: {data_file}: ArrowInvalid: ")
    assert bad.describe() == [f"fleet/broken: NOT PUBLISHED {bad.error}"]
    # Nothing was recorded for it, so the next run tries again; nothing half-written is visible.
    assert not (output / "fleet" / "broken" / RECORD_FILE).exists()
    assert resolve_curated(str(output / "fleet" / "broken" / CURATED_DIR)) is None


def test_same_inputs_same_bytes(ray_session, source: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    commit_scores(str(source), "fleet/arm", str(output), {0: PASS, 2: PASS, 4: PASS}, lengths_of(source), {})
    _publish(source, output)
    first = Files.of(output / "fleet").content()
    shutil.rmtree(output / "fleet")
    _publish(source, output)
    assert Files.of(output / "fleet").content() == first
