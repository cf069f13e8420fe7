"""What a write did to a local folder, measured on the files (benchmarks and tests of publishing)."""

from __future__ import annotations

from pathlib import Path

# (size, mtime in ns, inode, hard links) of one file.
FileState = tuple[int, int, int, int]


def file_states(folder: Path) -> dict[str, FileState]:
    """Relative path -> (size, mtime, inode, links) of every file under ``folder``."""
    found = {}
    for path in folder.rglob("*"):
        if path.is_file():
            stat = path.stat()
            found[path.relative_to(folder).as_posix()] = (
                stat.st_size,
                stat.st_mtime_ns,
                stat.st_ino,
                stat.st_nlink,
            )
    return found


def written_files(before: dict[str, FileState], after: dict[str, FileState]) -> dict[str, tuple[int, bool]]:
    """The files of ``after`` that are new or changed since ``before``: relative path -> (size, linked).

    ``linked`` is True for a new name of bytes already stored (a hard link to a file of ``before``):
    nothing was written for it.
    """
    inodes = {inode for _, _, inode, _ in before.values()}
    written = {}
    for relative, (size, mtime, inode, links) in after.items():
        if before.get(relative, (None,) * 3)[:3] == (size, mtime, inode):
            continue
        written[relative] = (size, inode in inodes and links > 1)
    return written
