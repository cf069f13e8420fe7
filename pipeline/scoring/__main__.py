"""Score one episode and print its prefix table.

    python -m pipeline.scoring --video clip.mp4 --task "pick up the cube" [key=value ...]
    python -m pipeline.scoring --dataset s3://fleet/so100/pick_cube --episode 3 [key=value ...]

``key=value`` arguments override conf/relabel.yaml (e.g. ``model.path=/models/tiny frames.fps=4``),
over a ``--config FILE`` if given; ``--print-config`` prints the settings without scoring.
The episode goes through the same decode, cached scorer and labels as the pipeline.

Exit status: 0 scored; 1 the episode could not be decoded or scored to a finite success score; 2 refused
in one line (a bad argument or setting, the video or dataset not found, missing credentials); a
traceback: a bug.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from typing import Any

from pipeline.cli import Exit, Settings, job_parser, parse, print_config, refusals, run_job
from pipeline.config import RelabelConfig, load_config
from pipeline.storage import filesystem_for

JOB = "pipeline.scoring"
# What one episode is read, scored and decided with; other keys are accepted and checked.
USED_SECTIONS = ("source", "frames", "prefixes", "model", "scoring", "success", "curation")


def video_file_row(uri: str, task: str, storage_options: dict[str, Any]) -> dict[str, Any]:
    """A catalog-shaped row for a plain video file (one episode, the whole file)."""
    import av

    fs, path = filesystem_for(uri, storage_options)
    with fs.open(path, "rb") as f, av.open(f) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        length = stream.frames or sum(1 for _ in container.decode(stream))
    return {
        "dataset_id": uri, "root": uri, "episode_index": 0, "task": task, "length": length, "fps": fps,
        "video_uri": uri, "from_timestamp": 0.0, "to_timestamp": length / fps, "status": "ok", "error": "",
    }  # fmt: skip


def dataset_row(cfg: RelabelConfig, uri: str, episode: int) -> dict[str, Any]:
    """The catalog row of one dataset episode."""
    from pipeline.catalog import list_episodes

    source = replace(cfg.source, uris=[uri], episodes=[episode])
    rows = [record.to_row() for record in list_episodes(source)]
    if not rows:
        raise SystemExit(f"pipeline.scoring: {uri} has no episode {episode}")
    return rows[0]


def format_table(row: dict[str, Any]) -> str:
    """The prefix table of a labelled row."""
    lines = [
        f"{'prefix':>6}{'frames':>8}{'last raw':>10}{'time s':>9}{'log P(True)':>13}{'log P(False)':>14}"
        f"{'progress':>10}"
    ]
    ends, last_raw = row["prefix_ends"], row["prefix_frame_indices"]
    for k in range(len(ends)):
        lines.append(
            f"{k + 1:>6}{ends[k]:>8}{last_raw[k]:>10}{last_raw[k] / row['fps']:>9.2f}"
            f"{row['log_p_true'][k]:>13.4f}{row['log_p_false'][k]:>14.4f}{row['progress'][k]:>10.3f}"
        )
    lines.append(
        f"success score {row['success_score']:.4f} -> success={row['success']}; VOC {row['voc']:.3f}; "
        f"{row['frames_decoded']} frames decoded for {len(row['frame_indices'])} used"
    )
    return "\n".join(lines)


def command_line(argv: list[str] | None) -> tuple[argparse.Namespace, RelabelConfig]:
    """What to score and the settings to score it with (``sys.argv[1:]`` when ``argv`` is None).

    Raises:
        Exit: nothing to run: ``--help`` or ``--print-config`` printed (0), or refused in one line (2).
    """
    parser = job_parser(JOB, __doc__, Settings(RelabelConfig, USED_SECTIONS))
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--video", help="a video file (local path or URI)")
    what.add_argument("--dataset", help="a LeRobot dataset root (local path or URI)")
    parser.add_argument("--task", help="instruction text (required with --video)")
    parser.add_argument("--episode", type=int, default=0, help="episode index (with --dataset)")
    with refusals(JOB):
        command = parse(parser, argv)
        cfg = load_config(command.overrides)
    if command.args.video and not command.args.task:
        parser.error("--task is required with --video")
    if command.print_config:
        raise Exit(print_config([(f"{JOB}: the settings the episode would be scored with", cfg)]))
    return command.args, cfg


def main(argv: list[str] | None = None) -> int:
    """Score one episode; exit 2 on bad arguments, 1 if the episode cannot be scored."""
    # run_job also ends an Exit from the command line (--help, --print-config, a refusal) with its code.
    return run_job(JOB, lambda: _score(*command_line(argv)))


def _score(args: argparse.Namespace, cfg: RelabelConfig) -> int:
    """Decode, score, label and decide the episode; print its table."""
    from pipeline.decision import DECISION_COLUMNS, decide_row
    from pipeline.frames.decode import decode_episode
    from pipeline.scoring.inputs import EpisodeClip
    from pipeline.scoring.scorer import PrefixScorer
    from pipeline.stages.label import label_episode

    if args.video:
        row = video_file_row(args.video, args.task, cfg.source.storage_options)
    else:
        row = dataset_row(cfg, args.dataset, args.episode)
    row = decode_episode(row, cfg.frames, cfg.prefixes, cfg.source.storage_options, cfg.source.block_size)
    if row["status"] != "ok":
        print(f"{JOB}: {row['error']}", file=sys.stderr)
        return 1
    scores = PrefixScorer(cfg.model, cfg.scoring).score(EpisodeClip.from_row(row), row["task"])
    row.update(log_p_true=scores.log_p_true, log_p_false=scores.log_p_false)
    row = label_episode(row)
    row.update(zip(DECISION_COLUMNS, decide_row(row, cfg.success, cfg.curation), strict=True))
    print(f"{row['task']!r}: {row['length']} frames at {row['fps']:g} fps, model {cfg.model.path}")
    print(format_table(row))
    return 0 if math.isfinite(row["success_score"]) else 1


if __name__ == "__main__":
    sys.exit(main())
