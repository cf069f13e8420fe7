"""Success and curation are decided in one place, ``pipeline.decision.decide``, and never committed."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipeline.stages.label as label_stage
from pipeline.config import CurationConfig, SuccessConfig
from pipeline.decision import DECISION_COLUMNS, decide
from pipeline.sinks import SHARD_SCHEMA, batch_to_table, commit_shard, committed_state, read_rows

STRICT = SuccessConfig(window=3, threshold=-2.0)
ALL = CurationConfig()


def _table(*rows: dict) -> pa.Table:
    """Episode rows (status, log_p_true, voc, progress) as parquet would hold them."""
    schema = pa.schema(
        [
            ("status", pa.string()),
            ("log_p_true", pa.list_(pa.float64())),
            ("voc", pa.float64()),
            ("progress", pa.list_(pa.float32())),
        ]
    )
    defaults = {"status": "ok", "voc": 1.0, "progress": [0.0, 1.0]}
    return pa.Table.from_pylist([defaults | row for row in rows], schema=schema)


def _decided(table: pa.Table, success: SuccessConfig = STRICT, curation: CurationConfig = ALL) -> list:
    out = decide(table, success, curation)
    return list(zip(*(out.column(name).to_pylist() for name in DECISION_COLUMNS), strict=True))


def test_threshold_is_strict_and_the_score_is_the_mean_of_the_window():
    rows = _table({"log_p_true": [-9.0, -1.0, -2.0, -3.0]}, {"log_p_true": [-1.0, -1.5, -2.5]})
    (score_a, success_a, selected_a), (score_b, success_b, _) = _decided(rows)
    assert score_a == pytest.approx(-2.0) and not success_a and not selected_a  # -2 is not above -2
    assert score_b == pytest.approx(-5 / 3) and success_b


def test_window_changes_the_score():
    rows = _table({"log_p_true": [-9.0, -9.0, -1.0]})
    assert _decided(rows, SuccessConfig(window=1, threshold=-2.0))[0][:2] == (-1.0, True)
    assert _decided(rows, SuccessConfig(window=3, threshold=-2.0))[0][1] is False
    # A window longer than the episode averages every prefix.
    assert _decided(rows, SuccessConfig(window=10, threshold=-2.0))[0][0] == pytest.approx(-19 / 3)


def test_require_success_false_selects_failures_to_succeed():
    rows = _table({"log_p_true": [-9.0]})
    assert _decided(rows)[0][1:] == (False, False)
    assert _decided(rows, curation=CurationConfig(require_success=False))[0][1:] == (False, True)


def test_min_voc_and_nan_or_missing_voc():
    rows = _table({"log_p_true": [-1.0]}, {"log_p_true": [-1.0]}, {"log_p_true": [-1.0]})
    rows = rows.set_column(2, "voc", pa.array([0.9, 0.5, math.nan]))
    decided = _decided(rows, curation=CurationConfig(min_voc=0.8))
    assert [selected for _, _, selected in decided] == [True, False, False]  # NaN VOC fails any minimum
    nulls = _table({"log_p_true": [-1.0], "voc": None})
    assert _decided(nulls, curation=CurationConfig(min_voc=0.8))[0][2] is False
    assert _decided(nulls)[0][2] is True  # without a minimum an undefined VOC does not matter


def test_min_final_progress():
    rows = _table(
        {"log_p_true": [-1.0], "progress": [0.0, 0.95]}, {"log_p_true": [-1.0], "progress": [1.0, 0.4]}
    )
    decided = _decided(rows, curation=CurationConfig(min_final_progress=0.9))
    assert [selected for _, _, selected in decided] == [True, False]


def test_curation_disabled_selects_nothing_but_still_decides_success():
    rows = _table({"log_p_true": [-1.0]})
    assert _decided(rows, curation=CurationConfig(enabled=False))[0][1:] == (True, False)


def test_failed_and_unscored_rows_are_never_successes():
    rows = _table(
        {"status": "failed", "log_p_true": [], "voc": None, "progress": []},
        {"status": "failed", "log_p_true": [-1.0]},  # scores of an episode that failed later
        {"log_p_true": [], "progress": []},
    )
    for score, succeeded, selected in _decided(rows, curation=CurationConfig(require_success=False)):
        assert math.isnan(score) and not succeeded and not selected


def test_decision_columns_are_replaced_or_appended_with_fixed_types():
    rows = _table({"log_p_true": [-1.0]}).append_column("success", pa.array([False]))
    out = decide(rows, STRICT, ALL)
    assert out.column_names[-2:] == ["success_score", "selected"]
    assert out.column("success").to_pylist() == [True]
    assert [out.schema.field(n).type for n in DECISION_COLUMNS] == [pa.float64(), pa.bool_(), pa.bool_()]
    empty = decide(_table().slice(0, 0), STRICT, ALL)
    assert empty.num_rows == 0 and set(DECISION_COLUMNS) <= set(empty.column_names)


def test_the_label_stage_decides_nothing():
    assert not hasattr(label_stage, "redecide") and not hasattr(label_stage, "is_selected")
    assert not {"success_score", "success", "selected"} & set(SHARD_SCHEMA.names)
    assert {"log_p_true", "progress", "voc"} <= set(SHARD_SCHEMA.names)


def _scored_batch(dataset_id: str, root: str, lengths: list[int], raw: dict[int, list[float]]) -> dict:
    """Labelled rows as the pipeline's label stage leaves them."""
    episodes = sorted(raw)
    starts = np.cumsum([0, *lengths])

    def objects(values: list) -> np.ndarray:
        column = np.empty(len(values), dtype=object)
        column[:] = values
        return column

    return {
        "dataset_id": np.array([dataset_id] * len(episodes), dtype=object),
        "root": np.array([root] * len(episodes), dtype=object),
        "episode_index": np.array(episodes),
        "length": np.array([lengths[e] for e in episodes]),
        "dataset_from_index": np.array([starts[e] for e in episodes]),
        "dataset_to_index": np.array([starts[e + 1] for e in episodes]),
        "fingerprint": np.array([f"fp{e}" for e in episodes], dtype=object),
        "attempt": np.array([1] * len(episodes)),
        "status": np.array(["ok"] * len(episodes), dtype=object),
        "error": np.array([""] * len(episodes), dtype=object),
        "prefix_frame_indices": objects([np.array([0, lengths[e] - 1]) for e in episodes]),
        "log_p_true": objects([np.array(raw[e]) for e in episodes]),
        "log_p_false": objects([np.array([-1.0, -1.0]) for e in episodes]),
        "progress": objects([np.array([0.0, 1.0], np.float32) for e in episodes]),
        "frame_progress": objects([np.linspace(0, 1, lengths[e], dtype=np.float32) for e in episodes]),
        "voc": np.array([1.0] * len(episodes)),
        "model": np.array(["fake/vlm"] * len(episodes), dtype=object),
    }


def test_publish_decides_with_the_current_window_and_names_its_run(tmp_path: Path):
    from devkit import synth
    from devkit.fake_labels import CONFIG_HASH, job_for
    from pipeline.layout import EPISODES_FILE, RECORD_FILE
    from pipeline.publish import publish_dataset
    from pipeline.sinks import state_uri
    from tests.publish_support import config

    lengths = [12, 14]
    root = synth.write_v30_dataset(tmp_path / "src" / "fleet" / "arm", lengths=lengths, fps=10)
    output = tmp_path / "out"
    batch = _scored_batch("fleet/arm", str(root), lengths, {0: [-9.0, -1.0], 1: [-1.0, -9.0]})
    commit_shard(batch_to_table(batch, CONFIG_HASH), state_uri(str(output), CONFIG_HASH, "fleet/arm"), {})
    job = replace(job_for(str(root), "fleet/arm", str(output), {}), run_id="20260101T000000Z-abcdef")

    outcome = publish_dataset(job, config(str(output), -2.0, None, "success.window=1"))
    assert outcome.status == "published", outcome.error
    base = output / "fleet" / "arm"
    episodes = pq.read_table(base / EPISODES_FILE)
    assert episodes.column("success_score").to_pylist() == [-1.0, -9.0]  # from log_p_true, not the shard
    assert episodes.column("success").to_pylist() == [True, False]
    assert episodes.column("selected").to_pylist() == [True, False]
    assert outcome.curated_episodes == 1
    assert json.loads((base / RECORD_FILE).read_text())["run_id"] == "20260101T000000Z-abcdef"


def test_shards_committed_with_decisions_are_still_read(tmp_path: Path):
    """Shards of earlier versions hold success/selected columns: they are read, and the stale values
    never reach publishing."""
    old_schema = SHARD_SCHEMA.append(pa.field("success", pa.bool_())).append(pa.field("selected", pa.bool_()))
    batch = _scored_batch("fleet/arm", "/src", [10], {0: [-1.0, -1.0]})
    table = batch_to_table(batch, "h")
    old = table.append_column("success", pa.array([False])).append_column("selected", pa.array([False]))
    assert old.schema == old_schema
    folder = tmp_path / "state"
    commit_shard(old, str(folder), {})
    rows = read_rows(str(folder), committed_state(str(folder), {}).values(), {})
    assert rows.schema == SHARD_SCHEMA
    assert decide(rows, STRICT, ALL).column("selected").to_pylist() == [True]


@pytest.mark.parametrize("window", [1, 2, 3, 5, 7, 8, 12])
def test_decide_by_columns_equals_decide_row_bit_for_bit(window):
    """The column-wise decision (windows below 8) gives every row the bits :func:`decide_row` gives it:
    scores of random lengths and magnitudes, empty and null score lists, failed rows, null VOC and
    progress; a window of 8 or more takes the row path itself."""
    from pipeline.decision import decide_row

    rng = np.random.default_rng(window)
    rows = []
    for number in range(400):
        count = int(rng.integers(0, 12))
        raw = (rng.standard_normal(count) * 10.0 ** rng.integers(-3, 4)).tolist()
        rows.append(
            {
                "status": "failed" if number % 17 == 0 else "ok",
                "log_p_true": None if number % 23 == 0 else raw,
                "voc": None if number % 11 == 0 else float(rng.uniform(-1, 1)),
                "progress": None if number % 13 == 0 else rng.uniform(0, 1, int(rng.integers(0, 4))).tolist(),
            }
        )
    table = _table(*rows)
    success = SuccessConfig(window=window, threshold=float(rng.uniform(-1, 1)))
    curation = CurationConfig(min_voc=0.0, min_final_progress=0.5)
    out = decide(table, success, curation)
    for row, got in zip(
        table.to_pylist(),
        zip(*(out.column(n).to_pylist() for n in DECISION_COLUMNS), strict=True),
        strict=True,
    ):
        want = decide_row(row, success, curation)
        assert got[1:] == want[1:]
        assert np.array([got[0]]).tobytes() == np.array([want[0]]).tobytes(), (row, got, want)
