"""Lock-step streams: a sender that sends its next piece only when the test says so.

A test proves that a gateway streams without looking at the clock: the upstream sends piece
k + 1 only after the test has received piece k through the gateway and called `release()`. A
gateway that buffered could never hand piece k over, since the upstream's answer is not over:

    gate = fake_upstream.behave(chunks=["a", "b", "c"], lockstep=True).gate
    for k, piece in enumerate(pieces_read_through_the_gateway):
        assert gate.holding(k), gate.describe()  # piece k is here, k + 1 not yet sent
        gate.release()

Steps are numbered from 0: step k is piece k (with whatever else the wire sends along with it);
the last step, number `len(pieces)`, is the end of the stream (the finish event, the usage,
`[DONE]`, the end of the body). Step 0 goes out at once; step k (k >= 1) waits until the test
has called `release()` k times. A wait is bounded (`timeout`, 30 s by default): then the
sender gives up and ends the stream, and `expired` says so. A failing test never hangs.

One gate serves every stream answered under one `behave(...)`: `release()`, `sent`, `holding()`
and `over` make sense for one stream at a time; with several streams at once, each sends its
first piece at once and `open()` lets them all run to their end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence

POLL_SECONDS = 0.05  # how often a waiting sender looks whether its client hung up


class Gate:
    """The two sides of a lock-step stream: the sender's `wait_turn`, the test's `release`."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._condition = threading.Condition()
        self._released = 0
        self._open = False
        self.sent = 0  # steps the sender has begun to send (set before their bytes go out)
        self.expired = False  # the sender waited `timeout` for a release and ended the stream
        self.abandoned = False  # the sender's client hung up while it waited
        self.over = threading.Event()  # the sender's stream has ended, however it ended

    # The test's side.

    def release(self, steps: int = 1) -> None:
        """Let the sender send `steps` more steps."""
        with self._condition:
            self._released += steps
            self._condition.notify_all()

    def open(self) -> None:
        """Let everything through, now and from now on."""
        with self._condition:
            self._open = True
            self._condition.notify_all()

    def holding(self, step: int) -> bool:
        """Return True when the sender has sent step `step` and is not past it: the next step
        is still held back (not sent) and the stream is still going (not ended or expired)."""
        return self.sent == step + 1 and not self.over.is_set() and not self.expired

    def describe(self) -> str:
        return (
            f"lock-step gate: {self.sent} step(s) sent, {self._released} released, "
            f"over={self.over.is_set()}, expired={self.expired}, abandoned={self.abandoned}"
        )

    # The sender's side.

    def wait_turn(self, step: int, hung_up: Callable[[], bool] = lambda: False) -> bool:
        """Block until step `step` may be sent; then count it as sent and return True.

        Return False, without counting it, when `timeout` passed first (`expired`) or when
        `hung_up()` said the client is gone (`abandoned`): the sender should end the stream.
        """
        deadline = time.monotonic() + self.timeout
        with self._condition:
            while not (self._open or self._released >= step):
                if hung_up():
                    self.abandoned = True
                    return False
                if time.monotonic() >= deadline:
                    self.expired = True
                    return False
                self._condition.wait(POLL_SECONDS)
            self.sent = max(self.sent, step + 1)
            return True

    def finished(self) -> None:
        """The sender's stream has ended (completed, dropped or hung up on)."""
        self.over.set()


def read_in_lockstep(lines: Iterable[str], gate: Gate, pieces: Sequence[str]) -> list[str]:
    """Read a streamed body line by line in lock-step with a fake upstream sending `pieces`.

    On the line that brings piece k (found by its text: make the pieces distinct words that
    contain none of the others), check that the upstream is still holding piece k + 1 back, and
    only then let it go. A body that was buffered anywhere on the way fails here: its first
    piece comes only after the upstream gave up waiting (`expired`), or never. Return the lines.
    """
    lines_read: list[str] = []
    expected = 0
    for line in lines:
        lines_read.append(line)
        found = [k for k, piece in enumerate(pieces) if piece.strip() in line]
        if not found:
            continue
        k = max(found)  # a line that repeats the text so far brings the newest piece last
        if k < expected:
            continue  # the text so far again (a summary at the end, say): nothing new
        assert k == expected, f"piece {k} came when piece {expected} was due: {line!r}"
        assert gate.holding(k), (
            f"piece {k} ({pieces[k]!r}) came through, but not while the upstream was holding "
            f"piece {k + 1} back: something buffered the stream. {gate.describe()}"
        )
        gate.release()
        expected += 1
    assert expected == len(pieces), (
        f"only {expected} of {len(pieces)} pieces came through; {gate.describe()}; "
        f"the body's last lines: {lines_read[-5:]}"
    )
    return lines_read
