"""What every medprobe command line shares: a user's mistake is one ``error:`` line, never a traceback."""

from __future__ import annotations

import sys

from .errors import ProbeError

__all__ = ["run_command"]


def run_command(parser, argv=None, errors: tuple[type[BaseException], ...] = (ProbeError,)) -> int:
    """Parse ``argv`` with ``parser`` and run the chosen subcommand (``args.func(args)``).

    An exception of one of ``errors`` (the package's root error classes: each says what was
    wrong, where and what to do) prints as ``error: <message>`` and exits 2; Ctrl-C exits 130
    ("interrupted"). Anything else is a bug and keeps its traceback.
    """
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
