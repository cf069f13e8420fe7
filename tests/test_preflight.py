"""Refused before Ray starts, naming the key: bad paths, models that cannot load, numbers out of range."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.relabel import main as relabel_main
from pipeline.catalog import dataset_id_for
from pipeline.config import ConfigError, load_config
from pipeline.preflight import check_run
from pipeline.relabel import run
from pipeline.storage import canonical_uri, ensure_under, is_under, normalize_uri
from tests.conftest import PROJECT_ROOT, relabel_config


def _refused(cfg_or_overrides, key: str) -> str:
    with pytest.raises(ConfigError) as err:
        cfg = load_config(cfg_or_overrides) if isinstance(cfg_or_overrides, list) else cfg_or_overrides
        check_run(cfg)
    assert f"'{key}'" in str(err.value), str(err.value)
    return str(err.value)


def test_ids_and_written_paths_never_escape():
    assert normalize_uri("s3://fleet/x/y/../..") == "s3://fleet"
    assert dataset_id_for("s3://fleet/so100/pick/x/y/../..") == "so100/pick"
    with pytest.raises(ValueError):
        dataset_id_for("s3://fleet/x/../..")
    with pytest.raises(ValueError):
        normalize_uri("gs://bucket/../other")
    assert is_under("s3://out/a/b", "s3://out") and not is_under("s3://outside/a", "s3://out")
    assert not is_under("s3://out/../x", "s3://out")
    with pytest.raises(ValueError, match="not under the output"):
        ensure_under("s3://out/so100/../../etc", "s3://out")


def test_canonical_uri_spells_each_location_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = tmp_path.resolve().as_posix()
    for spelling in (local, f"file://{local}", f"FILE://{local}/", f"local://{local}", f"{local}/a/..", "."):
        assert canonical_uri(spelling) == local, spelling
    assert canonical_uri("file://labels") == canonical_uri("labels") == f"{local}/labels"
    for spelling in ("s3://b/src", "s3a://b/src", "s3n://b/src/", "S3A://b/x/../src"):
        assert canonical_uri(spelling) == "s3://b/src", spelling
    assert canonical_uri("gcs://b/src") == canonical_uri("gs://b/src/.") == "gs://b/src"
    # Only the comparison form changes: normalize_uri (used to open files) keeps the user's scheme.
    assert normalize_uri("s3a://b/src/") == "s3a://b/src"
    assert is_under(f"file://{local}/labels", local) and is_under("s3n://b/src/x", "s3a://b/src")
    assert not is_under("s3://b/src", "gs://b/src") and not is_under("s3://b/srcx", "s3a://b/src")
    assert ensure_under("s3a://out/so100/a", "s3://out") == "s3a://out/so100/a"


@pytest.mark.parametrize(
    ("source", "output", "key"),
    [
        ("s3://fleet/robots", "s3://fleet/robots", "output.uri"),
        ("s3://fleet/robots", "s3://fleet/robots/labels", "output.uri"),
        ("s3://fleet/robots/x/..", "s3://fleet/robots/labels", "output.uri"),
        ("s3://labels/topreward/so100", "s3://labels/topreward", "source.uris[0]"),
        ("s3://fleet/../..", "s3://labels/x", "source.uris[0]"),
        # Aliases of one store: Hadoop's s3a:// and s3n://, gcsfs's gcs://.
        ("s3://fleet/robots", "s3a://fleet/robots/labels", "output.uri"),
        ("s3://fleet/robots", "s3n://fleet/robots/labels", "output.uri"),
        ("s3a://fleet/robots", "s3://fleet/robots", "output.uri"),
        ("gs://fleet/robots", "gcs://fleet/robots/labels", "output.uri"),
        ("s3n://labels/topreward/so100", "s3://labels/topreward", "source.uris[0]"),
    ],
)
def test_output_inside_a_source_is_refused(source, output, key, tiny_model_dir):
    _refused(relabel_config(source, output, tiny_model_dir, {}), key)


@pytest.mark.parametrize(
    ("source", "output"),
    [("{root}/fleet", "file://{root}/fleet/labels"), ("file://{root}/fleet", "{root}/fleet/./labels")],
)
def test_local_output_inside_a_source_is_refused_however_spelt(source, output, tmp_path, tiny_model_dir):
    root = tmp_path.as_posix()
    cfg = relabel_config(source.format(root=root), output.format(root=root), tiny_model_dir, {})
    assert "is inside the source" in _refused(cfg, "output.uri")
    with pytest.raises(ConfigError, match=r"'output\.uri'"):
        run(cfg)  # refused before Ray: nothing written into the source
    assert not (tmp_path / "fleet").exists()


def test_models_that_cannot_load_are_refused(tmp_path, tiny_model_dir, monkeypatch):
    def model(path) -> str:
        return _refused(relabel_config("s3://fleet/a", "s3://labels/x", path, {}), "model.path")

    assert "neither an existing folder nor a hub id" in model(tmp_path / "no" / "such" / "model")
    text_only = tmp_path / "llama"
    text_only.mkdir()
    (text_only / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (text_only / "model.safetensors").write_bytes(b"")
    assert "model_type 'llama'" in model(text_only)
    no_weights = tmp_path / "bin-only"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((Path(tiny_model_dir) / "config.json").read_text())
    (no_weights / "pytorch_model.bin").write_bytes(b"")
    assert "no .safetensors" in model(no_weights)
    assert "without config.json" in model(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "HF_HUB_OFFLINE=1" in model("Qwen/Not-A-Cached-Model")


def test_numbers_and_frame_sizes_are_refused_with_their_key(tiny_model_dir):
    def config(*extra: str):
        return relabel_config("s3://fleet/a", "s3://labels/x", tiny_model_dir, {}, *extra)

    assert "multiple of 32" in _refused(config("frames.height=30"), "frames.height")
    for override, key in [
        ("success.threshold=nan", "success.threshold"),
        ("frames.fps=1e6", "frames.fps"),
        ("frames.fps=inf", "frames.fps"),
        ("retry.max_attempts=0", "retry.max_attempts"),
        ("job.log_level=LOUD", "job.log_level"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(f"'{key}'")):
            config(override)


@pytest.fixture
def relabel_job(monkeypatch):
    """``jobs.relabel``'s main, with the handler it gives the pipeline's logger removed afterwards (it
    writes to this test's captured stderr)."""
    logger = logging.getLogger("pipeline")
    for name in ("handlers", "propagate", "level"):
        value = getattr(logger, name)
        monkeypatch.setattr(logger, name, list(value) if name == "handlers" else value)
    return relabel_main


def _model_copy(tiny_model_dir, folder: Path) -> Path:
    shutil.copytree(tiny_model_dir, folder)
    return folder


def test_truncated_or_corrupt_weights_are_refused_naming_the_file(
    tmp_path, tiny_model_dir, relabel_job, capsys
):
    model = _model_copy(tiny_model_dir, tmp_path / "model")
    weights = model / "model.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 2])  # a download cut short
    message = _refused(relabel_config("s3://fleet/a", "s3://labels/x", model, {}), "model.path")
    assert f"{weights}: truncated: {len(whole) // 2} bytes" in message and "\n" not in message
    # What a scheduler sees: one line, exit 2, before Ray (the run used to die in an actor 87 s later).
    argv = ["source.uris=[s3://fleet/a]", "output.uri=s3://labels/x", f"model.path={model}"]
    assert relabel_job([*argv, "frames.height=64", "frames.width=64"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'model.path'" in err and "model.safetensors: truncated" in err
    weights.write_bytes(b"\xff" * 8 + whole[8:])  # a header length no file can hold
    assert "does not fit the file" in _refused(
        relabel_config("s3://f/a", "s3://l/x", model, {}), "model.path"
    )
    weights.write_bytes(whole)
    # A sharded checkpoint: the index names a shard that is not there.
    (model / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"}})
    )
    message = _refused(relabel_config("s3://fleet/a", "s3://labels/x", model, {}), "model.path")
    assert "model-00002-of-00002.safetensors" in message and "not there" in message


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("ray.num_cpus=-1", "ray.num_cpus"),
        ("ray.num_cpus=0", "ray.num_cpus"),
        ("ray.object_store_memory=1000", "ray.object_store_memory"),
        ("ray.scorer_num_cpus=-0.5", "ray.scorer_num_cpus"),
        ("ray.decode_num_cpus=-1", "ray.decode_num_cpus"),
        ("ray.scorer_num_gpus=1.5", "ray.scorer_num_gpus"),
        ("ray.decode_concurrency=-2", "ray.decode_concurrency"),
        ("publish.num_cpus=0", "publish.num_cpus"),
    ],
)
def test_ray_resources_ray_refuses_are_refused_in_the_config(override, key, relabel_job, capsys):
    with pytest.raises(ConfigError, match=re.escape(f"config error at '{key}'")):
        load_config([override])
    # Was a ValueError from ray.init after the run record was written: exit 1 and a traceback.
    assert relabel_job(["source.uris=[s3://fleet/a]", "output.uri=s3://labels/x", override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"jobs.relabel: config error at '{key}'")


def test_joining_a_cluster_with_driver_only_credentials_warns(tiny_model_dir, monkeypatch, caplog):
    cfg = relabel_config("s3://fleet/a", "s3://labels/x", tiny_model_dir, {})
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-driver-only")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "driver-secret")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    with caplog.at_level(logging.WARNING, logger="pipeline.preflight"):
        check_run(cfg)  # a local Ray: its workers inherit the driver's environment
        assert not caplog.records
        monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # what ray job submit sets for the driver
        check_run(cfg)
    (record,) = caplog.records
    text = record.getMessage()
    assert record.levelno == logging.WARNING and "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY" in text
    assert '--runtime-env-json=\'{"env_vars": {"AWS_ACCESS_KEY_ID": "..."' in text
    assert "AKIA-driver-only" not in text and "driver-secret" not in text
    caplog.clear()
    # Shipped to the workers in the job's runtime env, or given in the storage options: nothing to say.
    runtime_env = {"env_vars": {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": runtime_env}))
    check_run(cfg)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR")
    check_run(relabel_config("s3://fleet/a", "s3://labels/x", tiny_model_dir, {"key": "k", "secret": "s"}))
    assert not caplog.records


def test_refused_runs_never_start_ray_or_write(tmp_path, tiny_model_dir):
    output = tmp_path / "fleet" / "labels"
    cfg = relabel_config(str(tmp_path / "fleet"), str(output), tiny_model_dir, {})
    with pytest.raises(ConfigError, match=r"'output\.uri'"):
        run(cfg)
    assert not output.exists()


def test_exit_codes_and_log_lines_of_the_job(tmp_path, tiny_model_dir):
    """jobs.relabel as a scheduler runs it: 2 when refused; 4 when a source holds no dataset, whatever
    job.fail_on_errors says (tests/test_exit_codes.py has 3 and 5)."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    refused = subprocess.run(
        [sys.executable, "-m", "jobs.relabel", "source.uris=[s3://a/b]", "output.uri=s3://a/b/c"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2 and "'output.uri'" in refused.stderr
    assert "Started a local Ray instance" not in refused.stderr

    missing = tmp_path / "fleet" / "lab" / "gone"
    job = subprocess.run(
        [
            sys.executable, "-m", "jobs.relabel", f"source.uris=[{missing}]",
            f"output.uri={tmp_path / 'out'}", f"model.path={tiny_model_dir}", "frames.height=64",
            "frames.width=64", "job.fail_on_errors=true", "ray.num_cpus=1",
        ],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert job.returncode == 4, job.stderr[-2000:]
    assert (
        "INFO pipeline.relabel: catalog: 0 dataset(s), 0 episodes listed; 1 dataset(s) could not be listed"
        in job.stderr
    )
    assert "lab/gone: FAILED" in job.stdout and "meta/info.json: not found" in job.stdout
    assert f"NO DATASET FOUND under source {missing}" in job.stdout
    assert f"no dataset found under {missing} (exit 4)" in job.stderr
    (record,) = (tmp_path / "out" / "_runs").glob("*.json")
    content = json.loads(record.read_text())
    assert content["status"] == "completed" and "meta/info.json" in content["failures"][0]["error"]
