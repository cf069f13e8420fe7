"""The moto S3 fixture speaks real S3 protocol through s3fs, and pyarrow reads through it."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import BUCKET


def test_s3fs_round_trip(s3):
    table = pa.table({"episode_index": [0, 1, 2], "task": ["a", "b", "c"]})
    with s3.open(f"{BUCKET}/roundtrip/t.parquet", "wb") as f:
        pq.write_table(table, f)
    assert s3.exists(f"{BUCKET}/roundtrip/t.parquet")
    with s3.open(f"{BUCKET}/roundtrip/t.parquet", "rb") as f:
        assert pq.read_table(f).equals(table)
    s3.rm(f"{BUCKET}/roundtrip", recursive=True)
    assert not s3.exists(f"{BUCKET}/roundtrip/t.parquet")


def test_state_folder_on_s3_commits_in_one_put_and_drops_broken_markers(s3, s3_options):
    import numpy as np

    from pipeline.sinks import MARKER_SUFFIX, batch_to_table, clean_state, commit_shard, committed_state

    folder = f"s3://{BUCKET}/state-s3/_state/h/fleet/a"
    for episode in (0, 1):
        batch = {
            "dataset_id": np.array(["fleet/a"], dtype=object),
            "episode_index": np.array([episode]),
            "status": np.array(["ok"], dtype=object),
            "error": np.array([""], dtype=object),
            "fingerprint": np.array(["fp"], dtype=object),
            "attempt": np.array([1]),
        }
        commit_shard(batch_to_table(batch, "h"), folder, s3_options)
    names = sorted(path.rsplit("/", 1)[1] for path in s3.ls(folder, refresh=True))
    assert len(names) == 4 and not any(name.endswith(".tmp") for name in names)  # no temporary objects
    assert set(committed_state(folder, s3_options)) == {(0, "fp"), (1, "fp")}

    broken = next(name for name in names if name.startswith("ep-000001-") and name.endswith(MARKER_SUFFIX))
    s3.pipe(f"{folder}/{broken}", b'{"shard": "ep-0')  # truncated
    assert set(committed_state(folder, s3_options)) == {(0, "fp")}
    assert set(clean_state(folder, s3_options)[0]) == {(0, "fp")}
    assert all(
        name.startswith("ep-000000-") for name in (p.rsplit("/", 1)[1] for p in s3.ls(folder, refresh=True))
    )
    s3.rm(f"{BUCKET}/state-s3", recursive=True)


def test_storage_attempts_counts_every_request_botocore_makes():
    """``retry.storage_attempts=3`` means three requests in all, not three retries after the first."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import botocore.session
    from botocore.config import Config

    from pipeline.storage import storage_retry_options

    seen = []

    class Unavailable(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        options = storage_retry_options("s3a://bucket/x", {}, 3)
        config = Config(**options["config_kwargs"])
        client = botocore.session.get_session().create_client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{server.server_port}",
            region_name="us-east-1",
            aws_access_key_id="k",
            aws_secret_access_key="s",
            config=config,
        )
        with pytest.raises(client.exceptions.ClientError):
            client.get_object(Bucket="bucket", Key="x")
    finally:
        server.shutdown()
    assert len(seen) == 3


def test_forget_listings_drops_the_cached_sub_folders_too(s3_options):
    """What a long-lived process listed before (a report, run-record pruning, the reader) is listed again:
    ``invalidate_cache(folder)`` alone would keep the sub-folders' cached listings and miss new objects."""
    import boto3

    from pipeline.storage import filesystem_for, forget_listings, list_files

    fs, root = filesystem_for(f"s3://{BUCKET}/forget", s3_options)
    client = boto3.client("s3", endpoint_url=s3_options["endpoint_url"])  # writes past fs's cache
    client.put_object(Bucket=BUCKET, Key="forget/robot0/task0/episodes.parquet", Body=b"1")
    assert fs.ls(f"{root}/robot0") == [f"{root}/robot0/task0"]  # cached now
    assert fs.ls(f"{root}/robot0/task0") == [f"{root}/robot0/task0/episodes.parquet"]
    client.put_object(Bucket=BUCKET, Key="forget/robot0/task1/episodes.parquet", Body=b"2")
    fs.invalidate_cache(root)
    assert fs.ls(f"{root}/robot0") == [f"{root}/robot0/task0"]  # the stale listing fsspec keeps
    forget_listings(fs, root)
    assert fs.ls(f"{root}/robot0") == [f"{root}/robot0/task0", f"{root}/robot0/task1"]
    assert sorted(list_files(fs, root)) == ["robot0/task0/episodes.parquet", "robot0/task1/episodes.parquet"]


def test_after_writing_to_a_few_state_folders_only_those_are_listed_again(s3, s3_options, monkeypatch):
    """A night that scored one dataset of many lists that dataset's state folder again, not the whole
    ``_state/<hash>/`` prefix (whose pages grow with the fleet); the merged listing is what listing it
    all again gives, entry for entry (the fleet index digests it)."""
    import numpy as np

    from pipeline import relabel, sinks
    from pipeline.config import load_config
    from pipeline.fleetindex import FleetIndex, listing_digest

    output = f"s3://{BUCKET}/state-relist"
    options = "{" + ", ".join(f"{k}: '{v}'" for k, v in s3_options.items()) + "}"
    cfg = load_config([f"output.uri={output}", f"output.storage_options={options}", "model.path=fake/vlm"])

    def commit(dataset_id: str, episode: int) -> None:
        batch = {
            "dataset_id": np.array([dataset_id], dtype=object),
            "episode_index": np.array([episode]),
            "status": np.array(["ok"], dtype=object),
            "error": np.array([""], dtype=object),
            "fingerprint": np.array(["fp"], dtype=object),
            "attempt": np.array([1]),
        }
        folder = sinks.state_uri(output, "h", dataset_id)
        sinks.commit_shard(sinks.batch_to_table(batch, "h"), folder, s3_options)

    ids = [f"robot{r}/task{t}" for r in range(2) for t in range(3)]
    for dataset_id in ids:
        commit(dataset_id, 0)
    index = FleetIndex.load(output, s3_options)
    _, listed = relabel._states(cfg, "h", ids, index)
    commit("robot1/task2", 1)  # the night scored one episode of one dataset
    asked = []
    real = sinks.list_states

    def spy(*args, **kwargs):
        asked.append(args[3] if len(args) > 3 else kwargs.get("dataset_ids"))
        return real(*args, **kwargs)

    monkeypatch.setattr(relabel, "list_states", spy)
    monkeypatch.setattr(sinks, "LIST_PAGE_KEYS", 2)  # 12 objects: 6 pages of the whole prefix
    states, merged = relabel._states(cfg, "h", ["robot1/task2"], index, listed)
    assert asked == [["robot1/task2"]]
    everything = real(output, "h", s3_options)
    digests = {key: listing_digest(files) for key, files in merged.items()}
    assert digests == {key: listing_digest(files) for key, files in everything.items()}
    assert {key[0] for key in states["robot1/task2"]} == {0, 1}

    monkeypatch.setattr(sinks, "LIST_PAGE_KEYS", 1000)  # one page: listing it all again is no dearer
    relabel._states(cfg, "h", ["robot1/task2"], index, merged)
    assert asked[-1] is None
    s3.rm(f"{BUCKET}/state-relist", recursive=True)
