"""The dataset page's quality section: flagged episodes per flag, and the LeRobot command removing them."""

from __future__ import annotations

import html
from typing import Any

from pipeline.quality import EDIT_TOOL, FLAGS, QualityConfig, delete_command, is_local
from pipeline.report.outputs import source_root

# A placeholder for the local copy of a dataset kept in object storage (the tool reads local folders).
LOCAL_COPY = "/path/to/local/copy"


def flagged_count(flags: dict[str, list[int]]) -> int:
    """Episodes with at least one flag."""
    return len({index for indices in flags.values() for index in indices})


def _links(indices: list[int]) -> str:
    return ", ".join(f"<a href='#episode-{i}'>{i}</a>" for i in indices) or "none"


def _command_paragraphs(dataset_id: str, root: str, flagged: list[int]) -> list[str]:
    local = is_local(root)
    command = delete_command(dataset_id, root if local else LOCAL_COPY, flagged)
    body = [
        f"<p>Remove the {len(flagged)} flagged episode(s) from the source dataset with LeRobot's own "
        "tool:</p>",
        f"<pre class='command' id='delete-command'>{html.escape(command)}</pre>",
    ]
    where = (
        ""
        if local
        else f"The source is {html.escape(root)}: {EDIT_TOOL} reads and writes local folders only; copy it "
        f"to local disk, run the command on the copy ({LOCAL_COPY}), then upload the copy in its place. "
    )
    body.append(
        f"<p class='note' id='delete-note'>{where}{EDIT_TOOL} edits a LeRobot v3.0 dataset on local disk "
        "(a v2.1 dataset must be converted first). --new_root equal to --root edits it in place: LeRobot "
        "moves the original to &lt;root&gt;_old first, and renumbers the remaining episodes from 0, so "
        "run one command, then relabel (the rewritten dataset is scored again) before removing more.</p>"
    )
    return body


def flags_section(
    dataset_id: str,
    rows: list[dict[str, Any]],
    flags: dict[str, list[int]],
    quality: QualityConfig,
    success_window: int,
) -> list[str]:
    """The flagged episodes per flag, with each flag's rule, and the command removing all of them.

    Args:
        dataset_id: the dataset (the command's ``--repo_id``).
        rows: its episodes rows (the source root comes from them).
        flags: episode indices per flag (:func:`pipeline.quality.flagged_episodes`).
        quality: the thresholds in effect.
        success_window: ``success.window`` in effect (the default prefixes an episode needs).
    """
    flagged = sorted({index for indices in flags.values() for index in indices})
    rules = quality.rules(success_window)
    body = [
        f"<h2>Quality flags ({len(flagged)} episode(s) flagged)</h2>",
        "<table id='flags'><thead><tr><th>flag</th><th>rule</th><th>episodes</th></tr></thead><tbody>",
    ]
    body.extend(
        f"<tr data-flag='{flag}'><td>{flag.replace('_', ' ')} ({len(flags[flag])})</td>"
        f"<td>{html.escape(rules[flag])}</td><td>{_links(flags[flag])}</td></tr>"
        for flag in FLAGS
    )
    body.append("</tbody></table>")
    body.append(
        "<p class='meta'>Thresholds: report.quality.min_prefixes, flat_log_p_range, end_drop, min_voc "
        "(key=value on the command line).</p>"
    )
    if not flagged:
        return body
    try:
        root = source_root(rows[0])
    except ValueError as err:
        return [*body, f"<p class='note'>no delete command: {html.escape(str(err))}</p>"]
    return [*body, *_command_paragraphs(dataset_id, root, flagged)]
