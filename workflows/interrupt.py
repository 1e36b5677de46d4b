"""Ctrl-C during a run: stop the work, keep the record, exit 130.

A plain ``KeyboardInterrupt`` lands in whichever wait the main thread is in. During a workflow
that is the scene pool, whose threads block on cluster futures that never resolve when no
worker runs (a job pending in the queue): the first Ctrl-C was swallowed there, the second one
ended the process with status 0, no report, and stores left ``running``.

:class:`Interrupt` installs a SIGINT handler for the length of a run. Before any work runs on a
client it raises ``KeyboardInterrupt`` at once (the cluster is being started: leaving the
``with`` block cancels its jobs). Once work runs, it records the interrupt and cancels every
future of the client (again every half second, in case a scene submits more), so every scene
ends promptly: ``pipeline.predict`` marks its store ``interrupted``, the run writes its report
with status ``interrupted``, the cluster closes (batch jobs cancelled), and the run raises
``KeyboardInterrupt``, which the CLI turns into exit status 130. A second Ctrl-C raises at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

__all__ = ["Interrupt", "cancel_all"]

#: What cancelled futures say.
INTERRUPTED = "interrupted (SIGINT)"


def cancel_all(client: Any, reason: str, msg: str) -> int:
    """Cancel every future ``client`` holds, with ``reason``/``msg``; return how many.

    Code blocked on a result (``as_completed``, ``future.result()``) then raises
    :class:`distributed.client.FutureCancelledError` carrying ``msg``.
    """
    from distributed import Future

    keys = list(getattr(client, "futures", None) or {})
    if not keys:
        return 0
    futures = [Future(key, client) for key in keys]  # type: ignore[no-untyped-call]
    try:
        client.cancel(futures, reason=reason, msg=msg)
    except Exception:  # the client is closing
        return 0
    return len(futures)


class Interrupt:
    """A SIGINT handler for one run (a no-op outside the main thread).

    Attributes
    ----------
    received
        Whether SIGINT arrived.
    client
        Set while work runs on a client; until then SIGINT raises ``KeyboardInterrupt``.
    """

    def __init__(self) -> None:
        self.received = False
        self.client: Any = None
        self._stop = threading.Event()
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
        if isinstance(exc, KeyboardInterrupt):
            self.received = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = not self.received
        self.received = True
        if not first or self.client is None:
            raise KeyboardInterrupt
        thread = threading.Thread(target=self._cancel, name="gigaseg-interrupt", daemon=True)
        thread.start()

    def _cancel(self) -> None:
        while not self._stop.is_set():
            cancel_all(self.client, "interrupted", INTERRUPTED)
            self._stop.wait(0.5)
