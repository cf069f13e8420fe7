"""Start-up and exit of ``jobs.relabel``: what the driver imports, and a process that ends with its Ray.

The times are measured by ``python -m bench.startup``; these tests check the properties that make them
short: a command line that only asks for help loads neither Ray nor torch, the driver and a publish
worker load no torch, transformers or LeRobot, and the job's exit stops the local Ray it started (no
process of it left behind) with the job's own exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil

from tests.conftest import PROJECT_ROOT

HEAVY = ("torch", "transformers", "lerobot", "scipy")


def _loaded_after(code: str) -> set[str]:
    """The top-level packages of :data:`HEAVY` (and ray) loaded by ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(set(m.split('.')[0] for m in sys.modules))))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(done.stdout.splitlines()[-1])) & {*HEAVY, "ray"}


def test_help_and_a_refused_command_line_load_neither_ray_nor_torch():
    code = (
        "import contextlib, io\n"
        "from jobs.relabel import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    assert main(['--help']) == 0 and main(['frames.fps=fast']) == 2\n"
    )
    assert _loaded_after(code) == set()


def test_a_publish_worker_loads_no_torch_transformers_or_lerobot():
    assert not _loaded_after("import pipeline.publish") & {"torch", "transformers", "lerobot"}


def test_the_driver_and_a_publish_worker_load_none_of_torch_transformers_lerobot_scipy():
    assert not _loaded_after("import jobs.relabel, pipeline.relabel, pipeline.publish") & set(HEAVY)


# A driver that starts a local Ray, lists every process of it, then ends the way jobs.relabel does.
_DRIVER = """
import functools, json, sys
import psutil, ray
from jobs.relabel import configure_logging, exit_now
from pipeline.stopping import start_ray

configure_logging("DEBUG")
start_ray(functools.partial(
    ray.init, address="local", num_cpus=1, include_dashboard=False, _temp_dir=sys.argv[1]
))

@ray.remote
def pid():
    import os
    return os.getpid()

worker = ray.get(pid.remote())
family = {worker}
for infos in ray._private.worker._global_node.all_processes.values():
    for info in infos:
        process = psutil.Process(info.process.pid)
        family |= {process.pid, *(child.pid for child in process.children(recursive=True))}
print(json.dumps(sorted(family)))
print("the summary, not flushed by the job")
exit_now(7)
"""


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_job_exit_stops_its_local_ray_and_keeps_its_exit_code(tmp_path_factory):
    temp_dir = tmp_path_factory.mktemp("ray")  # short: Ray's socket paths must fit in 107 bytes
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(temp_dir)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 7, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[-1] == "the summary, not flushed by the job"
    assert "ray: shut down in" in done.stderr
    processes = json.loads(lines[-2])
    assert len(processes) >= 6  # GCS, raylet, its agents, monitor, dashboard, log monitor, a worker
    # They are stopped before the driver exits (an abandoned agent would wait a minute for its GCS
    # before giving up): a few seconds of grace for a busy machine to finish what is already dying.
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in processes) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = [psutil.Process(pid).cmdline()[:1] for pid in processes if _alive(pid)]
    assert not left, f"left running after the job ended: {left}"
