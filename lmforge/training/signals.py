"""Clean stops: SIGTERM (a scheduler's stop, ``kill``) and SIGINT (Ctrl-C) during training
end it at the next step boundary, with a checkpoint, instead of killing it mid-step."""

from __future__ import annotations

import os
import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """While entered (in the main thread only; elsewhere it does nothing), SIGTERM and SIGINT
    set :attr:`received` to the signal's name (``"SIGTERM"``) instead of ending the process;
    the trainer looks at it after each step. A second signal means "now": the previous
    handlers come back and KeyboardInterrupt is raised. Leaving restores the previous
    handlers. With ``announce``, the first signal is acknowledged on stderr at once (a step
    can take a while)."""

    def __init__(self, announce: bool = True) -> None:
        self.announce = announce
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                try:
                    self._previous[sig] = signal.signal(sig, self._handle)
                except (ValueError, OSError):  # pragma: no cover - e.g. embedded interpreters
                    pass
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:
            self.restore()
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        if self.announce:  # (os.write: a buffered stream may be in the middle of a write)
            os.write(2, f"lmforge: {self.received} received: stopping after this step with a "
                        "checkpoint (send it again to stop at once)\n".encode())

    def restore(self) -> None:
        """Put back the handlers that were there before :meth:`__enter__`."""
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._previous = {}

    def __exit__(self, *exc) -> None:
        self.restore()


def exit_code(name: str | None) -> int:
    """The shell's exit status for a run stopped by signal ``name`` (128 + its number), or 0."""
    return 128 + signal.Signals[name].value if name else 0
