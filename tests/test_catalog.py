"""The episode catalog reads LeRobot v3.0 and v2.1 metadata, locally and from moto S3, and never crashes."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from devkit.synth import DEFAULT_CAMERAS, task_for_episode
from pipeline.catalog import EpisodeRecord, dataset_id_for, list_episodes
from pipeline.config import SourceConfig
from pipeline.storage import filesystem_for
from tests.conftest import BUCKET, S3_SECRET, SYNTH_FPS, SYNTH_LENGTHS

FRONT, WRIST = DEFAULT_CAMERAS
VERSIONS = {"v30": "v3.0", "v21": "v2.1"}


@pytest.fixture(params=["local", "s3"])
def location(request, synth_dir, s3_options) -> tuple[str, dict]:
    """(prefix holding v30/ and v21/, storage options) for each storage backend."""
    if request.param == "local":
        return str(synth_dir), {}
    return request.getfixturevalue("synth_s3"), s3_options


def _copy_meta(src: Path, dst: Path) -> Path:
    shutil.copytree(src / "meta", dst / "meta")
    return dst


@pytest.mark.parametrize("name", ["v30", "v21"])
def test_lists_every_episode_with_task_length_and_offsets(location, name):
    prefix, options = location
    records = list_episodes(SourceConfig(uris=[f"{prefix}/{name}"], storage_options=options))

    assert [r.episode_index for r in records] == list(range(len(SYNTH_LENGTHS)))
    starts = np.concatenate(([0], np.cumsum(SYNTH_LENGTHS)))
    for record, length, start in zip(records, SYNTH_LENGTHS, starts, strict=False):
        i = record.episode_index
        assert (record.status, record.error, record.codebase_version) == ("ok", "", VERSIONS[name])
        assert record.dataset_id == dataset_id_for(f"{prefix}/{name}") and record.dataset_id.endswith(
            f"/{name}"
        )
        assert (record.task, record.tasks, record.length) == (
            task_for_episode(i),
            (task_for_episode(i),),
            length,
        )
        assert (record.fps, record.camera) == (SYNTH_FPS, FRONT)
        assert (record.dataset_from_index, record.dataset_to_index) == (start, start + length)
        # v3.0 packs every episode into one file; v2.1 has one file per episode starting at 0.
        offset = start / SYNTH_FPS if name == "v30" else 0.0
        assert record.from_timestamp == pytest.approx(offset)
        assert record.to_timestamp == pytest.approx(offset + length / SYNTH_FPS)
        fs, path = filesystem_for(record.video_uri, options)
        assert record.video_uri.startswith(prefix) and fs.isfile(path)
    if name == "v30":
        assert len({r.video_uri for r in records}) == 1


def test_rows_are_flat_plain_python(synth_dir):
    row = list_episodes(SourceConfig(uris=[str(synth_dir / "v30")]))[0].to_row()
    assert list(row) == [f.name for f in EpisodeRecord.__dataclass_fields__.values()] + ["fingerprint"]
    assert row["tasks"] == [row["task"]] and isinstance(row["tasks"], list)
    assert all(isinstance(v, str | int | float | list) for v in row.values())
    assert (row["status"], row["error"]) == ("ok", "")


def test_prefix_discovers_every_dataset(location):
    prefix, options = location
    records = list_episodes(SourceConfig(uris=[prefix, f"{prefix}/v30/"], storage_options=options))
    ids = [r.dataset_id for r in records]
    leaf = prefix.rstrip("/").rsplit("/", 1)[-1]
    # Each dataset once, even though v30 is reached both through the prefix and directly.
    assert ids == [f"{leaf}/v21"] * 4 + [f"{leaf}/v30"] * 4
    assert all(r.status == "ok" for r in records)


def test_camera_and_episode_filter(synth_dir):
    source = SourceConfig(
        uris=[str(synth_dir / "v30"), str(synth_dir / "v21")], camera=WRIST, episodes=[3, 1, 99]
    )
    records = list_episodes(source)
    assert [(r.dataset_id.rsplit("/", 1)[1], r.episode_index) for r in records] == [
        ("v30", 1),
        ("v30", 3),
        ("v21", 1),
        ("v21", 3),
    ]
    assert all(r.camera == WRIST and f"/{WRIST}/" in r.video_uri for r in records)


def _broken_datasets(synth_dir: Path, tmp: Path) -> dict[str, str]:
    """One dataset per kind of broken metadata, each under tmp/<kind>; values: expected error fragment."""
    bad_json = _copy_meta(synth_dir / "v30", tmp / "bad_json")
    (bad_json / "meta/info.json").write_text("{not json")
    version = _copy_meta(synth_dir / "v30", tmp / "unknown_version")
    info = json.loads((version / "meta/info.json").read_text())
    (version / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v9.9"}))
    bad_parquet = _copy_meta(synth_dir / "v30", tmp / "bad_parquet")
    next((bad_parquet / "meta/episodes").rglob("*.parquet")).write_bytes(b"PAR1 garbage")
    no_jsonl = _copy_meta(synth_dir / "v21", tmp / "no_jsonl")
    (no_jsonl / "meta/episodes.jsonl").unlink()
    bad_jsonl = _copy_meta(synth_dir / "v21", tmp / "bad_jsonl")
    (bad_jsonl / "meta/episodes.jsonl").write_text('{"episode_index": 0, "tasks": ["x"]}\n')
    return {
        "bad_json": "meta/info.json: invalid JSON",
        "unknown_version": "meta/info.json: unsupported codebase_version 'v9.9'",
        "bad_parquet": "meta/episodes/chunk-000/file-000.parquet: ",
        "no_jsonl": "meta/episodes.jsonl: not found",
        "bad_jsonl": "meta/episodes.jsonl: line 1: missing key 'length'",
    }


def test_bad_metadata_yields_failed_rows_and_listing_goes_on(synth_dir, tmp_path):
    expected = _broken_datasets(synth_dir, tmp_path / "fleet")
    missing = str(tmp_path / "nowhere" / "ds")
    records = list_episodes(SourceConfig(uris=[str(tmp_path / "fleet"), missing, str(synth_dir / "v21")]))

    failed = {r.dataset_id: r for r in records if r.status == "failed"}
    assert set(failed) == {f"fleet/{kind}" for kind in expected} | {"nowhere/ds"}
    for kind, fragment in expected.items():
        record = failed[f"fleet/{kind}"]
        assert (
            record.error.startswith(f"fleet/{kind}: {tmp_path / 'fleet' / kind}/")
            and fragment in record.error
        )
        assert record.episode_index == -1
    assert failed["nowhere/ds"].error == f"nowhere/ds: {missing}/meta/info.json: not found"
    assert failed["fleet/unknown_version"].codebase_version == "v9.9"
    assert [r.episode_index for r in records if r.status == "ok"] == [0, 1, 2, 3]


def test_unknown_camera_and_id_collision(synth_dir, tmp_path):
    records = list_episodes(SourceConfig(uris=[str(synth_dir / "v30")], camera="observation.images.top"))
    assert len(records) == 1 and records[0].status == "failed"
    assert "camera 'observation.images.top' is not a video feature" in records[0].error
    assert FRONT in records[0].error

    twin = _copy_meta(synth_dir / "v30", tmp_path / "other" / synth_dir.name / "v30")
    records = list_episodes(SourceConfig(uris=[str(synth_dir / "v30"), str(twin)]))
    assert [r.status for r in records] == ["ok"] * 4 + ["failed"]
    assert "dataset id collides with" in records[-1].error


def test_s3_failures_never_show_credentials(synth_s3, s3, s3_options, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    with s3.open(f"{BUCKET}/broken/ds/meta/info.json", "wb") as f:
        f.write(b'{"codebase_version": "v3.0", "fps": 10, "features": {}}')
    uris = [f"s3://{BUCKET}/broken", "s3://no-such-bucket/x/ds", f"{synth_s3}/v21"]
    records = list_episodes(SourceConfig(uris=uris, storage_options=s3_options))

    errors = [r.error for r in records if r.status == "failed"]
    assert errors == [
        f"broken/ds: s3://{BUCKET}/broken/ds/meta/info.json: the dataset has no video feature",
        "x/ds: s3://no-such-bucket/x/ds/meta/info.json: not found",
    ]
    captured = capsys.readouterr()
    for text in [*errors, captured.out, captured.err, caplog.text]:
        assert S3_SECRET not in text
