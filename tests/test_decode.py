"""Frame decoding straight from storage: exactly the scheduled frames, and clear per-episode errors."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from devkit.synth import frame_code, write_v21_dataset, write_v30_dataset
from pipeline.catalog import list_episodes
from pipeline.config import FramesConfig, PrefixesConfig, SourceConfig
from pipeline.errors import EpisodeError
from pipeline.frames.decode import decode_episode, decode_frames, empty_frame_columns
from pipeline.frames.schedule import episode_schedule
from pipeline.storage import upload_dataset
from tests.conftest import BUCKET, S3_SECRET, SYNTH_FPS, SYNTH_LENGTHS

FRAMES = FramesConfig(fps=4.0, max_frames=64, height=48, width=80)
PREFIXES = PrefixesConfig(num=5)
BLOCK = 64 * 1024


def _rows(uri: str, options: dict | None = None) -> list[dict]:
    return [r.to_row() for r in list_episodes(SourceConfig(uris=[uri], storage_options=options or {}))]


def _decode(row: dict, options: dict | None = None) -> dict:
    return decode_episode(row, FRAMES, PREFIXES, options or {}, BLOCK)


def _assert_exact_frames(row: dict, out: dict) -> None:
    """Every decoded frame is the scheduled raw frame of this episode (front camera = camera 0)."""
    schedule = episode_schedule(row["length"], row["fps"], FRAMES.fps, FRAMES.max_frames, PREFIXES.num)
    assert (out["status"], out["error"]) == ("ok", "")
    np.testing.assert_array_equal(out["frame_indices"], schedule.raw_indices)
    np.testing.assert_array_equal(out["timestamps"], schedule.timestamps)
    np.testing.assert_array_equal(out["prefix_ends"], schedule.prefix_ends)
    assert out["frames"].dtype == np.uint8 and out["frames"].shape == (len(schedule.raw_indices), 48, 80, 3)
    codes = [frame_code(frame) for frame in out["frames"]]
    assert codes == [(0, row["episode_index"], int(i)) for i in schedule.raw_indices]
    assert out["frames_decoded"] >= len(codes) and out["bytes_read"] > 0 and out["bytes_fetched"] > 0


@pytest.mark.parametrize("name", ["v30", "v21"])
@pytest.mark.parametrize("where", ["local", "s3"])
def test_decodes_exactly_the_scheduled_frames(request, synth_dir, s3_options, name, where):
    if where == "local":
        uri, options = str(synth_dir / name), {}
    else:
        uri, options = f"{request.getfixturevalue('synth_s3')}/{name}", s3_options
    rows = _rows(uri, options)
    # First, a middle and the last episode of the packed v3.0 file (and of the v2.1 files).
    for row in (rows[0], rows[2], rows[-1]):
        _assert_exact_frames(row, _decode(row, options))


def test_keyframe_dense_video_decodes_few_extra_frames(synth_dir):
    row = _rows(str(synth_dir / "v30"))[2]
    out = _decode(row)
    # lerobot's default g=2: each sampled frame costs its keyframe at most, never the whole episode.
    assert out["frames_decoded"] <= 2 * len(out["frame_indices"]) < row["length"]


def test_nearest_frame_within_half_a_period(synth_dir):
    row = _rows(str(synth_dir / "v30"))[1]
    period = 1 / SYNTH_FPS
    wanted = np.array([0, 3, 17, 32])
    jitter = np.array([0.0, 0.4, -0.4, 0.3]) * period
    clip = decode_frames(
        row["video_uri"], wanted * period + jitter, row["from_timestamp"], (64, 64), fps=SYNTH_FPS
    )
    assert [frame_code(f) for f in clip.frames] == [(0, 1, int(i)) for i in wanted]
    with pytest.raises(EpisodeError, match="fewer frames than the index says"):
        decode_frames(row["video_uri"], [0.0, 30.0], row["from_timestamp"], (64, 64), fps=SYNTH_FPS)


@pytest.fixture(scope="module")
def broken(tmp_path_factory, synth_dir) -> Path:
    """Broken copies: v21 (episode 1 corrupt, episode 2 missing), v30c (episode 1's packets corrupt),
    v30t (the packed mp4 truncated inside episode 2)."""
    folder = tmp_path_factory.mktemp("broken")
    write_v21_dataset(
        folder / "v21", lengths=SYNTH_LENGTHS, fps=SYNTH_FPS, corrupt_episode=1, missing_video_episode=2
    )
    write_v30_dataset(
        folder / "v30c", repo_id="synth/v30c", lengths=SYNTH_LENGTHS, fps=SYNTH_FPS, corrupt_episode=1
    )
    shutil.copytree(synth_dir / "v30", folder / "v30t")
    for video in (folder / "v30t" / "videos").rglob("*.mp4"):
        os.truncate(video, int(video.stat().st_size * 0.6))
    return folder


def _statuses(rows: list[dict]) -> list[tuple[str, int, str]]:
    return [(row["dataset_id"].rsplit("/", 1)[1], row["episode_index"], row["status"]) for row in rows]


def test_bad_videos_fail_their_episode_only(broken):
    rows = _rows(str(broken))
    outs = [_decode(row) for row in rows]
    assert _statuses(outs) == [
        ("v21", 0, "ok"),
        ("v21", 1, "failed"),
        ("v21", 2, "failed"),
        ("v21", 3, "ok"),
        ("v30c", 0, "ok"),
        ("v30c", 1, "failed"),
        ("v30c", 2, "ok"),
        ("v30c", 3, "ok"),
        ("v30t", 0, "ok"),
        ("v30t", 1, "ok"),
        ("v30t", 2, "failed"),
        ("v30t", 3, "failed"),
    ]
    errors = {(o["dataset_id"].rsplit("/", 1)[1], o["episode_index"]): o["error"] for o in outs}
    v21_video = f"{broken}/v21/videos/chunk-000/observation.images.front/episode_{{:06d}}.mp4"
    packed = "videos/observation.images.front/chunk-000/file-000.mp4"
    assert errors[("v21", 1)].startswith(
        f"{broken.name}/v21 episode 1: {v21_video.format(1)}: cannot read video"
    )
    assert errors[("v21", 2)] == f"{broken.name}/v21 episode 2: {v21_video.format(2)}: file not found"
    assert errors[("v30c", 1)].startswith(
        f"{broken.name}/v30c episode 1: {broken}/v30c/{packed}: cannot read video"
    )
    assert errors[("v30t", 2)].startswith(
        f"{broken.name}/v30t episode 2: {broken}/v30t/{packed}: no frame at"
    )
    assert "fewer frames than the index says" in errors[("v30t", 2)]
    assert "the video ends before it" in errors[("v30t", 3)]
    for row, out in zip(rows, outs, strict=True):
        if out["status"] == "ok":
            _assert_exact_frames(row, out)


def test_index_longer_than_video_and_too_short_episodes(synth_dir):
    v21, v30 = _rows(str(synth_dir / "v21"))[0], _rows(str(synth_dir / "v30"))[0]
    longer_file = {**v21, "length": v21["length"] + 6, "to_timestamp": (v21["length"] + 6) / SYNTH_FPS}
    longer_span = {**v30, "length": v30["length"] + 6}
    cases = {
        "file": (longer_file, "fewer frames than the index says"),
        "span": (
            longer_span,
            f"the index says {v30['length'] + 6} frames but the episode spans only 2.000 s",
        ),
        "one": ({**v21, "length": 1}, "episode has 1 frame(s); at least 2 are needed"),
        "zero": ({**v30, "length": 0}, "episode has 0 frame(s)"),
    }
    for row, fragment in cases.values():
        out = _decode(row)
        assert out["status"] == "failed"
        assert out["error"].startswith(f"{row['dataset_id']} episode 0: {row['video_uri']}: ")
        assert fragment in out["error"]


def test_failed_rows_keep_one_schema(synth_dir):
    ok_row = _rows(str(synth_dir / "v30"))[0]
    ok = _decode(ok_row)
    failed = _decode({**ok_row, "video_uri": ok_row["video_uri"] + ".gone"})
    passed = _decode({**ok_row, "status": "failed", "error": "earlier: reason"})
    assert (passed["status"], passed["error"]) == ("failed", "earlier: reason")
    for out in (failed, passed):
        assert list(out) == list(ok)
        for key, value in empty_frame_columns(48, 80).items():
            assert type(out[key]) is type(ok[key])
            if isinstance(value, np.ndarray):
                assert out[key].dtype == ok[key].dtype and out[key].shape[1:] == ok[key].shape[1:]
                assert len(out[key]) == 0


def test_s3_errors_never_show_credentials(broken, s3, s3_options, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    uri = upload_dataset(broken / "v21", s3, f"s3://{BUCKET}/broken-videos/v21")
    outs = [_decode(row, s3_options) for row in _rows(uri, s3_options)]
    assert [o["status"] for o in outs] == ["ok", "failed", "failed", "ok"]
    assert outs[2]["error"].endswith("episode_000002.mp4: file not found")
    captured = capsys.readouterr()
    for text in [outs[1]["error"], outs[2]["error"], captured.out, captured.err, caplog.text]:
        assert S3_SECRET not in text


def test_runs_as_a_ray_map(ray_session, synth_dir, broken, tmp_path):
    import ray

    rows = _rows(str(synth_dir / "v30"))[:2] + _rows(str(broken / "v21"))[1:3] + _rows(str(tmp_path / "gone"))
    out = (
        # One row per block: a block holding only failed rows must still have the common schema.
        ray.data.from_items(rows, override_num_blocks=len(rows))
        .map(
            decode_episode,
            fn_kwargs={
                "frames_cfg": FRAMES,
                "prefixes_cfg": PREFIXES,
                "storage_options": {},
                "block_size": BLOCK,
            },
        )
        .take_all()
    )
    by_key = {(o["dataset_id"].rsplit("/", 1)[1], o["episode_index"]): o for o in out}
    assert [by_key[k]["status"] for k in [("v30", 0), ("v30", 1), ("v21", 1), ("v21", 2)]] == [
        "ok",
        "ok",
        "failed",
        "failed",
    ]
    for row in rows[:2]:
        _assert_exact_frames(row, by_key[("v30", row["episode_index"])])
    assert by_key[("v21", 2)]["frames"].shape == (0, 48, 80, 3)
    assert by_key[("gone", -1)]["error"].endswith("meta/info.json: not found")
