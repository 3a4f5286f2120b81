"""Ending a command-line process without the interpreter's teardown.

A replay ends holding every customer's profile (100,000 in the bench log): freed object by
object when its run returns, then again module by module at the interpreter's exit, which cost
about 5 % of a replay process's time. A command that has closed its outputs hands its state to
`keep_until_exit`; the `touchflow` program (`service.cli.run`) then flushes stdout and stderr
and ends with `os._exit`. Called in-process (tests, `main()`), nothing changes but that the
latest state kept stays alive until the next one replaces it.
"""

from __future__ import annotations

import contextlib
import os
import sys

__all__ = ["exit_now_if_kept", "keep_until_exit"]

_KEPT: list[object] = []


def keep_until_exit(state: object) -> None:
    """Keep `state` (only the latest) alive until the process ends, and ask for a quick exit."""
    _KEPT[:] = [state]


def exit_now_if_kept(code: int) -> None:
    """End the process at once with `code` when a command kept its state; else return."""
    if not _KEPT:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    os._exit(code)
