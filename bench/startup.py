"""Benchmark: what a small relabel job pays besides its work (issue: start-up in seconds).

Builds a source prefix holding one synthetic LeRobot v3.0 dataset of one short episode
(``devkit.synth``) and the tiny random Qwen3-VL (``devkit.tiny_model``), then runs ``python -m
jobs.relabel`` on it as a subprocess, three times into the same output on local disk:

1. **first**: one episode to score, one dataset to publish;
2. **+1**: a second one-episode dataset added under the prefix (one new episode, one new dataset; the
   first is skipped and its publish left as it is);
3. **no-op**: nothing new (no episode to score, nothing to publish).

Each run's wall time (spawn to exit, measured here) is split by the timestamps of the job's own log
lines (``job.log_level=DEBUG`` adds the marks ``jobs.relabel: pipeline imported``, ``ray: starting`` /
``ray: started`` and ``ray: shutting down`` / ``ray: shut down``):

* ``imports``: interpreter start and the driver's imports, up to the run's first step;
* ``plan``: config, model resolution, run record, catalog and plan (Ray start excluded);
* ``ray start``: every ``ray.init`` of the run;
* ``scoring``: the Ray Data graph, scorer actor start and model load included (Ray start excluded);
* ``publish``: the changed-dataset check and the publish tasks, worker imports included;
* ``ray stop``: shutting Ray down;
* ``exit``: the rest: the summary, the run record's last write, interpreter exit.

    python -m bench.startup [--repeat 3] [--log-level DEBUG] [--project DIR ...]

Measured on this 2-core machine (load average 1.1-1.5 from other work, median of 3, seconds), before
this work (commit 60d71cd) and after (6bec9ea)::

                  first          +1          no-op
    wall          20.95 -> 12.78   20.99 -> 12.98   6.76 -> 1.01
    imports        5.31 ->  0.80    5.02 ->  0.78   4.86 -> 0.77
    plan           0.03 ->  0.02    0.43 ->  0.27   0.44 -> 0.23
    ray start      3.99 ->  2.75    3.97 ->  2.81   (not started)
    scoring        8.48 ->  8.43    7.89 ->  8.13
    publish        0.10 ->  0.11    0.10 ->  0.10
    ray stop       (in exit) 0.63   (in exit) 0.62
    exit           3.60 ->  0.04    3.47 ->  0.04   1.50 -> 0.03

Scoring is now mostly the scorer actor's start: its worker imports torch, transformers (and through
its video processor torchvision and torch._dynamo), about 4.3 s of CPU, then loads the model.

Where the ~13 s went (timestamps from the actor and the decode task, one run): Ray start 2.75; from Ray
Data's start to the scorer actor's ``__init__`` 1.5-2 s (a worker process started then, not a prestarted
one; it imports ray.data and pyarrow, then the stage module); torch and transformers 4.3 s (``-X
importtime``: torchvision 1.9 s, nearly all of it ``torch._dynamo`` that ``torchvision.ops.roi_align``
imports; scipy.optimize 0.8 s through ``transformers.loss``; neither is needed to score, neither can be
turned off from outside those packages); model and processor 0.2 s; scoring 0.1-0.5 s; the
label-and-commit task's worker 1 s. ``ray.init`` options (``log_to_driver=False``,
``enable_worker_prestart=False``) made no difference beyond the noise (3 runs each, load 2.5-3). On that
path the floor is about 11 s, so a local CPU run with a few episodes scores them in its own process
(``job.inline_max_episodes``, :mod:`pipeline.stages.inline`: the same stage functions) and publishes a
few changed datasets there too (``publish.inline_max_datasets``): such a job starts no Ray at all.
Median of 3 at load 2-3 (d9a1d9e), and at load 15-35 (another test suite running on the 2 cores)::

                  load 2-3                load 15-35
                  first    +1     no-op   first    +1     no-op
    wall          7.25     7.44   1.53    9.25     9.94   1.32
    imports       1.05     1.12   1.10    1.29     1.08   0.88
    plan          0.03     0.35   0.39    0.04     0.31   0.30
    scoring       5.97     5.85           7.76     6.71   (torch and transformers imported, model
    publish       0.08     0.06           0.07     0.05    loaded, 1 episode scored)
    exit          0.09     0.10   0.04    0.09     0.08   0.02
    each wall (load 2-3): first 6.1, 7.7, 7.2; +1 7.1, 7.4, 8.4; no-op 1.4, 1.5, 1.8

``--repeat`` runs the three-run sequence that many times (fresh folders each) and prints each part's
median; with ``--log-level INFO`` only the wall times mean anything (the marks are DEBUG lines).
``--max-load L`` waits before each job (up to ``--max-wait`` seconds) until the 1-minute load average
is at most L, so that a machine shared with other work is measured in its quiet moments; the table says
the load each run started at. ``--project`` names checkouts whose ``jobs.relabel`` to run (e.g. a ``git
worktree`` of the code before a change and one after): their sequences alternate, so a busy machine's
noise falls on both alike, and one table is printed per checkout.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
MODEL_DIR = PROJECT / ".cache" / "models" / "tiny-qwen3_vl-s0"
PARTS = ("imports", "plan", "ray start", "scoring", "publish", "ray stop", "exit")
RUNS = ("first", "+1", "no-op")
# A pipeline log line (jobs.relabel's format) or Ray's own (tab after the time).
_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})[ \t]\S+ (\S+?):? (.*)$")


@dataclass
class Timed:
    """One job run: its wall time, its parts and the log lines they were read from."""

    wall_s: float
    parts: dict[str, float] = field(default_factory=dict)
    exit_code: int = 0
    log: list[str] = field(default_factory=list)
    load: float = 0.0


def _marks(lines: list[str]) -> list[tuple[float, str]]:
    """``(unix time, message)`` for every timestamped log line."""
    found = []
    for line in lines:
        match = _LINE.match(line)
        if match:
            stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            found.append((stamp, match.group(3)))
    return found


def _first(marks: list[tuple[float, str]], prefix: str, after: float = 0.0) -> float | None:
    return next((t for t, message in marks if message.startswith(prefix) and t >= after), None)


def _last(marks: list[tuple[float, str]], prefix: str) -> float | None:
    return next((t for t, message in reversed(marks) if message.startswith(prefix)), None)


def split(lines: list[str], spawned: float, exited: float) -> dict[str, float]:
    """The parts of one run's wall time (module docstring) from its log lines; absent phases are 0."""
    marks = _marks(lines)
    ready = _first(marks, "jobs.relabel: pipeline imported") or spawned
    ray_spans = []
    for t, message in marks:
        if message.startswith("ray: starting"):
            end = _first(marks, "ray: started", t) or _first(marks, "Started a local Ray", t)
            ray_spans.append((t, end if end is not None else t))

    def ray_within(start: float, end: float) -> float:
        return sum(max(0.0, min(b, end) - max(a, start)) for a, b in ray_spans)

    plan = _first(marks, "plan:") or ready
    scored = _last(marks, "scoring: finished") or plan
    published = _last(marks, "publish:") or scored
    stop_start = _first(marks, "ray: shutting down")
    stop_end = _first(marks, "ray: shut down", stop_start or 0.0)
    stopping = stop_end - stop_start if stop_start and stop_end else 0.0
    parts = {
        "imports": ready - spawned,
        "plan": plan - ready - ray_within(ready, plan),
        "ray start": sum(b - a for a, b in ray_spans),
        "scoring": scored - plan - ray_within(plan, scored),
        "publish": published - scored - ray_within(scored, published),
        "ray stop": stopping,
    }
    parts["exit"] = exited - spawned - sum(parts.values())
    return parts


def quiet(max_load: float | None, max_wait_s: float) -> float:
    """Waits until the 1-minute load average is at most ``max_load`` (at most ``max_wait_s``); returns it."""
    deadline = time.monotonic() + max_wait_s
    while max_load is not None and os.getloadavg()[0] > max_load and time.monotonic() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


def run_job(project: Path, source: Path, output: Path, log_level: str, load: float = 0.0) -> Timed:
    """One ``python -m jobs.relabel`` of ``project`` over ``source`` into ``output``, spawn to exit."""
    args = [
        f"source.uris=[{source}]",
        f"output.uri={output}",
        f"model.path={MODEL_DIR}",
        "frames.height=64",
        "frames.width=64",
        "frames.max_frames=8",
        "prefixes.num=4",
        "success.threshold=-1000",
        f"job.log_level={log_level}",
    ]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    spawned = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "jobs.relabel", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    exited = time.time()
    lines = done.stderr.splitlines()
    return Timed(exited - spawned, split(lines, spawned, exited), done.returncode, lines, load)


def sequence(
    project: Path, folder: Path, log_level: str, wait: tuple[float | None, float]
) -> dict[str, Timed]:
    """The three runs of the module docstring, in ``folder``, with ``project``'s ``jobs.relabel``."""
    from devkit.synth import write_v30_dataset

    source, output = folder / "src", folder / "out"
    write_v30_dataset(source / "bench" / "a", repo_id="bench/a", lengths=[20])
    timed = {"first": run_job(project, source, output, log_level, quiet(*wait))}
    write_v30_dataset(source / "bench" / "b", repo_id="bench/b", lengths=[20])
    timed["+1"] = run_job(project, source, output, log_level, quiet(*wait))
    timed["no-op"] = run_job(project, source, output, log_level, quiet(*wait))
    for name, result in timed.items():
        if result.exit_code != 0:
            print("\n".join(result.log[-40:]), file=sys.stderr)
            raise SystemExit(f"bench.startup: the {name} run exited {result.exit_code}")
    return timed


def table(results: list[dict[str, Timed]]) -> str:
    """Median wall time and parts per run kind (seconds), one column per kind."""
    lines = [f"{'seconds (median of ' + str(len(results)) + ')':<28}" + "".join(f"{r:>9}" for r in RUNS)]
    for part in ("wall", *PARTS):
        cells = []
        for run in RUNS:
            values = [r[run].wall_s if part == "wall" else r[run].parts[part] for r in results]
            cells.append(f"{statistics.median(values):>9.2f}")
        lines.append(f"{part:<28}" + "".join(cells))
    walls = {run: [f"{r[run].wall_s:.1f}" for r in results] for run in RUNS}
    lines.append("each wall: " + "; ".join(f"{run} {', '.join(walls[run])}" for run in RUNS))
    loads = {run: [f"{r[run].load:.1f}" for r in results] for run in RUNS}
    lines.append("load at start: " + "; ".join(f"{run} {', '.join(loads[run])}" for run in RUNS))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Build the inputs, run the sequence ``--repeat`` times, print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=1, help="sequences to run (median printed)")
    parser.add_argument("--log-level", default="DEBUG", help="job.log_level of the runs (DEBUG: parts)")
    parser.add_argument("--show-log", action="store_true", help="print the last sequence's job logs")
    parser.add_argument("--project", type=Path, nargs="+", default=[PROJECT], help="checkouts to run")
    parser.add_argument("--max-load", type=float, default=None, help="wait for this 1-min load average")
    parser.add_argument("--max-wait", type=float, default=600, help="seconds to wait for it at most")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from devkit.tiny_model import ensure_tiny_model

    ensure_tiny_model(MODEL_DIR, "qwen3_vl", "tiny", 0)
    results: dict[Path, list[dict[str, Timed]]] = {project: [] for project in args.project}
    for _ in range(args.repeat):
        for project in args.project:
            with tempfile.TemporaryDirectory(prefix="topreward-startup-") as tmp:
                wait = (args.max_load, args.max_wait)
                results[project].append(sequence(project, Path(tmp), args.log_level, wait))
    for project, timed in results.items():
        if args.show_log:
            for run in RUNS:
                print(f"--- {project}: {run}", *timed[-1][run].log, sep="\n")
        load = os.getloadavg()[0]
        print(f"bench.startup: {project}: 1-episode jobs, {os.cpu_count()} CPUs, load average {load:.1f} now")
        print(table(timed))


if __name__ == "__main__":
    main()
