"""Ray nodes started with ``ray start`` on 127.0.0.1 for the job tests, each stopped with its process tree.

Every node gets its own ports and the head its own temp dir, so these clusters never collide with the
session fixture's Ray or with each other. Nodes run with ``--block`` and are stopped by terminating their
process tree: ``ray stop`` would also stop every other Ray on the machine. They run without Ray's drain on
SIGTERM (``RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0``), which would otherwise hold each node up to 30 s
waiting for leases a test cluster never returns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from devkit.local_s3 import free_port

RAY = str(Path(sys.executable).parent / "ray")


@dataclass(frozen=True)
class Head:
    """A running head node: its GCS address (for ``ray start --address``), dashboard (jobs), env, and the
    session its processes run in (:func:`in_session`)."""

    gcs: str
    dashboard: str
    env: dict[str, str]
    session: int


def in_session(leader: int) -> list[psutil.Process]:
    """Processes of the session ``leader`` started (``start_new_session``), also those whose parent died
    and left them to init (a raylet's dashboard agent after the raylet crashed)."""
    found = []
    for proc in psutil.process_iter():
        try:
            # A zombie has exited; only its parent (or init, for an orphan) has yet to reap it.
            if os.getsid(proc.pid) == leader and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            continue
    return found


def stop_tree(process: subprocess.Popen) -> None:
    """Stop a node and everything it started, orphans of its session included.

    Rounds until nothing of the session is left: a raylet may still be starting an agent when the first
    round looks (three rounds at most; a fourth would mean a process that ignores SIGKILL).
    """
    for _ in range(3):
        try:
            family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        family += [proc for proc in in_session(process.pid) if proc not in family]
        if not family:
            break
        for proc in family:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                continue
        _, alive = psutil.wait_procs(family, timeout=15)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(alive, timeout=5)
    process.wait(timeout=10)


def _own_ports() -> list[str]:
    # Another Ray on this machine (the session fixture's, another test's) holds the default ports.
    return [
        f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
        f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
    ]  # fmt: skip


def _wait(ready: Callable[[], bool], node: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if ready():
                return
        except Exception:  # not up yet: refused connections, 5xx while starting
            pass
        assert node.poll() is None, f"{what}: ray start exited"
        assert time.monotonic() < deadline, f"{what} did not come up"
        time.sleep(0.5)


def _jobs_api_up(dashboard: str) -> bool:
    """The head's job API answers (what ``ray job list`` asks, without starting a Python per poll)."""
    with urllib.request.urlopen(f"{dashboard}/api/jobs/", timeout=5) as response:
        return response.status == 200


def _node_with(dashboard: str, resources: dict[str, float]) -> bool:
    """A live node offers every one of ``resources`` (the cluster's view, as ``ray status`` shows it)."""
    from ray.util.state import list_nodes

    nodes = list_nodes(address=dashboard, filters=[("state", "=", "ALIVE")], detail=True)
    return any(all(name in node.resources_total for name in resources) for node in nodes)


@contextmanager
def ray_head(num_cpus: int) -> Iterator[Head]:
    """``ray start --head`` on 127.0.0.1 with its own ports and temp dir, stopped on exit."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    port, dashboard = free_port(), free_port()
    # Short path: Ray's unix socket paths under the temp dir must stay below ~107 characters.
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--num-cpus={num_cpus}",
         f"--ray-client-server-port={free_port()}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
         *_own_ports()],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    address = f"http://127.0.0.1:{dashboard}"
    try:
        _wait(lambda: _jobs_api_up(address), head, "ray head")
        yield Head(gcs=f"127.0.0.1:{port}", dashboard=address, env=env, session=head.pid)
    finally:
        stop_tree(head)
        subprocess.run(["rm", "-rf", temp_dir], check=False)


@contextmanager
def ray_worker(head: Head, num_cpus: int, resources: dict[str, float]) -> Iterator[int]:
    """``ray start --address=<head>`` on 127.0.0.1 with custom ``resources``; up once the head sees them.
    Yields the session its processes run in."""
    worker = subprocess.Popen(
        [RAY, "start", "--block", f"--address={head.gcs}", "--node-ip-address=127.0.0.1",
         f"--num-cpus={num_cpus}", f"--resources={json.dumps(resources)}", "--disable-usage-stats",
         *_own_ports()],
        env=head.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        _wait(lambda: _node_with(head.dashboard, resources), worker, "ray worker node")
        yield worker.pid
    finally:
        stop_tree(worker)
