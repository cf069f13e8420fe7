"""Which row groups of a parquet file can hold given values of an integer column, from their statistics.

LeRobot writes its files in episode order: the data files one row group per episode, the episodes index
ten episodes per row group. A publish that adds one episode to a dataset of thousands needs one row
group of each, so the groups are found by a binary search over their ``min``/``max`` statistics
(a few footer lookups) rather than by visiting every group (thousands of lookups, 20-40 ms at 5,000
episodes). The search assumes the groups are in column order; a caller that reads the groups checks
what it got (every wanted value found, the row counts it expects) and falls back to :func:`scan`, which
assumes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import numpy as np
import pyarrow.parquet as pq

__all__ = ["row_groups_with", "scan"]


def _position(metadata: pq.FileMetaData, column: str) -> int | None:
    """The leaf position of a top-level primitive ``column``, None when the file has no such column."""
    first = metadata.row_group(0)
    return next((i for i in range(first.num_columns) if first.column(i).path_in_schema == column), None)


def _bounds(metadata: pq.FileMetaData, group: int, position: int) -> tuple[int, int] | None:
    """``(min, max)`` of the column in one row group, None when the group has no such statistics."""
    stats = metadata.row_group(group).column(position).statistics
    if stats is None or not stats.has_min_max:
        return None
    return stats.min, stats.max


def scan(metadata: pq.FileMetaData, column: str, wanted: Collection[int]) -> list[int]:
    """Every row group whose statistics do not rule out all ``wanted`` values (a group without
    statistics, or a file without the column, is never ruled out). Visits every group."""
    groups = metadata.num_row_groups
    if groups == 0 or not wanted:
        return []
    position = _position(metadata, column)
    if position is None:
        return list(range(groups))
    values = np.array(sorted(wanted), dtype=np.int64)
    found = []
    for group in range(groups):
        bounds = _bounds(metadata, group, position)
        if bounds is None:
            found.append(group)
            continue
        first = np.searchsorted(values, bounds[0])
        if first < values.size and values[first] <= bounds[1]:
            found.append(group)
    return found


def _search(metadata: pq.FileMetaData, position: int, values: list[int]) -> list[int] | None:
    """The row groups holding ``values`` if the groups are in column order, found by binary search;
    None when a group on the way has no statistics."""
    groups = metadata.num_row_groups
    found: set[int] = set()
    for value in values:
        low, high = 0, groups  # the first group whose max >= value is in [low, high]
        while low < high:
            middle = (low + high) // 2
            bounds = _bounds(metadata, middle, position)
            if bounds is None:
                return None
            if bounds[1] < value:
                low = middle + 1
            else:
                high = middle
        group = low
        while group < groups:
            bounds = _bounds(metadata, group, position)
            if bounds is None:
                return None
            if bounds[0] > value:
                break
            found.add(group)
            group += 1
    return sorted(found)


def row_groups_with(metadata: pq.FileMetaData, column: str, wanted: Collection[int]) -> list[int]:
    """The row groups that hold the ``wanted`` values of ``column``.

    When a few values are wanted from many groups, a binary search per value, which is right for a file
    written in column order (as LeRobot writes): the caller must check the rows it reads and call
    :func:`scan` when they fall short. Otherwise (many values, a file without the column or without
    statistics) the result of :func:`scan`.
    """
    groups = metadata.num_row_groups
    if groups == 0 or not wanted:
        return []
    position = _position(metadata, column)
    # A search costs about two lookups per halving per value; below that a scan is as cheap.
    if position is not None and 2 * len(wanted) * (math.log2(groups) + 1) < groups:
        found = _search(metadata, position, sorted(wanted))
        if found is not None:
            return found
    return scan(metadata, column, wanted)
