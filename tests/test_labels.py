"""Normalisation, per-frame progress, success and VOC, with the spec's edge cases (method.md §C-§F)."""

import math

import numpy as np

from pipeline.labels import minmax_normalize, per_frame_progress, success_score, value_order_correlation


def test_minmax_edge_cases():
    assert minmax_normalize(np.array([])).size == 0
    np.testing.assert_array_equal(minmax_normalize(np.array([-3.0])), [1.0])
    np.testing.assert_array_equal(minmax_normalize(np.array([-2.0, -2.0, -2.0])), [1.0, 1.0, 1.0])
    out = minmax_normalize(np.array([-10.0, -5.0, -7.5]))
    np.testing.assert_allclose(out, [0.0, 1.0, 0.5])
    assert out.dtype == np.float32


def test_per_frame_progress_interpolates_at_prefix_ends():
    progress = per_frame_progress(np.array([3, 7, 9]), np.array([0.0, 1.0, 0.5]), num_raw=12)
    assert progress.shape == (12,) and progress.dtype == np.float32
    np.testing.assert_allclose(progress[:4], 0.0)
    np.testing.assert_allclose(progress[5], 0.5)
    np.testing.assert_allclose(progress[7], 1.0)
    np.testing.assert_allclose(progress[8], 0.75)
    np.testing.assert_allclose(progress[9:], 0.5)


def test_success_score_is_mean_of_last_window():
    raw = np.array([-9.0, -6.0, -3.0, -2.0, -1.0])
    assert success_score(raw, 3) == -2.0
    assert success_score(raw[:2], 3) == -7.5
    assert math.isnan(success_score(np.array([]), 3))


def test_voc():
    assert value_order_correlation(np.array([0.1, 0.2, 0.5, 0.9])) == 1.0
    assert value_order_correlation(np.array([0.9, 0.5, 0.2, 0.1])) == -1.0
    assert math.isnan(value_order_correlation(np.array([0.3])))
    assert math.isnan(value_order_correlation(np.array([1.0, 1.0, 1.0])))
    assert 0 < value_order_correlation(np.array([0.1, 0.3, 0.2, 0.9])) < 1


def _scored_row(raw, status="ok"):
    return {
        "status": status,
        "log_p_true": np.asarray(raw, dtype=np.float64),
        "prefix_ends": np.array([2, 4, 6]),
        "frame_indices": np.array([0, 3, 6, 9, 12, 15]),
        "length": 16,
    }


def test_label_stage_adds_scores_derived_facts_only():
    from pipeline.stages.label import label_episode

    row = label_episode(_scored_row([-9.0, -3.0, -1.0]))
    # Decided wherever shown (pipeline.decision), never committed with the scores.
    assert not {"success_score", "success", "selected"} & set(row)
    np.testing.assert_array_equal(row["prefix_frame_indices"], [3, 9, 15])
    np.testing.assert_allclose(row["progress"], [0.0, 0.75, 1.0])
    assert row["frame_progress"].shape == (16,) and row["voc"] == 1.0

    failed = label_episode(_scored_row([], status="failed"))
    assert failed["progress"].size == failed["frame_progress"].size == 0
    assert math.isnan(failed["voc"])


def test_one_episode_previews_get_the_decision_from_decide():
    from pipeline.config import CurationConfig, SuccessConfig
    from pipeline.decision import decide_row
    from pipeline.stages.label import label_episode

    success, curation = SuccessConfig(window=1, threshold=-2.0), CurationConfig(min_voc=0.5)
    row = label_episode(_scored_row([-9.0, -3.0, -1.0]))
    assert decide_row(row, success, curation) == (-1.0, True, True)
    assert decide_row(row, SuccessConfig(window=2, threshold=-2.0), curation) == (-2.0, False, False)
    failed = label_episode(_scored_row([], status="failed"))
    assert decide_row(failed, success, curation)[1:] == (False, False)
