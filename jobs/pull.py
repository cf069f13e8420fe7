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
"""

from __future__ import annotations

import argparse
import posixpath
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError, load_config, override_keys
from pipeline.curated.pointer import resolve_curated
from pipeline.layout import CURATED_DIR, EPISODES_FILE, PROGRESS_FILE
from pipeline.report.config import load_settings
from pipeline.report.outputs import INFO_PATH
from pipeline.storage import filesystem_for, join_uri, redact

# What pull says about the run whose files it copied: the settings that decided what curated/ holds.
PROVENANCE_KEYS = ("success.threshold", "success.window", "curation.require_success", "curation.min_voc",
                   "curation.min_final_progress", "model.path")  # fmt: skip


def pull_curated(uri: str, dest: Path, storage_options: Mapping[str, Any] | None) -> list[Path]:
    """Copies the current curated version of the dataset at ``uri`` to ``dest``, replacing a copy already
    there in one rename, or removing it when no episode is selected; returns the files written."""
    root = resolve_curated(join_uri(uri, CURATED_DIR), storage_options)
    if root is None:
        if dest.exists():
            shutil.rmtree(dest)
        return []
    fs, remote = filesystem_for(root, storage_options)
    remote = remote.rstrip("/")
    info = posixpath.join(remote, INFO_PATH)
    staging = Path(tempfile.mkdtemp(prefix=".curated-", dir=dest.parent))
    try:
        # info.json before the listing: every file it names is then listed; files appended after it are
        # listed too, and LeRobot ignores them (they lie past info.json's totals).
        (staging / INFO_PATH).parent.mkdir(parents=True)
        fs.get_file(info, str(staging / INFO_PATH))
        fs.invalidate_cache(remote)
        files = sorted(path for path in fs.find(remote) if path != info)
        local = [staging / posixpath.relpath(path, remote) for path in files]
        for folder in {p.parent for p in local}:
            folder.mkdir(parents=True, exist_ok=True)
        fs.get(files, [str(p) for p in local])
        if dest.exists():
            old = staging.with_name(staging.name + "-old")
            dest.rename(old)
            staging.rename(dest)
            shutil.rmtree(old)
        else:
            staging.rename(dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    local.append(staging / INFO_PATH)
    return [dest / path.relative_to(staging) for path in local]


def pull(uri: str, dest: str | Path, storage_options: Mapping[str, Any] | None = None) -> list[Path]:
    """Copy a dataset's published files and its current curated version under ``dest``.

    Args:
        uri: a dataset's output folder, e.g. ``s3://labels/topreward/so100/pick_cube``.
        dest: local folder; created if missing, files already there are overwritten.
        storage_options: fsspec options of the source (endpoint, credentials).

    Returns:
        The local files written, sorted.

    Raises:
        FileNotFoundError: nothing is published under ``uri``.
    """
    fs, root = filesystem_for(uri, storage_options)
    root = root.rstrip("/")
    # A fresh listing: an earlier run in this process may have cached a listing from before the upload.
    fs.invalidate_cache(root)
    if not fs.exists(root):
        raise FileNotFoundError(f"no files under {uri}")
    remote = sorted(entry["name"] for entry in fs.ls(root, detail=True) if entry["type"] == "file")
    if not remote:
        raise FileNotFoundError(f"no files under {uri}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    local = [dest / posixpath.basename(path) for path in remote]
    fs.get(remote, [str(p) for p in local])
    return sorted(local + pull_curated(uri, dest / CURATED_DIR, storage_options))


def provenance(uri: str, overrides: list[str]) -> list[str]:
    """Lines naming the run that published the dataset at ``uri`` and the settings that decided it."""
    settings = load_settings(uri.rstrip("/"), overrides, load_config(overrides))
    if settings.run_id is None:
        return [f"published by: unknown ({settings.missing})"]
    origins = "; ".join(settings.origin(key) for key in PROVENANCE_KEYS)
    return [f"published by run {settings.run_id}: {origins}"]


def main(argv: list[str] | None = None) -> int:
    """Pull the outputs and print where LeRobot's trainer finds them; exit 2 on a bad argument."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "uri", help="<output.uri>/<dataset id>, e.g. s3://fleet-labels/topreward/so100/pick_cube"
    )
    parser.add_argument("dest", help="local folder")
    parser.add_argument("overrides", nargs="*", help="output.storage_options='{...}' (as for jobs.relabel)")
    args = parser.parse_args(argv)
    ignored = [key for key in override_keys(args.overrides) if not key.startswith("output.")]
    if ignored:
        print(
            f"jobs.pull: {', '.join(ignored)}: only output.* keys apply; the files are copied as the run "
            "that published them decided them (jobs.report and jobs.evaluate take other settings)",
            file=sys.stderr,
        )
        return 2
    try:
        options = load_config(args.overrides).output.storage_options
    except ConfigError as err:
        print(f"jobs.pull: {err}", file=sys.stderr)
        return 2
    try:
        files = pull(args.uri, args.dest, options)
        lines = provenance(args.uri, args.overrides)
    except ConfigError as err:
        print(f"jobs.pull: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"jobs.pull: {redact(str(err), options)}", file=sys.stderr)
        return 2
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
