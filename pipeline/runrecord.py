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

Retention (``job.keep_run_records``, default 200; 0 keeps every record): at the end of a run
:func:`prune_run_records` deletes the records older than the N most recent, except the current run's and
every record a dataset's ``_published.json`` still names (readers load that run's settings, so it stays
however old it is). The report's run history (``jobs.report``) then shows the last N runs.
"""

from __future__ import annotations

import json
import logging
import platform
import posixpath
import re
import socket
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from pipeline.atomic import write_bytes
from pipeline.layout import REPORT_DIR, RUNS_DIR, STATE_DIR, DatasetLayout, OutputLayout
from pipeline.storage import (
    _SECRET_MARKERS,
    filesystem_for,
    forget_listings,
    join_uri,
    list_folder,
    read_json_files,
    redact,
)

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


# A record's file name as new_run_id makes it; other files under _runs/ are never touched by retention.
_RECORD_NAME = re.compile(r"(\d{8}T\d{6}Z-[0-9a-f]{6})\.json")
# Statuses whose record lists every dataset the run could have published (written by _finish_record).
_FINISHED = ("completed", "stopped", "broken")
# Top-level folders of an output that are not robots (never hold datasets).
_NOT_DATASETS = (RUNS_DIR, STATE_DIR, REPORT_DIR)
# Small objects read at once when retention has to check several.
_READ_THREADS = 16


def prune_run_records(
    output_uri: str,
    storage_options: Mapping[str, Any],
    keep: int,
    current_run_id: str,
    published: Mapping[str, str] | None = None,
) -> list[str]:
    """Deletes the run records older than the ``keep`` most recent, except those still in use.

    Applied at the end of a run (``job.keep_run_records``). Kept whatever their age: the current run's
    record, and every record a dataset's ``_published.json`` names as its ``run_id`` (``jobs.report``
    and ``jobs.evaluate`` load that run's settings, :func:`published_settings`). Which datasets can name
    an old run is read from the old record itself: a completed run lists the datasets it published; a
    stopped or broken one lists every dataset it planned. Only those datasets' ``_published.json`` are
    read, and none that ``published`` already answers, so a nightly run over the same fleet reads
    nothing but its ``_runs/`` listing and the one or two records it removes. A record that says nothing
    usable (still ``running``: a driver killed outright, or a run going on elsewhere; not JSON; an older
    format) is checked against every dataset of the output (the robot and task folders are listed). A
    run still going elsewhere whose record is removed writes it again, whole, when it ends.

    Files under ``_runs/`` not named like a run record are left alone. A storage error is logged as a
    warning and the run goes on: retention is housekeeping, never a reason to fail a run.

    Args:
        output_uri: The run's ``output.uri``.
        storage_options: fsspec options of the output.
        keep: How many of the most recent records to keep (the current one among them); ``<= 0`` keeps
            every record and reads nothing.
        current_run_id: The run calling this; its record is never deleted.
        published: What the caller knows of datasets' ``_published.json`` now: dataset id -> the run id
            it names (the relabel run knows it for every dataset it published or found unchanged).

    Returns:
        The run ids whose records were deleted, oldest first.
    """
    if keep <= 0:
        return []
    try:
        return _prune(output_uri, storage_options, keep, current_run_id, dict(published or {}))
    except Exception as err:
        reason = redact(f"{type(err).__name__}: {err}", storage_options)
        log.warning("run records: none removed (job.keep_run_records=%d): %s", keep, reason)
        return []


def _prune(
    output_uri: str, options: Mapping[str, Any], keep: int, current: str, named_by: dict[str, str]
) -> list[str]:
    layout = OutputLayout(output_uri)
    fs, folder = filesystem_for(layout.runs, options)
    folder = folder.rstrip("/")
    forget_listings(fs, folder)
    run_ids = sorted(
        found.group(1)
        for entry in list_folder(fs, folder)
        if entry["type"] == "file" and (found := _RECORD_NAME.fullmatch(posixpath.basename(entry["name"])))
    )
    candidates = [run_id for run_id in run_ids[:-keep] if run_id != current]
    if not candidates:
        return []
    # Records the caller already knows a dataset names are kept without reading anything.
    known_in_use = set(named_by.values())
    unknown = [run_id for run_id in candidates if run_id not in known_in_use]
    records = _read_all(fs, [f"{folder}/{run_id}.json" for run_id in unknown])
    # Per record, the datasets whose _published.json could name it; None: any dataset could.
    could_name = [_publishers(record) for record in records]
    datasets = set().union(*(ids for ids in could_name if ids is not None))
    if any(ids is None for ids in could_name):
        datasets |= _dataset_ids(fs, layout.uri, options)
    unread = sorted(datasets - named_by.keys())
    found = _read_all(fs, [_record_path(output_uri, dataset_id, options) for dataset_id in unread])
    for dataset_id, record in zip(unread, found, strict=True):
        named_by[dataset_id] = str((record or {}).get("run_id") or "")
    in_use = set(named_by.values())
    removable = [run_id for run_id in unknown if run_id not in in_use]
    if removable:
        fs.rm([f"{folder}/{run_id}.json" for run_id in removable])
        fs.invalidate_cache(folder)
    log.log(
        logging.INFO if removable else logging.DEBUG,
        "run records: %d removed (older than the %d most recent, job.keep_run_records)%s",
        len(removable),
        keep,
        f"; {len(candidates) - len(removable)} older kept: datasets' _published.json name them"
        if len(removable) < len(candidates)
        else "",
    )
    return removable


def _publishers(record: Any) -> set[str] | None:
    """The datasets whose ``_published.json`` a run could have written, from its record; None: unknown."""
    if not isinstance(record, dict) or record.get("status") not in _FINISHED:
        return None
    datasets = record.get("datasets")
    if not isinstance(datasets, dict):
        return None
    if record["status"] == "completed":
        # Every outcome was recorded: a dataset whose curated count is null was not published (or its
        # publish failed, which leaves the previous _published.json as it was).
        return {str(d) for d, counts in datasets.items() if not _unpublished(counts)}
    # Stopped or broken: a publish task may have finished after the driver stopped listening.
    return {str(d) for d in datasets}


def _unpublished(counts: Any) -> bool:
    """Whether a completed run's counts for a dataset say it was not published (the key present, null)."""
    return isinstance(counts, dict) and "curated_episodes" in counts and counts["curated_episodes"] is None


def _record_path(output_uri: str, dataset_id: str, options: Mapping[str, Any]) -> str:
    """A dataset's ``_published.json`` as its filesystem names it; ``""`` for an id that is no dataset."""
    try:
        uri = DatasetLayout(output_uri, dataset_id).record
    except ValueError:  # an id that would climb out of the output: it names nothing there
        return ""
    return filesystem_for(uri, options)[1]


def _dataset_ids(fs: Any, output_uri: str, options: Mapping[str, Any]) -> set[str]:
    """Every ``<robot>/<task>`` folder of the output (one listing of the root, one per robot folder)."""
    _, root = filesystem_for(output_uri, options)
    root = root.rstrip("/")
    forget_listings(fs, root)
    found = set()
    for robot in list_folder(fs, root):
        name = posixpath.basename(robot["name"])
        if robot["type"] != "directory" or name in _NOT_DATASETS:
            continue
        for task in list_folder(fs, robot["name"]):
            if task["type"] == "directory":
                found.add(f"{name}/{posixpath.basename(task['name'])}")
    return found


def _read_all(fs: Any, paths: Iterable[str]) -> list[Any]:
    """The parsed JSON of each path (concurrently), None for a missing or unreadable one or ``""``.

    A file that cannot be parsed is None (its run is then checked against every dataset); any other
    error (storage refusing) propagates.
    """

    def read(path: str) -> Any:
        if not path:
            return None
        try:
            return json.loads(fs.cat_file(path))
        except FileNotFoundError:
            return None
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            log.warning("run records: %s is not JSON", fs.unstrip_protocol(path))
            return None

    paths = list(paths)
    if len(paths) <= 1:
        return [read(path) for path in paths]
    with ThreadPoolExecutor(min(_READ_THREADS, len(paths))) as pool:
        return list(pool.map(read, paths))
