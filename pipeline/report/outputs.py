"""Reading what a relabel run published, and finding each episode's frames again in its source dataset.

Datasets are found under ``output.uri`` by their ``episodes.parquet`` (``<robot>/<task>/episodes.parquet``;
folders starting with ``_``, such as ``_state``, are bookkeeping). Paths come from
:mod:`pipeline.layout`; this module imports neither Ray nor LeRobot nor PyAV (listing a source dataset
again, :func:`list_source`, loads the catalog when it is called).
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import CurationConfig, SourceConfig, SuccessConfig
from pipeline.curated.pointer import resolve_curated
from pipeline.decision import decide
from pipeline.layout import CURATED_DIR, DATASET_ID_PARTS, EPISODES_FILE
from pipeline.storage import filesystem_for, forget_listings, join_uri, list_folder, redact

if TYPE_CHECKING:
    from pipeline.catalog import EpisodeRecord

# LeRobot's metadata file under a dataset root (lerobot.datasets.utils.INFO_PATH), named here so that
# reading the outputs does not import LeRobot.
INFO_PATH = "meta/info.json"
# The folder every LeRobot video_path template starts with (v3.0 and v2.1), right under the root.
VIDEOS_DIR = "videos"


def _bookkeeping(name: str) -> bool:
    return name.startswith(("_", "."))


def find_datasets(output_uri: str, storage_options: dict[str, Any]) -> list[str]:
    """Dataset ids (``robot/task``) that have an ``episodes.parquet`` under ``output_uri``, sorted.

    Folders are listed, never globbed: a dataset named ``pick[1]`` or ``a*`` is found as it is written.
    """
    fs, base = filesystem_for(output_uri, storage_options)
    base = base.rstrip("/")
    forget_listings(fs, base)
    level = [base]
    for _ in range(DATASET_ID_PARTS):
        level = [
            entry["name"]
            for folder in level
            for entry in list_folder(fs, folder)
            if entry["type"] == "directory" and not _bookkeeping(posixpath.basename(entry["name"]))
        ]
    found = [
        posixpath.relpath(folder, base)
        for folder in level
        if any(
            posixpath.basename(entry["name"]) == EPISODES_FILE and entry["type"] == "file"
            for entry in list_folder(fs, folder)
        )
    ]
    return sorted(found)


def read_episodes_table(uri: str, storage_options: dict[str, Any]) -> pa.Table:
    """An ``episodes.parquet`` as written, sorted by episode index."""
    fs, path = filesystem_for(uri, storage_options)
    with fs.open(path, "rb") as f:
        table = pq.read_table(f)
    return table.sort_by("episode_index")


def read_episodes(uri: str, storage_options: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of an ``episodes.parquet`` as dicts, sorted by episode index (decisions as stored)."""
    return read_episodes_table(uri, storage_options).to_pylist()


@dataclass(frozen=True)
class DecidedEpisodes:
    """An episodes table with success and selection decided under one run's settings.

    Attributes:
        rows: The rows, sorted by episode index; ``success_score``, ``success`` and ``selected`` are
            :func:`pipeline.decision.decide`'s, never the stored ones.
        stale: Rows whose stored ``success`` or ``selected`` differs from the decision (a table published
            under other settings, or settings given on the command line).
    """

    rows: list[dict[str, Any]]
    stale: int


def read_decided(
    uri: str, storage_options: dict[str, Any], success: SuccessConfig, curation: CurationConfig
) -> DecidedEpisodes:
    """The rows of an ``episodes.parquet`` with success and selection decided under these settings."""
    table = read_episodes_table(uri, storage_options)
    stored = table.select([c for c in ("success", "selected") if c in table.column_names]).to_pylist()
    rows = decide(table, success, curation).to_pylist()
    stale = sum(
        any(name in old and bool(old[name]) != row[name] for name in ("success", "selected"))
        for old, row in zip(stored, rows, strict=True)
    )
    return DecidedEpisodes(rows, stale)


def curated_count(dataset_uri: str, storage_options: dict[str, Any]) -> int | None:
    """Episodes in the current curated version (its ``meta/info.json``); None when there is none."""
    root = resolve_curated(join_uri(dataset_uri, CURATED_DIR), storage_options)
    if root is None:
        return None
    fs, path = filesystem_for(join_uri(root, INFO_PATH), storage_options)
    return int(json.loads(fs.cat_file(path))["total_episodes"])


def source_root(row: dict[str, Any]) -> str:
    """The source dataset root of an episodes row: its ``root`` column, else the part of its video URI
    before the ``videos/`` folder that every LeRobot layout puts right under the root."""
    if row.get("root"):
        return str(row["root"])
    video_uri = str(row.get("video_uri") or "")
    marker = f"/{VIDEOS_DIR}/"
    if marker not in video_uri:
        raise ValueError(f"cannot tell the dataset root from video URI {video_uri!r}")
    return video_uri.rsplit(marker, 1)[0]


@dataclass(frozen=True)
class SourceEpisodes:
    """The source dataset of one episodes table, listed again: where each episode sits in its video."""

    root: str
    records: dict[int, EpisodeRecord]
    frame_shape: tuple[int, int] | None  # (height, width) of the camera, from info.json
    error: str = ""  # why the dataset could not be listed ("" when it could)


def list_source(rows: list[dict[str, Any]], storage_options: dict[str, Any]) -> SourceEpisodes:
    """List the source dataset of an episodes table (metadata only); never raises.

    Args:
        rows: the table's rows (one dataset, one camera).
        storage_options: fsspec options for the source dataset.

    Returns:
        The listed episodes by index, the camera's frame size, or the reason nothing could be listed.
    """
    from pipeline.catalog import list_episodes  # LeRobot and PyAV: only when a source is listed

    if not rows:
        return SourceEpisodes("", {}, None, "no episodes")
    camera = next((row["camera"] for row in rows if row.get("camera")), None)
    try:
        root = source_root(rows[0])
        records = list_episodes(SourceConfig(uris=[root], camera=camera, storage_options=storage_options))
        fs, path = filesystem_for(join_uri(root, INFO_PATH), storage_options)
        with fs.open(path, "rb") as f:
            feature = json.load(f)["features"][camera]
        # Named axes when the dataset states them (channels may come first); LeRobot writes (h, w, c).
        names = feature.get("names") or ["height", "width", "channels"]
        axes = dict(zip(names, feature["shape"], strict=False))
        shape = (int(axes["height"]), int(axes["width"]))
    except Exception as err:  # the report shows the reason instead of the frames
        reason = redact(f"{type(err).__name__}: {err}", storage_options)
        return SourceEpisodes("", {}, None, f"source dataset not readable: {reason}")
    ok = {r.episode_index: r for r in records if r.status == "ok"}
    errors = [r.error for r in records if r.status != "ok"]
    return SourceEpisodes(root, ok, shape, "" if ok else "; ".join(errors))
