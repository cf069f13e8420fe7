"""The fleet index: what the last night learnt, reused when the listings say nothing changed.

One object, ``<output>/_state/_index.parquet`` (:attr:`pipeline.layout.OutputLayout.fleet_index`), one
row per fact, each stored with the digest of what it was derived from:

============= ================================ ========================================= ===================
kind          key                              digest                                    payload (JSON)
============= ================================ ========================================= ===================
``catalog``   dataset root + catalog settings  every object under the root, as listed    its episode records
``state``     ``<config hash>/<dataset id>``   every object in its state folder, listed  committed entries
``published`` dataset id                       :func:`pipeline.publish.publish_digest`   the publish record
============= ================================ ========================================= ===================

A row is used only when its digest equals the one this night computes from its own listings (names,
sizes and ETags / generations / mtimes), so a night reads nothing of a dataset that did not change and
everything of one that did. The index is a cache, never the truth: a missing, unreadable or foreign
index is the same as an empty one (everything is read from the datasets, the markers and the publish
records, and the index is written anew), and markers stay the commit protocol. The ``published`` rows
are shared by every config writing to the output: a run drops the rows of the datasets it is about to
publish *before* publishing them (:meth:`FleetIndex.save`), so a publish killed half-way can never leave
a row that claims the old files. ``docs/fleet-state.md`` has the request budget this buys.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import parquet_bytes, write_bytes
from pipeline.layout import OutputLayout
from pipeline.reader.listing import object_identity
from pipeline.storage import filesystem_for, redact

log = logging.getLogger(__name__)

# Bumped when a payload's meaning changes: an index of another version is read as empty.
INDEX_VERSION = 1
CATALOG, STATE, PUBLISHED = "catalog", "state", "published"
_SCHEMA = pa.schema(
    [("kind", pa.string()), ("key", pa.string()), ("digest", pa.string()), ("payload", pa.string())],
    metadata={"topreward_index_version": str(INDEX_VERSION)},
)


def listing_digest(files: Mapping[str, Mapping[str, Any]]) -> str:
    """A digest of listed objects: their relative names and identities (size and ETag/generation/mtime).

    Args:
        files: ``{relative path: listing entry}`` as :func:`pipeline.storage.list_files` returns.
    """
    entries = sorted((name, object_identity(dict(info))) for name, info in files.items())
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:24]


@dataclass
class FleetIndex:
    """The index of one output, loaded once per run and written back once (plus once before publishing).

    Attributes:
        uri: Where the index object is.
        storage_options: fsspec options of the output.
        rows: ``(kind, key) -> (digest, payload JSON)``.
        hits: Lookups answered from the index in this run, per kind (for the run's log line).
    """

    uri: str
    storage_options: dict[str, Any]
    rows: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, output_uri: str, storage_options: Mapping[str, Any]) -> FleetIndex:
        """The output's index (one read); empty when it is missing, unreadable or of another version."""
        index = cls(OutputLayout(output_uri).fleet_index, dict(storage_options))
        fs, path = filesystem_for(index.uri, storage_options)
        try:
            table = pq.read_table(pa.BufferReader(fs.cat_file(path)))
        except FileNotFoundError:
            return index
        except Exception as err:  # a cache: a broken one is rebuilt, never trusted, never fatal
            reason = redact(f"{type(err).__name__}: {err}", storage_options)[:200]
            log.warning("fleet index: ignoring unreadable %s (%s); all is read anew", index.uri, reason)
            return index
        version = (table.schema.metadata or {}).get(b"topreward_index_version", b"").decode()
        if version != str(INDEX_VERSION) or table.schema.names != _SCHEMA.names:
            log.info("fleet index: %s is of another version; everything is read anew", index.uri)
            return index
        columns = [table.column(name).to_pylist() for name in _SCHEMA.names]
        for kind, key, digest, payload in zip(*columns, strict=True):
            index.rows[(kind, key)] = (digest, payload)
        return index

    def get(self, kind: str, key: str, digest: str) -> Any | None:
        """The payload stored for ``(kind, key)`` if it was derived from ``digest``; else None."""
        found = self.rows.get((kind, key))
        if found is None or found[0] != digest:
            return None
        self.hits[kind] = self.hits.get(kind, 0) + 1
        return json.loads(found[1])

    def peek(self, kind: str, key: str) -> tuple[str, Any] | None:
        """``(digest, payload)`` stored for ``(kind, key)`` whatever it was derived from; else None."""
        found = self.rows.get((kind, key))
        return None if found is None else (found[0], json.loads(found[1]))

    def put(self, kind: str, key: str, digest: str, payload: Any) -> None:
        """Stores a fact and the digest of what it was derived from (written at the next save)."""
        self.rows[(kind, key)] = (digest, json.dumps(payload, sort_keys=True, separators=(",", ":")))

    def drop(self, kind: str, key: str) -> None:
        """Forgets a fact (its next lookup reads the truth from storage)."""
        self.rows.pop((kind, key), None)

    def save(self) -> int:
        """Writes the index in one step (a reader sees the old one or the new one); returns its bytes."""
        ordered = sorted(self.rows.items())
        table = pa.Table.from_pydict(
            {
                "kind": [kind for (kind, _), _ in ordered],
                "key": [key for (_, key), _ in ordered],
                "digest": [digest for _, (digest, _) in ordered],
                "payload": [payload for _, (_, payload) in ordered],
            },
            schema=_SCHEMA,
        )
        return write_bytes(parquet_bytes(table), self.uri, self.storage_options, name="index")
