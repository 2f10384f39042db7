"""One YAML loader for every file a user or a received study can hand medprobe.

Catalogs, presets files and rating scales are data someone may have sent you. PyYAML's
``safe_load`` builds no arbitrary objects, but it still lets a 643-byte file of nested
aliases (the "billion laughs") expand into gigabytes once anything walks or prints it, and
deep nesting ends in a RecursionError. This loader refuses, before building anything:

- documents that would hold more than :data:`MAX_VALUES` values once aliases (``*name``)
  are expanded (ordinary anchors and aliases, and ``<<:`` merges, stay allowed);
- nesting deeper than :data:`MAX_DEPTH` levels, aliases included;
- files larger than ``max_bytes``.

Every problem raises :class:`YamlFileError`, which names the file, where, and what to do.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import yaml
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)

from .errors import YamlFileError

MAX_DEPTH = 50
MAX_BYTES = 5_000_000
MAX_VALUES = 1_000_000  # scalars, lists and mappings, aliases counted as what they stand for


# libyaml's parser when PyYAML was built with it (5 MB in about 6 s instead of 28 s)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Refused(yaml.YAMLError):
    def __init__(self, mark, problem: str, expected: str):
        super().__init__(problem)
        self.problem_mark, self.problem, self.expected = mark, problem, expected


def _check_events(text: str, loader=_LOADER) -> None:
    """Walk the parser's events before anything is built, counting what aliases would expand to.

    Each anchor remembers the size and depth of its value; an alias adds them where it is used,
    so the count is that of the fully expanded document, found without expanding anything.
    Events stream, so a hostile file is refused as soon as its count or depth passes the limit.
    """
    total = 0
    sizes: dict[str, tuple[int, int]] = {}  # anchor -> (values in it, levels in it)
    stack: list[list] = []  # open collections: [anchor, values so far, deepest level below]

    def add(count: int, levels: int, mark) -> None:
        nonlocal total
        total += count
        if total > MAX_VALUES:
            raise _Refused(mark, f"expands to more than {MAX_VALUES:,} values (through aliases *name)",
                           f"at most {MAX_VALUES:,} values once aliases are expanded")
        if len(stack) + levels > MAX_DEPTH:
            raise _Refused(mark, f"nested more than {MAX_DEPTH} levels deep",
                           f"at most {MAX_DEPTH} levels of lists and mappings")
        if stack:
            stack[-1][1] += count
            stack[-1][2] = max(stack[-1][2], levels)

    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, AliasEvent):
            if event.anchor not in sizes:  # an alias inside its own anchor, or before it
                raise _Refused(event.start_mark, f"alias *{event.anchor} refers to no finished anchor",
                               "aliases only to values anchored (&name) before them")
            add(*sizes[event.anchor], event.start_mark)
        elif isinstance(event, ScalarEvent):
            add(1, 0, event.start_mark)
            if event.anchor:
                sizes[event.anchor] = (1, 0)
        elif isinstance(event, (MappingStartEvent, SequenceStartEvent)):
            if len(stack) + 1 > MAX_DEPTH:
                raise _Refused(event.start_mark, f"nested more than {MAX_DEPTH} levels deep",
                               f"at most {MAX_DEPTH} levels of lists and mappings")
            stack.append([event.anchor, 0, 0])
        elif isinstance(event, (MappingEndEvent, SequenceEndEvent)):
            anchor, count, levels = stack.pop()
            total -= count  # counted again, with the collection itself, in its parent
            add(count + 1, levels + 1, event.start_mark)
            if anchor:
                sizes[anchor] = (count + 1, levels + 1)


def load_yaml(path: str | Path, what: str = "YAML file", max_bytes: int = MAX_BYTES, follow_links: bool = True):
    """Parse one YAML file safely; ``what`` ("catalog", "presets file") names it in messages.

    Only a regular file is read, opened non-blocking (a FIFO or a device such as /dev/zero put
    in its place is refused, not waited on or read without end), and never more than
    ``max_bytes``. ``follow_links=False`` (a file inside a study folder, which may come from
    someone else) also refuses a symbolic link. Returns the parsed data (``None`` for an empty
    file). Raises :class:`YamlFileError`.
    """
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_links:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise YamlFileError(path, "", "file not found", f"a {what} (YAML)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise YamlFileError(path, "", "is a symbolic link, which a study folder's files may not be",
                                f"the {what} itself in the study folder, not a link to it") from None
        raise YamlFileError(path, "", f"cannot be read ({exc.strerror})", "a readable file") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise YamlFileError(path, "", "is a folder, not a file", f"a {what} (YAML)")
        if not stat.S_ISREG(info.st_mode):
            raise YamlFileError(path, "", "is not a regular file (a pipe, a device or a socket)",
                                f"a {what} saved as an ordinary file")
        if info.st_size > max_bytes:
            raise YamlFileError(path, "", f"is {info.st_size / 1e6:.1f} MB, larger than a {what} may be "
                                f"({max_bytes / 1e6:g} MB)", f"a {what} under {max_bytes / 1e6:g} MB; "
                                "split it, or check that this is the file you meant")
        with os.fdopen(os.dup(fd), "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        raise YamlFileError(path, "", f"cannot be read ({exc.strerror})", "a readable file") from None
    finally:
        os.close(fd)
    if len(raw) > max_bytes:  # grew between stat and read
        raise YamlFileError(path, "", f"is larger than a {what} may be ({max_bytes / 1e6:g} MB)",
                            f"a {what} under {max_bytes / 1e6:g} MB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise YamlFileError(path, f"line {line}", f"byte 0x{raw[exc.start]:02x} is not UTF-8",
                            "a UTF-8 text file; re-save it as UTF-8") from None
    return loads_yaml(text, path, what)


def loads_yaml(text: str, path: str | Path = "<yaml>", what: str = "YAML file"):
    """:func:`load_yaml` for text already in memory; ``path`` only names it in messages."""
    try:
        try:
            _check_events(text)
        except _Refused:
            raise
        except yaml.YAMLError:
            if _LOADER is yaml.SafeLoader:
                raise
            # libyaml has limits of its own (newer releases refuse deep nesting while scanning ahead,
            # before an event reaches the check): the pure-Python parser walks the same text so that
            # a refusal reads the same, at the same place, whichever PyYAML build is installed
            _check_events(text, loader=yaml.SafeLoader)
            raise
        return yaml.load(text, Loader=_LOADER)  # a SafeLoader (C or Python), checked above
    except _Refused as exc:
        mark = exc.problem_mark
        raise YamlFileError(path, f"line {mark.line + 1}, column {mark.column + 1}",
                            f"{what} refused: {exc.problem}", exc.expected) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlFileError(path, where, f"YAML syntax error: {problem}", "valid YAML") from None
