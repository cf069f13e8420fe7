"""Reward resolution: long episodes get prefix ends at most 5 s apart by default, short ones are unchanged.

The pinned values below were computed with the code before ``frames.min_fps``,
``frames.max_frames_long`` and ``prefixes.max_spacing_s`` existed (frames at ``frames.fps`` capped at
``frames.max_frames``, ``prefixes.num`` prefixes whatever the length), on this project's tiny Qwen3-VL
(seed 0, float32, CPU). On the machine they were pinned on, the new code reproduces the scores bit for
bit; the tolerance only allows for another CPU's float32 rounding.
"""

import hashlib

import numpy as np
import pytest

from devkit.synth import MAX_FRAMES, make_frame
from pipeline.catalog import EpisodeRecord
from pipeline.config import (
    FramesConfig,
    ModelConfig,
    PrefixesConfig,
    RelabelConfig,
    ScoringConfig,
    config_hash,
)
from pipeline.frames.schedule import FrameSchedule, config_schedule, episode_schedule, resolution_tag
from pipeline.labels import per_frame_progress
from pipeline.scoring.inputs import EpisodeClip
from pipeline.scoring.scorer import PrefixScorer

DEFAULT_FRAMES = FramesConfig()
DEFAULT_PREFIXES = PrefixesConfig()
# The settings before reward resolution, passed explicitly (what a run that turns it off gets).
OLD_FRAMES = FramesConfig(min_fps=None)
OLD_PREFIXES = PrefixesConfig(max_spacing_s=None)
TASK = "pick up the red cube"
SIZE = 64


def _digest(indices: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(indices, dtype="<i8").tobytes()).hexdigest()[:16]


# (raw frames, raw fps): sha256 prefix of the sampled raw indices and the prefix ends at the defaults,
# before the change. All are at most 32 s (max_frames / fps), the schedule is not capped.
PINNED_DEFAULT_SCHEDULES = {
    (2, 30.0): ("9d34149fbd1fe777", [2]),
    (3, 30.0): ("c571327cb01ac1de", [2]),
    (17, 10.0): ("ec1172e68304de49", [2, 4]),
    (45, 10.0): ("d882fc2077d89cef", [2, 4, 6, 8, 10]),
    (301, 30.0): ("dd72fefaf3b346c4", [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22]),
    (900, 30.0): ("e0c205ce40abad88", [2, 6, 10, 14, 20, 24, 28, 32, 36, 40, 44, 50, 54, 58, 62]),
    (961, 30.0): ("d4e162ae41d64e1c", [2, 6, 10, 16, 20, 24, 28, 34, 38, 42, 46, 50, 56, 60, 64]),
    (300, 10.0): ("25d0942fb7d79de8", [2, 6, 10, 14, 20, 24, 28, 32, 36, 40, 44, 50, 54, 58, 62]),
    (321, 10.0): ("d6c2ac40489d12ba", [2, 6, 10, 16, 20, 24, 28, 34, 38, 42, 46, 50, 56, 60, 64]),
    (640, 20.0): ("e1d16bcf39c129c5", [2, 6, 10, 16, 20, 24, 28, 34, 38, 42, 46, 50, 56, 60, 64]),
}
PINNED_961_AT_30_RAW = [
    0, 15, 30, 46, 61, 76, 91, 107, 122, 137, 152, 168, 183, 198, 213, 229, 244, 259, 274, 290, 305, 320,
    335, 350, 366, 381, 396, 411, 427, 442, 457, 472, 488, 503, 518, 533, 549, 564, 579, 594, 610, 625, 640,
    655, 670, 686, 701, 716, 731, 747, 762, 777, 792, 808, 823, 838, 853, 869, 884, 899, 914, 930, 945, 960,
]  # fmt: skip
# The test suite's own settings (tests/conftest.py relabel_config: max_frames=8, num=4) on its
# synthetic lengths at 10 fps: capped, but already dense, so they must not change either.
PINNED_TEST_SCHEDULES = {
    20: ([0, 4, 8, 11, 15, 19], [2, 4, 6]),
    33: ([0, 5, 9, 14, 18, 23, 27, 32], [2, 4, 6, 8]),
    45: ([0, 6, 13, 19, 25, 31, 38, 44], [2, 4, 6, 8]),
    21: ([0, 4, 8, 12, 16, 20], [2, 4, 6]),
}
# log P(" True") and log P(" False") per prefix, tiny Qwen3-VL, 64x64 synthetic frames
# (devkit.synth.make_frame(0, 1, raw index)), before the change.
PINNED_SCORES = {
    (301, 30.0, "defaults"): (
        [-6.809731960296631, -6.506183624267578, -6.211199760437012, -6.013830184936523, -6.431126117706299,
         -6.364112377166748, -6.387472629547119, -6.276661396026611, -6.118941307067871, -6.271135330200195,
         -6.083606719970703],
        [-5.803042411804199, -6.259217739105225, -5.828845977783203, -6.211180210113525, -5.981644630432129,
         -5.9342522621154785, -6.22605562210083, -6.037740230560303, -6.005987167358398, -6.009405612945557,
         -6.018330097198486],
    ),
    (961, 30.0, "defaults"): (
        [-6.655259609222412, -6.298352241516113, -6.522301197052002, -6.6487226486206055, -6.629007339477539,
         -6.312950134277344, -6.283351898193359, -6.285920143127441, -6.2456512451171875, -6.202573299407959,
         -6.2587995529174805, -6.254149436950684, -6.366612434387207, -6.313112735748291, -6.404067516326904],
        [-5.691464424133301, -5.84623908996582, -6.189114093780518, -6.287381172180176, -6.213738918304443,
         -6.500046730041504, -6.645218849182129, -6.750406265258789, -6.708819389343262, -6.814415454864502,
         -6.769815444946289, -6.816835403442383, -6.799849510192871, -6.863400459289551, -6.752927303314209],
    ),
    (45, 10.0, "tests"): (
        [-7.124964714050293, -6.738857269287109, -6.697148323059082, -6.198944091796875],
        [-5.391578197479248, -5.736557483673096, -5.729788780212402, -6.189610481262207],
    ),
}  # fmt: skip
SETTINGS = {
    "defaults": (DEFAULT_FRAMES, DEFAULT_PREFIXES),
    "tests": (FramesConfig(max_frames=8), PrefixesConfig(num=4)),
}


@pytest.fixture(scope="module")
def scorer(tiny_model_dir):
    return PrefixScorer(ModelConfig(path=str(tiny_model_dir)), ScoringConfig())


def _frames(raw_indices: np.ndarray, episode: int = 1) -> np.ndarray:
    return np.stack([make_frame(0, episode, int(i) % MAX_FRAMES, (SIZE, SIZE)) for i in raw_indices])


def _gaps(schedule: FrameSchedule) -> np.ndarray:
    return np.diff(schedule.prefix_end_times)


@pytest.mark.parametrize(("num_raw", "raw_fps"), list(PINNED_DEFAULT_SCHEDULES))
def test_short_episode_schedules_are_todays(num_raw, raw_fps):
    digest, ends = PINNED_DEFAULT_SCHEDULES[(num_raw, raw_fps)]
    schedule = config_schedule(num_raw, raw_fps, DEFAULT_FRAMES, DEFAULT_PREFIXES)
    assert _digest(schedule.raw_indices) == digest
    assert schedule.prefix_ends.tolist() == ends


def test_pinned_raw_indices_spelled_out():
    schedule = config_schedule(961, 30.0, DEFAULT_FRAMES, DEFAULT_PREFIXES)
    assert schedule.raw_indices.tolist() == PINNED_961_AT_30_RAW


@pytest.mark.parametrize("num_raw", list(PINNED_TEST_SCHEDULES))
def test_the_suites_own_settings_are_unchanged(num_raw):
    raw, ends = PINNED_TEST_SCHEDULES[num_raw]
    schedule = config_schedule(num_raw, 10.0, *SETTINGS["tests"])
    assert schedule.raw_indices.tolist() == raw
    assert schedule.prefix_ends.tolist() == ends


@pytest.mark.parametrize("raw_fps", [10.0, 15.0, 30.0, 50.0])
def test_every_episode_up_to_52_s_keeps_todays_schedule(raw_fps):
    for num_raw in range(2, int(52 * raw_fps) + 2):
        old = config_schedule(num_raw, raw_fps, OLD_FRAMES, OLD_PREFIXES)
        new = config_schedule(num_raw, raw_fps, DEFAULT_FRAMES, DEFAULT_PREFIXES)
        assert np.array_equal(old.raw_indices, new.raw_indices), num_raw
        assert np.array_equal(old.prefix_ends, new.prefix_ends), num_raw


@pytest.mark.parametrize("seconds", [53, 60, 79, 90, 120, 300, 600, 900])
def test_long_episodes_resolve_5_s_by_default(seconds):
    num_raw = seconds * 30 + 1
    old = config_schedule(num_raw, 30.0, OLD_FRAMES, OLD_PREFIXES)
    new = config_schedule(num_raw, 30.0, DEFAULT_FRAMES, DEFAULT_PREFIXES)
    assert _gaps(old).max() > 5.0  # what the old schedule gave
    # At most 5 s, plus at most one raw frame: sampled frames sit on raw frames.
    assert _gaps(new).max() <= 5.0 + 1 / 30 + 1e-9
    assert len(new.prefix_ends) > len(old.prefix_ends)
    assert new.prefix_ends[-1] == len(new.raw_indices) and new.prefix_last_raw[-1] == num_raw - 1
    assert np.all(new.prefix_ends % 2 == 0) and np.all(np.diff(new.prefix_ends) > 0)


def test_ten_minute_episode_at_30_fps():
    num_raw = 10 * 60 * 30 + 1
    old = config_schedule(num_raw, 30.0, OLD_FRAMES, OLD_PREFIXES)
    new = config_schedule(num_raw, 30.0, DEFAULT_FRAMES, DEFAULT_PREFIXES)
    assert (len(old.raw_indices), len(old.prefix_ends)) == (64, 15)
    assert _gaps(old).max() > 40
    assert (len(new.raw_indices), len(new.prefix_ends)) == (482, 121)
    assert _gaps(new).max() <= 5.0
    # Per-frame progress interpolates between every prefix end: a 1-prefix dip shows in the frames.
    progress = np.ones(len(new.prefix_ends))
    dip = 60
    progress[dip] = 0.0
    frames = per_frame_progress(new.prefix_last_raw, progress, num_raw)
    assert len(frames) == num_raw
    assert frames[new.prefix_last_raw[dip]] == 0.0
    low = np.flatnonzero(frames < 1.0)
    assert (low[-1] - low[0] + 1) / 30.0 <= 2 * 5.0 + 2 / 30  # only the frames next to the dip move


def test_episode_past_the_frame_cap_degrades_gracefully():
    # 1 h: the floor would need 2,881 frames; capped at 768, every block ends a prefix.
    schedule = config_schedule(3600 * 30 + 1, 30.0, DEFAULT_FRAMES, DEFAULT_PREFIXES)
    assert len(schedule.raw_indices) == 768 and len(schedule.prefix_ends) == 384
    assert _gaps(schedule).max() < 9.5
    # A larger max_frames wins over max_frames_long.
    big = config_schedule(3600 * 30 + 1, 30.0, FramesConfig(max_frames=1000), DEFAULT_PREFIXES)
    assert len(big.raw_indices) == 1000


def test_spacing_without_the_frame_floor_adds_prefixes_up_to_the_blocks():
    num_raw = 600 * 30 + 1
    schedule = config_schedule(num_raw, 30.0, OLD_FRAMES, DEFAULT_PREFIXES)
    assert len(schedule.raw_indices) == 64 and len(schedule.prefix_ends) == 32  # every block


@pytest.mark.parametrize(("num_raw", "raw_fps", "settings"), list(PINNED_SCORES))
def test_short_episode_scores_are_todays(scorer, num_raw, raw_fps, settings):
    schedule = config_schedule(num_raw, raw_fps, *SETTINGS[settings])
    clip = EpisodeClip(
        _frames(schedule.raw_indices), schedule.raw_indices, raw_fps, num_raw, schedule.prefix_ends
    )
    scores = scorer.score(clip, TASK)
    true_lp, false_lp = PINNED_SCORES[(num_raw, raw_fps, settings)]
    np.testing.assert_allclose(scores.log_p_true, true_lp, rtol=0, atol=1e-5)
    np.testing.assert_allclose(scores.log_p_false, false_lp, rtol=0, atol=1e-5)


def _event_scores(scorer, schedule: FrameSchedule, num_raw: int, window: tuple[float, float]):
    """Scores of the episode without and with a short event: other frames during ``window`` seconds."""
    base = _frames(schedule.raw_indices)
    event = base.copy()
    inside = (schedule.timestamps >= window[0]) & (schedule.timestamps < window[1])
    if inside.any():
        event[inside] = _frames(schedule.raw_indices[inside], episode=2)
    scores = []
    for frames in (base, event):
        clip = EpisodeClip(frames, schedule.raw_indices, 30.0, num_raw, schedule.prefix_ends)
        scores.append(scorer.score(clip, TASK).log_p_true)
    return scores, inside


def test_a_4_s_event_in_a_10_minute_episode_reaches_the_reward(scorer):
    """A 4-s event (a regrasp: other frames from 297 s to 301 s) changes the reward within 5 s.

    Today's 64 frames (one per 9.5 s) hold no frame of it, so its reward cannot tell it happened; the
    default schedule samples it, and the first prefix ending after its start ends at most 5 s later.
    Prefixes ending before it score as they did without it (cached scoring is exact per prefix).
    """
    num_raw, window = 10 * 60 * 30 + 1, (297.0, 301.0)
    old = config_schedule(num_raw, 30.0, OLD_FRAMES, OLD_PREFIXES)
    (base, event), inside = _event_scores(scorer, old, num_raw, window)
    assert not inside.any()
    np.testing.assert_array_equal(base, event)

    new = config_schedule(num_raw, 30.0, DEFAULT_FRAMES, DEFAULT_PREFIXES)
    (base, event), inside = _event_scores(scorer, new, num_raw, window)
    assert inside.sum() >= 3  # one frame per 1.25 s
    ends = new.prefix_end_times
    before, after = ends < window[0], ends >= window[0]
    np.testing.assert_allclose(event[before], base[before], rtol=0, atol=1e-5)
    first_after = int(np.flatnonzero(after)[0])
    assert ends[first_after] - window[0] <= 5.0
    assert abs(event[first_after] - base[first_after]) > 1e-3


def test_episode_schedule_without_the_keywords_is_todays():
    """``episode_schedule`` without the resolution keywords is today's schedule (benches and old callers)."""
    for num_raw in (2, 301, 961, 3001, 18001):
        legacy = episode_schedule(num_raw, 30.0, 2.0, 64, 15)
        off = config_schedule(num_raw, 30.0, OLD_FRAMES, OLD_PREFIXES)
        assert np.array_equal(legacy.raw_indices, off.raw_indices)
        assert np.array_equal(legacy.prefix_ends, off.prefix_ends)


# config_hash of the default config on a CPU before the reward-resolution keys existed (58185f7~1).
PINNED_CPU_HASH = "f787e21a7516"


def test_the_resolution_keys_leave_the_run_hash_as_it_was():
    """They decide per episode (its fingerprint), so a run's hash is what it was before they existed."""
    cfg = RelabelConfig()
    cpu = RelabelConfig(model=ModelConfig(device="cpu"))
    assert config_hash(cpu) == PINNED_CPU_HASH
    off = RelabelConfig(
        model=ModelConfig(device="cpu"),
        frames=FramesConfig(min_fps=None, max_frames_long=64),
        prefixes=PrefixesConfig(max_spacing_s=None),
    )
    assert config_hash(off) == PINNED_CPU_HASH
    assert config_hash(RelabelConfig(model=ModelConfig(device="cpu"), prefixes=PrefixesConfig(num=16))) != (
        PINNED_CPU_HASH
    )
    assert cfg.frames == DEFAULT_FRAMES


def _record(num_raw: int, raw_fps: float) -> EpisodeRecord:
    return EpisodeRecord(
        "ds", "/ds", "v3.0", 0, TASK, (TASK,), num_raw, raw_fps, "cam", "/ds/v.mp4", 0.0, num_raw / raw_fps
    )


@pytest.mark.parametrize(
    ("num_raw", "raw_fps"), [(2, 30.0), (301, 30.0), (961, 30.0), (1561, 30.0), (520, 10.0)]
)
def test_short_episodes_keep_their_fingerprint(num_raw, raw_fps):
    """Up to 52 s the settings change nothing, so results committed without them stay current."""
    record = _record(num_raw, raw_fps)
    tag = resolution_tag(num_raw, raw_fps, DEFAULT_FRAMES, DEFAULT_PREFIXES)
    assert tag == ""
    assert record.fingerprint(tag) == record.fingerprint()
    assert resolution_tag(num_raw, raw_fps, OLD_FRAMES, OLD_PREFIXES) == ""


@pytest.mark.parametrize("seconds", [60, 600])
def test_long_episodes_get_a_fingerprint_per_schedule(seconds):
    """A long episode scored under another schedule is stale: its fingerprint follows its schedule."""
    num_raw = seconds * 30 + 1
    record = _record(num_raw, 30.0)
    default = resolution_tag(num_raw, 30.0, DEFAULT_FRAMES, DEFAULT_PREFIXES)
    assert default and resolution_tag(num_raw, 30.0, OLD_FRAMES, OLD_PREFIXES) == ""
    assert record.fingerprint(default) != record.fingerprint()
    finer = resolution_tag(num_raw, 30.0, DEFAULT_FRAMES, PrefixesConfig(max_spacing_s=2.5))
    assert finer not in ("", default)
    # Past 80 s the floor alone changes the frames (and so the scores), prefixes as they were.
    floor_only = resolution_tag(num_raw, 30.0, DEFAULT_FRAMES, OLD_PREFIXES)
    assert (floor_only not in ("", default)) if seconds > 80 else floor_only == ""
    # Settings that give the episode the same schedule share its results.
    same = FramesConfig(max_frames_long=DEFAULT_FRAMES.max_frames_long + 2)
    if np.array_equal(
        config_schedule(num_raw, 30.0, same, DEFAULT_PREFIXES).raw_indices,
        config_schedule(num_raw, 30.0, DEFAULT_FRAMES, DEFAULT_PREFIXES).raw_indices,
    ):
        assert resolution_tag(num_raw, 30.0, same, DEFAULT_PREFIXES) == default
