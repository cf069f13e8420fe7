"""Clean stops: SIGTERM (what Kubernetes and ``ray job stop`` send) and SIGINT end a run on purpose.

While :func:`stop_on_signals` is active, either signal raises :class:`RunStopped` in the main thread,
wherever the run is (listing, scoring, publishing). The run then records ``stopped`` and the job exits
with ``128 + signal`` (143 for SIGTERM, 130 for SIGINT), the code a shell or Kubernetes reports for a
process ended by that signal. Nothing half-written becomes visible: every file a run commits or
publishes is written in one step (``pipeline.atomic``), and the next run removes what a stopped run
left behind (temp files, shards without a marker) and scores the rest.

``ray.init`` installs a SIGTERM handler of its own in the driver (``sys.exit(15)``, which ends the
process by SIGABRT once Ray's threads are torn down); :func:`start_ray` puts ours back after Ray
starts. The job (``jobs.relabel``) then shuts Ray down (:func:`stop_ray`) and ends the process with the
stop's code (``os._exit``: a driver that exits the ordinary way with Ray still connected ends with
status 1 whatever code it asked for).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunStopped(BaseException):
    """The run was asked to stop by a signal.

    A ``BaseException`` (like ``KeyboardInterrupt``) so that no ``except Exception`` on the way, the
    pipeline's or Ray's, turns the stop into a failed episode.

    Attributes:
        signum: The signal that stopped the run.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        """``128 + signal``: 143 for SIGTERM, 130 for SIGINT."""
        return 128 + self.signum


# The stop asked for inside the current stop_on_signals block (set in the main thread only).
_requested: RunStopped | None = None


def _handle(signum: int, frame: FrameType | None) -> None:
    global _requested
    if _requested is not None:
        log.warning("%s received again: already stopping", signal.Signals(signum).name)
        return
    _requested = RunStopped(signum)
    log.warning("%s received: stopping the run", signal.Signals(signum).name)
    raise _requested


def requested_stop() -> RunStopped | None:
    """The stop a signal asked for in the current :func:`stop_on_signals` block, else None.

    The exception that ends the run is not always the :class:`RunStopped` itself: raised inside one of
    Ray's compiled calls (``ray.wait``) it surfaces as a ``SystemError`` whose context it is.
    """
    return _requested


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


_active = False


def start_ray(init: Callable[[], object]) -> None:
    """Calls ``init`` (a ``ray.init``) and keeps the stop handlers of :func:`stop_on_signals` after it.

    ``ray.init`` installs its own SIGTERM handler first thing (``sys.exit(15)``): a SIGTERM while Ray
    starts (seconds) becomes :class:`RunStopped` too, and the stop handlers are put back once it ran.
    Outside :func:`stop_on_signals` this only calls ``init``.
    """
    global _requested
    started = time.perf_counter()
    log.debug("ray: starting")
    try:
        init()
    except SystemExit as err:
        if not _active or err.code != signal.SIGTERM:
            raise
        _requested = RunStopped(signal.SIGTERM)
        log.warning("SIGTERM received while Ray started: stopping the run")
        raise _requested from None
    log.debug("ray: started in %.2f s", time.perf_counter() - started)
    if _active and _in_main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, _handle)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise :class:`RunStopped` inside the block (main thread only; else a no-op).

    A second signal while the run is stopping is logged and ignored, so the run record is still
    written; the handlers found on entry are restored on exit.
    """
    global _active, _requested
    if not _in_main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    _requested = None
    _active = True
    try:
        for signum in STOP_SIGNALS:
            signal.signal(signum, _handle)
        yield
    finally:
        _active = False
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def stop_ray() -> None:
    """``ray.shutdown()``: stops a local Ray this process started, leaves a cluster it joined running.

    Two waits of a local Ray's shutdown are cut. ``ray.shutdown()`` stops the GCS before the autoscaler
    monitor, whose SIGTERM handler then tries to report to the stopped GCS until Ray kills it a second
    later: the monitor of a local Ray has nothing to scale and nothing to save, so it is killed first.
    And the raylet asks its workers to exit, which a scorer actor does by tearing down torch and
    transformers for seconds after the raylet is gone: the workers still alive once Ray is shut down
    are killed (their results were all collected; nothing of theirs is written after). (Ray 2.60's table
    of the processes ``ray.init`` started is private; if it has moved, the plain shutdown runs.)
    """
    import ray

    if not ray.is_initialized():
        return
    started = time.perf_counter()
    log.debug("ray: shutting down")
    workers = []
    try:
        import psutil
        from ray._private import ray_constants
        from ray._private.worker import _global_node

        started_here = _global_node.all_processes if _global_node is not None else {}
        for info in started_here.get(ray_constants.PROCESS_TYPE_RAYLET, []):
            workers += psutil.Process(info.process.pid).children(recursive=True)
        for info in started_here.get(ray_constants.PROCESS_TYPE_MONITOR, []):
            info.process.kill()
            info.process.wait(timeout=5)
    except Exception as err:  # a Ray whose private API moved: the plain shutdown
        log.debug("ray: shut down without shortcuts (%s: %s)", type(err).__name__, err)
    ray.shutdown()
    _kill(workers)
    log.debug("ray: shut down in %.2f s", time.perf_counter() - started)


def _kill(processes: list) -> None:
    """SIGKILLs the ``psutil`` processes still running; waits a little until they are dead (or zombies)."""
    import psutil

    def running(process: psutil.Process) -> bool:
        try:
            return process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:  # gone (NoSuchProcess), or its pid taken by another process
            return False

    alive = [process for process in processes if running(process)]
    for process in alive:
        with contextlib.suppress(psutil.Error):  # kill() checks the pid still names this process
            process.kill()
    deadline = time.monotonic() + 2
    while any(running(process) for process in alive) and time.monotonic() < deadline:
        time.sleep(0.02)
