"""How the commands (``train``, ``predict``, ``evaluate``) answer a failure: one line.

Every command runs its body through :func:`run_command`, which turns an exception
into a single ``error: ...`` line on stderr and an exit status, never a traceback:

========================================  ======  =====================================
what went wrong                           status  examples
========================================  ======  =====================================
a bad argument, path, file or value        2      ``--betas=2``, a missing checkpoint,
(``ValueError``, :class:`UsageError`)             a folder that holds a run
a failure while working                    1      NaN loss, an unreadable image, a
(``RuntimeError``, ``OSError``, ...)              download that cannot reach the network
Ctrl-C or SIGTERM                          130    (training saves ``last.pt`` first)
========================================  ======  =====================================

Set ``FCOS_TRACEBACK=1`` to get the full traceback instead (for bug reports).
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
from typing import Callable

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C

_HINTS = {
    "BadSampleError": ("pass --skip_bad to skip unreadable images; a damaged digits cache is "
                       "rebuilt by python data_scripts/make_digits.py --force"),
}


class UsageError(ValueError):
    """A command-line argument that cannot be used (exit status 2)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: ...`` and exit status 2, no usage dump."""

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line.

    An exception re-raised from a ``DataLoader`` worker carries the worker's
    traceback in its message; only its last line (the original error) is kept.
    """
    text = str(err) or type(err).__name__
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())


def error_message(err: BaseException) -> str:
    """``error: ...`` for ``err``, with a hint where one helps."""
    if isinstance(err, urllib.error.URLError):
        return (f"error: a download failed ({getattr(err, 'reason', err)}); you seem to be offline. "
                "Pretrained weights need the network once: pass --pretrained=PATH of a local file, "
                "or --pretrained= to start from random weights")
    message = f"error: {one_line(err)}"
    hint = _HINTS.get(type(err).__name__)
    return f"{message}; {hint}" if hint and hint not in message else message


def exit_status(err: BaseException) -> int:
    """2 for a bad argument, 130 for an interruption, 1 for any other failure."""
    if isinstance(err, KeyboardInterrupt) or type(err).__name__ == "TrainingInterrupted":
        return EXIT_INTERRUPTED
    if isinstance(err, ValueError) and type(err).__name__ != "BadSampleError":
        return EXIT_USAGE
    return EXIT_FAILURE


def run_command(body: Callable[[], int]) -> int:
    """Run ``body``; any exception becomes one ``error:`` line and an exit status.

    ``SystemExit`` (``--help``, argparse's own usage errors) passes through.
    """
    try:
        return body()
    except SystemExit:
        raise
    except BaseException as err:  # noqa: B902 - a command must never answer with a traceback
        if os.environ.get("FCOS_TRACEBACK"):
            raise
        if isinstance(err, KeyboardInterrupt):
            print("error: interrupted (Ctrl-C or SIGTERM)", file=sys.stderr)
        elif type(err).__name__ == "TrainingInterrupted":
            print(f"stopped: {one_line(err)}", file=sys.stderr)
        elif isinstance(err, (ValueError, RuntimeError, OSError, LookupError)):
            print(error_message(err), file=sys.stderr)
        else:
            print(f"error: internal error ({type(err).__name__}: {one_line(err)}); "
                  "rerun with FCOS_TRACEBACK=1 to see where", file=sys.stderr)
        return exit_status(err)
