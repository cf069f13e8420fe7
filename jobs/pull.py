"""Copy one dataset's relabel outputs from ``s3://`` / ``gs://`` (or any fsspec URI) to a local folder.

LeRobot's trainer reads ``--dataset.root`` and ``--sample_weighting.progress_path`` from local disk (or
``hf://``), not from object storage, so outputs are pulled down before training:

    python -m jobs.pull s3://fleet-labels/topreward/so100/pick_cube data/pick_cube \\
        output.storage_options='{endpoint_url: http://127.0.0.1:9000}'

The folder gets the dataset's files (``topreward_progress.parquet``, ``episodes.parquet``) and, as
``curated/``, the curated version the pointer names when the pull starts (``pipeline.curated.pointer``): its
``meta/info.json`` first, so every file that info names is already published. A ``curated/`` pulled
earlier is replaced in one rename, or removed when no episode is selected any more. Storage options use
the same ``key=value`` syntax and the same key as ``jobs.relabel`` (``output.storage_options``);
credentials otherwise come from the backend's usual environment and config. Only ``output.*`` keys apply:
the files are copied as the run that published them decided them, and pull prints that run and its
success and curation settings (from its run record).

Everything is copied to a staging folder next to the destination and verified before anything there is
replaced: every file's size against the store's listing, and the curated version against its own
metadata (``meta/info.json``, the tasks, the episodes index and, per episode, its data file and its video
of every camera). Exit status, with one line on stderr when not 0:

* 0: pulled and verified.
* 2: refused: a bad argument, nothing under the URI, a URI that is not ONE dataset's output (an output
  root or a folder of datasets: the line names a few to pull), missing or refused credentials.
* 3: the store's copy is incomplete (a file its metadata names is missing, or a copy is short); the line
  names the file, and nothing under the destination was replaced (an earlier good copy stays as it was).
"""

from __future__ import annotations

import argparse
import posixpath
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fsspec import AbstractFileSystem

from pipeline.cli import Exit, Refused, Settings, job_parser, parse, print_config, refusals
from pipeline.config import ConfigError, RelabelConfig, load_config, override_keys
from pipeline.curated.pointer import resolve_curated
from pipeline.layout import CURATED_DIR, DATASET_ID_PARTS, EPISODES_FILE, OUTPUT_MARKER, PROGRESS_FILE
from pipeline.reader import EPISODES_DIR, INFO_PATH, MetadataError, read_dataset
from pipeline.report.config import load_settings, printed_settings
from pipeline.storage import filesystem_for, join_uri, list_files, list_folder, redact

# LeRobot v3.0's tasks table (lerobot.datasets.utils.DEFAULT_TASKS_PATH), named here so that pull does not
# import LeRobot.
TASKS_PATH = "meta/tasks.parquet"
JOB = "jobs.pull"
# Exit status: 2 refused (bad argument, nothing there, not one dataset, credentials); 3 incomplete.
EXIT_OK, EXIT_REFUSED, EXIT_INCOMPLETE = 0, 2, 3

# What pull says about the run whose files it copied: the settings that decided what curated/ holds.
PROVENANCE_KEYS = ("success.threshold", "success.window", "curation.require_success", "curation.min_voc",
                   "curation.min_final_progress", "model.path")  # fmt: skip


class PullRefused(ValueError):
    """The URI is not one dataset's published output, or its store refuses to be read (credentials)."""


class IncompleteVersion(ValueError):
    """The store does not hold all of what the dataset's metadata names; nothing was replaced locally."""


def datasets_below(fs: AbstractFileSystem, root: str, depth: int = DATASET_ID_PARTS) -> list[str]:
    """Dataset output folders (holding ``episodes.parquet``) up to ``depth`` levels below ``root``,
    relative to it and sorted; bookkeeping folders (``_state``, ``_runs``, ...) are skipped."""
    found, level = [], [root]
    for _ in range(depth):
        level = [
            entry["name"]
            for folder in level
            for entry in list_folder(fs, folder)
            if entry["type"] == "directory" and not posixpath.basename(entry["name"]).startswith(("_", "."))
        ]
        for folder in level:
            names = {posixpath.basename(e["name"]) for e in list_folder(fs, folder) if e["type"] == "file"}
            if EPISODES_FILE in names:
                found.append(posixpath.relpath(folder, root))
    return sorted(found)


def _not_one_dataset(fs: AbstractFileSystem, root: str, uri: str, names: set[str]) -> PullRefused:
    """Why ``uri`` (listed: ``names``) is not one dataset's output: an output root, a folder of datasets,
    or nothing published."""
    ids = datasets_below(fs, root)
    if not ids:
        return PullRefused(
            f"{uri} is not a dataset's output (no {EPISODES_FILE} in it or in its sub-folders); pull "
            "<output.uri>/<robot>/<task>"
        )
    what = "an output root" if OUTPUT_MARKER in names else "a folder"
    shown = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
    return PullRefused(
        f"{uri} is {what} holding {len(ids)} dataset(s): pull one of {shown} (e.g. {join_uri(uri, ids[0])})"
    )


@contextmanager
def _storage_errors(uri: str, storage_options: Mapping[str, Any] | None) -> Iterator[None]:
    """Credential and permission failures of the store as one :class:`PullRefused` line."""
    try:
        yield
    except PermissionError as err:
        reason = redact(str(err), storage_options).splitlines()[0]
        raise PullRefused(f"{uri}: access denied ({reason}); check the credentials") from None
    except Exception as err:
        if "credential" not in f"{type(err).__name__} {err}".lower():
            raise
        raise PullRefused(
            f"{uri}: no storage credentials ({type(err).__name__}); set them in the environment "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS) or pass "
            "output.storage_options='{key: ..., secret: ...}'"
        ) from None


def _fetch(fs: AbstractFileSystem, sizes: dict[str, int], remote: str, local: Path, uri: str) -> list[Path]:
    """Copy the files of ``sizes`` (paths relative to ``remote``, with their listed sizes) under ``local``
    and check every copy's size; a file replaced since the listing is compared with its new size.

    Raises:
        IncompleteVersion: a copy's size is neither the listed nor the current one.
    """
    targets = [local / relative for relative in sizes]
    for folder in {path.parent for path in targets}:
        folder.mkdir(parents=True, exist_ok=True)
    fs.get([posixpath.join(remote, relative) for relative in sizes], [str(path) for path in targets])
    for (relative, size), path in zip(sizes.items(), targets, strict=True):
        got = path.stat().st_size if path.is_file() else None
        if got != size and got != _current_size(fs, posixpath.join(remote, relative)):
            raise IncompleteVersion(f"{join_uri(uri, relative)}: copied {got} bytes of the {size} listed")
    return targets


def _current_size(fs: AbstractFileSystem, path: str) -> int | None:
    """The size the store reports now: a single file (info.json, stats, tasks, progress) may have been
    replaced whole by a publish since the listing, and the listing cache still holds its old entry."""
    fs.invalidate_cache(path)
    try:
        return fs.info(path).get("size")
    except FileNotFoundError:
        return None


def verify_version(local: Path, version_uri: str) -> None:
    """The curated version copied to ``local`` holds every file its metadata names: ``meta/info.json``,
    the tasks, the episodes index (``total_episodes`` episodes), and per episode its data file and its
    video file of every camera.

    Raises:
        IncompleteVersion: naming the file of ``version_uri`` that is missing or unreadable.
    """
    try:
        meta = read_dataset(str(local), all_cameras=True)
    except MetadataError as err:
        where = err.file_uri.replace(str(local), version_uri.rstrip("/"), 1)
        raise IncompleteVersion(f"{where}: {err.reason}") from None
    total = int(meta.info.get("total_episodes", len(meta.episodes)))
    # Episodes appended after info.json was copied lie past its total: LeRobot ignores them, and so does this.
    episodes = [episode for episode in meta.episodes if episode.episode_index < total]
    if len(episodes) < total:
        raise IncompleteVersion(
            f"{join_uri(version_uri, EPISODES_DIR)}: {len(episodes)} episodes of the {total} that "
            f"meta/info.json names (an episodes file is missing)"
        )
    needed = [(TASKS_PATH, "the tasks")]
    for episode in episodes:
        if episode.error:
            raise IncompleteVersion(f"{version_uri}: episode {episode.episode_index}: {episode.error}")
        needed.append((episode.data_path, f"episode {episode.episode_index}'s data"))
        for camera, span in episode.videos.items():
            needed.append((span.path, f"episode {episode.episode_index}'s {camera} video"))
    for relative, what in needed:
        if not (local / relative).is_file():
            raise IncompleteVersion(f"{join_uri(version_uri, relative)}: missing from the store ({what})")


def stage_curated(uri: str, staging: Path, storage_options: Mapping[str, Any] | None) -> list[Path] | None:
    """Copy the current curated version of the dataset at ``uri`` to ``staging`` and verify it
    (:func:`verify_version`); None when no episode is selected.

    ``meta/info.json`` is copied before the listing, so every file it names is listed; files appended
    after it are listed too, and LeRobot ignores them (they lie past info.json's totals).
    """
    root = resolve_curated(join_uri(uri, CURATED_DIR), storage_options)
    if root is None:
        return None
    fs, remote = filesystem_for(root, storage_options)
    remote = remote.rstrip("/")
    (staging / INFO_PATH).parent.mkdir(parents=True)
    fs.get_file(posixpath.join(remote, INFO_PATH), str(staging / INFO_PATH))
    fs.invalidate_cache(remote)
    sizes = {relative: int(info.get("size") or 0) for relative, info in list_files(fs, remote).items()}
    sizes.pop(INFO_PATH, None)
    files = [*_fetch(fs, sizes, remote, staging, root), staging / INFO_PATH]
    verify_version(staging, root)
    return files


def _replace_curated(staged: Path | None, dest: Path) -> None:
    """Put the staged curated copy at ``dest`` in one rename (the old one, if any, moved aside first and
    removed after), or remove ``dest`` when nothing is selected any more."""
    if staged is None:
        if dest.exists():
            shutil.rmtree(dest)
        return
    if dest.exists():
        old = staged.with_name(staged.name + "-old")
        dest.rename(old)
        staged.rename(dest)
        shutil.rmtree(old)
    else:
        staged.rename(dest)


def _dataset_files(fs: AbstractFileSystem, root: str, uri: str) -> dict[str, int]:
    """The files directly in one dataset's output folder, with their listed sizes.

    Raises:
        FileNotFoundError: nothing is there.
        PullRefused: the folder is not one dataset's output (no ``episodes.parquet``).
    """
    listed = list_folder(fs, root)
    if not listed:
        raise FileNotFoundError(f"no files under {uri}")
    sizes = {
        posixpath.basename(entry["name"]): int(entry.get("size") or 0)
        for entry in listed
        if entry["type"] == "file"
    }
    if EPISODES_FILE not in sizes:
        raise _not_one_dataset(fs, root, uri, set(sizes))
    return sizes


def pull(uri: str, dest: str | Path, storage_options: Mapping[str, Any] | None = None) -> list[Path]:
    """Copy a dataset's published files and its current curated version under ``dest``, verified.

    Everything is copied to a staging folder next to ``dest`` and checked (sizes against the store's
    listing, the curated version against its own metadata) before anything under ``dest`` is replaced:
    a pull that fails leaves an earlier copy as it was.

    Args:
        uri: a dataset's output folder, e.g. ``s3://labels/topreward/so100/pick_cube``.
        dest: local folder; created if missing, files already there are replaced.
        storage_options: fsspec options of the source (endpoint, credentials).

    Returns:
        The local files written, sorted.

    Raises:
        FileNotFoundError: nothing is published under ``uri``.
        PullRefused: ``uri`` is not one dataset's output (an output root, a folder of datasets), or the
            store refuses the credentials.
        IncompleteVersion: a file the store should hold is missing or short; nothing was replaced.
    """
    with _storage_errors(uri, storage_options):
        fs, root = filesystem_for(uri, storage_options)
        root = root.rstrip("/")
        # A fresh listing: an earlier run in this process may have cached a listing from before the upload.
        fs.invalidate_cache(root)
        sizes = _dataset_files(fs, root, uri)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-pull-", dir=dest.parent))
        try:
            top = _fetch(fs, sizes, root, staging, uri)
            curated = stage_curated(uri, staging / CURATED_DIR, storage_options)
            # Verified: only now is anything under dest replaced.
            dest.mkdir(exist_ok=True)
            for path in top:
                path.replace(dest / path.name)
            _replace_curated(staging / CURATED_DIR if curated is not None else None, dest / CURATED_DIR)
        except IncompleteVersion as err:
            raise IncompleteVersion(f"{err}; nothing under {dest} was replaced") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    local = [dest / path.name for path in top]
    local += [dest / path.relative_to(staging) for path in curated or []]
    return sorted(local)


def provenance(uri: str, overrides: list[str]) -> list[str]:
    """Lines naming the run that published the dataset at ``uri`` and the settings that decided it."""
    settings = load_settings(uri.rstrip("/"), overrides, load_config(overrides))
    if settings.run_id is None:
        return [f"published by: unknown ({settings.missing})"]
    origins = "; ".join(settings.origin(key) for key in PROVENANCE_KEYS)
    return [f"published by run {settings.run_id}: {origins}"]


def command_line(argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, Any]]:
    """The arguments (``overrides``: what was given) and the storage options to read with.

    Raises:
        Exit: nothing to run: ``--help`` or ``--print-config`` printed (0), or refused in one line (2).
    """
    parser = job_parser(
        JOB, __doc__, Settings(RelabelConfig, ("output",), "settings (output.* only; key=value or --config)")
    )
    parser.add_argument(
        "uri", help="<output.uri>/<dataset id>, e.g. s3://fleet-labels/topreward/so100/pick_cube"
    )
    parser.add_argument("dest", help="local folder")
    with refusals(JOB):
        command = parse(parser, argv, "output.storage_options='{...}' (as for jobs.relabel)")
        ignored = [key for key in override_keys(command.overrides) if not key.startswith("output.")]
        if ignored:
            named = ", ".join(ignored[:4]) + (f" and {len(ignored) - 4} more" if len(ignored) > 4 else "")
            raise Refused(
                f"{named}: only output.* keys apply; the files are copied as the run that published them "
                "decided them (jobs.report and jobs.evaluate take other settings)"
            )
        base = load_config(command.overrides)
        if command.print_config:
            uri = command.args.uri.rstrip("/")
            settings = load_settings(uri, command.overrides, base)
            raise Exit(print_config(printed_settings(None, base, [(uri, settings)])))
    return command.args, base.output.storage_options


def main(argv: list[str] | None = None) -> int:
    """Pull the outputs and print where LeRobot's trainer finds them; exit 2 refused, 3 incomplete."""
    try:
        args, options = command_line(argv)
    except Exit as done:
        return done.code
    try:
        files = pull(args.uri, args.dest, options)
        lines = provenance(args.uri, args.overrides)
    except (ConfigError, PullRefused, FileNotFoundError) as err:
        print(f"jobs.pull: {redact(str(err), options)}", file=sys.stderr)
        return EXIT_REFUSED
    except IncompleteVersion as err:
        print(f"jobs.pull: {redact(str(err), options)}", file=sys.stderr)
        return EXIT_INCOMPLETE
    dest = Path(args.dest)
    size = sum(f.stat().st_size for f in files)
    print(f"pulled {len(files)} files ({size / 1e6:.1f} MB) from {args.uri} to {dest}")
    print(*lines, sep="\n")
    for label, path in (
        ("progress (--sample_weighting.progress_path)", dest / PROGRESS_FILE),
        ("episodes", dest / EPISODES_FILE),
        ("curated  (--dataset.root)", dest / CURATED_DIR),
    ):
        if path.exists():
            print(f"{label}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
