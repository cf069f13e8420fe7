"""The run record: the run's resolved config without secrets, and the reader later jobs take settings from."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import pytest

from pipeline import runrecord
from pipeline.config import config_with_recorded, load_config
from pipeline.layout import RECORD_FILE, OutputLayout
from pipeline.runrecord import RecordedRun, RunRecord, prune_run_records, published_settings, without_secrets

SECRETS = ("AKIA-very-secret-key-id", "s3cr3t-value-never-written", "session-token-xyz", "hunter2-password")


def _secret_cfg(output: Path):
    """A resolved run config whose storage options hold secrets, nested ones too."""
    options = (
        "{endpoint_url: 'http://minio:9000', region_name: eu-west-1, anon: false,"
        f" key: '{SECRETS[0]}', secret: '{SECRETS[1]}',"
        f" client_kwargs: {{aws_session_token: '{SECRETS[2]}', verify: false}},"
        f" config_kwargs: {{proxies: {{db_password: '{SECRETS[3]}'}}}}}}"
    )
    return load_config(
        [
            f"output.uri={output}",
            f"output.storage_options={options}",
            f"source.storage_options={options}",
            "source.uris=[s3://fleet/so100]",
            "model.device=cpu",
            "model.dtype=float32",
            "success.threshold=-6.2",
        ]
    )


def _all_bytes(folder: Path) -> bytes:
    return b"\n".join(path.read_bytes() for path in folder.rglob("*") if path.is_file())


def test_secrets_are_left_out_of_storage_options_at_every_depth():
    options = {
        "endpoint_url": "e",
        "Secret_Access_Key": "x",
        "client_kwargs": {"token": "t", "verify": False},
    }
    assert without_secrets(options) == {"endpoint_url": "e", "client_kwargs": {"verify": False}}


def test_the_record_holds_the_config_and_no_secret_or_command_line(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("sys.argv", ["jobs.relabel", f"source.storage_options={{secret: {SECRETS[1]}}}"])
    output = tmp_path / "out"
    cfg = _secret_cfg(output)
    caplog.set_level(logging.DEBUG)
    record = RunRecord(str(output), {}, "abc123", config=asdict(cfg), placement={"device": "cpu"})
    uri = record.finish("completed")

    assert uri == OutputLayout(str(output)).run_record(record.run_id)
    written = _all_bytes(output)
    assert written and not any(secret.encode() in written for secret in SECRETS)
    assert not any(secret in caplog.text for secret in SECRETS)
    saved = json.loads(Path(uri).read_text())
    assert "argv" not in saved and saved["placement"] == {"device": "cpu"}
    for section in ("source", "output"):
        assert saved["config"][section]["storage_options"] == {
            "endpoint_url": "http://minio:9000",
            "region_name": "eu-west-1",
            "anon": False,
            "client_kwargs": {"verify": False},
            "config_kwargs": {"proxies": {}},
        }
    assert saved["config"]["model"]["dtype"] == "float32" and saved["config"]["success"]["threshold"] == -6.2


def _publish_record(output: Path, dataset_id: str, **fields) -> None:
    folder = output / dataset_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RECORD_FILE).write_text(json.dumps({"protocol": 2, "digest": "d"} | fields))


def test_published_settings_return_the_publishing_runs_config(tmp_path):
    output = tmp_path / "out"
    cfg = _secret_cfg(output)
    record = RunRecord(str(output), {}, "abc123", config=asdict(cfg))
    record.write()
    _publish_record(output, "so100/pick_cube", run_id=record.run_id)

    for uri in (output / "so100" / "pick_cube", output / "so100" / "pick_cube" / "episodes.parquet"):
        found = published_settings(str(uri), {})
        assert found == RecordedRun(record.run_id, found.config, "abc123", record.uri)
    assert found.config["success"]["threshold"] == -6.2
    assert "secret" not in found.config["source"]["storage_options"]

    # What a report job does with it: the run's settings under the command line's.
    job_cfg, explicit = config_with_recorded(found.config, ["success.threshold=-3"])
    assert (job_cfg.success.threshold, explicit) == (-3.0, ["success.threshold"])
    assert job_cfg.model.dtype == "float32" and job_cfg.source.storage_options["endpoint_url"]
    assert not {"key", "secret"} & set(job_cfg.source.storage_options)


def test_published_settings_are_none_without_a_recorded_run(tmp_path):
    output = tmp_path / "out"
    assert published_settings(str(output / "a" / "never"), {}) is None  # never published
    _publish_record(output, "a/old")  # published before runs were named
    assert published_settings(str(output / "a" / "old"), {}) is None
    _publish_record(output, "a/lost", run_id="20260101T000000Z-000000")  # its record is gone
    assert published_settings(str(output / "a" / "lost"), {}) is None
    runs = output / "_runs"
    runs.mkdir()
    (runs / "20260102T000000Z-000000.json").write_text(json.dumps({"run_id": "x", "argv": ["old format"]}))
    _publish_record(output, "a/argv", run_id="20260102T000000Z-000000")  # a record of the argv era
    assert published_settings(str(output / "a" / "argv"), {}) is None
    with pytest.raises(ValueError, match="not inside"):
        published_settings("/x", {})


def test_a_run_with_secret_storage_options_writes_and_logs_none(s3, s3_options, tiny_model_dir, caplog):
    """A whole run on S3 (a source prefix with no dataset in it: no Ray needed) leaves no secret in any
    object under the output, nor in the log."""
    from pipeline.relabel import format_summary, run
    from tests.conftest import BUCKET, relabel_config

    output = f"s3://{BUCKET}/secret-run"
    source = f"s3://{BUCKET}/no-datasets-here"
    cfg = relabel_config(source, output, tiny_model_dir, s3_options, "ray.scorer_num_gpus=0")
    caplog.set_level(logging.DEBUG, logger="pipeline")
    summary = run(cfg)
    # The pipeline's own lines (botocore's DEBUG lines carry the key id in signed headers by design).
    lines = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("pipeline"))
    secrets = [s3_options["key"], s3_options["secret"]]
    objects = s3.find(f"{BUCKET}/secret-run")
    assert any(path.endswith(".json") and "/_runs/" in path for path in objects)
    for path in objects:
        assert not any(secret.encode() in s3.cat_file(path) for secret in secrets), path
    assert lines and not any(secret in lines or secret in format_summary(summary) for secret in secrets)
    (record,) = [json.loads(s3.cat_file(p)) for p in objects if "/_runs/" in p]
    assert record["status"] == "completed" and record["placement"] is None
    assert record["config"]["output"]["storage_options"]["endpoint_url"] == s3_options["endpoint_url"]
    assert (record["config"]["model"]["device"], record["config"]["model"]["dtype"]) == ("cpu", "float32")


def _run(output: str, number: int, status: str = "completed", options: dict | None = None, **datasets) -> str:
    """Writes the record of run ``number`` (ids sort by number) listing ``datasets`` (id -> curated count)."""
    run_id = f"2026010{number}T000000Z-00000{number}"
    counts = {
        dataset.replace("__", "/"): {"curated_episodes": curated} for dataset, curated in datasets.items()
    }
    RunRecord(output, options or {}, "h", run_id=run_id, status=status, datasets=counts).write()
    return run_id


def _records(folder: Path) -> list[str]:
    return sorted(path.stem for path in (folder / "_runs").glob("*.json"))


def test_retention_keeps_the_newest_and_every_record_a_dataset_still_names(tmp_path, caplog):
    output = tmp_path / "out"
    runs = [_run(str(output), n, so100__pick=1, so100__place=2) for n in range(1, 7)]
    _publish_record(output, "so100/pick", run_id=runs[0])  # unchanged since the first run
    _publish_record(output, "so100/place", run_id=runs[2])
    (output / "_runs" / "notes.json").write_text("{}")  # not a run record: never touched
    caplog.set_level(logging.INFO, logger="pipeline")

    assert prune_run_records(str(output), {}, 0, runs[-1]) == []  # 0 keeps every record
    removed = prune_run_records(str(output), {}, 2, runs[-1])

    assert removed == [runs[1], runs[3]]
    assert _records(output) == sorted([runs[0], runs[2], runs[4], runs[5], "notes"])
    assert "2 removed (older than the 2 most recent" in caplog.text and "2 older kept" in caplog.text
    # What readers need still resolves; a second pass finds nothing more to remove.
    assert published_settings(str(output / "so100" / "pick"), {}).run_id == runs[0]
    assert prune_run_records(str(output), {}, 2, runs[-1]) == []


def test_retention_never_removes_the_current_run_and_reads_only_what_the_caller_does_not_know(
    tmp_path, monkeypatch
):
    output = tmp_path / "out"
    runs = [_run(str(output), n, a__x=1, a__gone=None) for n in range(1, 5)]
    _publish_record(output, "a/x", run_id=runs[0])
    _publish_record(output, "a/gone", run_id=runs[1])  # impossible: run 2 recorded it as not published
    read = []
    real = runrecord._read_all

    def counted(fs, paths):
        read.extend(paths)
        return real(fs, paths)

    monkeypatch.setattr(runrecord, "_read_all", counted)

    # The current run is the oldest (a clock set back): still kept. The caller knows what a/x names.
    removed = prune_run_records(str(output), {}, 1, runs[0], published={"a/x": runs[0]})

    assert removed == [runs[1], runs[2]] and _records(output) == [runs[0], runs[3]]
    assert not any(path.endswith(RECORD_FILE) for path in read)  # a/x known, a/gone not published by them
    assert not any(path.endswith(f"{runs[0]}.json") for path in read)  # known in use: not even read


def test_retention_checks_every_dataset_for_a_run_that_left_no_usable_record(tmp_path):
    output = tmp_path / "out"
    killed = _run(str(output), 1, status="running")  # killed outright: its record lists nothing
    lost = _run(str(output), 2, status="running")
    stopped = _run(str(output), 3, status="stopped", b__y=None)  # a publish may have landed after the stop
    unreadable = "20260104T000000Z-000004"
    (output / "_runs" / f"{unreadable}.json").write_text('{"run_id": "cut sho')
    newest = _run(str(output), 5)
    _publish_record(output, "robot/task", run_id=killed)  # published before the driver died
    _publish_record(output, "b/y", run_id=stopped)
    (output / "_state" / "h" / "robot").mkdir(parents=True)  # pipeline folders are no datasets

    removed = prune_run_records(str(output), {}, 1, newest)

    assert removed == [lost, unreadable]
    assert _records(output) == [killed, stopped, newest]


def test_retention_on_s3_and_a_storage_error_only_warns(s3, s3_options, monkeypatch, caplog):
    from tests.conftest import BUCKET

    output = f"s3://{BUCKET}/retention"
    runs = [_run(output, n, options=s3_options, so100__pick=1) for n in range(1, 5)]
    s3.pipe(f"{BUCKET}/retention/so100/pick/{RECORD_FILE}", json.dumps({"run_id": runs[0]}).encode())

    assert prune_run_records(output, s3_options, 2, runs[-1]) == [runs[1]]
    assert sorted(p.rsplit("/", 1)[1] for p in s3.ls(f"{BUCKET}/retention/_runs", refresh=True)) == [
        f"{runs[0]}.json", f"{runs[2]}.json", f"{runs[3]}.json"
    ]  # fmt: skip

    def refused(*args):
        raise PermissionError(f"AccessDenied for key {s3_options['secret']}")

    monkeypatch.setattr(runrecord, "list_folder", refused)
    assert prune_run_records(output, s3_options, 1, runs[-1]) == []
    assert "run records: none removed (job.keep_run_records=1): PermissionError" in caplog.text
    assert s3_options["secret"] not in caplog.text
