"""Committed shards: markers, fingerprints, attempts, leftovers, and writes that fail, without Ray."""

import json
import logging
import os
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.sinks import (
    MARKER_SUFFIX,
    SHARD_SCHEMA,
    batch_to_table,
    clean_state,
    commit_shard,
    committed_state,
    read_rows,
    shard_name,
    state_uri,
    write_shards,
)


def _batch(episodes, status, scored_at=None, fingerprint="fp", attempt=1):
    size = len(episodes)
    return {
        "dataset_id": np.array(["fleet/a"] * size, dtype=object),
        "episode_index": np.array(episodes),
        "status": np.array(status, dtype=object),
        "error": np.array(
            ["" if s == "ok" else f"boom {e}" for e, s in zip(episodes, status, strict=True)], dtype=object
        ),
        "length": np.array([3] * size),
        "dataset_from_index": np.array([3 * e for e in episodes]),
        "frame_progress": np.array([np.array([0.0, 0.5, 1.0], np.float32)] * size, dtype=object),
        "scored_at": np.array([scored_at] * size, dtype=object),
        "fingerprint": np.array([fingerprint] * size, dtype=object),
        "attempt": np.array([attempt] * size),
    }


def test_shard_names_are_deterministic_in_what_the_shard_holds():
    assert shard_name([3, 1], ["a", "b"], [1, 1]) == shard_name([1, 3], ["b", "a"], [1, 1])
    assert shard_name([1, 2], ["a", "a"], [1, 1]).startswith("ep-000001-")
    # A new attempt or a changed episode never lands on an older shard's name.
    assert shard_name([1], ["a"], [1]) != shard_name([1], ["a"], [2])
    assert shard_name([1], ["a"], [1]) != shard_name([1], ["b"], [1])


def test_batch_table_has_the_shard_schema_and_utc_stamps():
    stamp = datetime(2026, 11, 24, 3, 0)
    table = batch_to_table(_batch([0, 1], ["ok", "failed"], scored_at=stamp), "abc123")
    assert table.schema == SHARD_SCHEMA
    assert table.column("config_hash").to_pylist() == ["abc123", "abc123"]
    assert table.column("scored_at")[0].as_py() == stamp.replace(tzinfo=UTC)


def test_an_all_failed_batch_with_nan_stamps_is_committed(tmp_path):
    # Ray turns an all-None object column into float NaN when every row of a batch failed.
    batch = _batch([4, 5], ["failed", "failed"])
    batch["scored_at"] = np.array([np.nan, np.nan])
    out = write_shards(batch, str(tmp_path), "h", {})
    assert list(out["status"]) == ["failed", "failed"]
    state = committed_state(str(tmp_path / "_state" / "h" / "fleet" / "a"), {})
    assert {key: entry.error for key, entry in state.items()} == {(4, "fp"): "boom 4", (5, "fp"): "boom 5"}


def test_ok_wins_attempts_count_and_fingerprints_separate(tmp_path):
    folder = str(tmp_path / "state")
    early = datetime.now(UTC) - timedelta(hours=1)
    commit_shard(batch_to_table(_batch([0, 1], ["ok", "failed"], scored_at=early), "h"), folder, {})
    commit_shard(batch_to_table(_batch([1], ["failed"], attempt=2), "h"), folder, {})
    state = committed_state(folder, {})
    assert state[(0, "fp")].status == "ok"
    assert (state[(1, "fp")].status, state[(1, "fp")].attempts) == ("failed", 2)

    # The retried episode 1 succeeds: the ok row replaces the failures, nothing is duplicated.
    commit_shard(batch_to_table(_batch([1], ["ok"], scored_at=datetime.now(UTC), attempt=3), "h"), folder, {})
    # Episode 0 rewritten in the source: a new fingerprint is a separate entry, the old one stays apart.
    commit_shard(batch_to_table(_batch([0], ["ok"], fingerprint="new"), "h"), folder, {})
    state = committed_state(folder, {})
    assert state[(1, "fp")].status == "ok"
    assert {key for key in state} == {(0, "fp"), (1, "fp"), (0, "new")}

    rows = read_rows(folder, [state[(0, "new")], state[(1, "fp")]], {})
    assert rows.column("episode_index").to_pylist() == [0, 1]
    assert rows.column("fingerprint").to_pylist() == ["new", "fp"]
    assert rows.column("status").to_pylist() == ["ok", "ok"]


def test_leftovers_of_a_killed_write_are_removed_and_never_read(tmp_path):
    folder = tmp_path / "state"
    commit_shard(batch_to_table(_batch([0], ["ok"]), "h"), str(folder), {})
    # A crash between the rename and the marker, and one during the temp write.
    pq.write_table(batch_to_table(_batch([2], ["ok"]), "h"), folder / "ep-000002-orphan.parquet")
    (folder / ".ep-000003-x.123.tmp").write_bytes(b"partial")
    assert set(committed_state(str(folder), {})) == {(0, "fp")}
    assert set(clean_state(str(folder), {})[0]) == {(0, "fp")}  # and the two leftovers are gone
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith("ep-000000")) == []
    assert set(committed_state(str(folder), {})) == {(0, "fp")}
    assert clean_state(str(tmp_path / "nothing"), {}) == ({}, [])


def test_a_plan_cleans_and_reads_the_state_reading_each_marker_once(tmp_path, monkeypatch):
    import fsspec.implementations.local as local

    folder = tmp_path / "state"
    for episode in (0, 1):
        commit_shard(batch_to_table(_batch([episode], ["ok"]), "h"), str(folder), {})
    pq.write_table(batch_to_table(_batch([2], ["ok"]), "h"), folder / "ep-000002-orphan.parquet")
    (folder / ".ep-000003-x.123.tmp").write_bytes(b"partial")
    reads = []
    original = local.LocalFileSystem.cat_file
    monkeypatch.setattr(
        local.LocalFileSystem,
        "cat_file",
        lambda fs, path, *a, **k: reads.append(path) or original(fs, path, *a, **k),
    )
    state, _ = clean_state(str(folder), {})
    assert set(state) == {(0, "fp"), (1, "fp")}
    assert sorted(os.path.basename(path) for path in reads) == sorted(
        name for name in os.listdir(folder) if name.endswith(MARKER_SUFFIX)
    )  # each marker once, no second pass for the leftovers
    assert not any(name.endswith(".tmp") or "orphan" in name for name in os.listdir(folder))
    assert committed_state(str(folder), {}) == state


def test_a_marker_that_does_not_parse_counts_as_absent_and_is_removed(tmp_path, caplog):
    # A folder named like a glob pattern, beside one it would match: each reads only its own markers.
    folder, neighbour = tmp_path / "fleet" / "pick[1]", tmp_path / "fleet" / "pick1"
    commit_shard(batch_to_table(_batch([9], ["ok"]), "h"), str(neighbour), {})
    for episode in range(4):
        commit_shard(batch_to_table(_batch([episode], ["ok"]), "h"), str(folder), {})
    markers = sorted(folder.glob(f"*{MARKER_SUFFIX}"))
    # A marker cut short by a crash of a version that wrote it in place, one that is not JSON (a bad
    # disk), one naming another shard, and one with a null where its attempt number belongs.
    markers[0].write_bytes(markers[0].read_bytes()[:40])
    markers[1].write_bytes(b"\xff\xfe\x00garbage")
    foreign = json.loads(markers[2].read_text())
    markers[2].write_text(json.dumps({**foreign, "shard": "../elsewhere.parquet"}))
    nulls = json.loads(markers[3].read_text())
    markers[3].write_text(json.dumps({**nulls, "attempts": [None]}))

    with caplog.at_level(logging.WARNING, logger="pipeline.sinks"):
        assert committed_state(str(folder), {}) == {}  # every episode is scored again
    warned = "\n".join(record.getMessage() for record in caplog.records)
    assert all(f"unreadable shard marker {marker}" in warned for marker in markers), warned

    # The next run removes each broken marker with its shard, and reads the folder without warnings.
    assert clean_state(str(folder), {})[0] == {}
    assert list(folder.iterdir()) == []
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipeline.sinks"):
        assert committed_state(str(folder), {}) == {}
    assert caplog.records == []
    assert set(committed_state(str(neighbour), {})) == {(9, "fp")}


class _Killed(BaseException):
    """Stands for the process dying at this point."""


def test_the_marker_is_written_in_one_step_after_its_shard(tmp_path, monkeypatch, caplog):
    folder = tmp_path / "state"
    with caplog.at_level(logging.DEBUG, logger="pipeline.atomic"):
        shard = commit_shard(batch_to_table(_batch([0], ["ok"]), "h"), str(folder), {})
    steps = [r.getMessage() for r in caplog.records if r.getMessage().startswith("publish step ")]
    marker = shard.removesuffix(".parquet") + MARKER_SUFFIX
    assert steps == [f"publish step shard {shard}", f"publish step marker {marker}"]

    # Killed while the marker is being written: its bytes are whole in a temporary file and the final
    # name does not exist yet, so no reader can find half a marker; the shard is then a leftover.
    real_replace = os.replace

    def replace(source: str, destination: str) -> None:
        if destination.endswith(MARKER_SUFFIX):
            assert not os.path.exists(destination)
            with open(source, "rb") as f:
                assert json.load(f)["episodes"] == [1]
            raise _Killed
        real_replace(source, destination)

    monkeypatch.setattr("pipeline.atomic.os.replace", replace)
    with pytest.raises(_Killed):
        commit_shard(batch_to_table(_batch([1], ["ok"]), "h"), str(folder), {})
    monkeypatch.undo()
    assert set(committed_state(str(folder), {})) == {(0, "fp")}
    assert set(clean_state(str(folder), {})[0]) == {(0, "fp")}
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [shard.rsplit("/", 1)[1], marker.rsplit("/", 1)[1]]
    )


def test_state_folders_stay_under_the_output():
    assert state_uri("s3://out", "h", "fleet/a") == "s3://out/_state/h/fleet/a"
    with pytest.raises(ValueError, match="not under the output"):
        state_uri("s3://out", "h", "../../../elsewhere")


def test_a_shard_that_cannot_be_written_comes_back_failed(tmp_path):
    # The output "folder" is a file: every write under it fails, as on a storage outage.
    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder")
    out = write_shards(_batch([0, 1], ["ok", "ok"]), str(blocked), "h", {})
    assert list(out["status"]) == ["failed", "failed"]
    # Each row names its own episode, then the folder and the reason.
    for episode, error in zip([0, 1], out["error"], strict=True):
        assert f"fleet/a episode {episode}: writing a shard under" in error and str(blocked) in error


def test_missing_state_folder_is_empty(tmp_path):
    assert committed_state(str(tmp_path / "nothing"), {}) == {}
    assert read_rows(str(tmp_path / "nothing"), [], {}).num_rows == 0
