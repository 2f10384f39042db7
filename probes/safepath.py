"""Files inside a study, opened without following symbolic links.

A study folder, a shard or a received copy may hold links planted to reach elsewhere on the
machine. Everything here walks a path one component at a time, each opened relative to its
parent's descriptor with ``O_NOFOLLOW`` (``O_DIRECTORY`` for folders), so no component can be
a link, and the checks and the use are the same open file: nothing can be swapped in between.
Files are read only when they are regular files, with a bound on their size, and opened
non-blocking so that a FIFO planted in place of a file cannot hang the reader.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .errors import NotInside

__all__ = ["FOLDER_FLAGS", "FILE_FLAGS", "NotInside", "open_folder", "read_regular", "real_entries"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
FOLDER_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
FILE_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def open_folder(top: str | Path | int, *names: str) -> int:
    """A descriptor of ``top/names...``, no component after ``top`` a symbolic link.

    ``top`` (a path the user gave, or an open descriptor) is opened as given; each of
    ``names`` must be a real folder inside the one before. The caller closes the descriptor.
    """
    fd = os.open(top, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if not isinstance(top, int) else os.dup(top)
    try:
        for name in names:
            if not name or name in (".", "..") or "/" in name:
                raise NotInside(f"{name!r} is not a folder name")
            try:
                child = os.open(name, FOLDER_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise NotInside(f"{name} is a symbolic link or not a folder") from None
                raise
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_regular(folder_fd: int, name: str, max_bytes: int) -> tuple[bytes, os.stat_result]:
    """The bytes of ``name`` in an open folder (a regular file, not a link, at most ``max_bytes``)
    and its ``fstat``, taken from the same open file."""
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=folder_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotInside(f"{name} is a symbolic link") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotInside(f"{name} is not a regular file")
        if info.st_size > max_bytes:
            raise NotInside(f"{name} is {info.st_size:,} bytes, more than the {max_bytes:,} allowed")
        chunks, left = [], max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, max(info.st_size + 1, 65536)))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise NotInside(f"{name} is more than the {max_bytes:,} bytes allowed")
    return data, info


def real_entries(folder_fd: int) -> tuple[list[str], list[str], list[str]]:
    """Names in an open folder: (real folders, regular files, links and anything else)."""
    folders, files, other = [], [], []
    with os.scandir(folder_fd) as it:
        for entry in it:
            if entry.is_dir(follow_symlinks=False):
                folders.append(entry.name)
            elif entry.is_file(follow_symlinks=False):
                files.append(entry.name)
            else:
                other.append(entry.name)
    return sorted(folders), sorted(files), sorted(other)
