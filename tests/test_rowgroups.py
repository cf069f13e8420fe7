"""Row groups found by their statistics (``pipeline.reader.rowgroups``), and the partial index read of a
publish: the same episodes as a whole read, from a file in episode order or not."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.reader import read_dataset
from pipeline.reader.rowgroups import row_groups_with, scan


def _file(tmp_path: Path, episodes: list[int], per_group: int) -> pq.FileMetaData:
    """A parquet file of ``episodes`` (one row each, in this order), ``per_group`` rows per row group."""
    path = tmp_path / "file.parquet"
    pq.write_table(
        pa.table({"episode_index": pa.array(episodes, pa.int64())}), path, row_group_size=per_group
    )
    return pq.read_metadata(path)


def test_search_finds_the_groups_a_scan_finds_in_an_ordered_file(tmp_path):
    metadata = _file(tmp_path, [e // 3 for e in range(3000)], per_group=7)  # episodes straddle groups
    for wanted in ({0}, {999}, {500}, {12, 13}, {333, 700, 701}, {5000}, {-1}):
        assert row_groups_with(metadata, "episode_index", wanted) == scan(metadata, "episode_index", wanted)
    assert row_groups_with(metadata, "episode_index", {2}) == [0, 1]  # rows 6..8 lie in two groups


def test_search_is_only_right_for_ordered_files_and_the_scan_always_is(tmp_path):
    episodes = list(range(1000))
    episodes[10], episodes[990] = episodes[990], episodes[10]  # 990 in the second group, 10 at the end
    metadata = _file(tmp_path, episodes, per_group=10)
    assert scan(metadata, "episode_index", {990}) == [1, 99]  # [1] holds it, [99] (10..999) admits it
    assert row_groups_with(metadata, "episode_index", {990}) == [99]  # missed: hence the callers' checks


def test_without_the_column_every_group_is_read(tmp_path):
    metadata = _file(tmp_path, list(range(100)), per_group=10)
    assert row_groups_with(metadata, "other", {5}) == list(range(10))
    assert row_groups_with(metadata, "episode_index", set()) == []


@pytest.fixture()
def unordered_v30(synth_dir: Path, tmp_path: Path) -> Path:
    """The synthetic v3.0 dataset with its episodes index rewritten one row per group, in reverse order."""
    import shutil

    root = tmp_path / "synth" / "v30"
    shutil.copytree(synth_dir / "v30", root)
    for path in (root / "meta" / "episodes").glob("*/*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.take(list(range(table.num_rows - 1, -1, -1))), path, row_group_size=1)
    return root


@pytest.mark.parametrize("ordered", [True, False])
def test_partial_index_read_gives_the_episodes_a_whole_read_gives(synth_dir, unordered_v30, ordered):
    root = str(synth_dir / "v30") if ordered else str(unordered_v30)
    whole = read_dataset(root, all_cameras=True)
    for wanted in ([0], [len(whole.episodes) - 1], [1, 2]):
        footers: dict = {}
        partial = read_dataset(root, all_cameras=True, episodes=wanted, partial_index=True, footers=footers)
        assert partial.episodes == tuple(e for e in whole.episodes if e.episode_index in wanted)
        assert footers and all(isinstance(f, pq.FileMetaData) for f in footers.values())


def test_a_search_that_misses_falls_back_to_a_scan(synth_dir, monkeypatch):
    """What a file out of episode order does to the search (it finds nothing), the reader's index read
    and the curated source's stats and data reads notice and scan instead: same episodes, same rows."""
    import pipeline.curated.source as source_module
    import pipeline.reader.dataset as dataset_module
    from pipeline.curated.source import Source

    root = str(synth_dir / "v30")
    with Source(root, None, [2]) as source:
        want = (source.episodes(), source.stats(source.episodes()[0]), source.data_rows(source.episodes()[0]))

    def misses(metadata: pq.FileMetaData, column: str, wanted: set[int]) -> list[int]:
        return []

    monkeypatch.setattr(dataset_module, "row_groups_with", misses)
    monkeypatch.setattr(source_module, "row_groups_with", misses)
    with Source(root, None, [2]) as source:
        episode = source.episodes()[0]
        assert source.episodes() == want[0]
        assert str(source.stats(episode)) == str(want[1])
        assert source.data_rows(episode).equals(want[2])


def test_a_new_sessions_episode_is_read_from_the_newest_index_file_alone(synth_dir, tmp_path):
    """LeRobot's recorder writes a later session's episodes to new data, video and episodes index files:
    a partial read of them parses the newest index file's footer only (an old file's grows with the
    dataset), and one of an old episode reads on until it is found."""
    import shutil

    from devkit.fleet import add_episode

    root = tmp_path / "synth" / "v30"
    shutil.copytree(synth_dir / "v30", root)
    add_episode(str(root))
    files = sorted(p.relative_to(root).as_posix() for p in (root / "meta" / "episodes").glob("*/*.parquet"))
    assert len(files) == 2  # the first session's file and the new one's
    whole = read_dataset(str(root), all_cameras=True)
    new = len(whole.episodes) - 1
    for wanted, opened in (([new], files[1:]), ([0], files), ([0, new], files)):
        footers: dict = {}
        partial = read_dataset(
            str(root), all_cameras=True, episodes=wanted, partial_index=True, footers=footers
        )
        assert partial.episodes == tuple(e for e in whole.episodes if e.episode_index in wanted)
        assert sorted(footers) == opened, wanted
