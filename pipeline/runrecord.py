"""The audit trail of a run: ``<output>/_runs/<run id>.json``, written when it starts and when it ends.

The record is written first thing, so an ``output.uri`` that cannot be written is found before any work
(and a run that dies leaves a record saying ``running``). At the end it holds the config hash, the start
and end times, per-dataset counts, every failure with its reason, and the package versions: enough to
answer "what did last night's job do" without its logs. Each write is one small object, replaced whole
(one PUT on object stores, a rename on local disk), so a reader never sees half a record.
"""

from __future__ import annotations

import json
import platform
import socket
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from pipeline.atomic import write_bytes
from pipeline.storage import OUTPUT_MARKER, ensure_under, join_uri, read_json_files

RUNS_DIR = "_runs"
_MARKER_BYTES = json.dumps({"written_by": "topreward-pipeline", "role": "outputs, not a source"}).encode()
_PACKAGES = (
    "topreward-pipeline",
    "ray",
    "torch",
    "transformers",
    "lerobot",
    "pyarrow",
    "av",
    "s3fs",
    "gcsfs",
)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide a run's numbers and I/O."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def new_run_id(now: datetime) -> str:
    """Sortable by start time, unique across hosts: ``20261125T013000Z-1a2b3c``."""
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


@dataclass
class RunRecord:
    """One run's record; :meth:`write` puts its current state under ``<output>/_runs/``."""

    output_uri: str
    storage_options: dict[str, Any]
    config_hash: str
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    run_id: str = ""
    status: str = "running"
    ended_at: datetime | None = None
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""

    def __post_init__(self) -> None:
        self.run_id = self.run_id or new_run_id(self.started_at)

    @property
    def uri(self) -> str:
        """Where this record lives."""
        return ensure_under(join_uri(self.output_uri, RUNS_DIR, f"{self.run_id}.json"), self.output_uri)

    def to_json(self) -> dict[str, Any]:
        """The record as written (plain JSON types)."""
        return {
            "run_id": self.run_id,
            "status": self.status,
            "config_hash": self.config_hash,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "argv": sys.argv,
            "host": socket.gethostname(),
            "versions": package_versions(),
            "datasets": self.datasets,
            "failures": self.failures,
            "error": self.error,
        }

    def write(self) -> str:
        """Writes the record (and, once, the output root marker); returns its URI."""
        # Unchanged bytes are not rewritten, so this costs one small read after the first run.
        write_bytes(_MARKER_BYTES, join_uri(self.output_uri, OUTPUT_MARKER), self.storage_options)
        write_bytes(
            json.dumps(self.to_json(), indent=2, sort_keys=True).encode(), self.uri, self.storage_options
        )
        return self.uri

    def finish(self, status: str, error: str = "") -> str:
        """Stamps the end time and final status (``completed`` or ``broken``) and writes the record."""
        self.status, self.error, self.ended_at = status, error, datetime.now(UTC)
        return self.write()


def read_run_records(output_uri: str, storage_options: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run record under ``output_uri``, oldest first (run ids sort by start time)."""
    return read_json_files(join_uri(output_uri, RUNS_DIR), ".json", storage_options)
