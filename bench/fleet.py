"""Benchmark: a relabel run over a fleet of N datasets on (moto) S3, request by request (issue 18).

For each N in ``--sizes`` it builds N small LeRobot v3.0 datasets (``devkit.fleet``: one dataset
recorded with LeRobot, its bytes replicated under ``s3://fleet/fleet/robot<r>/task<t>``, written straight
into moto's backend), commits labels for every episode without a model (the real shard layout, the
catalog's fingerprints, the run's config hash: the runs only plan and publish), then runs the pipeline
through its public API, ``pipeline.relabel.run(cfg)``, against moto S3 behind a counting proxy:

(c) the first run: every dataset published for the first time; its plan phase (start to the run's
    ``plan:`` log line: catalog and committed state) and publish phase (after planning, or after the last
    ``scoring:`` line, to the end of the run) are timed and their requests counted apart;
(a) a no-op night: the same run again, nothing new;
(b) one new episode in one dataset: LeRobot's recorder resumes one dataset and records one more episode
    (new files after the old ones, ``meta/info.json`` and ``meta/stats.json`` rewritten), then the run
    scores that episode with the tiny model and publishes the dataset; requests touching that dataset's
    keys are counted apart from the others.

Each prints requests by verb (GET, LIST, HEAD, PUT, COPY, POST, DELETE), wall time, the growth ratio
from one N to the next, the driver's peak memory during the run (VmHWM, reset before each run), and the
no-op time projected for a real bucket: every request one after another at ``--latency-ms`` (30 ms). The
same no-op night on local disk (``--local N``) gives the S3/local ratio.

The S3 server (moto) and the counting proxy run in a process of their own, so the driver being measured
shares its interpreter with neither. moto lists a prefix by scanning the whole bucket; the server indexes
key names so that a listing costs what the matching keys cost, as on S3 (``devkit.fleet.index_listings``;
``--stock-moto`` keeps the scan). moto still renders a 1,000-key listing page in 0.3-0.4 s of its own
CPU (S3: tens of ms), so long paginated listings are slower here than on a real bucket.

Ray (``--cpus``, default all) is started once before anything is timed, like the cluster a nightly job
joins; the pipeline's runs connect to it.

    python -m bench.fleet [--sizes 100,1000] [--local 1000] [--episodes 3] [--length 10] [--cameras 1]
                          [--latency-ms 30] [--stock-moto] [--label after] [--json out.json] [--log run.log]

On the 2-CPU development VM the default (100 and 1,000 on S3, 1,000 on local disk) takes about 10 min;
``--sizes 100,1000,5000`` about 35 min, most of it the first run's publish of 5,000 datasets (~15 min)
and the uncounted setup (listing 5,000 datasets and committing their labels, ~3 min).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
MODEL_DIR = PROJECT / ".cache" / "models" / "tiny-qwen3_vl-s0"
SOURCE_BUCKET, OUTPUT_BUCKET = "fleet", "labels"
VERBS = ("GET", "LIST", "HEAD", "PUT", "COPY", "POST", "DELETE", "OTHER")
# Score committed for every episode: above the threshold below, so every episode is selected and every
# dataset has a curated set (the expensive case for a publish).
SCORE, THRESHOLD = 0.0, -1000.0


def _environment() -> None:
    """Offline, loopback only, throwaway S3 credentials (moto accepts any)."""
    for key, value in {
        "HF_HUB_OFFLINE": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
        "AWS_ACCESS_KEY_ID": "bench-fleet",
        "AWS_SECRET_ACCESS_KEY": "bench-fleet",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(key, value)


# --------------------------------------------------------------------------------------------------
# One run, measured: each run is a fresh driver process joining the bench's Ray cluster, as a nightly
# job is (its own fsspec clients and listing caches, its own Ray workers). It stops at each phase mark
# of its log until the bench has taken a request snapshot, so phases split the counts exactly.

PROTOCOL = "@@bench.fleet "


def _status_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class Phase:
    seconds: float | None = None
    counts: Any = None  # CountSnapshot, or None (local disk)


@dataclass
class Measured:
    """One ``run(cfg)``: wall time, requests, phases, the driver's memory."""

    wall: float
    counts: Any
    plan: Phase
    score: Phase
    publish: Phase
    peak_mib: float
    rss_start_mib: float
    scored: int
    config_hash: str
    log_lines: list[str] = field(default_factory=list)


class _Marks(logging.Handler):
    """In the run's process: keeps every pipeline log line; at the phase marks (the first ``plan:`` and
    ``publish:`` lines, every ``scoring:`` line) tells the bench and waits for its answer."""

    def __init__(self, started: float) -> None:
        super().__init__(logging.INFO)
        self.started = started
        self.seen: set[str] = set()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        now = time.perf_counter()
        self.lines.append(f"{now - self.started:9.3f} {record.levelname} {record.name}: {message}")
        for mark in ("plan:", "scoring:", "publish:"):
            if message.startswith(mark) and (mark == "scoring:" or mark not in self.seen):
                self.seen.add(mark)
                _tell({"mark": mark, "t": now - self.started})
                sys.stdin.readline()  # the bench's snapshot is taken


def _tell(message: dict[str, Any]) -> None:
    sys.__stdout__.write(PROTOCOL + json.dumps(message) + "\n")
    sys.__stdout__.flush()


def child_main() -> None:
    """The run's process: reads the overrides, runs ``pipeline.relabel.run``, reports (``--child``)."""
    spec = json.loads(sys.stdin.readline())
    _environment()
    sys.stdout = sys.stderr  # the protocol owns stdout
    logging.basicConfig(level=logging.WARNING, handlers=[logging.NullHandler()])
    logging.getLogger("pipeline").setLevel(logging.INFO)
    from pipeline.config import load_config
    from pipeline.relabel import run

    cfg = load_config(spec["overrides"])
    rss = (_status_kib("VmRSS") or 0) / 1024
    _tell({"ready": True})
    sys.stdin.readline()  # counters reset
    started = time.perf_counter()
    marks = _Marks(started)
    logging.getLogger("pipeline").addHandler(marks)
    summary = run(cfg)
    wall = time.perf_counter() - started
    problems = [
        error
        for d in summary.datasets.values()
        for error in (d.catalog_error, *d.errors, d.publish_error)
        if error
    ]
    peak = _status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _tell(
        {
            "wall": wall,
            "scored": summary.scored,
            "config_hash": summary.config_hash,
            "problems": problems[:5],
            "failures": len(problems),
            "peak_mib": peak / 1024,
            "rss_start_mib": rss,
            "lines": marks.lines,
        }
    )


def measure(
    overrides_: list[str], snap: Callable[[], Any] = lambda: None, reset: Callable[[], None] = lambda: None
) -> Measured:
    """Runs ``pipeline.relabel.run`` with ``overrides_`` in a fresh driver process; counts requests from
    ``reset()`` to the end, and at each phase mark (``snap()``)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.fleet", "--child"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(json.dumps({"overrides": overrides_}) + "\n")
    process.stdin.flush()
    marks: dict[str, tuple[float, Any]] = {}
    result: dict[str, Any] | None = None
    for line in process.stdout:
        if not line.startswith(PROTOCOL):
            sys.stderr.write(line)
            continue
        message = json.loads(line[len(PROTOCOL) :])
        if "ready" in message:
            reset()
        elif "mark" in message:
            marks[message["mark"]] = (message["t"], snap())
        else:
            result = message
            continue
        process.stdin.write("go\n")
        process.stdin.flush()
    if process.wait() != 0 or result is None:
        raise SystemExit(f"bench.fleet: the run's process failed (status {process.returncode})")
    if result["failures"]:
        raise SystemExit(
            f"bench.fleet: the run recorded {result['failures']} failure(s), e.g. {result['problems']}"
        )
    total = snap()

    def between(start: tuple[float, Any] | None, end: tuple[float, Any] | None) -> Phase:
        if start is None or end is None:
            return Phase()
        counts = end[1] - start[1] if end[1] is not None and start[1] is not None else None
        return Phase(end[0] - start[0], counts)

    begin = (0.0, None if total is None else type(total)())
    planned = marks.get("plan:")
    scored_until = marks.get("scoring:", planned)
    return Measured(
        wall=result["wall"],
        counts=total,
        plan=between(begin, planned),
        score=between(planned, scored_until) if "scoring:" in marks else Phase(0.0, None),
        publish=between(scored_until, (result["wall"], total)),
        peak_mib=result["peak_mib"],
        rss_start_mib=result["rss_start_mib"],
        scored=result["scored"],
        config_hash=result["config_hash"],
        log_lines=result["lines"],
    )


# --------------------------------------------------------------------------------------------------
# Configs.


def overrides(source: str, output: str, endpoint: str | None, ray_address: str) -> list[str]:
    """The run's settings: the tiny model, small frames, every episode selected, the S3 endpoint, the
    bench's Ray cluster."""
    storage = f"{{endpoint_url: '{endpoint}'}}" if endpoint else "{}"
    return [
        f"source.uris=[{source}]",
        f"source.storage_options={storage}",
        f"output.uri={output}",
        f"output.storage_options={storage}",
        f"model.path={MODEL_DIR}",
        "frames.height=64",
        "frames.width=64",
        "frames.max_frames=8",
        "prefixes.num=4",
        f"success.threshold={THRESHOLD}",
        "job.progress_interval_s=3600",
        f"ray.address={ray_address}",
    ]


# --------------------------------------------------------------------------------------------------
# The fleets.


@dataclass
class SizeResult:
    n: int
    setup_build: float
    setup_labels: float
    first: Measured
    noop: Measured
    grown: Measured
    grown_files: int
    stored_objects: int


def bench_s3(
    n: int, template: Path, chash: str, args: argparse.Namespace, log_lines: list[str]
) -> SizeResult:
    """Builds a fleet of ``n`` on moto S3 and measures (c), (a) and (b) through the counting proxy."""
    from devkit.fleet import add_episode, build_s3_fleet, catalog_rows, commit_labels, fleet_ids, fleet_s3

    output = f"s3://{OUTPUT_BUCKET}/topreward"
    with fleet_s3(SOURCE_BUCKET, OUTPUT_BUCKET, indexed=not args.stock_moto) as server:
        started = time.perf_counter()
        roots = build_s3_fleet(server, template, SOURCE_BUCKET, n)
        built = time.perf_counter() - started
        started = time.perf_counter()
        direct = server.storage_options(counted=False)
        rows = catalog_rows(roots, direct)
        commit_labels(rows, output, chash, direct, model=str(MODEL_DIR), score=SCORE)
        labelled = time.perf_counter() - started
        settings = overrides(f"s3://{SOURCE_BUCKET}/fleet", output, server.endpoint, args.ray_address)
        runs = {}
        for name in ("first", "noop"):
            print(f"bench.fleet: N={n:,} S3: {name} run ...", file=sys.stderr, flush=True)
            runs[name] = measure(settings, server.snapshot, server.reset)
            log_lines += [f"[N={n} s3 {name}] {line}" for line in runs[name].log_lines]
        # (b): one more episode in one dataset, in the middle of the fleet.
        changed = fleet_ids(n)[n // 2]
        written = add_episode(roots[n // 2], direct)
        server.focus(f"/{changed}/")
        print(f"bench.fleet: N={n:,} S3: one new episode in {changed} ...", file=sys.stderr, flush=True)
        runs["grown"] = measure(settings, server.snapshot, server.reset)
        log_lines += [f"[N={n} s3 grown] {line}" for line in runs["grown"].log_lines]
        server.focus("")
        stored = server.count(OUTPUT_BUCKET)["objects"]
    return SizeResult(n, built, labelled, runs["first"], runs["noop"], runs["grown"], len(written), stored)


def bench_local(
    n: int, template: Path, chash: str, work: Path, args: argparse.Namespace, log_lines: list[str]
) -> tuple[Measured, Measured]:
    """The first run and the no-op night of a fleet of ``n`` on local disk."""
    from devkit.fleet import build_local_fleet, catalog_rows, commit_labels

    folder = work / f"local-{n}"
    roots = build_local_fleet(template, folder / "source", n)
    output = str(folder / "output")
    commit_labels(catalog_rows(roots, {}), output, chash, {}, model=str(MODEL_DIR), score=SCORE)
    settings = overrides(str(folder / "source" / "fleet"), output, None, args.ray_address)
    runs = {}
    for name in ("first", "noop"):
        print(f"bench.fleet: N={n:,} local disk: {name} run ...", file=sys.stderr, flush=True)
        runs[name] = measure(settings)
        log_lines += [f"[N={n} local {name}] {line}" for line in runs[name].log_lines]
    return runs["first"], runs["noop"]


# --------------------------------------------------------------------------------------------------
# Printing.


def _ratio(later: float | None, earlier: float | None, step: float) -> str:
    """``later/earlier``; for a step other than 10x also the equivalent per 10x, in brackets."""
    if later is None or earlier is None or earlier <= 0:
        return "-"
    ratio = later / earlier
    if abs(step - 10) < 1e-9:
        return f"{ratio:.2f}"
    return f"{ratio:.2f} ({ratio ** (1 / math.log10(step)):.2f}/10x)"


class Table:
    def __init__(self, sizes: list[int], label_width: int = 46, cell: int = 12) -> None:
        self.sizes, self.lw, self.cell = sizes, label_width, cell
        self.steps = [b / a for a, b in pairwise(sizes)]

    def header(self, title: str) -> str:
        cells = "".join(f"{'N=' + format(n, ','):>{self.cell}}" for n in self.sizes)
        ratios = "".join(f"  {f'{b:,}/{a:,}':>18}" for a, b in pairwise(self.sizes))
        return f"{title:<{self.lw}}{cells}{ratios}"

    def row(self, label: str, values: list[float | None], fmt: str = "{:,.0f}", ratio: bool = True) -> str:
        cells = "".join(f"{(fmt.format(v) if v is not None else '-'):>{self.cell}}" for v in values)
        ratios = ""
        if ratio:
            ratios = "".join(
                f"  {_ratio(b, a, step):>18}"
                for a, b, step in zip(values, values[1:], self.steps, strict=False)
            )
        return f"{label:<{self.lw}}{cells}{ratios}"


def _verb_rows(table: Table, label: str, snapshots: list[Any]) -> list[str]:
    lines = [table.row(f"{label} requests", [s.total if s is not None else None for s in snapshots])]
    for verb in VERBS:
        values = [s.verb(verb) if s is not None else None for s in snapshots]
        if any(values):
            lines.append(table.row(f"    {verb}", values))
    return lines


def _phase_rows(table: Table, label: str, phases: list[Phase]) -> list[str]:
    lines = [table.row(f"  {label} [s]", [p.seconds for p in phases], "{:,.1f}")]
    if all(p.counts is not None for p in phases):
        lines += _verb_rows(table, f"  {label}", [p.counts for p in phases])
    else:
        lines.append(f"  {label}: requests not split (the run's log lines did not mark the phase)")
    return lines


def report(
    results: list[SizeResult],
    local: tuple[int, Measured, Measured] | None,
    args: argparse.Namespace,
    header: list[str],
) -> str:
    sizes = [r.n for r in results]
    t = Table(sizes)
    latency = args.latency_ms / 1000
    out = [*header, ""]

    out.append(t.header("setup (not timed as runs)"))
    out.append(
        t.row("  replicate the fleet into moto [s]", [r.setup_build for r in results], "{:,.1f}", False)
    )
    out.append(
        t.row("  list it + commit labels, uncounted [s]", [r.setup_labels for r in results], "{:,.1f}", False)
    )
    out.append(
        t.row("  objects under the output after (b)", [r.stored_objects for r in results], ratio=False)
    )
    out.append("")

    noops = [r.noop for r in results]
    out.append(t.header("(a) no-op night (second run, nothing new)"))
    out.append(t.row("  wall [s]", [m.wall for m in noops], "{:,.1f}"))
    out += _verb_rows(t, " ", [m.counts for m in noops])
    out.append(
        t.row(
            "  requests per dataset",
            [m.counts.total / r.n for m, r in zip(noops, results, strict=True)],
            "{:,.2f}",
        )
    )
    out.append(
        t.row(
            "  non-LIST requests per dataset",
            [(m.counts.total - m.counts.verb("LIST")) / r.n for m, r in zip(noops, results, strict=True)],
            "{:,.2f}",
        )
    )
    out += _phase_rows(t, "plan", [m.plan for m in noops])
    out += _phase_rows(t, "publish", [m.publish for m in noops])
    out.append(t.row("  driver process peak RSS [MiB]", [m.peak_mib for m in noops], "{:,.0f}"))
    out.append(
        t.row(
            "    above its RSS when the run started [MiB]",
            [m.peak_mib - m.rss_start_mib for m in noops],
            "{:,.0f}",
        )
    )
    out.append(
        t.row(
            f"  projected, real bucket at {args.latency_ms:g} ms/request [s]",
            [m.counts.total * latency for m in noops],
            "{:,.0f}",
        )
    )
    out.append("")

    grown = [r.grown for r in results]
    out.append(t.header("(b) one new episode in one dataset"))
    out.append(t.row("  wall [s] (scoring 1 episode included)", [m.wall for m in grown], "{:,.1f}"))
    out.append(t.row("  episodes scored", [m.scored for m in grown], ratio=False))
    out += _verb_rows(t, " ", [m.counts for m in grown])
    focus_total = [sum(m.counts.focus.values()) for m in grown]
    out.append(t.row("  requests on the changed dataset's keys", focus_total))
    for verb in VERBS:
        values = [m.counts.focus.get(verb, 0) for m in grown]
        if any(values):
            out.append(t.row(f"    {verb}", values))
    out.append(
        t.row(
            "  requests on other keys", [m.counts.total - f for m, f in zip(grown, focus_total, strict=True)]
        )
    )
    for verb in VERBS:
        values = [m.counts.verb(verb) - m.counts.focus.get(verb, 0) for m in grown]
        if any(values):
            out.append(t.row(f"    {verb}", values))
    out += _phase_rows(t, "plan", [m.plan for m in grown])
    out += _phase_rows(t, "score", [m.score for m in grown])
    out += _phase_rows(t, "publish", [m.publish for m in grown])
    out.append(t.row("  driver process peak RSS [MiB]", [m.peak_mib for m in grown], "{:,.0f}"))
    out.append("")

    firsts = [r.first for r in results]
    out.append(t.header("(c) first run (labels committed, all published)"))
    out.append(t.row("  wall [s]", [m.wall for m in firsts], "{:,.1f}"))
    out += _verb_rows(t, " ", [m.counts for m in firsts])
    out += _phase_rows(t, "plan", [m.plan for m in firsts])
    out += _phase_rows(t, "publish", [m.publish for m in firsts])
    out.append(t.row("  driver process peak RSS [MiB]", [m.peak_mib for m in firsts], "{:,.0f}"))
    out.append("")

    biggest = results[-1]
    out.append(f"no-op night at N={biggest.n:,}, requests by area (bucket:area, verb):")
    areas = biggest.noop.counts.areas
    for (area, verb), count in sorted(areas.items(), key=lambda item: -item[1]):
        out.append(f"  {area:<28}{verb:<8}{count:>10,}")
    out.append("")

    if local is not None:
        n, first, noop = local
        s3 = next((r for r in results if r.n == n), None)
        out.append(f"local disk, N={n:,} (same fleet, same runs)")
        out.append(f"  first run [s]                                {first.wall:10.1f}")
        out.append(f"    plan / publish [s]{_fmt(first.plan.seconds):>35} / {_fmt(first.publish.seconds)}")
        out.append(f"  no-op night [s]                              {noop.wall:10.1f}")
        out.append(f"    plan / publish [s]{_fmt(noop.plan.seconds):>35} / {_fmt(noop.publish.seconds)}")
        if s3 is not None:
            ratio = s3.noop.wall / noop.wall
            out.append(
                f"  no-op night S3 / local disk                  {ratio:10.2f}   (issue 18's bar: within 3x)"
            )
        out.append("")

    out += [
        f"Projection: a real bucket answers a request in tens of ms; at {args.latency_ms:g} ms each, every",
        "request issued one after another (the bound for a driver that reads sequentially; concurrent reads",
        "divide it). LIST counts pages: a page returns up to 1,000 keys and a full page takes S3 longer than",
        "a small GET, so full pages may cost more than that; moto renders a full page in ~0.4 s of its CPU.",
    ]
    return "\n".join(out)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _code_version() -> str:
    """The commit the pipeline code comes from (or where it is, outside a git checkout)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(PROJECT), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(PROJECT), "status", "--porcelain", "--untracked-files=no", "pipeline"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return head[:100] + (" (pipeline/ has uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return f"at {PROJECT} (not a git checkout)"


def main(argv: list[str] | None = None) -> None:
    """Builds the fleets, measures the runs, prints the tables (``--child``: one measured run)."""
    if (sys.argv[1:] if argv is None else argv) == ["--child"]:
        child_main()
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="100,1000", help="fleet sizes, comma-separated (e.g. 100,1000,5000)"
    )
    parser.add_argument("--local", type=int, default=1000, help="N of the local-disk no-op (0: skip)")
    parser.add_argument("--episodes", type=int, default=3, help="episodes per dataset")
    parser.add_argument("--length", type=int, default=10, help="frames per episode (about)")
    parser.add_argument("--cameras", type=int, default=1, help="64x64 cameras per dataset")
    parser.add_argument("--latency-ms", type=float, default=30.0, help="assumed latency of a real bucket")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray")
    parser.add_argument("--stock-moto", action="store_true", help="moto's own listing (scans the bucket)")
    parser.add_argument("--label", default="", help="names the code measured in the header (e.g. 'before')")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--log", type=Path, help="write the runs' pipeline log lines here")
    args = parser.parse_args(argv)
    sizes = sorted({int(size) for size in args.sizes.split(",") if size.strip()})
    _environment()
    logging.basicConfig(level=logging.WARNING)

    import ray

    from devkit.fleet import write_template
    from devkit.tiny_model import ensure_tiny_model

    ensure_tiny_model(MODEL_DIR, family="qwen3_vl", size="tiny", seed=0)
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    log_lines: list[str] = []
    try:
        template = write_template(work / "template", args.episodes, args.length, args.cameras)
        shutil.copytree(template, work / "probe-source" / "probe" / "one")
        # The cluster every run joins (as a nightly job joins a long-lived one).
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        args.ray_address = ray.get_runtime_context().gcs_address
        # The config hash the labels are committed under: a real run of the same settings over one
        # dataset on local disk (the hash covers model, prompt, frames and prefixes only). It also
        # checks that a run works at all before the fleets are built.
        probe = measure(
            overrides(str(work / "probe-source"), str(work / "probe-output"), None, args.ray_address)
        )
        chash = probe.config_hash
        log_lines += [f"[probe] {line}" for line in probe.log_lines]
        results = [bench_s3(n, template, chash, args, log_lines) for n in sizes]
        local = None
        if args.local:
            first, noop = bench_local(args.local, template, chash, work, args, log_lines)
            local = (args.local, first, noop)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    template_note = f"{args.episodes} episodes x ~{args.length} frames, {args.cameras} camera(s) 64x64 AV1"
    header = [
        f"bench.fleet: {args.label + ': ' if args.label else ''}code {_code_version()}",
        f"  datasets: LeRobot v3.0, {template_note}; labels pre-committed (config {chash}), "
        f"score {SCORE}, threshold {THRESHOLD} (all selected)",
        f"  S3: moto in its own process behind a counting proxy ({'stock' if args.stock_moto else 'indexed'} "
        "listings)",
        f"  each run: a fresh driver process joining one Ray cluster ({args.cpus} CPUs, started before "
        f"timing); machine: {os.cpu_count()} CPUs, load average (1/5/15 min) "
        f"{'/'.join(f'{x:.1f}' for x in load_before)} at the start, "
        f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())} at the end",
    ]
    print(report(results, local, args, header))
    if args.log:
        args.log.write_text("\n".join(log_lines) + "\n")
    if args.json:
        args.json.write_text(json.dumps(_as_json(results, local, args), indent=1))


def _as_json(results: list[SizeResult], local: Any, args: argparse.Namespace) -> dict[str, Any]:
    def measured(m: Measured) -> dict[str, Any]:
        def phase(p: Phase) -> dict[str, Any]:
            return {"seconds": p.seconds, "requests": p.counts.to_json() if p.counts is not None else None}

        return {
            "wall_s": m.wall,
            "requests": m.counts.to_json() if m.counts is not None else None,
            "plan": phase(m.plan),
            "score": phase(m.score),
            "publish": phase(m.publish),
            "peak_rss_mib": m.peak_mib,
            "rss_start_mib": m.rss_start_mib,
            "scored": m.scored,
        }

    return {
        "args": {k: str(v) for k, v in vars(args).items()},
        "sizes": [
            {
                "n": r.n,
                "setup_build_s": r.setup_build,
                "setup_labels_s": r.setup_labels,
                "stored_objects": r.stored_objects,
                "first": measured(r.first),
                "noop": measured(r.noop),
                "grown": measured(r.grown),
            }
            for r in results
        ],
        "local": None
        if local is None
        else {"n": local[0], "first": measured(local[1]), "noop": measured(local[2])},
    }


if __name__ == "__main__":
    main()
