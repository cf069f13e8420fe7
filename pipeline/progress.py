"""Progress a person can follow in a log without a terminal (nightly jobs, ``ray job logs``).

The run logs its own INFO line at each phase and, while scoring, every ``job.progress_interval_s``
seconds: ``scoring: 40/100 episodes done, 2 failed, 1,230 episodes/h, ETA 3 min``. Ray Data's own
per-stage progress block (10 lines every 10 s without a terminal) is turned off unless
``job.log_level=DEBUG`` (:func:`quiet_ray_data`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    """A human duration: ``45 s``, ``3 min``, ``2 h 05 min``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def progress_line(done: int, failed: int, total: int, elapsed_s: float) -> str:
    """``scoring: 40/100 episodes done, 2 failed, 1,230 episodes/h, ETA 3 min`` (rate over ``elapsed_s``).

    Args:
        done: Episodes whose result came back (``ok`` or failed).
        failed: How many of them failed.
        total: Episodes pending at the start of scoring.
        elapsed_s: Seconds since scoring started.
    """
    head = f"scoring: {done:,}/{total:,} episodes done, {failed:,} failed"
    if done == 0 or elapsed_s <= 0:
        # Results come back as their shard is committed (16 episodes a shard), not one by one.
        return f"{head}, first results pending ({format_duration(elapsed_s)} in)"
    rate = done / elapsed_s
    eta = format_duration((total - done) / rate) if done < total else "0 s"
    return f"{head}, {rate * 3600:,.0f} episodes/h, ETA {eta}"


class ScoringProgress:
    """Counts results as they come back and logs a progress line every ``interval_s`` seconds.

    The line is written from a background thread, so it also appears while no result arrives (actors
    loading the model, a slow batch). Use it as a context manager around the scoring loop::

        with ScoringProgress(len(pending), cfg.job.progress_interval_s) as progress:
            for row in rows:
                progress.add(ok=row["status"] == "ok")
    """

    def __init__(
        self,
        total: int,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
        where: str = "",
    ) -> None:
        self.total = total
        self.where = where
        self.interval_s = interval_s
        self.done = 0
        self.failed = 0
        self._clock = clock
        self._log = logger
        self._started = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, ok: bool) -> None:
        """One episode's result came back."""
        self.done += 1
        self.failed += not ok

    def line(self) -> str:
        """The progress line as of now."""
        return progress_line(self.done, self.failed, self.total, self._clock() - self._started)

    def _report(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._log.info("%s", self.line())

    def __enter__(self) -> ScoringProgress:
        self._started = self._clock()
        self._log.info(
            "scoring: started, %s episodes pending%s; progress every %s",
            f"{self.total:,}",
            f" on {self.where}" if self.where else "",
            format_duration(self.interval_s),
        )
        self._thread = threading.Thread(target=self._report, name="scoring-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        elapsed = self._clock() - self._started
        ending = "finished" if exc_type is None else "interrupted"
        self._log.info(
            "scoring: %s after %s, %s/%s episodes done, %s failed",
            ending,
            format_duration(elapsed),
            f"{self.done:,}",
            f"{self.total:,}",
            f"{self.failed:,}",
        )


def quiet_ray_data(log_level: str) -> None:
    """Ray Data's progress output off for the driver's Ray Data executions, unless ``log_level`` is DEBUG.

    Without a terminal Ray Data logs its progress block (``Total Progress``, one line per stage) every
    10 s and prints the execution plan at start; the pipeline's own progress lines replace them. The
    settings are those of ``ray.data.DataContext`` in Ray 2.60: ``enable_progress_bars`` (no progress
    manager at all), ``enable_operator_progress_bars``, ``print_on_execution_start`` and
    ``execution_options.verbose_progress``.
    """
    import ray.data

    verbose = log_level.upper() == "DEBUG"
    # Ray Data then warns once how to turn the bars back on; job.log_level=DEBUG is how.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.NOTSET if verbose else logging.ERROR)
    # "Dataset ... execution finished in N s": the pipeline's own "scoring: finished" line says it.
    logging.getLogger("ray.data._internal.execution.streaming_executor").setLevel(
        logging.NOTSET if verbose else logging.WARNING
    )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = verbose
    ctx.enable_operator_progress_bars = verbose
    ctx.print_on_execution_start = verbose
    ctx.execution_options.verbose_progress = verbose
