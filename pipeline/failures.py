"""Failures as the run summary shows them: the first of each kind, repeats collapsed, a credentials hint.

A dataset whose 15 episodes all failed for one reason shows that reason once, with its episode, and
``and 14 more like it (episodes 1-14)``; the run record and ``episodes.parquet`` keep every row. A
failure that looks like storage refusing the workers (no credentials, access denied, HTTP 403) adds one
hint: workers under ``ray job submit`` do not see the driver's environment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# How many distinct reasons a dataset shows before the rest are counted.
MAX_KINDS = 5
MAX_EPISODES_SHOWN = 12

_EPISODE = re.compile(r"\bepisode (\d+)")
_TRAILER = re.compile(r"\s*\[(attempt \d+|gave up after \d+ attempts)\]$")
_NUMBER = re.compile(r"\d+")
# botocore/s3fs (NoCredentialsError, AccessDenied, "An error occurred (403) ... Forbidden"), gcsfs
# ("Forbidden", "HTTP 403"); a bare 403 alone is not enough (an episode or a size may be 403).
_CREDENTIALS = re.compile(
    r"NoCredentialsError|Unable to locate credentials|AccessDenied|Access Denied|InvalidAccessKeyId|"
    r"SignatureDoesNotMatch|ExpiredToken|Forbidden|\(403\)|(HTTP|status|code)[ :=]*403\b"
)
CREDENTIALS_HINT = (
    "hint: storage refused the workers' requests (missing credentials?). Workers do not get the "
    "driver's environment: under `ray job submit` pass the credentials with "
    """--runtime-env-json='{"env_vars": {"AWS_ACCESS_KEY_ID": "...", "AWS_SECRET_ACCESS_KEY": "..."}}' """
    "(GCS: GOOGLE_APPLICATION_CREDENTIALS), or give them in the storage_options."
)


def reason_key(error: str) -> str:
    """What repeats of one failure share: the error without its episode, attempt and other numbers."""
    text = _TRAILER.sub("", error)
    text = _EPISODE.sub("episode", text)
    return _NUMBER.sub("#", text).strip()


def episode_of(error: str) -> int | None:
    """The episode an error names (``... episode 12: ...``), or None."""
    found = _EPISODE.search(error)
    return int(found.group(1)) if found else None


def episode_spans(episodes: Iterable[int], limit: int = MAX_EPISODES_SHOWN) -> str:
    """``1-4, 7, 9-10``; at most ``limit`` spans, then ``...``."""
    ordered = sorted(set(episodes))
    spans: list[str] = []
    start = prev = None
    for episode in [*ordered, None]:
        if start is not None and (episode is None or episode != prev + 1):
            spans.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if episode is not None:
            start = episode if start is None else start
            prev = episode
    shown = ", ".join(spans[:limit])
    return shown + (", ..." if len(spans) > limit else "")


def failure_lines(dataset_id: str, errors: Iterable[str], max_kinds: int = MAX_KINDS) -> list[str]:
    """The summary lines of one dataset's failures: the first error of each kind, repeats counted.

    Args:
        dataset_id: The dataset the errors belong to (each line starts with it).
        errors: Its errors in the order they happened (catalog, then episodes as results came back).
        max_kinds: Distinct reasons shown before the rest are counted in one line.
    """
    kinds: dict[str, list[str]] = {}
    for error in errors:
        if error:
            kinds.setdefault(reason_key(error), []).append(error)
    lines: list[str] = []
    for same in list(kinds.values())[:max_kinds]:
        lines.append(f"{dataset_id}: FAILED {same[0]}")
        if len(same) > 1:
            episodes = [e for e in map(episode_of, same[1:]) if e is not None]
            which = f" (episodes {episode_spans(episodes)})" if episodes else ""
            lines.append(f"{dataset_id}:   and {len(same) - 1} more like it{which}")
    hidden = list(kinds.values())[max_kinds:]
    if hidden:
        count = sum(len(same) for same in hidden)
        lines.append(
            f"{dataset_id}:   and {count} more failure(s) of {len(hidden)} other kind(s): see the run record"
        )
    return lines


def looks_like_credentials(errors: Iterable[str]) -> bool:
    """Whether any error looks like storage refusing access (no credentials, access denied, 403)."""
    return any(_CREDENTIALS.search(error) for error in errors if error)
