"""``python -m pipeline.scoring`` prints the prefix table of one dataset episode or one video file."""

import numpy as np

from pipeline.scoring.__main__ import main

OVERRIDES = ["frames.height=64", "frames.width=64", "frames.max_frames=8", "prefixes.num=3"]


def _table_rows(out: str) -> list[list[str]]:
    lines = out.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("prefix"))
    return [line.split() for line in lines[start + 1 :] if line.split()[0].isdigit()]


def test_dataset_episode(synth_dir, tiny_model_dir, capsys):
    code = main(
        ["--dataset", str(synth_dir / "v30"), "--episode", "2", f"model.path={tiny_model_dir}", *OVERRIDES]
    )
    assert code == 0
    out = capsys.readouterr().out
    rows = _table_rows(out)
    assert len(rows) == 3
    assert [int(r[1]) for r in rows][-1] == 8  # the last prefix shows every sampled frame
    assert np.all(np.array([float(r[4]) for r in rows]) < 0)
    assert "success score" in out


def test_video_file(synth_dir, tiny_model_dir, capsys):
    video = next((synth_dir / "v21" / "videos").rglob("episode_000000.mp4"))
    code = main(
        ["--video", str(video), "--task", "pick up the cube", f"model.path={tiny_model_dir}", *OVERRIDES]
    )
    assert code == 0
    assert len(_table_rows(capsys.readouterr().out)) == 3


def test_missing_episode_is_reported(synth_dir, tiny_model_dir, capsys):
    try:
        main(
            [
                "--dataset",
                str(synth_dir / "v30"),
                "--episode",
                "99",
                f"model.path={tiny_model_dir}",
                *OVERRIDES,
            ]
        )
    except SystemExit as exit_:
        assert "no episode 99" in str(exit_)
    else:
        raise AssertionError("expected an error for a missing episode")
