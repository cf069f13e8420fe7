"""The relabel run: catalog → decode → score → label → shards on Ray Data, then publish per dataset.

The driver lists episodes (metadata only) and drops those already committed for this config hash, Ray
Data streams the rest through CPU decode tasks, an actor pool holding the VLM, CPU labelling and shard
writes; finally every dataset whose committed shards or settings changed is published from them, one
Ray task per dataset (``pipeline.publish``).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

import ray

from pipeline.catalog import EpisodeRecord, list_episodes
from pipeline.config import ConfigError, RelabelConfig, config_hash, device_class
from pipeline.failures import CREDENTIALS_HINT, failure_lines, looks_like_credentials
from pipeline.fleetindex import FleetIndex
from pipeline.frames.schedule import resolution_tag
from pipeline.placement import (
    ScorerPlacement,
    cluster_placement,
    resolve_model,
    resolve_placement,
    scoring_line,
)
from pipeline.preflight import check_run
from pipeline.progress import ScoringProgress, quiet_ray_data
from pipeline.publish import PublishJob, PublishOutcome, publish_all
from pipeline.reader.dataset import INFO_PATH
from pipeline.runrecord import RunRecord, prune_run_records
from pipeline.sinks import (
    State,
    list_states,
    listing_pages,
    load_states,
    needs_folding,
    state_uri,
    write_shards,
)
from pipeline.stages.inline import StageArgs, score_in_process
from pipeline.stopping import RunStopped, requested_stop, start_ray, stop_on_signals
from pipeline.storage import normalize_uri, redact, with_storage_retries

log = logging.getLogger(__name__)

# Scorer actors: no weight-loading progress bars in the log (huggingface_hub and transformers read it).
SCORER_RUNTIME_ENV = {"env_vars": {"HF_HUB_DISABLE_PROGRESS_BARS": "1"}}
# CPUs per label-and-commit task: light work (no frames), mostly one small write.
COMMIT_NUM_CPUS = 0.25
# Episodes per commit: shards are small (no frames); a handful of episodes per shard keeps file counts sane.
COMMIT_BATCH_SIZE = 16


@dataclass
class DatasetSummary:
    """Counts for one dataset in one run, and what became of its published files."""

    dataset_id: str
    scored: int = 0
    skipped: int = 0
    failed: int = 0
    gave_up: int = 0
    frames: int = 0
    errors: list[str] = field(default_factory=list)
    catalog_error: str = ""
    publish: PublishOutcome | None = None

    @property
    def published(self) -> PublishOutcome | None:
        """This run's publish of the dataset when it succeeded (or found nothing to change)."""
        return self.publish if self.publish and self.publish.status != "failed" else None

    @property
    def publish_error(self) -> str:
        """Why publishing failed (dataset, file, reason), or ``""``."""
        return self.publish.error if self.publish and self.publish.status == "failed" else ""

    @property
    def failures(self) -> int:
        """Episodes and dataset-level problems recorded as failed in this run."""
        return self.failed + self.gave_up + bool(self.catalog_error) + bool(self.publish_error)

    def counts(self) -> dict[str, Any]:
        """The run record's view of this dataset."""
        return {
            "scored": self.scored,
            "skipped": self.skipped,
            "failed": self.failed,
            "gave_up": self.gave_up,
            "frames": self.frames,
            "catalog_error": self.catalog_error,
            "publish_error": self.publish_error,
            "curated_episodes": self.published.curated_episodes if self.published else None,
        }


@dataclass
class RunSummary:
    """What a run did, per dataset, and how long it took."""

    config_hash: str
    wall_seconds: float
    datasets: dict[str, DatasetSummary]
    run_record_uri: str = ""
    # Where the scorer actors ran (resolved on the driver); None when nothing was pending.
    placement: ScorerPlacement | None = None
    # Source URIs under which the catalog found no dataset (a mistyped prefix): see missing_sources().
    missing_sources: list[str] = field(default_factory=list)

    @property
    def scored(self) -> int:
        """Episodes scored ``ok`` in this run, all datasets together."""
        return sum(d.scored for d in self.datasets.values())

    @property
    def failures(self) -> int:
        """Everything recorded as failed in this run (episodes, datasets, publishes)."""
        return sum(d.failures for d in self.datasets.values())

    @property
    def succeeded(self) -> int:
        """Episodes labelled ``ok`` (scored now or skipped as done before) in datasets that published."""
        return sum(d.scored + d.skipped for d in self.datasets.values() if d.published)

    @property
    def nothing_succeeded(self) -> bool:
        """Failures were recorded and no episode is labelled and published (every episode failed)."""
        return self.failures > 0 and self.succeeded == 0


def _address(cfg: RelabelConfig) -> str | None:
    """The cluster to join: ``ray.address``, else RAY_ADDRESS (``ray job submit``); None = a local Ray."""
    return cfg.ray.address or os.environ.get("RAY_ADDRESS") or None


def connect_ray(cfg: RelabelConfig) -> None:
    """Join the cluster a job was submitted to (RAY_ADDRESS), a given address, or start a local Ray."""
    if ray.is_initialized():
        return
    address = _address(cfg)
    # ray.init replaces the SIGTERM handler with one that exits by SIGABRT; a run stops cleanly instead.
    if address:
        start_ray(partial(ray.init, address=address))
        return
    start_ray(
        partial(
            ray.init,
            address="local",
            num_cpus=cfg.ray.num_cpus,
            object_store_memory=cfg.ray.object_store_memory,
            _temp_dir=cfg.ray.temp_dir,
            include_dashboard=False,
        )
    )


def _without_ray(cfg: RelabelConfig) -> bool:
    """A run with no cluster to join and no Ray started yet: work done in this process needs no Ray."""
    return _address(cfg) is None and not ray.is_initialized()


def scores_in_process(cfg: RelabelConfig, pending: int) -> bool:
    """Whether this run scores its ``pending`` episodes in its own process (``job.inline_max_episodes``).

    Only a run that would otherwise start a local Ray for them (no cluster to join, none connected) and
    scores on CPU: there, for a few episodes, Ray's start, the scorer actor's process and Ray Data's
    workers take longer than the work. A cluster's placement (GPUs, custom resources) always gets the
    actor pool, and so does a GPU (a fatal device error must end an actor, not the driver).
    """
    return (
        0 < pending <= cfg.job.inline_max_episodes
        and _without_ray(cfg)
        and device_class(cfg.model.device) == "cpu"
    )


def stage_args(cfg: RelabelConfig, chash: str) -> StageArgs:
    """What the stage functions are called with in this run, by either executor."""
    return StageArgs(
        decode={
            "frames_cfg": cfg.frames,
            "prefixes_cfg": cfg.prefixes,
            "storage_options": cfg.source.storage_options,
            "block_size": cfg.source.block_size,
        },
        score={"model": cfg.model, "scoring": cfg.scoring, "threads": cfg.ray.scorer_threads},
        commit={
            "output_uri": cfg.output.uri,
            "config_hash": chash,
            "storage_options": cfg.output.storage_options,
        },
        score_batch_size=cfg.ray.scorer_batch_size,
        commit_batch_size=COMMIT_BATCH_SIZE,
    )


def build_dataset(
    rows: list[dict[str, Any]], cfg: RelabelConfig, chash: str, placement: ScorerPlacement | None = None
) -> ray.data.Dataset:
    """The streaming Ray Data graph over pending episode rows.

    ``placement`` is the scorer pool's shape, resolved against the connected cluster when None. The
    stages and their arguments are those of the in-process executor (:mod:`pipeline.stages.inline`).
    """
    # Imported here, when there is something to score: the stages pull in PyAV, torch, transformers
    # and scipy, seconds of a driver's start that a night with nothing new never needs.
    from pipeline.frames.decode import decode_episode
    from pipeline.stages.label import label_episode
    from pipeline.stages.score import ScoreEpisodes

    args = stage_args(cfg, chash)
    decode_compute = (
        ray.data.TaskPoolStrategy(size=cfg.ray.decode_concurrency) if cfg.ray.decode_concurrency else None
    )
    placement = placement or cluster_placement(cfg.ray, cfg.model)
    return (
        ray.data.from_items(rows)
        # Decoding is I/O plus light CPU work; fractional CPUs let it overlap the scorer on small nodes.
        .map(
            decode_episode,
            fn_kwargs=args.decode,
            num_cpus=cfg.ray.decode_num_cpus,
            compute=decode_compute,
        )
        # One VLM per actor, loaded once, in a pool sized to the cluster (pipeline/placement.py); on
        # CPU-only clusters a fractional CPU keeps decode schedulable (whole CPUs held by actors starve
        # the decode tasks and the pipeline deadlocks). Each actor keeps the next batch queued
        # (max_tasks_in_flight), so its frames are decoded and delivered while it scores the current one.
        # Named remote arguments only (Ray 2.60 deprecates passing others through **ray_remote_args);
        # restarts without limit, which the scorer relies on (a fatal device error exits the actor), are
        # Ray Data's default for pool actors. The runtime_env also keeps decode in its own CPU tasks:
        # with arguments equal to decode's (a CPU scorer and decode both at 0.5 CPU) Ray Data would fuse
        # decode into the actor, which then decodes on its critical path instead of overlapping.
        .map_batches(
            ScoreEpisodes,
            fn_constructor_kwargs=args.score,
            compute=placement.compute(),
            batch_size=args.score_batch_size,
            batch_format="numpy",
            runtime_env=SCORER_RUNTIME_ENV,
            **placement.remote_args(),
        )
        # Scores-derived labels only: success and selection are decided at publish (pipeline.decision).
        .map(label_episode, num_cpus=COMMIT_NUM_CPUS)
        # A fraction of a CPU (the same for both stages, so they stay fused): with a whole one, a small
        # node's decode tasks hold the CPUs and every shard is committed at the very end, so progress
        # shows nothing and a stopped run keeps nothing.
        .map_batches(
            write_shards,
            fn_kwargs=args.commit,
            batch_size=args.commit_batch_size,
            batch_format="numpy",
            num_cpus=COMMIT_NUM_CPUS,
        )
    )


def _plan(
    records: list[EpisodeRecord],
    states: dict[str, State],
    cfg: RelabelConfig,
    summaries: dict[str, DatasetSummary],
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Which episodes to score in this run; fills the per-dataset skip and give-up counts.

    An episode is skipped when an ``ok`` result is committed for its current fingerprint, given up on
    when its current fingerprint has failed ``retry.max_attempts`` times, and scored otherwise (with
    its attempt number). Returns the pending rows and the root of every dataset that was listed.
    """
    pending: list[dict[str, Any]] = []
    roots: dict[str, str] = {}
    for record in records:
        summary = summaries.setdefault(record.dataset_id, DatasetSummary(record.dataset_id))
        if record.episode_index < 0:
            # The dataset could not be listed: nothing to score; its published files stay as they are.
            summary.catalog_error = record.error
            continue
        roots.setdefault(record.dataset_id, record.root)
        row = record.to_row(_schedule_tag(record, cfg))
        entry = states[record.dataset_id].get((record.episode_index, row["fingerprint"]))
        if entry is not None and entry.status == "ok":
            summary.skipped += 1
        elif entry is not None and entry.attempts >= cfg.retry.max_attempts:
            summary.gave_up += 1
            summary.errors.append(f"{entry.error} [gave up after {entry.attempts} attempts]")
        else:
            # The full task list is metadata only; `task` is what the prompt uses.
            row.pop("tasks")
            row["attempt"] = (entry.attempts if entry else 0) + 1
            pending.append(row)
    return pending, roots


def _schedule_tag(record: EpisodeRecord, cfg: RelabelConfig) -> str:
    """What this run's reward-resolution settings change in the episode's schedule (its fingerprint's
    per-episode part; ``""`` for an episode they leave as it was)."""
    return resolution_tag(record.length, record.fps, cfg.frames, cfg.prefixes)


def _listed_ids(records: list[EpisodeRecord]) -> list[str]:
    """The datasets whose episodes were listed (not those that failed as a whole)."""
    return list(dict.fromkeys(record.dataset_id for record in records if record.episode_index >= 0))


def _states(
    cfg: RelabelConfig,
    chash: str,
    dataset_ids: list[str],
    index: FleetIndex,
    listed: dict[str, dict] | None = None,
) -> tuple[dict[str, State], dict[str, dict]]:
    """The committed state of these datasets from one listing of ``_state/<hash>/`` (and the listing):
    unchanged folders from the index, the others read concurrently, leftovers removed.

    ``listed``: this run's earlier listing, of which only these datasets' folders changed since (it wrote
    to them). Their folders are then listed one by one and merged into it when that takes fewer requests
    than the whole listing's pages: a night that scored one dataset of thousands lists one folder, not
    the whole state again.
    """
    options = cfg.output.storage_options
    if listed is not None and len(dataset_ids) < listing_pages(listed):
        changed = set(dataset_ids)
        fresh = list_states(cfg.output.uri, chash, options, dataset_ids)
        listing = {key: files for key, files in listed.items() if key not in changed} | fresh
    else:
        listing = list_states(cfg.output.uri, chash, options)
    states = load_states(
        cfg.output.uri,
        chash,
        dataset_ids,
        cfg.output.storage_options,
        listing=listing,
        index=index,
        threads=cfg.source.read_threads,
    )
    return states, listing


def _publish_jobs(
    records: list[EpisodeRecord],
    roots: dict[str, str],
    states: dict[str, State],
    listing: dict[str, dict],
    cfg: RelabelConfig,
    chash: str,
    run_id: str,
) -> list[PublishJob]:
    """Per listed dataset, the committed result of each episode it has now, for its current fingerprint.

    Episodes gone from the source and results for an old fingerprint are left out, so the published
    files never show stale labels. A dataset whose state folder holds more than
    ``output.compact_markers`` markers has them folded into one as it is published.
    """
    fingerprints: dict[str, list[tuple[int, str]]] = {}
    for record in records:
        if record.episode_index >= 0:
            fingerprints.setdefault(record.dataset_id, []).append(
                (record.episode_index, record.fingerprint(_schedule_tag(record, cfg)))
            )
    jobs = []
    for dataset_id, root in roots.items():
        folder = state_uri(cfg.output.uri, chash, dataset_id)
        state = states[dataset_id]
        current = tuple(state[key] for key in fingerprints.get(dataset_id, []) if key in state)
        compact = needs_folding(listing.get(dataset_id, {}), cfg.output.compact_markers)
        if current:
            jobs.append(PublishJob(dataset_id, root, folder, current, run_id, compact))
    return jobs


def _start_record(cfg: RelabelConfig, chash: str) -> RunRecord:
    """Writes the run record (``running``, with the resolved config); an unwritable output is refused."""
    record = RunRecord(cfg.output.uri, cfg.output.storage_options, chash, config=asdict(cfg))
    try:
        record.write()
    except Exception as err:
        reason = redact(f"{type(err).__name__}: {err}", cfg.output.storage_options)
        raise ConfigError(
            f"config error at 'output.uri': {cfg.output.uri!r} is not writable: {reason}"
        ) from None
    return record


def _score(
    pending: list[dict[str, Any]],
    cfg: RelabelConfig,
    chash: str,
    summaries: dict[str, DatasetSummary],
    record: RunRecord,
) -> ScorerPlacement:
    """Runs the Ray Data graph over the pending rows (or, for a few on a local CPU run, the same stages in
    this process: :func:`scores_in_process`), counting results per dataset; returns the placement.

    Logs a progress line every ``job.progress_interval_s`` seconds (:class:`~pipeline.progress.
    ScoringProgress`); Ray Data's own progress block is off unless ``job.log_level=DEBUG``.
    """
    if scores_in_process(cfg, len(pending)):
        placement = replace(
            resolve_placement(cfg.ray, cfg.model, {"CPU": float(os.cpu_count() or 1)}), in_process=True
        )
        results = score_in_process(pending, stage_args(cfg, chash))
    else:
        connect_ray(cfg)
        quiet_ray_data(cfg.job.log_level)
        placement = resolve_placement(cfg.ray, cfg.model, ray.cluster_resources())
        results = build_dataset(pending, cfg, chash, placement).iter_rows()
    record.placement = asdict(placement)
    with ScoringProgress(len(pending), cfg.job.progress_interval_s, where=placement.describe()) as progress:
        for result in results:
            summary = summaries[result["dataset_id"]]
            ok = result["status"] == "ok"
            progress.add(ok)
            if ok:
                summary.scored += 1
                summary.frames += int(result["length"])
            else:
                summary.failed += 1
                summary.errors.append(f"{result['error']} [attempt {result['attempt']}]")
    return placement


def missing_sources(uris: list[str], records: list[EpisodeRecord]) -> list[str]:
    """The source URIs under which the catalog found no dataset at all.

    The catalog lists such a URI as one failed dataset whose root is the URI itself and whose error is
    ``<uri>/meta/info.json: not found`` (a mistyped prefix, an empty folder, a folder that is gone).
    """
    errors = {record.root.rstrip("/"): record.error for record in records if record.episode_index < 0}
    missing = []
    for uri in uris:
        try:
            root = normalize_uri(uri).rstrip("/")
        except ValueError:
            continue
        if errors.get(root, "").endswith(f"{root}/{INFO_PATH}: not found"):
            missing.append(uri)
    return missing


def _log_plan(
    records: list[EpisodeRecord],
    pending: list[dict[str, Any]],
    summaries: dict[str, DatasetSummary],
    run: str,
) -> None:
    """The catalog and plan lines: datasets and episodes listed, then (for ``run``) pending, skipped,
    given up."""
    listed = sum(not d.catalog_error for d in summaries.values())
    episodes = sum(record.episode_index >= 0 for record in records)
    unlisted = len(summaries) - listed
    log.info(
        "catalog: %d dataset(s), %s episodes listed%s",
        listed, f"{episodes:,}", f"; {unlisted} dataset(s) could not be listed" if unlisted else "",
    )  # fmt: skip
    log.info(
        "plan: %s: %s episodes to score, %s already labelled (skipped), %s given up (retry.max_attempts)",
        run,
        f"{len(pending):,}",
        f"{sum(d.skipped for d in summaries.values()):,}",
        f"{sum(d.gave_up for d in summaries.values()):,}",
    )


def _run_phases(
    cfg: RelabelConfig, chash: str, record: RunRecord, summaries: dict[str, DatasetSummary]
) -> tuple[ScorerPlacement | None, list[str]]:
    """Catalog, plan, score, publish; fills ``summaries``, returns the placement and missing sources.

    What the night reads follows what changed (``docs/fleet-state.md``): one listing of each source
    URI and of the state folders, the fleet index for everything those listings show unchanged, and
    reads only of datasets that are new or changed.
    """
    index = FleetIndex.load(cfg.output.uri, cfg.output.storage_options)
    records = list_episodes(cfg.source, index)
    missing = missing_sources(cfg.source.uris, records)
    for uri in missing:
        log.warning("catalog: no dataset found under source %s (no meta/info.json there or below)", uri)
    states, listing = _states(cfg, chash, _listed_ids(records), index)
    pending, roots = _plan(records, states, cfg, summaries)
    _log_plan(records, pending, summaries, f"run {record.run_id}, config {chash}")
    placement = _score(pending, cfg, chash, summaries, record) if pending else None
    # The datasets this run wrote to are read again (one more listing, their new markers only).
    scored = list(dict.fromkeys(row["dataset_id"] for row in pending))
    if scored:
        fresh, listing = _states(cfg, chash, scored, index, listing)
        states |= fresh
    jobs = _publish_jobs(records, roots, states, listing, cfg, chash, record.run_id)
    # Only datasets whose inputs changed since their last publish are written, one Ray task each.
    # Ray is started for the publish only if it is up already or more datasets changed than a local
    # run publishes in its own process (publish.inline_max_datasets).
    in_process_max = cfg.publish.inline_max_datasets if _without_ray(cfg) else 0
    outcomes = publish_all(
        jobs, cfg, connect=lambda: connect_ray(cfg), index=index, in_process_max=in_process_max
    )
    for outcome in outcomes:
        summaries[outcome.dataset_id].publish = outcome
    compacted = [outcome.dataset_id for outcome in outcomes if outcome.compacted]
    if compacted:
        _states(cfg, chash, compacted, index, listing)  # the folded folders, so the next night knows them
    index.save()
    log.debug("fleet index: %s answered from the index", index.hits)
    published = {o.dataset_id: o.record["run_id"] for o in outcomes if o.record.get("run_id")}
    prune_run_records(
        cfg.output.uri, cfg.output.storage_options, cfg.job.keep_run_records, record.run_id, published
    )
    return placement, missing


def _finish_record(
    record: RunRecord, cfg: RelabelConfig, summaries: dict[str, DatasetSummary], err: BaseException | None
) -> str:
    """Writes the run's end: ``completed`` (with every failure), ``stopped`` (a signal) or ``broken``."""
    record.datasets = {d.dataset_id: d.counts() for d in summaries.values()}
    record.failures = [
        {"dataset_id": d.dataset_id, "error": error}
        for d in summaries.values()
        for error in [d.catalog_error, *d.errors, d.publish_error]
        if error
    ]
    if err is None:
        return record.finish("completed")
    if isinstance(err, RunStopped):
        log.warning("relabel: run %s %s; the next run goes on from what was committed", record.run_id, err)
        return record.finish("stopped", str(err))
    reason = redact(f"{type(err).__name__}: {err}", cfg.output.storage_options)
    return record.finish("broken", redact(reason, cfg.source.storage_options))


def run(cfg: RelabelConfig) -> RunSummary:
    """Score every new or changed episode under ``cfg.source.uris`` and publish the results per dataset.

    Refuses a config that cannot work before Ray starts (:class:`~pipeline.config.ConfigError`), resolves
    ``model.device``/``dtype`` (the config hash covers them; a local run does not start Ray for it), then
    records the run and its resolved config under ``<output>/_runs/``. Failures of episodes and datasets
    are recorded, never raised. SIGTERM or SIGINT stop the run: the record says ``stopped`` and
    :class:`~pipeline.stopping.RunStopped` is raised (what is committed stays; the next run goes on from
    it). Anything else that escapes (Ray itself failing) marks the record ``broken`` and is re-raised.
    """
    started = time.perf_counter()
    check_run(cfg)
    cfg = with_storage_retries(cfg)
    with stop_on_signals():
        cfg = resolve_model(cfg, connect=partial(connect_ray, cfg))
        chash = config_hash(cfg)
        record = _start_record(cfg, chash)
        summaries: dict[str, DatasetSummary] = {}
        try:
            placement, missing = _run_phases(cfg, chash, record, summaries)
            record_uri = _finish_record(record, cfg, summaries, None)
        except BaseException as err:
            # A stop raised inside Ray's compiled calls surfaces wrapped (SystemError): still a stop.
            stop = requested_stop()
            _finish_record(record, cfg, summaries, stop or err)
            if stop is not None and stop is not err:
                raise stop from None
            raise
    summary = RunSummary(chash, time.perf_counter() - started, summaries, placement=placement)
    summary.run_record_uri, summary.missing_sources = record_uri, missing
    return summary


def format_summary(summary: RunSummary) -> str:
    """The end-of-run table: per dataset, episodes scored/skipped/failed, frames, throughput, outputs.

    Then, per dataset, its failures: the first error of each kind with its episode, repeats collapsed
    (:func:`pipeline.failures.failure_lines`); sources under which no dataset was found; and one hint when
    a failure looks like storage refusing the workers (missing credentials under ``ray job submit``).
    """
    hours = max(summary.wall_seconds, 1e-9) / 3600
    columns = (
        ("scored", 8),
        ("skipped", 9),
        ("failed", 8),
        ("gave up", 9),
        ("frames", 9),
        ("episodes/h", 12),
    )
    header = f"{'dataset':<32}" + "".join(f"{name:>{width}}" for name, width in columns)
    lines = [f"topreward relabel: config {summary.config_hash}, wall {summary.wall_seconds:.1f} s", header]
    lines.insert(1, scoring_line(summary.placement, summary.scored))
    for d in summary.datasets.values():
        rate = d.scored / hours
        lines.append(
            f"{d.dataset_id:<32}{d.scored:>8}{d.skipped:>9}{d.failed:>8}{d.gave_up:>9}{d.frames:>9}{rate:>12.0f}"
        )
    for d in summary.datasets.values():
        lines.extend(d.publish.describe() if d.publish else [])
        lines.extend(failure_lines(d.dataset_id, [d.catalog_error, *d.errors]))
    lines.extend(f"NO DATASET FOUND under source {uri}" for uri in summary.missing_sources)
    errors = [e for d in summary.datasets.values() for e in (d.catalog_error, *d.errors, d.publish_error)]
    if looks_like_credentials(errors):
        lines.append(CREDENTIALS_HINT)
    if summary.run_record_uri:
        lines.append(f"run record: {summary.run_record_uri}")
    return "\n".join(lines)
