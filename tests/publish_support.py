"""Publishing tests' scaffolding: committed state with fake scores, a polling reader, a killable publisher.

Run as a module it is one of two child processes the tests start:

* ``python -m tests.publish_support read <spec.json>``: polls the published files of one dataset until
  the stop file appears (both parquet files, then the curated version the pointer names through
  ``LeRobotDataset`` with its last frame decoded; on S3 pulled first as ``jobs.pull`` does), and writes
  the episode counts it saw, in order.
* ``python -m tests.publish_support publish <spec.json>``: publishes one dataset in this process and
  ``os._exit(KILLED)`` at the n-th ``publish step <name>`` log line, when one is named.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from devkit.fake_labels import MODEL, job_for
from jobs.pull import pull
from pipeline.config import RelabelConfig, load_config
from pipeline.curated.pointer import resolve_curated
from pipeline.layout import CURATED_DIR, EPISODES_FILE, PROGRESS_FILE
from pipeline.publish import publish_dataset
from pipeline.storage import filesystem_for, join_uri

KILLED = 17


def config(output: str, threshold: float, options: dict | None = None, *extra: str) -> RelabelConfig:
    """A run config for publishing to ``output`` at a success threshold."""
    storage = "{" + ", ".join(f"{k}: '{v}'" for k, v in (options or {}).items()) + "}"
    return load_config(
        [
            f"output.uri={output}",
            f"output.storage_options={storage}",
            f"source.storage_options={storage}",
            f"model.path={MODEL}",
            f"success.threshold={threshold}",
            *extra,
        ]
    )


@dataclass(frozen=True)
class Files:
    """Bytes and mtime of every file under a local folder, by relative path."""

    found: dict[str, tuple[bytes, int]]

    @classmethod
    def of(cls, folder: str | Path) -> Files:
        """Snapshot of ``folder``."""
        folder = Path(folder)
        return cls(
            {
                p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
                for p in sorted(folder.rglob("*"))
                if p.is_file()
            }
        )

    def content(self) -> dict[str, bytes]:
        """Bytes by path, without mtimes."""
        return {path: data for path, (data, _) in self.found.items()}


def _read_once(spec: dict[str, Any], scratch: Path) -> tuple[int, int]:
    """One reader pass; returns (curated episodes, progress rows)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    options = spec["options"]
    base = spec["base"]
    fs, _ = filesystem_for(base, options)
    for name in (EPISODES_FILE, PROGRESS_FILE):
        # One GET per file (docs/publishing.md): ranged reads across a replacement fail on S3 (ETag).
        pq.read_table(pa.BufferReader(fs.cat_file(filesystem_for(join_uri(base, name), options)[1])))
    if spec["local"]:
        # The documented reader rule: resolve the pointer once, then open the version it names.
        root = Path(resolve_curated(join_uri(base, CURATED_DIR), options))
    else:
        # What a trainer does with an object store: jobs.pull, then open the local copy.
        pulled = Path(tempfile.mkdtemp(dir=scratch)) / "pulled"
        pull(base, pulled, options)
        root = pulled / CURATED_DIR
    dataset = LeRobotDataset("reader/curated", root=root, video_backend="pyav")
    last = dataset[len(dataset) - 1]
    assert int(last["index"]) == len(dataset) - 1
    for key in dataset.meta.video_keys:
        assert last[key].shape[0] == 3
    progress = pq.read_table(root / PROGRESS_FILE) if (root / PROGRESS_FILE).exists() else None
    return dataset.meta.total_episodes, 0 if progress is None else progress.num_rows


def read_loop(spec: dict[str, Any]) -> None:
    """Polls until ``spec['stop']`` exists; writes {reads, failures, errors, seen} to ``spec['result']``."""
    logging.disable(logging.WARNING)
    reads, failures, errors, seen = 0, 0, [], []
    scratch = Path(tempfile.mkdtemp())
    progress_file = Path(spec["progress"])
    while not Path(spec["stop"]).exists():
        try:
            episodes, _ = _read_once(spec, scratch)
            reads += 1
            if not seen or seen[-1] != episodes:
                seen.append(episodes)
        except Exception as err:  # every failed read is counted and reported
            failures += 1
            errors.append(f"{type(err).__name__}: {err}"[:300])
        progress_file.write_text(json.dumps({"reads": reads, "seen": seen}))
    Path(spec["result"]).write_text(
        json.dumps({"reads": reads, "failures": failures, "errors": errors[:5], "seen": seen})
    )


class _KillAt(logging.Handler):
    """Ends the process, without any cleanup, at the n-th protocol step of a given name."""

    def __init__(self, name: str, occurrence: int) -> None:
        super().__init__(logging.DEBUG)
        self.name_, self.left = name, occurrence

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(f"publish step {self.name_} "):
            self.left -= 1
            if self.left == 0:
                os._exit(KILLED)


def publish_once(spec: dict[str, Any]) -> None:
    """Publishes one dataset, killed at ``spec['kill']`` = [step name, occurrence] when given."""
    if spec.get("kill"):
        logger = logging.getLogger("pipeline.atomic")
        logger.setLevel(logging.DEBUG)
        logger.addHandler(_KillAt(*spec["kill"]))
    cfg = config(spec["output"], spec["threshold"], spec["options"], *spec.get("extra", ()))
    outcome = publish_dataset(job_for(spec["root"], spec["dataset_id"], spec["output"], spec["options"]), cfg)
    if outcome.status != "published":
        sys.exit(f"publish failed: {outcome.error}")


def wait_for(predicate: Any, what: str, timeout_s: float = 300.0) -> None:
    """Polls ``predicate`` (a synchronisation helper: tests never assert on time)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.05)


if __name__ == "__main__":
    command, spec_path = sys.argv[1:3]
    spec = json.loads(Path(spec_path).read_text())
    {"read": read_loop, "publish": publish_once}[command](spec)
