"""Packed files of the curated dataset: episodes' data rows and video packets written back to back.

Like LeRobot's recorder, episodes are packed into ``data/chunk-XXX/file-XXX.parquet``,
``videos/<key>/chunk-XXX/file-XXX.mp4`` and ``meta/episodes/chunk-XXX/file-XXX.parquet`` files that
roll over at the source's size limits. Videos are **remuxed, not re-encoded**: each episode's packets are
stream-copied with shifted timestamps, so pixels are bit-identical and copying costs no decode. Each
finished file is handed to ``on_close`` (which uploads it), so temporary space is one open file per
camera plus one data and one episodes file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.curated.v30 import Layout, episodes_file, next_file_index
from pipeline.reader import VideoSpan

FileIndex = tuple[int, int]  # (chunk_index, file_index)
# Episodes index rows are turned into Arrow columns this many at a time.
_ROWS_PER_BATCH = 64


def next_index(index: FileIndex | None, chunks_size: int) -> FileIndex:
    """The file index after ``index`` (``(0, 0)`` for none): fresh files never reuse a published name."""
    return (0, 0) if index is None else next_file_index(index, chunks_size)


class RollingFiles:
    """Chunk/file indices of packed files that roll over at a size limit, like lerobot's recorder."""

    def __init__(self, limit_bytes: float, chunks_size: int, start: FileIndex) -> None:
        self.chunk_index, self.file_index = start
        self._limit = limit_bytes
        self._chunks_size = chunks_size
        self._used: int | None = None  # None until the first file is opened

    def reserve(self, nbytes: int, *, fresh: bool = False) -> bool:
        """Accounts for the next episode's bytes.

        Args:
            nbytes: Size the episode adds to its file.
            fresh: Start a new file whatever the size (e.g. the codec parameters changed).

        Returns:
            True when the episode must go into a new file; the indices then already name it.
        """
        if self._used is not None and (fresh or self._used + nbytes > self._limit):
            self.chunk_index, self.file_index = next_file_index(
                (self.chunk_index, self.file_index), self._chunks_size
            )
            self._used = None
        new_file = self._used is None
        self._used = (self._used or 0) + nbytes
        return new_file


class DataPacker:
    """Writes episodes' rows into new packed data parquet files, one row group per episode as LeRobot's
    recorder does, each file streamed to local disk as episodes come (memory: one episode) and handed to
    ``on_close`` when it is finished."""

    def __init__(
        self, root: Path, layout: Layout, start: FileIndex, on_close: Callable[[Path], None]
    ) -> None:
        self._root, self._layout, self._on_close = root, layout, on_close
        self._files = RollingFiles(layout.data_bytes, layout.chunks_size, start)
        self._writer: pq.ParquetWriter | None = None
        self._path: Path | None = None

    def append(self, rows: pa.Table) -> dict[str, int]:
        """Writes one episode's rows; returns its ``data/chunk_index`` and ``data/file_index``."""
        # Arrow's in-memory size stands in for the uncompressed parquet size lerobot's writer compares.
        if self._files.reserve(rows.nbytes):
            self.close()
            self._path = self._root / self._layout.data_file(
                (self._files.chunk_index, self._files.file_index)
            )
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(
                str(self._path), rows.schema, compression="snappy", use_dictionary=True
            )
        self._writer.write_table(rows)  # one episode, one row group
        return {"data/chunk_index": self._files.chunk_index, "data/file_index": self._files.file_index}

    def close(self) -> None:
        """Finishes the current file, if any."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._on_close(self._path)

    def abandon(self) -> None:
        """Closes the current file without handing it on (an episode failed)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class SchemaMismatch(ValueError):
    """New episodes rows have other columns than the version's episodes files."""


class EpisodesPacker:
    """Writes episodes index rows to new ``meta/episodes`` files (``on_close`` each), rolling over at the
    data file size limit as LeRobot's metadata writer does; files are written in one row group, with the
    column order and types of ``schema`` when given (the published files', so that every file of a
    version has one schema, which LeRobot's loader requires)."""

    def __init__(
        self,
        root: Path,
        layout: Layout,
        start: FileIndex,
        on_close: Callable[[Path], None],
        schema: pa.Schema | None = None,
    ) -> None:
        self._root, self._on_close, self._schema = root, on_close, schema
        self._files = RollingFiles(layout.data_bytes, layout.chunks_size, start)
        self._rows: list[dict[str, Any]] = []
        self._tables: list[pa.Table] = []
        self._path: Path | None = None

    def append(self, row: dict[str, Any], nbytes: int) -> None:
        """Queues one episode's row (``nbytes``: its size estimate), adding its ``meta/episodes/*``
        columns (the file it goes to)."""
        if self._files.reserve(nbytes):
            self.close()
            self._path = self._root / episodes_file((self._files.chunk_index, self._files.file_index))
        row["meta/episodes/chunk_index"] = self._files.chunk_index
        row["meta/episodes/file_index"] = self._files.file_index
        self._rows.append(row)
        if len(self._rows) >= _ROWS_PER_BATCH:
            self._batch()

    def _batch(self) -> None:
        # As LeRobot's writer builds its tables: types inferred from the values (lists of floats, lists of
        # ints for counts, strings), in the rows' key order; Arrow columns hold them in a tenth of the
        # memory of the rows.
        self._tables.append(pa.Table.from_pylist(self._rows))
        self._rows = []

    def close(self) -> None:
        """Writes the queued rows of the current file."""
        if self._rows:
            self._batch()
        if self._tables:
            # Batches agree but for a stat that is an integer in one (a one-frame episode's min) and a
            # float in another: the file gets the wider type, as one table of all its rows would.
            table = pa.concat_tables(self._tables, promote_options="permissive")
            if self._schema is not None:
                if set(table.column_names) != set(self._schema.names):
                    differ = sorted(set(table.column_names) ^ set(self._schema.names))
                    raise SchemaMismatch(f"episodes index columns {differ} differ from the version's")
                try:
                    table = table.select(self._schema.names).cast(self._schema)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                    raise SchemaMismatch(f"episodes index types differ from the version's: {err}") from err
            self._path.parent.mkdir(parents=True, exist_ok=True)
            # A file of a few rows is mostly footer: dictionaries and min/max statistics only for the
            # index columns (episode ranges, files, tasks), not the ~100 stats columns, and no copy of
            # the Arrow schema (the parquet schema gives the same types back): 53 kB -> 22 kB for one row.
            plain = [name for name in table.column_names if not name.startswith("stats/")]
            pq.write_table(
                table,
                self._path,
                compression="snappy",
                use_dictionary=plain,
                write_statistics=plain,
                store_schema=False,
            )
            self._tables = []
            self._on_close(self._path)


def codec_signature(stream: av.video.stream.VideoStream) -> tuple[Any, ...]:
    """What must be equal for packets to share an output stream: the parameters they were encoded with."""
    ctx = stream.codec_context
    return (
        ctx.name,
        ctx.width,
        ctx.height,
        ctx.format.name if ctx.format else None,
        ctx.extradata,
        stream.time_base,
    )


class VideoPacker:
    """Stream-copies one camera's episodes back to back into new packed mp4 files (``on_close`` each)."""

    def __init__(
        self, root: Path, layout: Layout, key: str, start: FileIndex, on_close: Callable[[Path], None]
    ) -> None:
        self._root, self._layout, self._key, self._on_close = root, layout, key, on_close
        self._files = RollingFiles(layout.video_bytes, layout.chunks_size, start)
        self._container: av.container.OutputContainer | None = None
        self._path: Path | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._signature: tuple[Any, ...] | None = None
        self._next_pts = 0

    def append(
        self, source: av.video.stream.VideoStream, packets: list[av.Packet], span: VideoSpan
    ) -> dict[str, Any]:
        """Muxes one episode's packets after the previous one's; returns its ``videos/<key>/*`` columns."""
        signature = codec_signature(source)
        if self._files.reserve(sum(p.size for p in packets), fresh=signature != self._signature):
            self._open(source, signature)
        start = packets[0].pts
        end = max(p.pts + p.duration for p in packets)
        # One integer shift for every packet keeps the episode's internal timing exact (B-frame pts/dts
        # offsets included); the stored timestamps move by the same amount.
        shift = self._next_pts - start
        for packet in packets:
            packet.pts += shift
            packet.dts += shift
            packet.stream = self._stream
            self._container.mux(packet)
        self._next_pts += end - start
        offset_s = float(shift * source.time_base)
        prefix = f"videos/{self._key}"
        return {
            f"{prefix}/chunk_index": self._files.chunk_index,
            f"{prefix}/file_index": self._files.file_index,
            f"{prefix}/from_timestamp": span.from_s + offset_s,
            f"{prefix}/to_timestamp": span.to_s + offset_s,
        }

    def _open(self, source: av.video.stream.VideoStream, signature: tuple[Any, ...]) -> None:
        self.close()
        path = self._root / self._layout.video_file(
            self._key, (self._files.chunk_index, self._files.file_index)
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        # Same muxing set-up as lerobot's concatenate_video_files: codec parameters copied from the input
        # stream, its time base kept, index (moov) in front so readers over HTTP/S3 need not fetch the end.
        self._container = av.open(str(path), "w", options={"movflags": "faststart"})
        self._stream = self._container.add_stream_from_template(template=source, opaque=True)
        self._stream.time_base = source.time_base
        self._signature = signature
        self._next_pts = 0

    def close(self) -> None:
        """Finishes the current mp4, if any."""
        if self._container is not None:
            self._container.close()
            self._container = None
            self._on_close(self._path)
