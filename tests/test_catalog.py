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


# ---- names are literal, never glob patterns -------------------------------------------------------


@pytest.fixture(scope="module")
def pattern_fleet(tmp_path_factory) -> tuple[Path, dict[str, tuple[int, ...]]]:
    """v3.0 datasets in folders named like glob patterns, beside the folders those patterns match."""
    from devkit.synth import write_v30_dataset

    base = tmp_path_factory.mktemp("patterns")
    lengths = {"pick[1]": (7,), "pick1": (11, 12), "pick*": (8, 9, 10), "pickZ": (13,)}
    for number, (name, episode_lengths) in enumerate(lengths.items()):
        # Written under a plain name, then renamed: only the reader is under test, not lerobot's writer.
        built = write_v30_dataset(base / f"build{number}", repo_id=f"synth/{number}", lengths=episode_lengths)
        (base / "fleet").mkdir(exist_ok=True)
        built.rename(base / "fleet" / name)
    return base / "fleet", lengths


def test_dataset_folders_named_like_patterns_read_their_own_metadata(pattern_fleet):
    fleet, lengths = pattern_fleet
    direct = list_episodes(SourceConfig(uris=[str(fleet / name) for name in lengths]))
    discovered = list_episodes(SourceConfig(uris=[str(fleet)]))
    for records in (direct, discovered):
        assert all(r.status == "ok" for r in records), [r.error for r in records if r.error]
        by_dataset: dict[str, list[int]] = {}
        for record in records:
            by_dataset.setdefault(record.dataset_id, []).append(record.length)
            assert record.video_uri.startswith(f"{fleet}/{record.dataset_id.split('/')[1]}/videos/")
        assert by_dataset == {f"fleet/{name}": list(n) for name, n in lengths.items()}


# ---- global index ranges ---------------------------------------------------------------------------


def _edit_v30_ranges(root: Path, ranges: dict[int, tuple[int, int]]) -> str:
    """Sets episodes' (dataset_from_index, dataset_to_index) in a v3.0 episodes index; returns its path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = next((root / "meta/episodes").rglob("*.parquet"))
    table = pq.read_table(path)
    for column, position in (("dataset_from_index", 0), ("dataset_to_index", 1)):
        values = table.column(column).to_pylist()
        for episode, bounds in ranges.items():
            values[episode] = bounds[position]
        index = table.schema.get_field_index(column)
        table = table.set_column(index, column, pa.array(values, pa.int64()))
    pq.write_table(table, path)
    return path.relative_to(root).as_posix()


@pytest.mark.parametrize(
    ("ranges", "fragment"),
    [
        # Episode 2 shifted 5 frames down: it overlaps episode 1 (lengths still agree).
        ({2: (48, 93)}, "episode 2's global index range [48, 93) overlaps or precedes episode 1's [20, 53)"),
        # Episode 0 moved past the others: disjoint, but out of episode order.
        (
            {0: (200, 220)},
            "episode 1's global index range [20, 53) overlaps or precedes episode 0's [200, 220)",
        ),
    ],
    ids=["overlap", "out_of_order"],
)
def test_v30_overlapping_or_unordered_ranges_fail_the_dataset(synth_dir, tmp_path, ranges, fragment):
    root = _copy_meta(synth_dir / "v30", tmp_path / "fleet" / "ranges")
    episodes_file = _edit_v30_ranges(root, ranges)
    records = list_episodes(SourceConfig(uris=[str(root)]))
    assert len(records) == 1 and records[0].status == "failed" and records[0].episode_index == -1
    assert records[0].error == f"fleet/ranges: {root}/{episodes_file}: {fragment}"


def test_v30_range_that_disagrees_with_the_length_fails_its_episode(synth_dir, tmp_path):
    root = _copy_meta(synth_dir / "v30", tmp_path / "fleet" / "short")
    episodes_file = _edit_v30_ranges(root, {1: (20, 50)})  # length is 33
    records = list_episodes(SourceConfig(uris=[str(root)]))
    assert [r.status for r in records] == ["ok", "failed", "ok", "ok"]
    assert records[1].error == (
        f"fleet/short: episode 1: {root}/{episodes_file}: global index range [20, 50) does not hold its "
        "length of 33 frames"
    )


def test_v21_overlapping_data_indices_fail_the_dataset(synth_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "fleet" / "v21_overlap"
    shutil.copytree(synth_dir / "v21", root)
    data = root / "data/chunk-000/episode_000002.parquet"
    table = pq.read_table(data)
    shifted = pa.array([value - 5 for value in table.column("index").to_pylist()], pa.int64())
    pq.write_table(table.set_column(table.schema.get_field_index("index"), "index", shifted), data)

    records = list_episodes(SourceConfig(uris=[str(root)]))
    assert len(records) == 1 and records[0].status == "failed"
    assert records[0].error == (
        f"fleet/v21_overlap: {data}: episode 2's global index range [48, 93) overlaps or precedes episode "
        f"1's [20, 53) (in {root}/data/chunk-000/episode_000001.parquet)"
    )


# ---- fingerprints see the stored objects ------------------------------------------------------------


def _fingerprints(uri: str, options: dict | None = None, camera: str | None = None) -> dict[int, str]:
    records = list_episodes(SourceConfig(uris=[uri], storage_options=options or {}, camera=camera))
    assert all(r.status == "ok" for r in records)
    return {r.episode_index: r.fingerprint() for r in records}


def _rewritten(data: bytes) -> bytes:
    """Other bytes of another size: a re-encode under the same name, with the same metadata."""
    return data + b"\0" * 16


def test_rewritten_v21_video_or_data_file_changes_only_its_episode(synth_dir, tmp_path):
    import pyarrow.parquet as pq

    root = tmp_path / "fleet" / "v21"
    shutil.copytree(synth_dir / "v21", root)
    before = _fingerprints(str(root))
    wrist_before = _fingerprints(str(root), camera=WRIST)

    video = root / f"videos/chunk-000/{FRONT}/episode_000001.mp4"
    video.write_bytes(_rewritten(video.read_bytes()))
    data = root / "data/chunk-000/episode_000003.parquet"
    pq.write_table(pq.read_table(data), data, compression="none")  # same rows, other bytes
    after = _fingerprints(str(root))
    assert [episode for episode in before if before[episode] != after[episode]] == [1, 3]
    # The wrist camera's episode 1 reads another video: only the shared data file of episode 3 changed.
    wrist_after = _fingerprints(str(root), camera=WRIST)
    assert [episode for episode in wrist_before if wrist_before[episode] != wrist_after[episode]] == [3]


def test_rewritten_v30_packed_video_changes_the_episodes_it_holds(synth_dir, tmp_path):
    root = tmp_path / "fleet" / "v30"
    shutil.copytree(synth_dir / "v30", root)
    before = _fingerprints(str(root))
    video = root / f"videos/{FRONT}/chunk-000/file-000.mp4"
    video.write_bytes(_rewritten(video.read_bytes()))
    after = _fingerprints(str(root))
    assert all(before[episode] != after[episode] for episode in before)  # all four share one file
    assert _fingerprints(str(root), camera=WRIST) == _fingerprints(str(root), camera=WRIST)


def test_video_missing_from_the_listing_keeps_its_episode(synth_dir, tmp_path):
    root = tmp_path / "fleet" / "gone"
    shutil.copytree(synth_dir / "v21", root)
    (root / f"videos/chunk-000/{FRONT}/episode_000002.mp4").unlink()
    records = list_episodes(SourceConfig(uris=[str(root)]))
    assert [r.status for r in records] == ["ok"] * 4
    assert records[2].source_identity.startswith("video[absent] data[size=")
    assert all(r.source_identity.startswith("video[size=") for r in records if r.episode_index != 2)


@pytest.mark.parametrize("store", ["s3", "gs"])
def test_rewritten_video_in_object_storage_changes_only_its_episode(request, synth_dir, store):
    """On moto S3 (the ETag) and the GCS emulator (the generation), from one listing per dataset."""
    from pipeline.storage import upload_dataset

    if store == "s3":
        fs, options, marker = request.getfixturevalue("s3"), request.getfixturevalue("s3_options"), "ETag="
    else:
        import gcsfs

        options, marker = request.getfixturevalue("gcs_options"), "generation="
        fs = gcsfs.GCSFileSystem(**options, use_listings_cache=False)
    uri = upload_dataset(synth_dir / "v21", fs, f"{store}://{BUCKET}/identity/v21")
    before = _fingerprints(uri, options)
    key = f"{BUCKET}/identity/v21/videos/chunk-000/{FRONT}/episode_000002.mp4"
    fs.pipe(key, _rewritten(fs.cat(key)))
    records = list_episodes(SourceConfig(uris=[uri], storage_options=options))
    after = {r.episode_index: r.fingerprint() for r in records}
    assert [episode for episode in before if before[episode] != after[episode]] == [2]
    assert marker in records[2].source_identity
