"""pipeline.curated.v30 writes LeRobot's v3.0 format without LeRobot: every function equals LeRobot
0.6.1's own, bit for bit; and a publish worker's imports stay light (no torch, transformers, LeRobot)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lerobot.datasets import utils as lerobot_utils
from lerobot.datasets.compute_stats import DEFAULT_QUANTILES, aggregate_stats, compute_episode_stats
from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata
from lerobot.datasets.io_utils import cast_stats_to_numpy, load_episodes, write_info
from lerobot.datasets.utils import serialize_dict, update_chunk_file_indices
from lerobot.utils.constants import DEFAULT_FEATURES

from devkit import synth
from pipeline.curated import v30
from pipeline.curated.source import row_stats
from tests.conftest import PROJECT_ROOT

HEAVY = ("torch", "transformers", "lerobot", "sympy")


def test_constants_are_lerobots() -> None:
    for name in (
        "DEFAULT_CHUNK_SIZE", "DEFAULT_DATA_FILE_SIZE_IN_MB", "DEFAULT_VIDEO_FILE_SIZE_IN_MB", "INFO_PATH",
        "STATS_PATH", "EPISODES_DIR", "DEFAULT_TASKS_PATH", "DEFAULT_EPISODES_PATH", "DEFAULT_DATA_PATH",
        "DEFAULT_VIDEO_PATH", "LEGACY_EPISODES_STATS_PATH", "LEGACY_TASKS_PATH",
    ):  # fmt: skip
        assert getattr(v30, name) == getattr(lerobot_utils, name), name
    assert v30.CODEBASE_VERSION == "v3.0"
    assert tuple(DEFAULT_QUANTILES) == v30.DEFAULT_QUANTILES
    assert json.dumps(v30.DEFAULT_FEATURES) == json.dumps(DEFAULT_FEATURES)  # tuples dump as lists
    for index in ((0, 0), (0, 998), (0, 999), (3, 999), (7, 12)):
        assert v30.next_file_index(index, 1000) == update_chunk_file_indices(*index, 1000)
    assert v30.next_file_index((0, 1), 2) == update_chunk_file_indices(0, 1, 2)


COLUMNS = {
    "one value": np.array([7]),
    "two values": np.array([3, 3]),
    "constant": np.full(25, 41),
    "arange": np.arange(1000, 1037),
    "large indices": np.arange(2_500_000_000, 2_500_000_017),
    "random": np.random.default_rng(0).integers(0, 9, 301),
}


@pytest.mark.parametrize("name", sorted(COLUMNS))
def test_column_stats_equal_lerobots_episode_stats(name: str) -> None:
    values = COLUMNS[name]
    expected = compute_episode_stats({"x": values}, {"x": {"dtype": "int64", "shape": (1,), "names": None}})[
        "x"
    ]
    found = v30.column_stats(values)
    assert list(found) == list(expected)
    for key, value in expected.items():
        assert found[key].dtype == value.dtype and found[key].shape == value.shape, key
        np.testing.assert_array_equal(found[key], value, err_msg=key)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth.write_v30_dataset(tmp_path_factory.mktemp("src") / "v30", lengths=(6, 9, 1, 12, 7), fps=10)


def _episode_stats(root: Path) -> list[dict]:
    meta = LeRobotDatasetMetadata("src", root=root)
    import pyarrow.parquet as pq

    rows = pq.read_table(root / "meta" / "episodes").to_pylist()
    assert len(rows) == meta.total_episodes
    return [row_stats(row) for row in rows]


def test_aggregation_and_serialisation_equal_lerobots(source: Path) -> None:
    episodes = _episode_stats(source)
    for chosen in (episodes, episodes[1:3], [episodes[2]], [episodes[0], episodes[0], episodes[4]]):
        expected = aggregate_stats(chosen)
        found = v30.aggregate_stats(chosen)
        assert found.keys() == expected.keys()
        for feature, stats in expected.items():
            assert found[feature].keys() == stats.keys(), feature
            for key, value in stats.items():
                np.testing.assert_array_equal(found[feature][key], value, err_msg=f"{feature} {key}")
                assert found[feature][key].dtype == value.dtype
        assert v30.serialize_stats(found) == serialize_dict(expected)
        restored = v30.stats_to_numpy(json.loads(json.dumps(v30.serialize_stats(found))))
        reference = cast_stats_to_numpy(json.loads(json.dumps(serialize_dict(expected))))
        for feature, stats in reference.items():
            for key, value in stats.items():
                np.testing.assert_array_equal(restored[feature][key], value)
                assert (
                    restored[feature][key].dtype == value.dtype
                    and restored[feature][key].shape == value.shape
                )


def test_info_and_tasks_bytes_equal_lerobots_writers(source: Path, tmp_path: Path) -> None:
    info = json.loads((source / "meta" / "info.json").read_text())
    info["tools"] = [{"type": "function", "function": {"name": "grip"}}]
    cameras = [synth.DEFAULT_CAMERAS[1]]
    features = {key: ft for key, ft in info["features"].items() if ft["dtype"] != "video" or key in cameras}
    layout = v30.Layout(chunks_size=4, data_files_size_in_mb=3, video_files_size_in_mb=5)
    tasks = ["open the top drawer", "pick up the red cube", "zeta"]
    meta = LeRobotDatasetMetadata.create(
        repo_id="t/curated",
        fps=info["fps"],
        features=json.loads(json.dumps(features)),
        robot_type=info["robot_type"],
        root=tmp_path / "lerobot",
        use_videos=True,
        chunks_size=4,
        data_files_size_in_mb=3,
        video_files_size_in_mb=5,
    )
    meta.info.tools = info["tools"]
    meta.save_episode_tasks(tasks[:2])
    meta.save_episode_tasks(tasks[1:])  # a later episode brings one more task
    meta.info.total_episodes, meta.info.total_frames, meta.info.total_tasks = 3, 31, len(meta.tasks)
    meta.info.splits = {"train": "0:3"}
    write_info(meta.info, meta.root)
    mine = v30.curated_info(info, features, layout, episodes=3, frames=31, tasks=3)
    assert v30.info_bytes(mine) == (meta.root / "meta" / "info.json").read_bytes()
    assert v30.tasks_bytes(tasks) == (meta.root / "meta" / "tasks.parquet").read_bytes()
    # Without cameras LeRobot writes no video path; without tools, no tools key.
    info.pop("tools")
    plain = {key: ft for key, ft in info["features"].items() if ft["dtype"] != "video"}
    written = v30.curated_info(info, plain, v30.Layout(), episodes=1, frames=6, tasks=1)
    assert written["video_path"] is None and "tools" not in written


def test_episodes_files_written_by_the_builder_load_in_lerobot(source: Path, tmp_path: Path) -> None:
    from pipeline.curated.builder import write_curated_dataset

    dest = Path(write_curated_dataset(str(source), [0, 2, 3], str(tmp_path / "curated")).uri)
    write_curated_dataset(str(source), [0, 2, 3, 4], str(tmp_path / "curated"))  # an appended file
    episodes = load_episodes(dest)
    assert episodes["episode_index"] == [0, 1, 2, 3]
    assert episodes["topreward/source_episode_index"] == [0, 2, 3, 4]
    # Stats rows hold what LeRobot's writer would have stored for the re-indexed columns.
    stats = _episode_stats(dest)
    expected = compute_episode_stats(
        {"index": np.arange(6, 7)}, {"index": {"dtype": "int64", "shape": (1,), "names": None}}
    )["index"]
    for key, value in expected.items():
        np.testing.assert_array_equal(stats[1]["index"][key], value)


def _heavy_after(statement: str) -> list[str]:
    code = f"import sys; {statement}; print([m for m in {HEAVY!r} if m in sys.modules])"
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT
    )
    return json.loads(found.stdout.strip().replace("'", '"'))


def test_a_publish_worker_imports_neither_torch_transformers_nor_lerobot() -> None:
    assert _heavy_after("import pipeline.publish") == []
    assert (
        _heavy_after("import pipeline.curated.builder, pipeline.curated.store, pipeline.curated.source") == []
    )
