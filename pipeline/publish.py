"""Publishing: turn each dataset's committed shards into the files users read and train on.

Under ``<output>/<dataset_id>/``:

* ``topreward_progress.parquet``: LeRobot's RA-BC schema exactly (``index``, ``episode_index``,
  ``frame_index`` int64, ``progress_sparse`` float32), sorted by ``index``, ``vlm_name`` in the schema
  metadata; one row per raw frame of every ``ok`` episode.
* ``episodes.parquet``: one row per episode with its status, error, prefix table, success and VOC.
* ``curated/``: versions of a LeRobot v3.0 dataset of the selected episodes behind the pointer
  ``curated/current.json`` (``pipeline.curated``).
* ``_published.json``: the digest of what the last complete publish was made from, written last.

:func:`publish_all` runs on the driver: a dataset whose digest (its committed entries, state folder,
model, success and curation settings) equals the recorded one is left untouched, so a night without new
data costs one small read per dataset. The others are published by one Ray task each
(:func:`publish_dataset`), in parallel; a task never raises: any failure becomes a ``failed`` outcome
naming the dataset, the file and the reason, and the other datasets complete. The protocol that keeps
every file readable while it is replaced is in ``pipeline.atomic`` / ``pipeline.curated`` and
``docs/publishing.md``. Every path written comes from ``pipeline.layout``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from pipeline.atomic import FileError, touching, write_bytes, write_parquet
from pipeline.config import RelabelConfig
from pipeline.curated.builder import write_curated_dataset
from pipeline.curated.pointer import pointer_age_s
from pipeline.curated.source import CurationError
from pipeline.decision import decide
from pipeline.fleetindex import PUBLISHED, FleetIndex
from pipeline.layout import EPISODES_FILE, PROGRESS_FILE, DatasetLayout, OutputLayout
from pipeline.sinks import CommittedEpisode, compact_state, read_rows
from pipeline.storage import filesystem_for, join_uri, redact

log = logging.getLogger(__name__)

# Bumped when the published layout changes, so every dataset is republished once in the new layout
# (2: the curated dataset became versions behind a pointer).
PROTOCOL_VERSION = 2

PROGRESS_SCHEMA = pa.schema(
    [
        ("index", pa.int64()),
        ("episode_index", pa.int64()),
        ("frame_index", pa.int64()),
        ("progress_sparse", pa.float32()),
    ]
)

EPISODE_COLUMNS = (
    "episode_index", "task", "length", "status", "error", "prefix_frame_indices", "log_p_true",
    "log_p_false", "progress", "success_score", "success", "voc", "selected", "model", "config_hash",
    "scored_at", "frames_decoded", "bytes_read", "camera", "video_uri", "attempt", "fingerprint",
)  # fmt: skip


@dataclass(frozen=True)
class PublishJob:
    """One dataset to publish: its source root, its state folder and the committed entries to show."""

    dataset_id: str
    root: str
    state_uri: str
    episodes: tuple[CommittedEpisode, ...]
    # The run publishing it: _published.json names it, so readers find the settings in its run record.
    run_id: str = ""
    # Fold the state folder's shards into one while publishing (it holds more than output.compact_markers).
    compact: bool = False


@dataclass(frozen=True)
class PublishOutcome:
    """What publishing did for one dataset.

    Attributes:
        status: ``published``, ``unchanged`` (its inputs equal the last publish's: nothing was touched)
            or ``failed`` (its previous files stay as they were).
        error: ``"<dataset_id>: <file uri>: <reason>"`` when failed, else ``""``.
        curated_uri: The current curated version's root (what LeRobot opens), None when no episode is
            selected.
        curated_episodes: Episodes in the curated dataset.
        threshold: The success threshold the selection was made at.
        curation_enabled: Whether a curated dataset is made at all.
        curated_mode: ``appended``, ``compacted``, ``rebuilt``, ``unchanged`` or ``removed`` (empty if
            not published).
        curated_added: Episodes copied into the curated dataset by this publish.
        bytes_written: Bytes of every file written by this publish.
        video_bytes_written: Bytes of curated mp4 files written by this publish.
        video_packet_bytes: Bytes of the video packets it stream-copied (the copied episodes' own size).
        compacted: Whether its state folder's shards were folded into one by this publish.
        record: What ``_published.json`` holds after this publish, or held when unchanged (empty when it
            failed).
    """

    dataset_id: str
    status: str
    error: str
    episodes_uri: str
    progress_uri: str
    curated_uri: str | None
    curated_episodes: int
    threshold: float
    curation_enabled: bool
    curated_mode: str = ""
    curated_added: int = 0
    bytes_written: int = 0
    video_bytes_written: int = 0
    video_packet_bytes: int = 0
    compacted: bool = False
    record: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> list[str]:
        """The run summary's lines for this dataset."""
        name = self.dataset_id
        if self.status == "failed":
            return [f"{name}: NOT PUBLISHED {self.error}"]
        if self.status == "unchanged":
            lines = [f"{name}: unchanged since the last publish, nothing written"]
        else:
            what = f"curated {self.curated_mode}" + (
                f" +{self.curated_added} ep" if self.curated_added else ""
            )
            lines = [f"{name}: published ({what}, {self.bytes_written / 1e6:.2f} MB written)"]
        lines += [f"{name}: progress  {self.progress_uri}", f"{name}: episodes  {self.episodes_uri}"]
        if self.curated_uri:
            lines.append(f"{name}: curated   {self.curated_uri} ({self.curated_episodes} ep)")
        elif self.curation_enabled:
            lines.append(f"{name}: curated   0 selected at threshold {self.threshold:g}")
        else:
            lines.append(f"{name}: curated   none (curation.enabled=false)")
        return lines


def progress_table(shards: pa.Table, vlm_name: str) -> pa.Table:
    """Per-frame progress of the ``ok`` episodes in LeRobot's RA-BC schema, sorted by global index."""
    ok = shards.filter(pc.equal(shards.column("status"), "ok"))
    lengths = pc.list_value_length(ok.column("frame_progress")).to_numpy(zero_copy_only=False)
    lengths = lengths.astype(np.int64)
    starts = np.cumsum(lengths) - lengths
    frame_index = np.arange(lengths.sum(), dtype=np.int64) - np.repeat(starts, lengths)
    first_index = ok.column("dataset_from_index").to_numpy().astype(np.int64)
    columns = {
        "index": np.repeat(first_index, lengths) + frame_index,
        "episode_index": np.repeat(ok.column("episode_index").to_numpy().astype(np.int64), lengths),
        "frame_index": frame_index,
        "progress_sparse": pc.list_flatten(ok.column("frame_progress")),
    }
    table = pa.Table.from_pydict(columns, schema=PROGRESS_SCHEMA)
    if np.any(np.diff(columns["index"]) < 0):  # episodes whose index ranges are not in episode order
        table = table.sort_by("index")
    return table.replace_schema_metadata({"vlm_name": vlm_name})


def publish_digest(job: PublishJob, cfg: RelabelConfig) -> str:
    """What a dataset's published files are a function of; equal digests mean there is nothing to do.

    Entries count by what they say (episode, fingerprint, status, attempt), not by the shard holding
    them, so folding shards together (:func:`pipeline.sinks.compact_state`) changes nothing published.
    """
    entries = sorted((e.episode_index, e.fingerprint, e.status, e.attempts) for e in job.episodes)
    facts = {
        "protocol": PROTOCOL_VERSION,
        "dataset_id": job.dataset_id,
        "root": job.root,
        "state_uri": job.state_uri,
        "episodes": entries,
        "model": cfg.model.path,
        "success": asdict(cfg.success),
        "curation": asdict(cfg.curation),
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def _layout(job: PublishJob, cfg: RelabelConfig) -> DatasetLayout:
    """Every path the dataset's publish writes, each checked to stay under ``output.uri`` (a dataset id
    that climbs out is refused at once)."""
    return OutputLayout(cfg.output.uri).dataset(job.dataset_id)


def _read_record(uri: str, storage_options: dict[str, Any]) -> dict[str, Any] | None:
    fs, path = filesystem_for(uri, storage_options)
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None


def _outcome(
    job: PublishJob, cfg: RelabelConfig, episodes_uri: str, progress_uri: str, **fields: Any
) -> PublishOutcome:
    values = {
        "dataset_id": job.dataset_id,
        "status": "published",
        "error": "",
        "episodes_uri": episodes_uri,
        "progress_uri": progress_uri,
        "curated_uri": None,
        "curated_episodes": 0,
        "threshold": cfg.success.threshold,
        "curation_enabled": cfg.curation.enabled,
    }
    return PublishOutcome(**(values | fields))


def _failed(job: PublishJob, cfg: RelabelConfig, err: BaseException) -> PublishOutcome:
    """A failed outcome whose error names the dataset, the file and the reason (secrets redacted)."""
    base = join_uri(cfg.output.uri, job.dataset_id)
    where = str(err) if isinstance(err, FileError | CurationError) else f"{base}: {type(err).__name__}: {err}"
    error = redact(
        redact(f"{job.dataset_id}: {where}", cfg.output.storage_options), cfg.source.storage_options
    )
    log.warning("publish failed: %s", error)
    # Not through the layout's checks: reporting a refused dataset id must not raise again.
    episodes_uri, progress_uri = join_uri(base, EPISODES_FILE), join_uri(base, PROGRESS_FILE)
    return _outcome(job, cfg, episodes_uri, progress_uri, status="failed", error=error)


def _publish(job: PublishJob, cfg: RelabelConfig) -> PublishOutcome:
    layout = _layout(job, cfg)
    options = cfg.output.storage_options
    with touching(job.state_uri):
        rows = read_rows(job.state_uri, job.episodes, options)
    compacted = job.compact and _compacted(job, rows, cfg)
    # Success and selection follow the current settings, so a calibrated threshold applies without
    # re-scoring anything.
    rows = decide(rows, cfg.success, cfg.curation)
    progress = progress_table(rows, cfg.model.path)
    selected = rows.filter(rows.column("selected")) if cfg.curation.enabled else rows.slice(0, 0)
    episodes = selected.column("episode_index").to_pylist()
    curated = write_curated_dataset(
        job.root,
        episodes,
        layout.curated,
        progress,
        source_options=cfg.source.storage_options,
        dest_options=options,
        fingerprints=dict(zip(episodes, selected.column("fingerprint").to_pylist(), strict=True)),
        temp_dir=cfg.publish.temp_dir,
        keep_superseded_s=cfg.publish.keep_superseded_s,
        compact_fanout=cfg.publish.curated_compact_fanout,
        compact_levels=cfg.publish.curated_compact_levels,
    )
    # The curated set first, then the two tables that describe it, then the record: a reader sees the
    # new selection in episodes.parquet only once the curated set holds it.
    written = curated.bytes_written
    for table, uri in ((rows.select(list(EPISODE_COLUMNS)), layout.episodes), (progress, layout.progress)):
        written += write_parquet(table, uri, options)
    outcome = _outcome(
        job,
        cfg,
        layout.episodes,
        layout.progress,
        curated_uri=curated.uri,
        curated_episodes=curated.episodes,
        curated_mode=curated.mode,
        curated_added=curated.added,
        bytes_written=written,
        video_bytes_written=curated.video_bytes_written,
        video_packet_bytes=curated.video_bytes,
        compacted=compacted,
    )
    record = {
        "protocol": PROTOCOL_VERSION,
        "digest": publish_digest(job, cfg),
        "run_id": job.run_id,
        "curated_episodes": outcome.curated_episodes,
        "curated_version": curated.uri and posixpath.basename(curated.uri),
        "superseded": list(curated.superseded),
        "threshold": outcome.threshold,
        "curation_enabled": outcome.curation_enabled,
    }
    write_bytes(
        json.dumps(record, sort_keys=True, indent=1).encode(), layout.record, options, name="recorded"
    )
    return replace(outcome, record=record)


def _compacted(job: PublishJob, rows: pa.Table, cfg: RelabelConfig) -> bool:
    """Folds the dataset's shards into one; a failure is logged and changes nothing that is published
    (the next publish tries again)."""
    try:
        compact_state(job.state_uri, rows, cfg.output.storage_options)
        return True
    except Exception as err:  # compaction only saves reads later; it must never fail a publish
        reason = redact(f"{type(err).__name__}: {err}", cfg.output.storage_options)
        log.warning("state: could not fold the shards of %s: %s", job.dataset_id, reason)
        return False


def publish_dataset(job: PublishJob, cfg: RelabelConfig) -> PublishOutcome:
    """Publishes one dataset (the body of its Ray task); never raises: a failure is a failed outcome."""
    try:
        return _publish(job, cfg)
    except Exception as err:  # one dataset's failure is reported, never propagated to the others
        return _failed(job, cfg, err)


def _unchanged(job: PublishJob, cfg: RelabelConfig, index: FleetIndex | None) -> PublishOutcome | None:
    """The outcome of a dataset whose inputs equal its last publish's; else None.

    From the fleet index when it holds this digest (no request at all), else from the dataset's
    ``_published.json`` (one read), which then goes into the index.
    """
    layout = _layout(job, cfg)
    options = cfg.output.storage_options
    digest = publish_digest(job, cfg)
    record = index.get(PUBLISHED, job.dataset_id, digest) if index is not None else None
    if record is None:
        record = _read_record(layout.record, options)
        if record is None or record.get("digest") != digest:
            return None
        if index is not None:
            index.put(PUBLISHED, job.dataset_id, digest, record)
    if record["superseded"] and _age_s(record, layout, options) >= cfg.publish.keep_superseded_s:
        return None  # a superseded version is due for removal: publishing again removes it
    version = record["curated_version"]
    return _outcome(
        job,
        cfg,
        layout.episodes,
        layout.progress,
        status="unchanged",
        curated_uri=join_uri(layout.curated, version) if version else None,
        curated_episodes=record["curated_episodes"],
        record=record,
    )


def _age_s(record: dict[str, Any], layout: DatasetLayout, options: dict[str, Any]) -> float:
    """Seconds since the publish that made ``record`` replaced the curated pointer."""
    if isinstance(record.get("published_at"), int | float):
        return time.time() - record["published_at"]
    return pointer_age_s(layout.curated, options)


def _check_unchanged(
    jobs: list[PublishJob], cfg: RelabelConfig, index: FleetIndex | None
) -> dict[str, PublishOutcome]:
    """:func:`_unchanged` of every job, ``source.read_threads`` at a time; failures are failed outcomes."""

    def check(job: PublishJob) -> PublishOutcome | None:
        try:
            return _unchanged(job, cfg, index)
        except Exception as err:  # an unreadable record or a bad dataset id fails that dataset alone
            return _failed(job, cfg, err)

    with ThreadPoolExecutor(cfg.source.read_threads) as pool:
        found = list(pool.map(check, jobs))
    return {job.dataset_id: outcome for job, outcome in zip(jobs, found, strict=True) if outcome}


def publish_all(
    jobs: list[PublishJob],
    cfg: RelabelConfig,
    connect: Callable[[], None],
    index: FleetIndex | None = None,
    in_process_max: int = 0,
) -> list[PublishOutcome]:
    """Publishes every dataset whose inputs changed since its last publish, one Ray task per dataset.

    The driver finds the changed ones from the fleet index (no request for a dataset it knows) or one
    small record per dataset, and calls ``connect`` (start or join Ray) only if there is any. Before the
    first task starts, the index forgets those datasets and is saved, so a publish killed half-way is
    never taken for done. At most ``publish.max_parallel`` tasks run at once (0: as many as the cluster
    fits, ``publish.num_cpus`` each). When at most ``in_process_max`` datasets changed, they are
    published one after another in this process instead, with the same function and without Ray (the
    caller allows it for a local run that has no Ray started: a Ray start costs more than a few
    publishes). Outcomes come back in the order of ``jobs``; each published one is put in the index
    (saved by the caller).
    """
    outcomes = _check_unchanged(jobs, cfg, index)
    changed = [job for job in jobs if job.dataset_id not in outcomes]

    def finished(job: PublishJob, outcome: PublishOutcome, done: int) -> None:
        outcomes[job.dataset_id] = outcome
        if index is not None and outcome.record:
            # When the pointer was replaced, so a later night knows without asking the store.
            record = outcome.record
            index.put(PUBLISHED, job.dataset_id, record["digest"], record | {"published_at": time.time()})
        log.info("publish: %s (%d/%d)", outcome.describe()[0], done, len(changed))

    if changed:
        where = "in this process" if len(changed) <= in_process_max else "as Ray tasks"
        log.info("publish: %d of %d datasets changed, publishing %s", len(changed), len(jobs), where)
        if index is not None:
            for job in changed:
                index.drop(PUBLISHED, job.dataset_id)
            index.save()
    if changed and len(changed) <= in_process_max:
        for done, job in enumerate(changed, 1):
            finished(job, publish_dataset(job, cfg), done)
    elif changed:
        connect()
        task = ray.remote(publish_dataset).options(num_cpus=cfg.publish.num_cpus)
        limit = cfg.publish.max_parallel or len(changed)
        waiting, running = list(changed), {}
        while waiting or running:
            while waiting and len(running) < limit:
                job = waiting.pop(0)
                running[task.remote(job, cfg)] = job
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                job = running.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as err:  # the task itself died (worker lost, out of memory)
                    outcome = _failed(job, cfg, err)
                finished(job, outcome, len(changed) - len(waiting) - len(running))
    if not changed:
        log.info("publish: %d datasets, none changed", len(jobs))
    return [outcomes[job.dataset_id] for job in jobs]
