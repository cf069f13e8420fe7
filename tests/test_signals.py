"""Clean stops: SIGTERM mid-scoring ends ``python -m jobs.relabel`` with 143 and a ``stopped`` record;
nothing half-written is visible, and the next run continues to the outputs of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from devkit.synth import write_v30_dataset
from pipeline.layout import EPISODES_FILE, PROGRESS_FILE
from pipeline.stopping import RunStopped, requested_stop, stop_on_signals
from tests.conftest import PROJECT_ROOT

EPISODES = 40
DATASET = "lab/stops"
# Without a committed shard by then, the stop comes this long after scoring started.
STOP_AFTER_S = 20.0


def _command(source: Path, output: Path, model: Path) -> list[str]:
    return [
        sys.executable, "-m", "jobs.relabel", f"source.uris=[{source}]", f"output.uri={output}",
        f"model.path={model}", "frames.height=64", "frames.width=64", "frames.max_frames=8",
        "prefixes.num=4", "success.threshold=-1000", "ray.num_cpus=2", "job.progress_interval_s=1",
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}


def _stop_while_scoring(command: list[str], output: Path, log: Path, signum: int) -> tuple[int, str, bool]:
    """Starts the job and sends ``signum`` while it scores: as soon as its first shard is committed, or
    :data:`STOP_AFTER_S` after ``scoring: started``. Returns the exit code, the log, and whether a shard
    was committed when the signal went."""
    with log.open("w") as out:
        job = subprocess.Popen(command, cwd=PROJECT_ROOT, env=_env(), stdout=out, stderr=out)
        try:
            deadline, started, committed = time.monotonic() + 480, None, False
            while time.monotonic() < deadline and job.poll() is None:
                if started is None and "scoring: started" in log.read_text():
                    started = time.monotonic()
                committed = any((output / "_state").rglob("*.done.json"))
                if committed or (started is not None and time.monotonic() - started > STOP_AFTER_S):
                    job.send_signal(signum)
                    break
                time.sleep(0.05)
            code = job.wait(timeout=120)
        finally:
            if job.poll() is None:
                job.kill()
    return code, log.read_text(), committed


def _assert_same_published(output: Path, reference: Path) -> None:
    """Published episodes (all but when and at which attempt they were scored) and progress are equal."""
    for name, drop in ((EPISODES_FILE, ["scored_at", "attempt"]), (PROGRESS_FILE, [])):
        got, want = (
            pq.read_table(root / DATASET / name).drop_columns(drop).to_pandas()
            for root in (output, reference)
        )
        pd.testing.assert_frame_equal(got, want)  # NaN (voc of a one-prefix episode) equals NaN here


def _files(output: Path) -> list[str]:
    return sorted(p.relative_to(output).as_posix() for p in output.rglob("*") if p.is_file())


def test_signals_become_one_stop_even_when_ray_wraps_it():
    previous = signal.getsignal(signal.SIGTERM)
    with stop_on_signals():
        # Raised inside Ray's compiled calls (ray.wait) the stop surfaces as a SystemError.
        with pytest.raises(SystemError):
            try:
                signal.raise_signal(signal.SIGTERM)
                time.sleep(1)
            except RunStopped as stop:
                raise SystemError("returned a result with an exception set") from stop
        stop = requested_stop()
        assert stop is not None and stop.exit_code == 143
        signal.raise_signal(signal.SIGINT)  # a second signal while stopping is ignored
        time.sleep(0.01)
        assert requested_stop() is stop
    assert signal.getsignal(signal.SIGTERM) is previous
    with stop_on_signals():
        assert requested_stop() is None


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_the_rerun_equals_an_uninterrupted_run(
    ray_session, tmp_path, tiny_model_dir
):
    from pipeline.config import load_config
    from pipeline.relabel import run

    source = write_v30_dataset(tmp_path / "fleet" / DATASET, lengths=[8] * EPISODES)

    # The uninterrupted run and the rerun are the same job in this process, on the session's Ray (the
    # job's own start and stop of Ray are checked by the stopped run, a real `python -m jobs.relabel`).
    clean = tmp_path / "clean"
    assert run(load_config(_command(source.parent, clean, tiny_model_dir)[3:])).failures == 0

    output = tmp_path / "out"
    command = _command(source.parent, output, tiny_model_dir)
    code, text, committed = _stop_while_scoring(command, output, tmp_path / "stopped.log", signal.SIGTERM)
    assert code == 143, text[-3000:]
    assert "scoring: interrupted" in text, text[-3000:]  # the stop came while scoring
    assert "SIGTERM received: stopping the run" in text and "stopped by SIGTERM" in text
    assert "Traceback" not in text and "SIGTERM received at time" not in text
    (record,) = (output / "_runs").glob("*.json")
    content = json.loads(record.read_text())
    assert (content["status"], content["error"]) == ("stopped", "stopped by SIGTERM")
    # Readers see nothing of the stopped run: no published file, no temp file outside the run's state.
    visible = [f for f in _files(output) if not f.startswith(("_state/", "_runs/"))]
    assert visible == ["_topreward_output.json"], visible
    assert not any(".tmp" in f for f in _files(output) if not f.startswith("_state/"))

    rerun = run(load_config(command[3:])).datasets[DATASET]
    assert rerun.failures == 0, rerun.errors
    # It went on from the stopped run's commits.
    assert rerun.scored + rerun.skipped == EPISODES and (rerun.skipped > 0 or not committed), rerun
    _assert_same_published(output, clean)
    assert not any(".tmp" in f for f in _files(output)), _files(output)
    statuses = sorted(json.loads(p.read_text())["status"] for p in (output / "_runs").glob("*.json"))
    assert statuses == ["completed", "stopped"]
