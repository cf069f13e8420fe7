"""The relabel run: catalog → decode → score → label → shards on Ray Data, then publish per dataset.

The driver lists episodes (metadata only) and drops those already committed for this config hash, Ray
Data streams the rest through CPU decode tasks, an actor pool holding the VLM, CPU labelling and shard
writes, and the driver finally rebuilds each dataset's published files from its committed shards.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import ray

from pipeline.catalog import list_episodes
from pipeline.config import RelabelConfig, config_hash
from pipeline.frames.decode import decode_episode
from pipeline.publish import Published, publish_dataset
from pipeline.sinks import committed_ok_episodes, read_committed, state_uri, write_shards
from pipeline.stages.label import label_episode
from pipeline.stages.score import ScoreEpisodes

log = logging.getLogger(__name__)


@dataclass
class DatasetSummary:
    """Counts for one dataset in one run."""

    dataset_id: str
    scored: int = 0
    skipped: int = 0
    failed: int = 0
    frames: int = 0
    errors: list[str] = field(default_factory=list)
    published: Published | None = None


@dataclass
class RunSummary:
    """What a run did, per dataset, and how long it took."""

    config_hash: str
    wall_seconds: float
    datasets: dict[str, DatasetSummary]

    @property
    def scored(self) -> int:
        """Episodes scored ``ok`` in this run, all datasets together."""
        return sum(d.scored for d in self.datasets.values())


def connect_ray(cfg: RelabelConfig) -> None:
    """Join the cluster a job was submitted to (RAY_ADDRESS), a given address, or start a local Ray."""
    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return
    ray.init(
        address="local",
        num_cpus=cfg.ray.num_cpus,
        object_store_memory=cfg.ray.object_store_memory,
        _temp_dir=cfg.ray.temp_dir,
        include_dashboard=False,
    )


def build_dataset(rows: list[dict[str, Any]], cfg: RelabelConfig, chash: str) -> ray.data.Dataset:
    """The streaming Ray Data graph over pending episode rows."""
    decode_compute = (
        ray.data.TaskPoolStrategy(size=cfg.ray.decode_concurrency) if cfg.ray.decode_concurrency else None
    )
    return (
        ray.data.from_items(rows)
        # Decoding is I/O plus light CPU work; fractional CPUs let it overlap the scorer on small nodes.
        .map(
            decode_episode,
            fn_kwargs={
                "frames_cfg": cfg.frames,
                "prefixes_cfg": cfg.prefixes,
                "storage_options": cfg.source.storage_options,
                "block_size": cfg.source.block_size,
            },
            num_cpus=cfg.ray.decode_num_cpus,
            compute=decode_compute,
        )
        # One VLM per actor, loaded once; on CPU-only clusters a fractional CPU keeps decode schedulable
        # (whole CPUs held by actors starve the decode tasks and the pipeline deadlocks).
        .map_batches(
            ScoreEpisodes,
            fn_constructor_kwargs={
                "model": cfg.model,
                "scoring": cfg.scoring,
                "threads": cfg.ray.scorer_threads,
            },
            compute=ray.data.ActorPoolStrategy(size=cfg.ray.scorer_actors),
            batch_size=cfg.ray.scorer_batch_size,
            batch_format="numpy",
            num_gpus=cfg.ray.scorer_num_gpus,
            num_cpus=cfg.ray.scorer_num_cpus,
        )
        .map(label_episode, fn_kwargs={"success": cfg.success, "curation": cfg.curation})
        # Shards are small (no frames); a handful of episodes per commit keeps file counts sane.
        .map_batches(
            write_shards,
            fn_kwargs={
                "output_uri": cfg.output.uri,
                "config_hash": chash,
                "storage_options": cfg.output.storage_options,
            },
            batch_size=16,
            batch_format="numpy",
        )
    )


def run(cfg: RelabelConfig) -> RunSummary:
    """Score every new episode under ``cfg.source.uris`` and publish the results per dataset."""
    started = time.perf_counter()
    chash = config_hash(cfg)
    rows = [record.to_row() for record in list_episodes(cfg.source)]
    summaries: dict[str, DatasetSummary] = {}
    roots: dict[str, str] = {}
    pending: list[dict[str, Any]] = []
    committed: dict[str, set[int]] = {}
    for row in rows:
        dataset_id = row["dataset_id"]
        summary = summaries.setdefault(dataset_id, DatasetSummary(dataset_id))
        roots.setdefault(dataset_id, row["root"])
        if dataset_id not in committed:
            committed[dataset_id] = committed_ok_episodes(
                state_uri(cfg.output.uri, chash, dataset_id), cfg.output.storage_options
            )
        if row["status"] == "ok" and row["episode_index"] in committed[dataset_id]:
            summary.skipped += 1
        else:
            # The full task list is metadata only; `task` is what the prompt uses.
            pending.append({key: value for key, value in row.items() if key != "tasks"})
    log.info("relabel: %d episodes listed, %d pending, config %s", len(rows), len(pending), chash)

    if pending:
        connect_ray(cfg)
        for result in build_dataset(pending, cfg, chash).iter_rows():
            summary = summaries[result["dataset_id"]]
            if result["status"] == "ok":
                summary.scored += 1
                summary.frames += int(result["length"])
            else:
                summary.failed += 1
                summary.errors.append(str(result["error"]))

    for dataset_id, summary in summaries.items():
        shards = read_committed(state_uri(cfg.output.uri, chash, dataset_id), cfg.output.storage_options)
        if shards.num_rows == 0:
            continue
        summary.published = publish_dataset(
            shards,
            dataset_id,
            roots[dataset_id],
            cfg.output.uri,
            cfg.model.path,
            success=cfg.success,
            curation=cfg.curation,
            source_options=cfg.source.storage_options,
            output_options=cfg.output.storage_options,
        )
    return RunSummary(chash, time.perf_counter() - started, summaries)


def format_summary(summary: RunSummary) -> str:
    """The end-of-run table: per dataset, episodes scored/skipped/failed, frames, throughput, outputs."""
    hours = max(summary.wall_seconds, 1e-9) / 3600
    header = f"{'dataset':<32}{'scored':>8}{'skipped':>9}{'failed':>8}{'frames':>9}{'episodes/h':>12}"
    lines = [f"topreward relabel: config {summary.config_hash}, wall {summary.wall_seconds:.1f} s", header]
    for d in summary.datasets.values():
        rate = d.scored / hours
        lines.append(f"{d.dataset_id:<32}{d.scored:>8}{d.skipped:>9}{d.failed:>8}{d.frames:>9}{rate:>12.0f}")
    for d in summary.datasets.values():
        if d.published:
            lines.append(f"{d.dataset_id}: progress  {d.published.progress_uri}")
            lines.append(f"{d.dataset_id}: episodes  {d.published.episodes_uri}")
            if d.published.curated_uri:
                lines.append(
                    f"{d.dataset_id}: curated   {d.published.curated_uri} ({d.published.curated_episodes} ep)"
                )
        lines.extend(f"{d.dataset_id}: FAILED {error}" for error in d.errors)
    return "\n".join(lines)
