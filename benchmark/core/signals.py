"""SIGTERM and SIGINT as a request to stop cleanly.

SLURM (at the time limit, on ``scancel``) and ``kill`` send SIGTERM first and SIGKILL only after a
grace period; Ctrl-C sends SIGINT. A training must use that grace period: ``stopping(...)`` installs
handlers that only record the signal (no work inside a handler: it can interrupt any line, a
``torch.save`` included), and the engine looks at ``requested()`` at each step boundary, writes
``last.pt`` there and raises ``Stopped``. Code without such a boundary (an evaluation) asks for
``raise_now=True``: the handler raises ``Stopped`` where the program is, and the atomic writes
(``benchmark.core.io``) remove their temporary file on the way out, so no output is half-written.

``Stopped`` derives from ``BaseException`` like ``KeyboardInterrupt``: the ``except Exception``
clauses that keep a training going (tracking, optional metrics) must not swallow it. The process
then exits with ``exit_code`` = 128 + the signal's number (143 for SIGTERM, 130 for SIGINT), the
status a shell, SLURM and ``dvc repro`` read as "killed by that signal".
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

HANDLED = (signal.SIGTERM, signal.SIGINT)
_received: list[int] = []  # the signals seen since ``stopping`` began (a list: set from a handler)


class Stopped(BaseException):
    """The run stopped on a signal; ``str()`` is the one line to show (where it stopped, how to go on)."""

    run_status = "KILLED"  # MLflow's word for a run ended from outside; tracking.run closes with it

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def name(signum: int) -> str:
    return signal.Signals(signum).name


def requested() -> int:
    """The signal that asked this process to stop (0: none)."""
    return _received[0] if _received else 0


@contextlib.contextmanager
def stopping(raise_now: bool = False) -> Iterator[None]:
    """Handle SIGTERM/SIGINT for the duration: record them (``requested``), or with ``raise_now``
    raise ``Stopped`` at once. Outside the main thread (where Python cannot install handlers)
    nothing changes. The previous handlers come back on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        first = not _received
        _received.append(signum)
        if raise_now and first:
            raise Stopped(signum, f"stopped by {name(signum)}")

    previous = {s: signal.signal(s, handler) for s in HANDLED}
    _received.clear()
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _received.clear()

