"""jobs.pull: a dataset's outputs copied from object storage (moto S3) to local disk, byte for byte, with
the curated version the pointer names as ``curated/``; the run that published them named; no heavy
imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs.pull import EXIT_INCOMPLETE, main, pull
from pipeline.curated.pointer import Pointer
from pipeline.layout import RECORD_FILE
from tests.conftest import BUCKET

TOP = {"topreward_progress.parquet": b"progress bytes", "episodes.parquet": b"episodes bytes"}
# A superseded version still kept for its readers: never pulled.
OLD_VERSION = {"meta/info.json": b'{"old": 1}', "data/chunk-000/file-000.parquet": b"old rows"}


def _local_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def files(synth_dir) -> dict[str, bytes]:
    """What a pull brings: the dataset's files and, as ``curated/``, a real LeRobot v3.0 version."""
    return {**TOP, **{f"curated/{k}": v for k, v in _local_tree(synth_dir / "v30").items()}}


def _upload(s3, prefix: str, files: dict[str, bytes], current: str = "v000002") -> str:
    for name, data in files.items():
        s3.pipe(f"{BUCKET}/{prefix}/{name.replace('curated/', f'curated/{current}/')}", data)
    for name, data in OLD_VERSION.items():
        s3.pipe(f"{BUCKET}/{prefix}/curated/v000001/{name}", data)
    s3.pipe(f"{BUCKET}/{prefix}/curated/current.json", Pointer(2, current).to_json())
    return f"s3://{BUCKET}/{prefix}"


def _options(s3_options: dict) -> str:
    return "output.storage_options={" + ", ".join(f"{k}: '{v}'" for k, v in s3_options.items()) + "}"


def test_pull_copies_every_file(s3, s3_options, files, tmp_path):
    uri = _upload(s3, "pull/so100/pick_cube", files)
    # A sibling whose name extends the dataset's must not come along.
    s3.pipe(f"{BUCKET}/pull/so100/pick_cube_v2/episodes.parquet", b"other dataset")
    written = pull(uri + "/", tmp_path / "pick_cube", s3_options)
    assert _local_tree(tmp_path / "pick_cube") == files
    assert sorted(p.relative_to(tmp_path / "pick_cube").as_posix() for p in written) == sorted(files)


def test_a_new_pull_replaces_the_curated_copy_and_removes_it_when_none_is_selected(
    s3, s3_options, files, tmp_path
):
    uri = _upload(s3, "pull-again/so100/pick_cube", files)
    dest = tmp_path / "pick_cube"
    pull(uri, dest, s3_options)
    (dest / "curated" / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
    (dest / "curated" / "data" / "chunk-000" / "file-009.parquet").write_bytes(b"stale")
    pull(uri, dest, s3_options)
    assert _local_tree(dest) == files  # the stale file went with the old copy
    s3.pipe(f"{BUCKET}/pull-again/so100/pick_cube/curated/current.json", Pointer(2, None).to_json())
    written = pull(uri, dest, s3_options)
    assert not (dest / "curated").exists()
    assert sorted(p.name for p in written) == ["episodes.parquet", "topreward_progress.parquet"]
    assert [p.name for p in tmp_path.iterdir()] == ["pick_cube"]  # no staging folder left


def test_cli_takes_storage_options_like_relabel(s3, s3_options, files, tmp_path, capsys):
    uri = _upload(s3, "pull-cli/synth/v30", files)
    assert main([uri, str(tmp_path / "v30"), _options(s3_options)]) == 0
    assert _local_tree(tmp_path / "v30") == files
    out = capsys.readouterr().out
    assert f"pulled {len(files)} files" in out
    assert str(tmp_path / "v30" / "curated") in out
    assert s3_options["secret"] not in out


def test_cli_fails_cleanly_on_an_empty_prefix(s3, s3_options, tmp_path, capsys):
    status = main([f"s3://{BUCKET}/nothing-here", str(tmp_path / "x"), _options(s3_options)])
    assert status == 2
    assert "no files under" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_names_the_run_that_published_and_its_settings(golden_run, tmp_path, capsys):
    dataset = golden_run.datasets["v30"]
    uri = f"{golden_run.output}/{dataset}"
    assert main([uri, str(tmp_path / "v30"), _options(golden_run.s3_options)]) == 0
    run_id = json.loads((tmp_path / "v30" / RECORD_FILE).read_text())["run_id"]
    out = capsys.readouterr().out
    threshold = golden_run.cfg.success.threshold
    assert f"published by run {run_id}: success.threshold {threshold:g} from run {run_id}" in out
    assert f"model.path {golden_run.cfg.model.path} from run {run_id}" in out


def test_cli_refuses_settings_it_cannot_apply(tmp_path, capsys):
    # Pull copies what the run decided; a threshold given here would change nothing it copies.
    assert main(["s3://bucket/so100/pick_cube", str(tmp_path / "x"), "success.threshold=-3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jobs.pull: success.threshold: only output.* keys apply")
    assert not (tmp_path / "x").exists()


def test_cli_says_when_no_run_record_names_the_publisher(s3, s3_options, files, tmp_path, capsys):
    uri = _upload(s3, "pull-norecord/so100/pick_cube", files)
    assert main([uri, str(tmp_path / "p"), _options(s3_options)]) == 0
    assert f"published by: unknown (no run record for {uri})" in capsys.readouterr().out


def test_a_version_missing_a_video_fails_and_keeps_the_earlier_copy(s3, s3_options, files, tmp_path, capsys):
    uri = _upload(s3, "pull-broken/so100/pick_cube", files)
    dest = tmp_path / "pick_cube"
    assert main([uri, str(dest), _options(s3_options)]) == 0
    capsys.readouterr()
    video = next(name for name in files if name.startswith("curated/videos/"))
    gone = f"{uri}/curated/v000002/{video.removeprefix('curated/')}"
    s3.rm(gone.removeprefix("s3://"))
    s3.pipe(f"{BUCKET}/pull-broken/so100/pick_cube/episodes.parquet", b"newer episodes")
    assert main([uri, str(dest), _options(s3_options)]) == EXIT_INCOMPLETE
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and not captured.out
    assert captured.err.startswith(f"jobs.pull: {gone}: missing from the store (episode ")
    assert captured.err.strip().endswith(f"nothing under {dest} was replaced")
    assert _local_tree(dest) == files  # the earlier good copy, episodes.parquet included
    assert [p.name for p in tmp_path.iterdir()] == ["pick_cube"]  # no staging folder left
    # A first pull of it leaves nothing behind either.
    assert main([uri, str(tmp_path / "fresh"), _options(s3_options)]) == EXIT_INCOMPLETE
    assert not (tmp_path / "fresh").exists()


def test_episodes_appended_after_info_json_are_ignored_and_a_missing_index_is_named(
    s3, s3_options, files, tmp_path, capsys
):
    # A publish appending to the current version writes new episodes files before meta/info.json: a
    # pull that copied the old info.json lists them too, and LeRobot ignores what lies past its totals.
    uri = _upload(s3, "pull-append/so100/pick_cube", files)
    index = next(name for name in files if name.startswith("curated/meta/episodes/"))
    rows = pq.read_table(pa.BufferReader(files[index]))
    info = json.loads(files["curated/meta/info.json"])
    shifted = {"episode_index": info["total_episodes"], "dataset_from_index": info["total_frames"],
               "dataset_to_index": info["total_frames"]}  # fmt: skip
    for name, offset in shifted.items():
        rows = rows.set_column(rows.schema.get_field_index(name), name, pc.add(rows[name], offset))
    sink = pa.BufferOutputStream()
    pq.write_table(rows, sink)
    appended = (
        f"{BUCKET}/pull-append/so100/pick_cube/curated/v000002/meta/episodes/chunk-000/file-999.parquet"
    )
    s3.pipe(appended, sink.getvalue().to_pybytes())
    assert main([uri, str(tmp_path / "p"), _options(s3_options)]) == 0
    for name in [n for n in files if n.startswith("curated/meta/episodes/")]:
        s3.rm(f"{BUCKET}/pull-append/so100/pick_cube/curated/v000002/{name.removeprefix('curated/')}")
    assert main([uri, str(tmp_path / "p"), _options(s3_options)]) == EXIT_INCOMPLETE
    err = capsys.readouterr().err
    assert err.startswith(
        f"jobs.pull: {uri}/curated/v000002/meta/episodes: 0 episodes of the {info['total_episodes']} that "
        "meta/info.json names (an episodes file is missing); nothing under"
    ), err


def test_an_output_root_or_a_folder_of_datasets_is_refused_naming_them(s3, s3_options, tmp_path, capsys):
    root = f"s3://{BUCKET}/pull-root"
    s3.pipe(f"{BUCKET}/pull-root/_topreward_output.json", b"{}")
    s3.pipe(f"{BUCKET}/pull-root/_runs/r1.json", b"{}")
    for dataset in ("so100/pick_cube", "so100/stack", "koch/pour"):
        s3.pipe(f"{BUCKET}/pull-root/{dataset}/episodes.parquet", b"episodes")
    assert main([root, str(tmp_path / "x"), _options(s3_options)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"jobs.pull: {root} is an output root holding 3 dataset(s): pull one of koch/pour, so100/pick_cube, "
        f"so100/stack (e.g. {root}/koch/pour)\n"
    )
    assert main([f"{root}/so100", str(tmp_path / "x"), _options(s3_options)]) == 2
    assert "so100 is a folder holding 2 dataset(s): pull one of pick_cube, stack" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_no_credentials_is_one_line(s3_endpoint, tmp_path, monkeypatch, capsys):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # default_fill_cache: a client of its own (fsspec caches one per set of options).
    options = f"output.storage_options={{endpoint_url: '{s3_endpoint}', default_fill_cache: false}}"
    assert main([f"s3://{BUCKET}/pull/so100/pick_cube", str(tmp_path / "x"), options]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no storage credentials (NoCredentialsError)" in err


def test_readers_import_neither_ray_lerobot_pyav_nor_torch():
    # jobs.pull runs where training runs, and the report's readers are imported by light tools: neither
    # may pay for (or need) Ray, LeRobot, PyAV or torch.
    code = (
        "import sys, jobs.pull, pipeline.report.outputs, pipeline.report.config; "
        "print(sorted(m for m in ('ray', 'lerobot', 'av', 'torch') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
