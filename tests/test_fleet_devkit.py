"""The fleet benchmark's devkit: the counting proxy (devkit/counting_proxy.py) and the fleet builder
(devkit/fleet.py), on moto S3."""

from __future__ import annotations

import hashlib
import socket
import threading
from pathlib import Path

import boto3
import pytest

from devkit.counting_proxy import CountSnapshot, classify, counting_proxy
from devkit.fleet import (
    add_episode,
    build_local_fleet,
    build_s3_fleet,
    catalog_rows,
    commit_labels,
    fleet_area,
    fleet_ids,
    fleet_s3,
)

BUCKET = "episodes"  # the session bucket of tests/conftest.py


@pytest.fixture
def aws_env(monkeypatch):
    """moto accepts any credentials; S3 clients need some."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)


def _client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def test_classify_names_the_s3_verb():
    assert classify("GET", "/b/k/x.parquet", {}) == ("GET", "b", "k/x.parquet")
    assert classify("GET", "/b?list-type=2&prefix=a%2Fb%2F&delimiter=%2F", {}) == ("LIST", "b", "a/b/")
    assert classify("GET", "/b?prefix=a&marker=a%2F1", {}) == ("LIST", "b", "a")  # ListObjects v1
    assert classify("GET", "/b/k?uploadId=1", {}) == ("LIST", "b", "k")  # ListParts
    assert classify("GET", "/b?location", {})[0] == "OTHER"
    assert classify("HEAD", "/b/k", {}) == ("HEAD", "b", "k")
    assert classify("PUT", "/b/k", {"x-amz-copy-source": "b/j"}) == ("COPY", "b", "k")
    assert classify("PUT", "/b/k?partNumber=1&uploadId=2", {}) == ("PUT", "b", "k")
    assert classify("POST", "/b?delete", {})[0] == "POST"
    assert classify("DELETE", "/b/k%20x", {}) == ("DELETE", "b", "k x")


def test_counting_proxy_counts_every_verb_and_forwards_bytes(s3_endpoint):
    with counting_proxy(s3_endpoint) as proxy:
        client = _client(proxy.endpoint)
        body = bytes(range(256)) * 40
        client.put_object(Bucket=BUCKET, Key="count/a/one.bin", Body=body)
        assert client.head_object(Bucket=BUCKET, Key="count/a/one.bin")["ContentLength"] == len(body)
        assert client.get_object(Bucket=BUCKET, Key="count/a/one.bin")["Body"].read() == body
        ranged = client.get_object(Bucket=BUCKET, Key="count/a/one.bin", Range="bytes=10-19")
        assert ranged["Body"].read() == body[10:20]
        listed = client.list_objects_v2(Bucket=BUCKET, Prefix="count/a/")
        assert [o["Key"] for o in listed["Contents"]] == ["count/a/one.bin"]
        client.list_objects(Bucket=BUCKET, Prefix="count/")
        client.copy_object(
            Bucket=BUCKET, Key="count/b/two.bin", CopySource={"Bucket": BUCKET, "Key": "count/a/one.bin"}
        )
        upload = client.create_multipart_upload(Bucket=BUCKET, Key="count/b/three.bin")
        part = client.upload_part(
            Bucket=BUCKET, Key="count/b/three.bin", UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 10
        )
        client.complete_multipart_upload(
            Bucket=BUCKET,
            Key="count/b/three.bin",
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
        )
        client.delete_object(Bucket=BUCKET, Key="count/b/two.bin")
        client.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "count/b/three.bin"}]})
        counts = proxy.snapshot()
        assert counts.verbs == {"PUT": 2, "HEAD": 1, "GET": 2, "LIST": 2, "COPY": 1, "POST": 3, "DELETE": 1}
        assert counts.total == 12
        assert counts.areas[(f"{BUCKET}/count", "GET")] == 2
        assert counts.area_totals() == {f"{BUCKET}/count": 11, BUCKET: 1}  # DeleteObjects: the bucket

        # Phases: reset, snapshots subtract, a focus counts one prefix's requests apart.
        proxy.reset()
        assert proxy.snapshot().total == 0
        proxy.focus("count/a/")
        before = proxy.snapshot()
        client.head_object(Bucket=BUCKET, Key="count/a/one.bin")
        client.list_objects_v2(Bucket=BUCKET, Prefix="count/a/")
        client.list_objects_v2(Bucket=BUCKET, Prefix="count/b/")
        phase = proxy.snapshot() - before
        assert phase.verbs == {"HEAD": 1, "LIST": 2}
        assert phase.focus == {"HEAD": 1, "LIST": 1}
        assert CountSnapshot.from_json(phase.to_json()) == phase
    port = int(proxy.endpoint.rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError):  # stopped: nothing listens there any more
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_counting_proxy_counts_concurrent_clients_exactly(s3_endpoint):
    with counting_proxy(s3_endpoint) as proxy:
        _client(proxy.endpoint).put_object(Bucket=BUCKET, Key="count/many.txt", Body=b"many")
        proxy.reset()

        def read() -> None:
            client = _client(proxy.endpoint)
            for _ in range(25):
                assert client.get_object(Bucket=BUCKET, Key="count/many.txt")["Body"].read() == b"many"

        threads = [threading.Thread(target=read) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert proxy.snapshot().verbs == {"GET": 200}


def test_fleet_area_names_the_pipelines_folders():
    assert fleet_area("labels", "topreward/_state/abc/robot0/task1/ep-000000-x.done.json") == "labels:_state"
    assert fleet_area("labels", "topreward/_runs/2026") == "labels:_runs"
    assert fleet_area("labels", "topreward/robot0/task1/curated/current.json") == "labels:curated"
    assert fleet_area("labels", "topreward/robot0/task1/episodes.parquet") == "labels:tables"
    assert fleet_area("fleet", "fleet/robot0/task1/meta/info.json") == "fleet:meta"
    assert fleet_area("fleet", "fleet/robot0/task1/videos/cam/chunk-000/file-000.mp4") == "fleet:data+videos"
    assert fleet_area("labels", "topreward/_index.parquet") == "labels:_index"
    assert fleet_area("fleet", "fleet/") == "fleet:other"


def _local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_fleet_on_s3_looks_like_uploaded_datasets(synth_dir, aws_env):
    template = synth_dir / "v30"
    files = _local_files(template)
    with fleet_s3("src", "out") as server:
        roots = build_s3_fleet(server, template, "src", 25)
        assert roots[0] == "s3://src/fleet/robot0/task0" and roots[-1] == "s3://src/fleet/robot2/task4"
        assert [root.split("/", 4)[-1] for root in roots] == fleet_ids(25)
        assert server.count("src") == {
            "objects": 25 * len(files),
            "bytes": 25 * sum(map(len, files.values())),
        }
        client = _client(server.endpoint)
        for name, data in files.items():
            head = client.head_object(Bucket="src", Key=f"fleet/robot1/task7/{name}")
            assert head["ContentLength"] == len(data)
            assert head["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
            assert head["LastModified"] is not None
        info = client.get_object(Bucket="src", Key="fleet/robot2/task3/meta/info.json")["Body"].read()
        assert info == files["meta/info.json"]
        robots = client.list_objects_v2(Bucket="src", Prefix="fleet/", Delimiter="/")["CommonPrefixes"]
        assert [p["Prefix"] for p in robots] == ["fleet/robot0/", "fleet/robot1/", "fleet/robot2/"]
        assert server.snapshot().verbs == {"HEAD": len(files), "GET": 1, "LIST": 1}
        server.reset()
        assert server.snapshot().total == 0

        # The pipeline's catalog reads every replica, with the template's episodes.
        direct = server.storage_options(counted=False)
        rows = catalog_rows(roots[:3], direct)
        assert len(rows) == 3 * 4 and {row["dataset_id"] for row in rows} == set(fleet_ids(3))
        assert server.snapshot().total == 0  # straight to moto: uncounted

        # Labels committed for the runs: one marker per dataset naming every (episode, fingerprint).
        from pipeline.sinks import committed_state, state_uri

        assert commit_labels(rows, "s3://out/labels", "hash0", direct, model="tiny") == 3
        for dataset_id in fleet_ids(3):
            state = committed_state(state_uri("s3://out/labels", "hash0", dataset_id), direct)
            expected = {(r["episode_index"], r["fingerprint"]) for r in rows if r["dataset_id"] == dataset_id}
            assert set(state) == expected and {e.status for e in state.values()} == {"ok"}

        # One more episode, as LeRobot's recorder resumes a dataset: new files, then info.json last.
        server.focus("/robot0/task1/")
        written = add_episode(roots[1], server.storage_options())
        assert written[-1] == f"{roots[1]}/meta/info.json"
        assert {uri.rsplit("/", 1)[-1] for uri in written} >= {
            "file-001.parquet",
            "file-001.mp4",
            "stats.json",
        }
        counts = server.snapshot()
        assert counts.verb("PUT") == len(written) and counts.focus == counts.verbs
        grown = catalog_rows([roots[1]], direct)
        before = {(r["episode_index"], r["fingerprint"]) for r in rows if r["dataset_id"] == "robot0/task1"}
        after = {(r["episode_index"], r["fingerprint"]) for r in grown}
        assert len(after) == 5 and before < after  # the old episodes' fingerprints are unchanged


def test_indexed_listings_answer_as_moto_does(synth_dir, aws_env):
    """The server's listing index (devkit.fleet.index_listings) gives moto's own answers, page by page."""
    cases = [
        ("fleet/robot0/task1", "/"),
        ("fleet/robot0/task1/", "/"),
        ("fleet/robot0/task1/", ""),
        ("fleet/", "/"),
        ("fleet/robot1/", "/"),
        ("fle", ""),
        ("", "/"),
        ("zzz", ""),
    ]
    answers = []
    for indexed in (False, True):
        with fleet_s3("src", indexed=indexed) as server:
            build_s3_fleet(server, synth_dir / "v30", "src", 12)
            client = _client(server.direct)
            client.put_object(Bucket="src", Key="fleet/robot0/task1/zz", Body=b"x")
            client.put_object(Bucket="src", Key="fleet/robot0/task10/a", Body=b"x")
            client.put_object(Bucket="src", Key="fleet/robot1/x", Body=b"x")
            client.delete_object(Bucket="src", Key="fleet/robot0/task1/meta/info.json")
            client.delete_objects(
                Bucket="src", Delete={"Objects": [{"Key": "fleet/robot0/task2/meta/info.json"}]}
            )
            pages = []
            for prefix, delimiter in cases:
                for size in (1, 3, 1000):
                    paginator = client.get_paginator("list_objects_v2")
                    for page in paginator.paginate(
                        Bucket="src", Prefix=prefix, Delimiter=delimiter, PaginationConfig={"PageSize": size}
                    ):
                        pages.append(
                            (
                                [(o["Key"], o["ETag"], o["Size"]) for o in page.get("Contents", [])],
                                [p["Prefix"] for p in page.get("CommonPrefixes", [])],
                                page["IsTruncated"],
                            )
                        )
                after = client.list_objects_v2(Bucket="src", Prefix=prefix, StartAfter="fleet/robot0/task5")
                pages.append([o["Key"] for o in after.get("Contents", [])])
            answers.append(pages)
    assert answers[0] == answers[1]
    assert len(answers[0]) > 100


def test_local_fleet_copies_the_template(synth_dir, tmp_path):
    roots = build_local_fleet(synth_dir / "v30", tmp_path, 3)
    assert [Path(root).relative_to(tmp_path / "fleet").as_posix() for root in roots] == fleet_ids(3)
    assert all(_local_files(Path(root)) == _local_files(synth_dir / "v30") for root in roots)
