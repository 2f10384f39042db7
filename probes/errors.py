"""Errors a user can cause, each saying what was wrong, where, and what to do."""

from __future__ import annotations


class ProbeError(Exception):
    """Base class: the CLI prints these as one clear message instead of a traceback."""


class FileContentError(ProbeError):
    """A file whose content is wrong: names the file, where in it, the problem and what was expected."""

    def __init__(self, path, where: str, problem: str, expected: str = ""):
        self.path, self.where, self.problem, self.expected = str(path), where, problem, expected
        msg = f"{self.path}: {where}: {problem}" if where else f"{self.path}: {problem}"
        if expected:
            msg += f" (expected {expected})"
        super().__init__(msg)


class CatalogError(FileContentError):
    """A prompt catalog that cannot be read or does not follow the format."""


class PresetError(ProbeError):
    """An unknown preset, or a preset whose settings are wrong."""


class WeightsError(ProbeError):
    """Checkpoint missing offline, or one whose digest does not match its pin."""


class StoreError(ProbeError):
    """A study folder that cannot be created, written or read."""


class TableError(ProbeError):
    """A table that cannot be written where it was asked for."""


class MissingDependencyError(ProbeError):
    """An optional package (glide-text2im) is not installed."""


class YamlFileError(FileContentError):
    """A YAML file that cannot be read, is not valid YAML, or uses what medprobe refuses."""


class DoesNotFit(ProbeError):
    """Even one image at a time runs out of GPU memory: the preset needs another setting."""


class KernelDiedError(ProbeError):
    """The notebook's kernel process ended mid-cell: killed by the OS (memory), or crashed."""

    def __init__(self, name: str, output):
        self.name, self.output = name, output
        super().__init__(
            f"{name}: the Python kernel running it died (killed by the operating system, most often "
            "for lack of memory, or crashed) before the notebook finished. Try again with less "
            "memory needed (a smaller preset or fewer images per batch), on another --device, or "
            f"on a machine with more memory. The notebook as far as it got is {output}")


class ShardsFailedError(ProbeError):
    """Some shard jobs failed; the finished ones were merged. ``submission`` says which and where."""

    def __init__(self, message: str, submission):
        super().__init__(message)
        self.submission = submission


class NotInside(OSError):
    """A component is a link, not a folder, or not a regular file: it is not read."""
