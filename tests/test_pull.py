"""jobs.pull: a dataset's outputs copied from object storage (moto S3) to local disk, byte for byte, with
the curated version the pointer names as ``curated/``; the run that published them named; no heavy
imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from jobs.pull import main, pull
from pipeline.curated.pointer import Pointer
from pipeline.layout import RECORD_FILE
from tests.conftest import BUCKET

FILES = {
    "topreward_progress.parquet": b"progress bytes",
    "episodes.parquet": b"episodes bytes",
    "curated/meta/info.json": b'{"codebase_version": "v3.0"}',
    "curated/videos/observation.images.front/chunk-000/file-000.mp4": bytes(range(256)) * 40,
}
# A superseded version still kept for its readers: never pulled.
OLD_VERSION = {"meta/info.json": b'{"old": 1}', "data/chunk-000/file-000.parquet": b"old rows"}


def _upload(s3, prefix: str, current: str = "v000002") -> str:
    for name, data in FILES.items():
        s3.pipe(f"{BUCKET}/{prefix}/{name.replace('curated/', f'curated/{current}/')}", data)
    for name, data in OLD_VERSION.items():
        s3.pipe(f"{BUCKET}/{prefix}/curated/v000001/{name}", data)
    s3.pipe(f"{BUCKET}/{prefix}/curated/current.json", Pointer(2, current).to_json())
    return f"s3://{BUCKET}/{prefix}"


def _local_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_pull_copies_every_file(s3, s3_options, tmp_path):
    uri = _upload(s3, "pull/so100/pick_cube")
    # A sibling whose name extends the dataset's must not come along.
    s3.pipe(f"{BUCKET}/pull/so100/pick_cube_v2/episodes.parquet", b"other dataset")
    written = pull(uri + "/", tmp_path / "pick_cube", s3_options)
    assert _local_tree(tmp_path / "pick_cube") == FILES
    assert sorted(p.relative_to(tmp_path / "pick_cube").as_posix() for p in written) == sorted(FILES)


def test_a_new_pull_replaces_the_curated_copy_and_removes_it_when_none_is_selected(s3, s3_options, tmp_path):
    uri = _upload(s3, "pull-again/so100/pick_cube")
    dest = tmp_path / "pick_cube"
    pull(uri, dest, s3_options)
    (dest / "curated" / "data" / "chunk-000").mkdir(parents=True)
    (dest / "curated" / "data" / "chunk-000" / "file-009.parquet").write_bytes(b"stale")
    pull(uri, dest, s3_options)
    assert _local_tree(dest) == FILES  # the stale file went with the old copy
    s3.pipe(f"{BUCKET}/pull-again/so100/pick_cube/curated/current.json", Pointer(2, None).to_json())
    written = pull(uri, dest, s3_options)
    assert not (dest / "curated").exists()
    assert sorted(p.name for p in written) == ["episodes.parquet", "topreward_progress.parquet"]
    assert [p.name for p in tmp_path.iterdir()] == ["pick_cube"]  # no staging folder left


def test_cli_takes_storage_options_like_relabel(s3, s3_options, tmp_path, capsys):
    uri = _upload(s3, "pull-cli/synth/v30")
    options = "{" + ", ".join(f"{k}: '{v}'" for k, v in s3_options.items()) + "}"
    assert main([uri, str(tmp_path / "v30"), f"output.storage_options={options}"]) == 0
    assert _local_tree(tmp_path / "v30") == FILES
    out = capsys.readouterr().out
    assert f"pulled {len(FILES)} files" in out
    assert str(tmp_path / "v30" / "curated") in out
    assert s3_options["secret"] not in out


def test_cli_fails_cleanly_on_an_empty_prefix(s3, s3_options, tmp_path, capsys):
    options = "{" + ", ".join(f"{k}: '{v}'" for k, v in s3_options.items()) + "}"
    status = main([f"s3://{BUCKET}/nothing-here", str(tmp_path / "x"), f"output.storage_options={options}"])
    assert status == 2
    assert "no files under" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_names_the_run_that_published_and_its_settings(golden_run, tmp_path, capsys):
    options = "{" + ", ".join(f"{k}: '{v}'" for k, v in golden_run.s3_options.items()) + "}"
    dataset = golden_run.datasets["v30"]
    uri = f"{golden_run.output}/{dataset}"
    assert main([uri, str(tmp_path / "v30"), f"output.storage_options={options}"]) == 0
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


def test_cli_says_when_no_run_record_names_the_publisher(s3, s3_options, tmp_path, capsys):
    uri = _upload(s3, "pull-norecord/so100/pick_cube")
    options = "{" + ", ".join(f"{k}: '{v}'" for k, v in s3_options.items()) + "}"
    assert main([uri, str(tmp_path / "p"), f"output.storage_options={options}"]) == 0
    assert f"published by: unknown (no run record for {uri})" in capsys.readouterr().out


def test_readers_import_neither_ray_lerobot_pyav_nor_torch():
    # jobs.pull runs where training runs, and the report's readers are imported by light tools: neither
    # may pay for (or need) Ray, LeRobot, PyAV or torch.
    code = (
        "import sys, jobs.pull, pipeline.report.outputs, pipeline.report.config; "
        "print(sorted(m for m in ('ray', 'lerobot', 'av', 'torch') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
