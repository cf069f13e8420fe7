"""One reader of LeRobot dataset metadata, shared by the catalog and the curated-set builder.

:func:`read_dataset` turns a dataset root (v3.0 or v2.1, any fsspec store) into a frozen
:class:`DatasetMeta` of :class:`SourceEpisode` records; every listing is literal (no globbing of names
that come from storage) and every object an episode is read from carries its identity from the listing.
Importing this package does not import LeRobot.
"""

from pipeline.reader.dataset import (
    DEFAULT_CHUNK_SIZE,
    EPISODES_DIR,
    INFO_PATH,
    LEGACY_EPISODES_PATH,
    MAX_DATASET_FPS,
    SUPPORTED_VERSIONS,
    V21,
    V30,
    DatasetMeta,
    MetadataError,
    SourceEpisode,
    VideoSpan,
    dataset_id_for,
    read_dataset,
)
from pipeline.reader.listing import object_identity

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "EPISODES_DIR",
    "INFO_PATH",
    "LEGACY_EPISODES_PATH",
    "MAX_DATASET_FPS",
    "SUPPORTED_VERSIONS",
    "V21",
    "V30",
    "DatasetMeta",
    "MetadataError",
    "SourceEpisode",
    "VideoSpan",
    "dataset_id_for",
    "object_identity",
    "read_dataset",
]
