"""The audit trail of a run: ``<output>/_runs/<run id>.json``, written when it starts and when it ends.

The record is written first thing, so an ``output.uri`` that cannot be written is found before any work
(and a run that dies leaves a record saying ``running``). It holds the run's resolved configuration
(``config``: every setting, ``model.device``/``dtype`` resolved, storage options without their secrets)
and, once scoring started, the scorer placement; at the end also the start and end times, per-dataset
counts, every failure with its reason, and the package versions: enough to answer "what did last
night's job do" without its logs. Each write is one small object, replaced whole (one PUT on object
stores, a rename on local disk), so a reader never sees half a record.

It is also the truth later jobs read: ``<dataset>/_published.json`` names the run that published the
dataset, and :func:`published_settings` returns that run's recorded config, which
:func:`pipeline.config.config_with_recorded` turns back into a config under a job's own overrides.
"""

from __future__ import annotations

import json
import logging
import platform
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from pipeline.atomic import write_bytes
from pipeline.layout import RUNS_DIR, DatasetLayout, OutputLayout
from pipeline.storage import _SECRET_MARKERS, filesystem_for, join_uri, read_json_files

log = logging.getLogger(__name__)

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


def is_secret_option(name: str) -> bool:
    """Whether a storage option's value is a secret, by its name (key, secret, token, password, ...)."""
    return any(marker in name.lower() for marker in _SECRET_MARKERS)


def without_secrets(options: Mapping[str, Any]) -> dict[str, Any]:
    """Storage options reduced to their non-secret entries, nested mappings (``client_kwargs``) too.

    Secret entries are left out, not masked: a placeholder merged back into a later job's options
    would replace the credentials that job finds in its environment.
    """
    return {
        name: without_secrets(value) if isinstance(value, Mapping) else value
        for name, value in options.items()
        if not is_secret_option(str(name))
    }


def public_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config dict (``dataclasses.asdict`` of a run config) with every ``storage_options`` secret-free."""
    return {
        name: without_secrets(value)
        if name == "storage_options" and isinstance(value, Mapping)
        else public_config(value)
        if isinstance(value, Mapping)
        else value
        for name, value in config.items()
    }


# What a record's ``status`` says: still going (or killed without a word), ended normally, ended by
# SIGTERM/SIGINT (committed work kept, the next run goes on from it), or ended by an unexpected error.
RUN_STATUSES = ("running", "completed", "stopped", "broken")


def new_run_id(now: datetime) -> str:
    """Sortable by start time, unique across hosts: ``20261125T013000Z-1a2b3c``."""
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


@dataclass
class RunRecord:
    """One run's record; :meth:`write` puts its current state under ``<output>/_runs/``."""

    output_uri: str
    storage_options: dict[str, Any]
    config_hash: str
    # The run's resolved config as a plain dict; its secrets are removed when written.
    config: dict[str, Any] = field(default_factory=dict)
    # The scorer placement (ScorerPlacement as a dict) once scoring started; None when nothing was scored.
    placement: dict[str, Any] | None = None
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
        return OutputLayout(self.output_uri).run_record(self.run_id)

    def to_json(self) -> dict[str, Any]:
        """The record as written (plain JSON types, no secret storage option anywhere, no command line)."""
        return {
            "run_id": self.run_id,
            "status": self.status,
            "config_hash": self.config_hash,
            "config": public_config(self.config),
            "placement": self.placement,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "host": socket.gethostname(),
            "versions": package_versions(),
            "datasets": self.datasets,
            "failures": self.failures,
            "error": self.error,
        }

    def write(self) -> str:
        """Writes the record (and, once, the output root marker); returns its URI."""
        # Unchanged bytes are not rewritten, so this costs one small read after the first run.
        write_bytes(_MARKER_BYTES, OutputLayout(self.output_uri).marker, self.storage_options)
        write_bytes(
            json.dumps(self.to_json(), indent=2, sort_keys=True).encode(), self.uri, self.storage_options
        )
        return self.uri

    def finish(self, status: str, error: str = "") -> str:
        """Stamps the end time and final status (``completed``, ``stopped`` or ``broken``) and writes it.

        Raises:
            ValueError: ``status`` is not one of :data:`RUN_STATUSES`.
        """
        if status not in RUN_STATUSES:
            raise ValueError(f"run status {status!r} is not one of {RUN_STATUSES}")
        self.status, self.error, self.ended_at = status, error, datetime.now(UTC)
        return self.write()


def read_run_records(output_uri: str, storage_options: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run record under ``output_uri``, oldest first (run ids sort by start time)."""
    return read_json_files(join_uri(output_uri, RUNS_DIR), ".json", storage_options)


@dataclass(frozen=True)
class RecordedRun:
    """The run that last published a dataset, as its run record holds it.

    Attributes:
        run_id: The run's id (``_runs/<run_id>.json``).
        config: Its resolved config as a plain dict (sections of :class:`pipeline.config.RelabelConfig`,
            storage options without secrets); give it to :func:`pipeline.config.config_with_recorded`.
        config_hash: The config hash its scores were committed under.
        uri: Where the run record is.
    """

    run_id: str
    config: dict[str, Any]
    config_hash: str
    uri: str


def _read_json(uri: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """One small JSON object, or None when it does not exist."""
    fs, path = filesystem_for(uri, storage_options)
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None


def published_settings(dataset_uri: str, storage_options: Mapping[str, Any] | None) -> RecordedRun | None:
    """The run id and recorded config of the run that last published a dataset.

    Reads ``<dataset>/_published.json`` (which names the run), then ``<output>/_runs/<run_id>.json``.

    Args:
        dataset_uri: A dataset's output folder (``<output.uri>/<robot>/<task>``) or a file in it, such
            as its ``episodes.parquet``.
        storage_options: fsspec options for the output's storage.

    Returns:
        The recorded run, or None (logged) when the dataset was never published, was published before
        runs were named in ``_published.json``, or its run record is missing or predates recorded
        configs.

    Raises:
        ValueError: ``dataset_uri`` is not inside ``<output>/<robot>/<task>``, or a file is not JSON.
        OSError: the storage cannot be read.
    """
    layout = DatasetLayout.from_uri(dataset_uri)
    published = _read_json(layout.record, storage_options)
    run_id = (published or {}).get("run_id")
    if not run_id:
        log.info("%s: no publishing run recorded in %s", layout.base, layout.record)
        return None
    uri = OutputLayout(layout.output_uri).run_record(run_id)
    record = _read_json(uri, storage_options)
    if record is None or not isinstance(record.get("config"), dict):
        log.info("%s: run record %s is missing or holds no config", layout.base, uri)
        return None
    return RecordedRun(run_id, record["config"], str(record.get("config_hash", "")), uri)
