"""Tests for the synthetic dataset writers in devkit.synth (real AV1 encode/decode, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lerobot.configs.video import RGBEncoderConfig
from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata
from lerobot.datasets.lerobot_dataset import LeRobotDataset

from devkit import synth
from pipeline.storage import upload_dataset
from tests.conftest import BUCKET

LENGTHS = (12, 15, 20)
REPO_ID = "synth/toy"
FRONT, WRIST = synth.DEFAULT_CAMERAS


def _decode(path: Path, size: tuple[int, int] | None = None) -> list[tuple[float, np.ndarray]]:
    """All frames of an mp4 as (time in s, HxWx3 uint8), optionally resized by the scaler."""
    height, width = size if size else (None, None)
    with av.open(str(path)) as container:
        return [
            (frame.time, frame.to_ndarray(format="rgb24", width=width, height=height))
            for frame in container.decode(video=0)
        ]


def _keyframes(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(packet.is_keyframe for packet in container.demux(video=0) if packet.dts is not None)


def _to_uint8_hwc(image) -> np.ndarray:
    """lerobot returns float32 CHW in [0, 1]."""
    return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _encode(frames: list[np.ndarray], path: Path) -> None:
    encoder = RGBEncoderConfig()  # lerobot's AV1 defaults: libsvtav1, crf 30, g 2
    with av.open(str(path), "w") as container:
        stream = container.add_stream(
            encoder.vcodec, rate=10, options=encoder.get_codec_options(as_strings=True)
        )
        stream.pix_fmt = encoder.pix_fmt
        stream.height, stream.width = frames[0].shape[:2]
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def v30_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth.write_v30_dataset(tmp_path_factory.mktemp("v30") / "ds", repo_id=REPO_ID, lengths=LENGTHS)


@pytest.fixture(scope="module")
def v21_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth.write_v21_dataset(tmp_path_factory.mktemp("v21") / "ds", lengths=LENGTHS)


CODES = [(0, 0, 0), (1, 255, 4095), (3, 17, 2730), (2, 170, 1365), (1, 1, 1)]


def test_frame_code_round_trips_through_av1_and_resizing(tmp_path: Path) -> None:
    frames = [synth.make_frame(*code, size=(64, 64)) for code in CODES]
    assert all(synth.frame_code(frame) == code for frame, code in zip(frames, CODES, strict=True))
    _encode(frames, tmp_path / "codes.mp4")
    for size in (None, (32, 32), (256, 256), (48, 80)):
        decoded = [synth.frame_code(frame) for _, frame in _decode(tmp_path / "codes.mp4", size)]
        assert decoded == CODES, size


def test_frame_code_rejects_out_of_range_and_foreign_frames() -> None:
    with pytest.raises(ValueError):
        synth.make_frame(0, 256, 0)
    with pytest.raises(ValueError):
        synth.make_frame(0, 0, 4096)
    with pytest.raises(ValueError):
        synth.frame_code(np.full((64, 64, 3), 128, dtype=np.uint8))
    with pytest.raises(ValueError):
        synth.frame_code(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    with pytest.raises(ValueError):
        synth.frame_code(np.zeros((64, 64), dtype=np.uint8))


def test_v30_reopens_with_lerobot_and_frames_identify_themselves(v30_root: Path) -> None:
    ds = LeRobotDataset(REPO_ID, root=v30_root, video_backend="pyav")
    assert ds.meta.info.codebase_version == "v3.0"
    assert (ds.num_episodes, ds.num_frames) == (len(LENGTHS), sum(LENGTHS))
    assert ds.meta.info.features[FRONT]["info"]["video.g"] == 2
    # Packed: every episode of a camera lives in one mp4.
    assert len(list((v30_root / "videos" / FRONT).rglob("*.mp4"))) == 1

    index = 0
    for episode_index, length in enumerate(LENGTHS):
        for frame_index in range(length):
            item = ds[index]
            assert synth.frame_code(_to_uint8_hwc(item[FRONT])) == (0, episode_index, frame_index)
            assert synth.frame_code(_to_uint8_hwc(item[WRIST])) == (1, episode_index, frame_index)
            np.testing.assert_array_equal(
                item["action"].numpy(), synth.synth_action(episode_index, frame_index)
            )
            np.testing.assert_array_equal(
                item["observation.state"].numpy(), synth.synth_state(episode_index, frame_index)
            )
            assert item["task"] == synth.task_for_episode(episode_index)
            assert int(item["index"]) == index
            index += 1


def test_v21_meta_files(v21_root: Path) -> None:
    info = json.loads((v21_root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v2.1"
    assert info["fps"] == 10
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, sum(LENGTHS), 3)
    assert (info["total_chunks"], info["total_videos"], info["chunks_size"]) == (1, 6, 1000)
    assert info["data_path"] == "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
    assert (
        info["video_path"] == "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
    )
    assert info["splits"] == {"train": "0:3"}
    features = info["features"]
    assert features[FRONT]["shape"] == [64, 64, 3]
    assert features[FRONT]["info"]["video.codec"] == "av1"
    assert features[FRONT]["info"]["video.pix_fmt"] == "yuv420p"
    assert features["action"] == {"dtype": "float32", "shape": [6], "names": synth.JOINT_NAMES}
    assert features["index"] == {"dtype": "int64", "shape": [1], "names": None}

    def jsonl(name: str) -> list[dict]:
        return [json.loads(line) for line in (v21_root / "meta" / name).read_text().splitlines()]

    assert jsonl("episodes.jsonl") == [
        {"episode_index": i, "tasks": [synth.task_for_episode(i)], "length": n} for i, n in enumerate(LENGTHS)
    ]
    assert jsonl("tasks.jsonl") == [{"task_index": i, "task": t} for i, t in enumerate(synth.DEFAULT_TASKS)]
    stats = jsonl("episodes_stats.jsonl")
    assert [row["episode_index"] for row in stats] == [0, 1, 2]
    assert set(stats[1]["stats"]) == {*info["features"]}
    assert set(stats[1]["stats"][FRONT]) == {"min", "max", "mean", "std", "count"}
    assert stats[1]["stats"]["index"]["min"] == [LENGTHS[0]]
    assert np.array(stats[1]["stats"][FRONT]["mean"]).shape == (3, 1, 1)


def test_v21_data_parquet_and_videos(v21_root: Path) -> None:
    start = 0
    for episode_index, length in enumerate(LENGTHS):
        table = pq.read_table(v21_root / f"data/chunk-000/episode_{episode_index:06d}.parquet")
        assert table.schema.names == [
            "observation.state", "action", "timestamp", "frame_index", "episode_index", "index", "task_index",
        ]  # fmt: skip
        assert table.schema.field("timestamp").type == pa.float32()
        for name in ("frame_index", "episode_index", "index", "task_index"):
            assert table.schema.field(name).type == pa.int64()
        columns = table.to_pydict()
        assert columns["index"] == list(range(start, start + length))
        assert columns["frame_index"] == list(range(length))
        assert set(columns["episode_index"]) == {episode_index}
        assert set(columns["task_index"]) == {episode_index % 3}
        np.testing.assert_array_equal(
            np.array(columns["action"], dtype=np.float32),
            np.stack([synth.synth_action(episode_index, i) for i in range(length)]),
        )
        np.testing.assert_allclose(columns["timestamp"], np.arange(length) / 10, atol=1e-6)
        for camera_id, camera in enumerate(synth.DEFAULT_CAMERAS):
            path = v21_root / f"videos/chunk-000/{camera}/episode_{episode_index:06d}.mp4"
            codes = [synth.frame_code(frame) for _, frame in _decode(path)]
            assert codes == [(camera_id, episode_index, i) for i in range(length)]
        start += length


def test_v21_is_accepted_by_lerobots_v30_converter(tmp_path: Path) -> None:
    from lerobot.scripts.convert_dataset_v21_to_v30 import convert_dataset

    root = synth.write_v21_dataset(tmp_path / "ds", lengths=(6, 9), cameras=(FRONT,))
    convert_dataset(REPO_ID, root=root, push_to_hub=False)
    ds = LeRobotDataset(REPO_ID, root=root, video_backend="pyav")
    assert (ds.num_episodes, ds.num_frames) == (2, 15)
    assert synth.frame_code(_to_uint8_hwc(ds[8][FRONT])) == (0, 1, 2)


@pytest.mark.parametrize("version", ["v3.0", "v2.1"])
def test_gop_sets_keyframe_interval(tmp_path: Path, version: str) -> None:
    writer = synth.write_v30_dataset if version == "v3.0" else synth.write_v21_dataset
    counts = {}
    for gop in (None, 30):
        root = writer(tmp_path / str(gop), lengths=(12, 25), cameras=(FRONT,), gop=gop)
        counts[gop] = sum(_keyframes(path) for path in (root / "videos").rglob("*.mp4"))
    # Every episode is encoded on its own, so each starts on a keyframe even once packed.
    assert counts == {None: 6 + 13, 30: 2}
    if version == "v3.0":
        assert LeRobotDatasetMetadata(REPO_ID, root=tmp_path / "30").features[FRONT]["info"]["video.g"] == 30


def test_v21_corrupt_and_missing_episode(tmp_path: Path) -> None:
    root = synth.write_v21_dataset(
        tmp_path / "ds", lengths=LENGTHS, corrupt_episode=1, missing_video_episode=2
    )
    for camera in synth.DEFAULT_CAMERAS:
        videos = root / "videos/chunk-000" / camera
        assert not (videos / "episode_000002.mp4").exists()
        assert (videos / "episode_000001.mp4").stat().st_size > 0
        with pytest.raises(av.InvalidDataError):
            _decode(videos / "episode_000001.mp4")
        assert len(_decode(videos / "episode_000000.mp4")) == LENGTHS[0]
    # Metadata still lists the broken episodes: only the videos are damaged.
    assert json.loads((root / "meta/info.json").read_text())["total_episodes"] == 3


def _decodable_codes(path: Path) -> list[tuple[float, tuple[int, int, int] | None]]:
    """(time, code) of every frame that decodes; code is None when the frame is garbage. Failing packets are
    skipped, as a tolerant reader would."""
    out = []
    with av.open(str(path)) as container:
        for packet in container.demux(video=0):
            try:
                frames = packet.decode()
            except av.InvalidDataError:
                continue
            for frame in frames:
                try:
                    out.append((frame.time, synth.frame_code(frame.to_ndarray(format="rgb24"))))
                except ValueError:
                    out.append((frame.time, None))
    return out


def test_v30_corrupt_episode_breaks_only_that_episode(tmp_path: Path) -> None:
    root = synth.write_v30_dataset(tmp_path / "ds", repo_id=REPO_ID, lengths=LENGTHS, corrupt_episode=1)
    meta = LeRobotDatasetMetadata(REPO_ID, root=root)
    for camera_id, camera in enumerate(synth.DEFAULT_CAMERAS):
        decoded = _decodable_codes(root / meta.get_video_file_path(1, camera))
        for episode_index, episode in enumerate(meta.episodes):
            span = (
                episode[f"videos/{camera}/from_timestamp"] - 0.05,
                episode[f"videos/{camera}/to_timestamp"] - 0.05,
            )
            codes = [code for time, code in decoded if span[0] <= time < span[1]]
            expected = [(camera_id, episode_index, i) for i in range(LENGTHS[episode_index])]
            # Each episode starts on its own keyframe, so its neighbours decode intact around the damage.
            assert (codes == expected) == (episode_index != 1), (episode_index, codes)

    ds = LeRobotDataset(REPO_ID, root=root, video_backend="pyav")
    assert synth.frame_code(_to_uint8_hwc(ds[0][FRONT])) == (0, 0, 0)
    with pytest.raises(av.InvalidDataError):
        ds[LENGTHS[0] + 1]


def test_v30_missing_video_episode_deletes_packed_file(tmp_path: Path) -> None:
    root = synth.write_v30_dataset(tmp_path / "ds", repo_id=REPO_ID, lengths=(5, 6), missing_video_episode=1)
    meta = LeRobotDatasetMetadata(REPO_ID, root=root)
    assert meta.total_episodes == 2
    for camera in synth.DEFAULT_CAMERAS:
        assert not (root / meta.get_video_file_path(1, camera)).exists()
    assert list((root / "data").rglob("*.parquet"))


def test_cli_writes_dataset(tmp_path: Path) -> None:
    synth.main(["--out", str(tmp_path / "cli"), "--version", "v2.1", "--lengths", "4,5", "--size", "32"])
    info = json.loads((tmp_path / "cli/meta/info.json").read_text())
    assert (info["total_frames"], info["features"][FRONT]["shape"]) == (9, [32, 32, 3])


def test_upload_dataset_keeps_relative_paths_on_repeat(tmp_path: Path) -> None:
    root = synth.write_v21_dataset(tmp_path / "ds", lengths=(3,), cameras=(FRONT,))
    fs = fsspec.filesystem("memory")
    local = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    for _ in range(2):  # the second put lands on an existing prefix, where cp -r semantics would nest
        assert upload_dataset(root, fs, "memory://bucket/lerobot/toy") == "memory://bucket/lerobot/toy"
        remote = sorted(p.removeprefix("/bucket/lerobot/toy/") for p in fs.find("/bucket/lerobot/toy"))
        assert remote == local


def test_upload_dataset_to_s3(tmp_path: Path, s3) -> None:
    root = synth.write_v30_dataset(tmp_path / "ds", lengths=(3, 4), cameras=(FRONT,))
    local = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    for _ in range(2):
        upload_dataset(root, s3, f"s3://{BUCKET}/upload-twice/toy")
        remote = sorted(
            p.removeprefix(f"{BUCKET}/upload-twice/toy/") for p in s3.find(f"{BUCKET}/upload-twice/toy")
        )
        assert remote == local
