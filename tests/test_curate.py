"""The curated BC dataset: selected episodes, re-indexed, videos stream-copied, progress renumbered."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from lerobot.rewards.topreward.compute_rabc_weights import DEFAULT_OUTPUT_FILENAME

from devkit import synth
from pipeline.curated.builder import write_curated_dataset
from pipeline.curated.pointer import resolve_curated
from pipeline.curated.source import CurationError
from pipeline.layout import PROGRESS_FILE
from pipeline.storage import upload_dataset
from tests.conftest import BUCKET

LENGTHS = (15, 20, 18, 25, 16)
SELECTED = [4, 1, 3]  # unsorted on purpose: the curated order is the source order
FPS = 10
# A GOP longer than any episode puts exactly one keyframe at each episode's start, so a cut anywhere
# else would be caught.
GOP = 30


@pytest.fixture(scope="module")
def v30_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth.write_v30_dataset(tmp_path_factory.mktemp("src") / "v30", lengths=LENGTHS, fps=FPS, gop=GOP)


@pytest.fixture(scope="module")
def progress(v30_source: Path) -> pa.Table:
    """A progress table over every source frame whose value identifies the frame (index / 1000)."""
    rows = pq.read_table(v30_source / "data", columns=["index", "episode_index", "frame_index"])
    values = pc.divide(pc.cast(rows["index"], pa.float32()), pa.scalar(1000.0, pa.float32()))
    table = rows.append_column("progress_sparse", values)
    return table.replace_schema_metadata({"vlm_name": "tiny-test"})


@pytest.fixture(scope="module")
def curated(v30_source: Path, progress: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("dest") / "curated"
    summary = write_curated_dataset(str(v30_source), SELECTED, str(dest), progress)
    assert (summary.episodes, summary.frames) == (3, sum(LENGTHS[i] for i in SELECTED))
    assert summary.video_bytes > 0
    assert summary.uri == str(dest / "v000001") == resolve_curated(str(dest))
    return Path(summary.uri)


def test_progress_file_name_is_the_one_lerobot_reads() -> None:
    # pipeline.layout names it without importing LeRobot; LeRobot's RA-BC weighting looks for this name.
    assert PROGRESS_FILE == DEFAULT_OUTPUT_FILENAME


def _to_uint8_hwc(image) -> np.ndarray:
    return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _packets_between(path: Path, from_s: float, to_s: float) -> list[bytes]:
    """Payloads of the packets whose pts fall in [from_s, to_s), read independently of pipeline.curated."""
    half_frame = 0.5 / FPS
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [
            packet
            for packet in container.demux(stream)
            if packet.pts is not None
            and from_s - half_frame <= float(packet.pts * stream.time_base) < to_s - half_frame
        ]
    assert packets[0].is_keyframe
    return [bytes(packet) for packet in packets]


def _episode_packets(root: Path, meta: LeRobotDatasetMetadata, episode: int, camera: str) -> list[bytes]:
    row = meta.episodes[episode]
    return _packets_between(
        root / meta.get_video_file_path(episode, camera),
        row[f"videos/{camera}/from_timestamp"],
        row[f"videos/{camera}/to_timestamp"],
    )


def _assert_same_packets(source: Path, dest: Path, selected: list[int]) -> None:
    src_meta, dst_meta = LeRobotDatasetMetadata("src", root=source), LeRobotDatasetMetadata("dst", root=dest)
    for new_index, old_index in enumerate(sorted(selected)):
        for camera in dst_meta.video_keys:
            copied = _episode_packets(dest, dst_meta, new_index, camera)
            assert copied == _episode_packets(source, src_meta, old_index, camera), (old_index, camera)


def _assert_frames_match_source(source: Path, dest: Path, selected: list[int]) -> None:
    """Every curated frame carries its source episode's images, actions, state and task."""
    src = LeRobotDataset("src", root=source, video_backend="pyav")
    dst = LeRobotDataset("dst", root=dest, video_backend="pyav")
    old_episodes = sorted(selected)
    assert dst.meta.total_episodes == len(old_episodes)
    assert len(dst) == dst.meta.total_frames == sum(LENGTHS[i] for i in old_episodes)
    src_from = {ep: src.meta.episodes[ep]["dataset_from_index"] for ep in old_episodes}
    for position in range(len(dst)):
        item = dst[position]
        new_ep, frame = int(item["episode_index"]), int(item["frame_index"])
        old_ep = old_episodes[new_ep]
        assert int(item["index"]) == position
        source_row = src.hf_dataset[src_from[old_ep] + frame]
        assert int(source_row["episode_index"]) == old_ep and int(source_row["frame_index"]) == frame
        for key in ("action", "observation.state", "timestamp"):
            np.testing.assert_array_equal(item[key].numpy(), source_row[key].numpy(), err_msg=key)
        assert item["task"] == synth.task_for_episode(old_ep)
        for camera_id, camera in enumerate(synth.DEFAULT_CAMERAS):
            if camera in dst.meta.video_keys:
                assert synth.frame_code(_to_uint8_hwc(item[camera])) == (camera_id, old_ep, frame)


def test_curated_dataset_opens_and_holds_the_selected_frames(v30_source: Path, curated: Path) -> None:
    _assert_frames_match_source(v30_source, curated, SELECTED)
    tasks = pq.read_table(curated / "meta" / "tasks.parquet").to_pandas()
    assert sorted(tasks.index) == sorted({synth.task_for_episode(i) for i in SELECTED})
    assert sorted(tasks["task_index"]) == list(range(len(tasks)))


def test_curated_metadata_is_consistent(curated: Path) -> None:
    meta = LeRobotDatasetMetadata("dst", root=curated)
    lengths = [LENGTHS[i] for i in sorted(SELECTED)]
    assert meta.episodes["length"] == lengths
    assert meta.episodes["dataset_from_index"] == list(np.cumsum([0, *lengths[:-1]]))
    assert meta.episodes["dataset_to_index"] == list(np.cumsum(lengths))
    for camera in meta.video_keys:
        starts, ends = (
            meta.episodes[f"videos/{camera}/from_timestamp"],
            meta.episodes[f"videos/{camera}/to_timestamp"],
        )
        np.testing.assert_allclose(starts, np.cumsum([0, *lengths[:-1]]) / FPS)
        np.testing.assert_allclose(ends, np.cumsum(lengths) / FPS)
    # Stats of the re-indexed columns describe the new numbering; the others are the source's.
    assert meta.stats["index"]["max"].tolist() == [sum(lengths) - 1]
    assert meta.stats["episode_index"]["max"].tolist() == [len(lengths) - 1]
    assert meta.stats["action"]["count"].tolist() == [sum(lengths)]


def test_videos_are_stream_copied_not_reencoded(v30_source: Path, curated: Path) -> None:
    _assert_same_packets(v30_source, curated, SELECTED)


def test_progress_is_reindexed_to_the_new_global_index(curated: Path, progress: pa.Table) -> None:
    written = pq.read_table(curated / PROGRESS_FILE)
    assert written.schema == progress.schema and written.schema.metadata == progress.schema.metadata
    frames = pq.read_table(curated / "data", columns=["index", "episode_index", "frame_index"])
    assert written.select(["index", "episode_index", "frame_index"]).equals(frames.sort_by("index"))
    # The values travel with their frame: progress_sparse encodes the source index.
    src_from = np.cumsum([0, *LENGTHS[:-1]])
    old_episode = np.array(sorted(SELECTED))[written["episode_index"].to_numpy()]
    expected = ((src_from[old_episode] + written["frame_index"].to_numpy()) / 1000.0).astype(np.float32)
    np.testing.assert_array_equal(written["progress_sparse"].to_numpy(), expected)


def test_s3_source_to_s3_destination(
    v30_source: Path, progress: pa.Table, s3, s3_options: dict, tmp_path: Path
) -> None:
    source_uri = upload_dataset(v30_source, s3, f"s3://{BUCKET}/curate/source")
    dest_uri = f"s3://{BUCKET}/curate/out/curated"
    for selected in ([0, 2], SELECTED):  # the second run replaces the first
        summary = write_curated_dataset(
            source_uri, selected, dest_uri, progress, source_options=s3_options, dest_options=s3_options
        )
        assert summary.episodes == len(selected)
    assert summary.mode == "rebuilt"  # [0, 2] -> [0, 1, 2] inserts an episode: a new version
    local = tmp_path / "curated"
    s3.get(resolve_curated(dest_uri, s3_options) + "/", str(local), recursive=True)
    assert (local / "meta" / "info.json").is_file()  # same relative paths, no extra nesting
    assert LeRobotDatasetMetadata("dst", root=local).total_episodes == len(SELECTED)
    _assert_same_packets(v30_source, local, SELECTED)
    _assert_frames_match_source(v30_source, local, SELECTED)
    assert pq.read_table(local / PROGRESS_FILE).num_rows == sum(LENGTHS[i] for i in SELECTED)


def test_v21_source_and_camera_subset(tmp_path: Path) -> None:
    source = synth.write_v21_dataset(tmp_path / "v21", lengths=(12, 9, 14), fps=FPS, gop=GOP)
    dest = tmp_path / "curated"
    front = synth.DEFAULT_CAMERAS[0]
    summary = write_curated_dataset(str(source), [2, 0], str(dest), camera_keys=[front])
    assert (summary.episodes, summary.frames) == (2, 26)
    dest = Path(summary.uri)
    meta = LeRobotDatasetMetadata("dst", root=dest)
    assert meta.video_keys == [front] and meta.info.codebase_version == "v3.0"
    assert set(meta.episodes[f"videos/{front}/file_index"]) == {0}  # separate source files, one packed mp4
    assert not (dest / PROGRESS_FILE).exists()
    dst = LeRobotDataset("dst", root=dest, video_backend="pyav")
    for position in (0, 11, 12, 25):
        item = dst[position]
        old_ep = (0, 2)[int(item["episode_index"])]
        assert synth.frame_code(_to_uint8_hwc(item[front])) == (0, old_ep, int(item["frame_index"]))
    for new_index, old_index in enumerate((0, 2)):
        video = synth.V21_VIDEO_PATH.format(episode_chunk=0, video_key=front, episode_index=old_index)
        expected = _packets_between(source / video, 0.0, math.inf)
        assert _episode_packets(dest, meta, new_index, front) == expected


def _files(meta: LeRobotDatasetMetadata, prefix: str) -> set[tuple[int, int]]:
    return set(
        zip(meta.episodes[f"{prefix}/chunk_index"], meta.episodes[f"{prefix}/file_index"], strict=True)
    )


def test_files_roll_over_at_the_source_size_limits(v30_source: Path, tmp_path: Path) -> None:
    source = shutil.copytree(v30_source, tmp_path / "small_files")
    info = json.loads((source / "meta" / "info.json").read_text())
    # About one episode per file: an episode's video is ~20 kB per camera, its rows ~2 kB.
    info.update(video_files_size_in_mb=0.004, data_files_size_in_mb=0.002, chunks_size=2)
    (source / "meta" / "info.json").write_text(json.dumps(info))
    dest = Path(write_curated_dataset(str(source), SELECTED, str(tmp_path / "curated")).uri)
    meta = LeRobotDatasetMetadata("dst", root=dest)
    video_files = _files(meta, f"videos/{synth.DEFAULT_CAMERAS[0]}")
    data_files = _files(meta, "data")
    assert len(video_files) > 1 and len(data_files) > 1
    assert (1, 0) in video_files | data_files  # chunks_size=2: the third file opens chunk 1
    _assert_same_packets(v30_source, dest, SELECTED)
    _assert_frames_match_source(v30_source, dest, SELECTED)


def test_empty_selection_writes_nothing(v30_source: Path, tmp_path: Path) -> None:
    summary = write_curated_dataset(str(v30_source), [], str(tmp_path / "curated"))
    assert (summary.episodes, summary.frames, summary.video_bytes) == (0, 0, 0)
    assert not (tmp_path / "curated").exists()


def test_versions_behind_the_pointer(v30_source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "curated"
    dest.mkdir()
    (dest / ".current.json.0123.tmp").write_text("a write cut short")  # removed by the next call
    first = write_curated_dataset(str(v30_source), [0, 1, 3], str(dest))
    assert sorted(p.name for p in dest.iterdir()) == ["current.json", "v000001"]
    assert json.loads((dest / "current.json").read_text()) == {"root": "v000001", "version": 1}
    # Dropping an episode writes v000002 and keeps v000001 whole for its readers, within the grace time.
    second = write_curated_dataset(str(v30_source), [0, 3], str(dest), keep_superseded_s=3600)
    assert (second.mode, second.uri, second.superseded) == ("rebuilt", str(dest / "v000002"), ("v000001",))
    assert LeRobotDatasetMetadata("old", root=first.uri).total_episodes == 3
    assert LeRobotDatasetMetadata("new", root=second.uri).total_episodes == 2
    again = write_curated_dataset(str(v30_source), [0, 3], str(dest), keep_superseded_s=3600)
    assert (again.mode, again.superseded, again.bytes_written) == ("unchanged", ("v000001",), 0)
    # A version cut short before the pointer named it is not superseded: it goes at once.
    shutil.copytree(dest / "v000002", dest / "v000003")
    gone = write_curated_dataset(str(v30_source), [0, 3], str(dest), keep_superseded_s=0)
    assert gone.superseded == () and sorted(p.name for p in dest.iterdir()) == ["current.json", "v000002"]
    # Nothing selected: the pointer names no version; the last one is superseded.
    empty = write_curated_dataset(str(v30_source), [], str(dest), keep_superseded_s=3600)
    assert (empty.mode, empty.uri, empty.superseded) == ("removed", None, ("v000002",))
    assert resolve_curated(str(dest)) is None


def test_episode_not_starting_on_a_keyframe_is_refused(v30_source: Path, tmp_path: Path) -> None:
    source = shutil.copytree(v30_source, tmp_path / "shifted")
    episodes_path = source / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(episodes_path)
    camera = synth.DEFAULT_CAMERAS[1]
    for column in (f"videos/{camera}/from_timestamp", f"videos/{camera}/to_timestamp"):
        shifted = pc.add(table[column], pc.if_else(pc.equal(table["episode_index"], 2), 0.3, 0.0))
        table = table.set_column(table.schema.get_field_index(column), column, shifted)
    pq.write_table(table, episodes_path)
    with pytest.raises(CurationError, match=r"file-000\.mp4: episode 2 does not begin on a keyframe"):
        write_curated_dataset(str(source), [1, 2], str(tmp_path / "curated"))
    assert not (tmp_path / "curated").exists()


def test_unknown_episode_is_refused(v30_source: Path, tmp_path: Path) -> None:
    with pytest.raises(CurationError, match=r"episodes \[7\] are not in the dataset"):
        write_curated_dataset(str(v30_source), [1, 7], str(tmp_path / "curated"))


def test_source_named_like_a_glob_reads_its_own_metadata(v30_source: Path, tmp_path: Path) -> None:
    # `pick[1]` as a glob pattern matches `pick1`: its metadata must be read from its own folder only.
    source = shutil.copytree(v30_source, tmp_path / "fleet" / "pick[1]")
    synth.write_v30_dataset(tmp_path / "fleet" / "pick1", lengths=(5, 6, 7, 8, 9), fps=FPS, gop=GOP)
    summary = write_curated_dataset(str(source), SELECTED, str(tmp_path / "curated"))
    assert (summary.episodes, summary.frames) == (3, sum(LENGTHS[i] for i in SELECTED))
    _assert_same_packets(v30_source, Path(summary.uri), SELECTED)


def _rewrite_episodes_index(source: Path, change) -> None:
    path = source / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    pq.write_table(change(pq.read_table(path)), path)


def test_metadata_the_reader_refuses_is_a_curation_error(v30_source: Path, tmp_path: Path) -> None:
    source = shutil.copytree(v30_source, tmp_path / "fleet" / "long")

    def lengthen_episode_2(table: pa.Table) -> pa.Table:
        length = pc.add(table["length"], pc.if_else(pc.equal(table["episode_index"], 2), 1, 0))
        return table.set_column(table.schema.get_field_index("length"), "length", length)

    _rewrite_episodes_index(source, lengthen_episode_2)
    write_curated_dataset(str(source), [1, 3], str(tmp_path / "ok"))  # the other episodes still curate
    index_file = re.escape(str(source / "meta" / "episodes" / "chunk-000" / "file-000.parquet"))
    with pytest.raises(CurationError, match=rf"^{index_file}: global index range .* \(episode 2\)$"):
        write_curated_dataset(str(source), [1, 2], str(tmp_path / "curated"))
    (source / "meta" / "info.json").unlink()
    with pytest.raises(CurationError, match=rf"^{re.escape(str(source))}/meta/info\.json: not found$"):
        write_curated_dataset(str(source), [1], str(tmp_path / "curated"))
    assert not (tmp_path / "curated").exists()


def test_task_texts_keep_the_sources_spelling(v30_source: Path, tmp_path: Path) -> None:
    """The reader strips task texts; the curated dataset keeps the source's, which appends match on."""
    source = shutil.copytree(v30_source, tmp_path / "fleet" / "padded")
    tasks = pd.read_parquet(source / "meta" / "tasks.parquet")
    tasks.index = [f"{task} " for task in tasks.index]
    tasks.index.name = "task"
    tasks.to_parquet(source / "meta" / "tasks.parquet")

    def pad(table: pa.Table) -> pa.Table:
        padded = pa.array([[f"{task} " for task in texts] for texts in table["tasks"].to_pylist()])
        return table.set_column(table.schema.get_field_index("tasks"), "tasks", padded)

    _rewrite_episodes_index(source, pad)
    dest = tmp_path / "curated"
    write_curated_dataset(str(source), [0, 1], str(dest))
    summary = write_curated_dataset(str(source), [0, 1, 3], str(dest))
    assert summary.mode == "appended"
    root = Path(summary.uri)
    names = pd.read_parquet(root / "meta" / "tasks.parquet")["task_index"]
    by_index = {int(index): str(task) for task, index in names.items()}
    episodes = pq.read_table(root / "meta" / "episodes").to_pylist()
    rows = pq.read_table(root / "data", columns=["episode_index", "task_index"]).to_pylist()
    for new_index, old_index in enumerate((0, 1, 3)):
        expected = f"{synth.task_for_episode(old_index)} "
        assert episodes[new_index]["tasks"] == [expected]
        assert {by_index[r["task_index"]] for r in rows if r["episode_index"] == new_index} == {expected}
