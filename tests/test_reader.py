"""The metadata reader: LeRobot's constants, object identities, literal listings, typed records."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from devkit.synth import DEFAULT_CAMERAS, task_for_episode
from pipeline.reader import (
    MetadataError,
    object_identity,
    read_dataset,
)
from pipeline.reader.dataset import episodes_index_files
from pipeline.storage import filesystem_for, list_files, list_folder, read_json_files
from tests.conftest import BUCKET, PROJECT_ROOT, SYNTH_FPS, SYNTH_LENGTHS

FRONT, WRIST = DEFAULT_CAMERAS


def test_path_constants_are_lerobots():
    import lerobot.datasets.utils as lerobot_utils

    from pipeline.reader import dataset

    for name in ("INFO_PATH", "EPISODES_DIR", "LEGACY_EPISODES_PATH", "DEFAULT_CHUNK_SIZE"):
        assert getattr(dataset, name) == getattr(lerobot_utils, name), name


def test_reader_and_catalog_do_not_import_lerobot():
    code = (
        "import sys, pipeline.reader, pipeline.catalog; "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('lerobot', 'torch', 'ray', 'av')); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROJECT_ROOT)


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        # s3fs listing entry
        (
            {"name": "b/k", "Key": "b/k", "size": 10, "type": "file", "ETag": '"abc"', "LastModified": 1},
            'size=10;ETag="abc"',
        ),
        # gcsfs listing entry: the generation wins over md5Hash, etag and mtime
        (
            {
                "name": "b/k",
                "size": 10,
                "type": "file",
                "generation": "1712",
                "md5Hash": "x",
                "etag": "C",
                "mtime": 5,
            },
            "size=10;generation=1712",
        ),
        ({"name": "b/k", "size": 10, "type": "file", "md5Hash": "q1w2"}, "size=10;md5Hash=q1w2"),
        # local disk
        ({"name": "/d/k", "size": 10, "type": "file", "mtime": 1795.25, "ino": 7}, "size=10;mtime=1795.25"),
        ({"name": "k", "size": 3, "type": "file"}, "size=3"),
    ],
)
def test_object_identity_per_backend(info, expected):
    assert object_identity(info) == expected


def test_metadata_error_names_file_and_reason():
    err = MetadataError("s3://b/ds/meta/info.json", "not found", "v3.0")
    assert str(err) == "s3://b/ds/meta/info.json: not found"
    again = pickle.loads(pickle.dumps(err))
    assert (again.file_uri, again.reason, again.codebase_version) == (err.file_uri, err.reason, "v3.0")


def _tree(base: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        (base / relative).parent.mkdir(parents=True, exist_ok=True)
        (base / relative).write_text(text)


def test_listings_and_json_files_take_names_literally(tmp_path):
    """Folders named like glob patterns read their own files, never a neighbour's."""
    _tree(
        tmp_path,
        {
            "runs[1]/a.json": '{"who": "runs[1]"}',
            "runs1/b.json": '{"who": "runs1"}',
            "runs*/c.json": '{"who": "runs*"}',
            "runsZ/d.json": '{"who": "runsZ"}',
            "runsZ/e.done.json": '{"who": "runsZ done"}',
            "runsZ/sub/f.json": '{"who": "nested"}',
        },
    )
    for name in ("runs[1]", "runs1", "runs*"):
        assert read_json_files(str(tmp_path / name), ".json", {}) == [{"who": name}]
    assert read_json_files(str(tmp_path / "runsZ"), ".done.json", {}) == [{"who": "runsZ done"}]
    assert read_json_files(str(tmp_path / "runsZ"), ".json", {}) == [{"who": "runsZ"}, {"who": "runsZ done"}]
    assert read_json_files(str(tmp_path / "runs?"), ".json", {}) == []

    fs, base = filesystem_for(str(tmp_path), {})
    assert list(list_files(fs, f"{base}/runs[1]")) == ["a.json"]
    assert list(list_files(fs, f"{base}/runsZ")) == ["d.json", "e.done.json", "sub/f.json"]
    assert list(list_files(fs, f"{base}/runsZ", maxdepth=1)) == ["d.json", "e.done.json"]
    assert list_files(fs, f"{base}/nowhere") == {}
    assert [entry["name"].rsplit("/", 1)[1] for entry in list_folder(fs, f"{base}/runs*")] == ["c.json"]
    assert list_folder(fs, f"{base}/nowhere") == []


@pytest.mark.parametrize("name", ["v30", "v21"])
def test_read_dataset_gives_every_camera_and_the_data_file(synth_dir, name):
    meta = read_dataset(str(synth_dir / name), all_cameras=True)

    assert (meta.codebase_version, meta.fps, meta.chunks_size) == (
        {"v30": "v3.0", "v21": "v2.1"}[name],
        SYNTH_FPS,
        1000,
    )
    assert meta.video_keys == meta.cameras == (FRONT, WRIST) and meta.errors == ()
    assert meta.dataset_id == f"{synth_dir.name}/{name}"
    start = 0
    for episode, length in zip(meta.episodes, SYNTH_LENGTHS, strict=True):
        i = episode.episode_index
        assert episode.ok and (episode.tasks, episode.length) == ((task_for_episode(i),), length)
        assert (episode.dataset_from_index, episode.dataset_to_index) == (start, start + length)
        assert (synth_dir / name / episode.data_path).is_file()
        for camera in (FRONT, WRIST):
            span = episode.videos[camera]
            assert (synth_dir / name / span.path).is_file() and f"/{camera}/" in span.path
            assert span.identity.startswith("size=") and "mtime=" in span.identity
            offset = start / SYNTH_FPS if name == "v30" else 0.0
            assert (span.from_s, span.to_s) == pytest.approx((offset, offset + length / SYNTH_FPS))
        if name == "v30":
            assert episode.data_path == "data/chunk-000/file-000.parquet" and episode.data_rows is None
            assert episode.source_identity(FRONT) == f"video[{episode.videos[FRONT].identity}]"
        else:
            assert episode.data_path == f"data/chunk-000/episode_{i:06d}.parquet"
            assert episode.data_rows == (0, length) and episode.data_identity.startswith("size=")
            assert episode.source_identity(FRONT).endswith(f"data[{episode.data_identity}]")
        start += length


def test_read_dataset_camera_and_episode_filter(synth_dir):
    meta = read_dataset(str(synth_dir / "v21"), camera=WRIST, episodes=[2, 0, 99])
    assert meta.cameras == (WRIST,)
    assert [(e.episode_index, list(e.videos)) for e in meta.episodes] == [(0, [WRIST]), (2, [WRIST])]
    with pytest.raises(ValueError, match="not both"):
        read_dataset(str(synth_dir / "v21"), camera=WRIST, all_cameras=True)


def test_read_dataset_errors_carry_file_reason_and_version(synth_dir, tmp_path):
    with pytest.raises(MetadataError) as caught:
        read_dataset(str(tmp_path / "no" / "ds"))
    assert str(caught.value) == f"{tmp_path}/no/ds/meta/info.json: not found"

    root = tmp_path / "fleet" / "odd"
    (root / "meta").mkdir(parents=True)
    info = json.loads((synth_dir / "v30" / "meta/info.json").read_text())
    (root / "meta/info.json").write_text(json.dumps({**info, "fps": 0}))
    with pytest.raises(MetadataError, match=r"meta/info.json: fps 0 is out of range") as caught:
        read_dataset(str(root))
    assert caught.value.codebase_version == "v3.0"


def test_episodes_index_files_are_listed_literally(tmp_path):
    """The v3.0 index files other readers (the curated builder's stats) take: */*.parquet, own folder."""
    _tree(
        tmp_path,
        {
            "pick[1]/meta/episodes/chunk-000/file-000.parquet": "",
            "pick[1]/meta/episodes/chunk-000/notes.txt": "",
            "pick[1]/meta/episodes/stray.parquet": "",
            "pick[1]/meta/episodes/chunk-000/deep/file-9.parquet": "",
            "pick1/meta/episodes/chunk-000/file-001.parquet": "",
        },
    )
    fs, base = filesystem_for(str(tmp_path), {})
    assert episodes_index_files(fs, f"{base}/pick[1]/") == ["meta/episodes/chunk-000/file-000.parquet"]
    assert episodes_index_files(fs, f"{base}/nowhere") == []


def test_a_file_rewritten_since_this_threads_last_listing_is_read_as_it_is_now(s3, s3_options, synth_dir):
    """fsspec keeps one filesystem per thread, with its listings cached: a pool thread reading a dataset
    must not open a file by an ETag its filesystem cached before the file was rewritten (S3 then answers
    412 and the dataset would fail with ``FileExpired``)."""
    import boto3

    from pipeline.storage import upload_dataset

    root = f"s3://{BUCKET}/stale-listing/v30"
    upload_dataset(synth_dir / "v30", s3, root)
    fs, path = filesystem_for(root, s3_options)
    list_files(fs, path)  # what an earlier night's read left in this thread's filesystem
    info = json.loads((synth_dir / "v30" / "meta" / "info.json").read_text())
    info["robot_type"] = "rewritten"  # as a recorder rewrites info.json when it adds an episode
    client = boto3.client("s3", endpoint_url=s3_options["endpoint_url"])  # not through that filesystem
    client.put_object(Bucket=BUCKET, Key="stale-listing/v30/meta/info.json", Body=json.dumps(info).encode())

    fresh = filesystem_for(root, {**s3_options, "skip_instance_cache": True})[0]  # the catalog's listing
    for listing in (None, list_files(fresh, path)):
        meta = read_dataset(root, s3_options, listing=listing)
        assert meta.info["robot_type"] == "rewritten" and not meta.errors
