"""One command-line shape for every job: --help, --print-config, --config FILE, one-line refusals."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import yaml

from jobs.calibrate import main as calibrate_main
from jobs.evaluate import main as evaluate_main
from jobs.pull import main as pull_main
from jobs.relabel import main as relabel_main
from jobs.report import main as report_main
from pipeline.cli import Exit, Refused, missing_help, refusals, run_job
from pipeline.config import RelabelConfig, load_config
from pipeline.layout import EPISODES_FILE, RECORD_FILE
from pipeline.report.config import EvaluateJob, ReportJob
from pipeline.runrecord import RunRecord

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("ray", "torch", "lerobot", "av", "transformers")

# Every job, with settings its --help must list.
JOBS = {
    "jobs.relabel": ("frames.fps (float, 2.0): ", "success.threshold (float, -2.0): ", "ray.scorer_actors"),
    "jobs.report": ("report.strip_frames (int, 6): ", "success.threshold", "output.storage_options"),
    "jobs.evaluate": ("evaluate.max_episodes (int, 8): ", "frames.fps", "model.path"),
    "jobs.calibrate": ("success.window (int, 3): ", "output.storage_options"),
    "jobs.pull": ("output.storage_options (dict[str, Any], {}): ",),
    "jobs.demo": ("frames.fps", "success.threshold", "model.path"),
    "pipeline.scoring": ("frames.fps", "model.path", "success.threshold"),
}


@pytest.mark.parametrize("job", sorted(JOBS))
def test_help_lists_the_settings_and_imports_nothing_heavy(job):
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", job, "--help"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert out.startswith(f"usage: python -m {job}")
    for key in JOBS[job]:
        assert key in out, key
    assert "--config FILE" in out and "--print-config" in out
    assert re.search(r"exit (status|codes)", out, re.IGNORECASE)  # the docstring lists its exit codes
    # -X importtime writes one line per module imported: none of the heavy ones.
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert not {name for name in imported if name.split(".")[0] in HEAVY}


@pytest.mark.parametrize("schema", [RelabelConfig, ReportJob, EvaluateJob])
def test_every_setting_has_one_line_of_help(schema):
    assert missing_help(schema) == []


@dataclass
class _Undocumented:
    """No attributes section."""

    depth: int = 1


@dataclass
class _Partly:
    """Settings.

    Attributes:
        inner: Documented.
    """

    inner: _Undocumented
    width: int = 2


def test_a_setting_without_help_is_found():
    assert missing_help(_Partly) == ["inner.depth", "width"]


SECRET_OPTIONS = (
    "source.storage_options={endpoint_url: 'http://minio:9000', key: AKIAEXAMPLE, "
    "client_kwargs: {aws_secret_access_key: s3cr3tvalue, region_name: eu}}"
)


def test_print_config_shows_the_merged_settings_with_secrets_masked(capsys):
    assert relabel_main(["--print-config", "frames.fps=4", SECRET_OPTIONS]) == 0
    out = capsys.readouterr().out
    assert "AKIAEXAMPLE" not in out and "s3cr3tvalue" not in out
    printed = yaml.safe_load(out)
    assert printed["frames"]["fps"] == 4.0  # the override
    assert printed["model"]["path"] == "Qwen/Qwen3-VL-8B-Instruct"  # default and conf/relabel.yaml
    assert printed["source"]["storage_options"] == {
        "endpoint_url": "http://minio:9000",
        "key": "***",
        "client_kwargs": {"aws_secret_access_key": "***", "region_name": "eu"},
    }
    # Nothing else in the printout is lost: it loads back as the same config.
    assert set(printed) == set(asdict(RelabelConfig()))


def test_config_file_then_overrides(tmp_path, capsys):
    path = tmp_path / "nightly.yaml"
    path.write_text("frames:\n  fps: 5.0\n  max_frames: 32\nprefixes: {num: 4}\nsuccess: {threshold: -6.2}\n")
    assert relabel_main(["--config", str(path), "prefixes.num=6", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["frames"]["fps"] == 5.0 and printed["frames"]["max_frames"] == 32  # the file
    assert printed["prefixes"]["num"] == 6  # the command line over the file
    assert printed["success"] == {"window": 3, "threshold": -6.2}  # the file over conf/relabel.yaml
    expected = load_config(
        ["frames.fps=5", "frames.max_frames=32", "prefixes.num=6", "success.threshold=-6.2"]
    )
    assert printed == json.loads(json.dumps(asdict(expected)))


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["source.uris=s3://x"],
            "jobs.relabel: config error at 'source.uris': wants a list: source.uris='[s3://x]'",
        ),
        (
            ["source.storage_options=http://minio:9000"],
            "jobs.relabel: config error at 'source.storage_options': wants a mapping: "
            "source.storage_options='{endpoint_url: http://...}'",
        ),
        (
            ["sucess.threshold=-3"],
            "jobs.relabel: config error at 'sucess.threshold': unknown key; did you mean success.threshold?",
        ),
        (["--config", "/no/such/file.yaml"], "jobs.relabel: config error: no such file /no/such/file.yaml"),
        (["frames.fps"], "jobs.relabel: 'frames.fps': expected key=value"),
        (["--bogus"], "jobs.relabel: unrecognized arguments: --bogus"),
    ],
)
def test_refusals_are_one_line_and_exit_2(argv, line, capsys):
    assert relabel_main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(line) and captured.err.count("\n") == 1 and not captured.out


def test_reader_jobs_refuse_in_one_line(tmp_path, capsys):
    assert report_main(["report.strip_frame=3"]) == 2
    assert "did you mean report.strip_frames?" in capsys.readouterr().err
    assert calibrate_main([str(tmp_path / "episodes.parquet")]) == 2  # the labels argument is missing
    err = capsys.readouterr().err
    assert (
        err.startswith("jobs.calibrate: the following arguments are required: labels")
        and err.count("\n") == 1
    )
    config = tmp_path / "all.yaml"
    config.write_text("output: {uri: s3://b/labels}\nsuccess: {threshold: -3}\n")
    assert pull_main(["s3://b/labels/so100/pick", str(tmp_path / "x"), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jobs.pull: success.threshold: only output.* keys apply") and err.count("\n") == 1


@pytest.fixture
def published(tmp_path):
    """An output holding one dataset published by a recorded run (threshold -6.2, model /models/m)."""
    output = tmp_path / "out"
    cfg = load_config(["success.threshold=-6.2", "model.path=/models/m", "model.device=cpu"])
    record = RunRecord(str(output), {}, "abc123", config=asdict(cfg))
    record.write()
    dataset = output / "so100" / "pick_cube"
    dataset.mkdir(parents=True)
    (dataset / RECORD_FILE).write_text(json.dumps({"protocol": 2, "digest": "d", "run_id": record.run_id}))
    (dataset / EPISODES_FILE).write_bytes(b"")  # listed, never read by --print-config
    return {"output": output, "dataset": dataset, "run_id": record.run_id}


def _documents(out: str) -> list[tuple[list[str], dict]]:
    """The printed YAML documents, each with its comment lines."""
    documents = []
    for text in out.split("\n---\n"):
        comments = [line[2:] for line in text.splitlines() if line.startswith("# ")]
        documents.append((comments, yaml.safe_load(text)))
    return documents


def test_report_prints_the_settings_of_the_publishing_run(published, capsys):
    token = "output.storage_options={auto_mkdir: false, token: tok-123456}"
    assert report_main(["--print-config", f"output.uri={published['output']}", token, "report.dpi=50"]) == 0
    out = capsys.readouterr().out
    assert "tok-123456" not in out
    (_, own), (comments, dataset) = _documents(out)
    assert own["report"]["dpi"] == 50 and own["dataset"] is None
    assert own["output"]["storage_options"] == {"auto_mkdir": False, "token": "***"}
    assert str(published["dataset"]) in comments[0] and f"run {published['run_id']}" in comments[0]
    assert dataset["success"]["threshold"] == -6.2 and dataset["model"]["path"] == "/models/m"  # recorded
    assert dataset["output"]["storage_options"]["token"] == "***"


def test_evaluate_and_calibrate_print_the_recorded_settings_under_the_given(published, tmp_path, capsys):
    table = str(published["dataset"] / EPISODES_FILE)
    assert evaluate_main([table, "--print-config", "success.threshold=-3", "evaluate.max_episodes=2"]) == 0
    (_, own), (comments, dataset) = _documents(capsys.readouterr().out)
    assert own["evaluate"]["max_episodes"] == 2
    assert dataset["success"]["threshold"] == -3.0 and dataset["model"]["path"] == "/models/m"
    assert comments[1] == "given: success.threshold"
    config = tmp_path / "window.yaml"
    config.write_text("success: {window: 2}\n")
    assert calibrate_main([table, "labels.csv", "--config", str(config), "--print-config"]) == 0
    (_, own), (comments, dataset) = _documents(capsys.readouterr().out)
    assert dataset["success"] == {"window": 2, "threshold": -6.2} and comments[1] == "given: success.window"


def test_pull_prints_where_it_reads_and_the_run_that_published(published, tmp_path, capsys):
    uri = str(published["dataset"])
    assert pull_main([uri, str(tmp_path / "dest"), "--print-config"]) == 0
    (_, own), (_, dataset) = _documents(capsys.readouterr().out)
    assert set(own) == {"output"} and dataset["success"]["threshold"] == -6.2
    assert not (tmp_path / "dest").exists()  # nothing pulled


class NoCredentialsError(Exception):
    """Named as botocore names it: recognised by name, botocore not imported."""


def test_expected_failures_are_one_line_and_bugs_propagate(capsys):
    def missing_credentials() -> int:
        raise NoCredentialsError("Unable to locate credentials")

    assert run_job("jobs.x", missing_credentials) == 2
    assert capsys.readouterr().err == (
        "jobs.x: missing or refused credentials: Unable to locate credentials (environment, or "
        "*.storage_options)\n"
    )
    assert run_job("jobs.x", lambda: (_ for _ in ()).throw(FileNotFoundError("s3://b/k"))) == 2
    assert capsys.readouterr().err == "jobs.x: not found: s3://b/k\n"
    with pytest.raises(Exit) as done, refusals("jobs.x"):
        raise Refused("two\nlines")
    assert done.value.code == 2 and capsys.readouterr().err == "jobs.x: two lines\n"
    with pytest.raises(ZeroDivisionError):
        run_job("jobs.x", lambda: 1 // 0)
