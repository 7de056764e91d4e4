"""One-line user errors and the CLI wrapper that prints them.

Anything the user can get wrong (a path, a value, a data file) raises ``UserError`` (or a
subclass) with a message that names the bad thing. ``cli_main`` turns it into one line on stderr
and exit status 2, instead of a traceback from deep inside.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Sequence


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


class DataError(UserError):
    """Bad data on disk: a missing or unreadable file, a malformed csv, a bad label."""


def cli_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run ``main(argv)``; a ``UserError`` becomes ``error: <msg>`` on stderr and exit code 2."""
    try:
        code = main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # `... | head` closed stdout: not an error of ours; exit as the shell's tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        sys.exit(141)
    sys.exit(code or 0)
