"""Every path the pipeline writes under ``output.uri``, and every file name in it: one place.

::

    <output.uri>/
      _topreward_output.json        marks the folder as outputs: the catalog never lists it as a source
      _runs/<run id>.json           run records (pipeline.runrecord): the settings each run used
      _state/_index.parquet         the fleet index: what the last night read, by digest (pipeline.fleetindex)
      _state/<config hash>/<id>/    committed shards and their markers (pipeline.sinks)
      <robot>/<task>/               one dataset's published files (dataset id = last two source parts)
        episodes.parquet            one row per episode
        topreward_progress.parquet  LeRobot's RA-BC progress file
        _published.json             what the last complete publish was made from, and by which run
        curated/current.json        the curated versions' pointer (pipeline.curated.pointer)
        curated/v000001/ ...        curated LeRobot v3.0 versions

Every URI is built through :class:`OutputLayout` / :class:`DatasetLayout`, whose constructors pass each
path through :func:`pipeline.storage.ensure_under`, so no written path can leave ``output.uri``. This
module imports nothing heavy: readers (``jobs.pull``, the report) use it without Ray, LeRobot or PyAV.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from pipeline.storage import ensure_under, join_uri, normalize_uri

OUTPUT_MARKER = "_topreward_output.json"
RUNS_DIR = "_runs"
STATE_DIR = "_state"
FLEET_INDEX_FILE = "_index.parquet"
REPORT_DIR = "_report"
EPISODES_FILE = "episodes.parquet"
# LeRobot's RA-BC reader looks for this name (lerobot.rewards.topreward DEFAULT_OUTPUT_FILENAME; a test
# keeps the two equal without importing LeRobot here).
PROGRESS_FILE = "topreward_progress.parquet"
RECORD_FILE = "_published.json"
CURATED_DIR = "curated"
POINTER_FILE = "current.json"
EVALUATION_FILE = "evaluation.json"
# A dataset id is the last two path parts of its source root (robot/task).
DATASET_ID_PARTS = 2


@dataclass(frozen=True)
class DatasetLayout:
    """The published files of one dataset under ``<output.uri>/<dataset_id>/``."""

    output_uri: str
    dataset_id: str

    def _path(self, *parts: str) -> str:
        return ensure_under(join_uri(self.output_uri, self.dataset_id, *parts), self.output_uri)

    @property
    def base(self) -> str:
        """The dataset's output folder."""
        return self._path()

    @property
    def episodes(self) -> str:
        """``episodes.parquet``."""
        return self._path(EPISODES_FILE)

    @property
    def progress(self) -> str:
        """``topreward_progress.parquet`` (LeRobot's RA-BC schema)."""
        return self._path(PROGRESS_FILE)

    @property
    def record(self) -> str:
        """``_published.json``: the digest of the last complete publish and the run that made it."""
        return self._path(RECORD_FILE)

    @property
    def curated(self) -> str:
        """The curated folder holding ``current.json`` and the versions."""
        return self._path(CURATED_DIR)

    @property
    def evaluation(self) -> str:
        """Where ``jobs.evaluate`` writes its JSON by default."""
        return self._path(EVALUATION_FILE)

    @classmethod
    def from_uri(cls, dataset_uri: str) -> DatasetLayout:
        """The layout of a dataset's output folder (or of a file in it, such as its episodes table).

        Raises:
            ValueError: the URI has too few path parts to hold ``<output>/<robot>/<task>``.
        """
        uri = normalize_uri(dataset_uri)
        if posixpath.basename(uri) in (EPISODES_FILE, PROGRESS_FILE, RECORD_FILE, EVALUATION_FILE):
            uri = uri.rsplit("/", 1)[0]
        protocol, sep, path = uri.rpartition("://")
        parts = path.split("/")
        if len(parts) <= DATASET_ID_PARTS:
            raise ValueError(f"{dataset_uri}: not inside <output>/<robot>/<task>/")
        output = "/".join(parts[:-DATASET_ID_PARTS]) or "/"
        return cls(f"{protocol}{sep}{output}", "/".join(parts[-DATASET_ID_PARTS:]))


@dataclass(frozen=True)
class OutputLayout:
    """Everything under ``output.uri``."""

    uri: str

    def _path(self, *parts: str) -> str:
        return ensure_under(join_uri(self.uri, *parts), self.uri)

    @property
    def marker(self) -> str:
        """``_topreward_output.json`` at the root."""
        return self._path(OUTPUT_MARKER)

    @property
    def runs(self) -> str:
        """The folder of run records."""
        return self._path(RUNS_DIR)

    def run_record(self, run_id: str) -> str:
        """One run's record."""
        return self._path(RUNS_DIR, f"{run_id}.json")

    @property
    def fleet_index(self) -> str:
        """The fleet index (``pipeline.fleetindex``)."""
        return self._path(STATE_DIR, FLEET_INDEX_FILE)

    def states(self, config_hash: str) -> str:
        """The state folders of every dataset for one config hash."""
        return self._path(STATE_DIR, config_hash)

    def state(self, config_hash: str, dataset_id: str) -> str:
        """The committed shards of one dataset for one config hash."""
        return self._path(STATE_DIR, config_hash, dataset_id)

    @property
    def report(self) -> str:
        """The report's default folder."""
        return self._path(REPORT_DIR)

    def dataset(self, dataset_id: str) -> DatasetLayout:
        """One dataset's published files."""
        layout = DatasetLayout(self.uri, dataset_id)
        layout.base  # noqa: B018 - refuses an id that climbs out of the output at once
        return layout
