"""A thread-safe inbox that one consumer can wait on together with ZeroMQ sockets.

    inbox = Inbox()
    poller = zmq.Poller(); poller.register(inbox, zmq.POLLIN); poller.register(sock, zmq.POLLIN)
    for item in inbox.drain(): ...          # everything waiting, in arrival order

Producers (quickfix's threads, a market-data thread) call `put`, which never blocks and never
raises. The consumer is one thread. `fileno()` is the read end of a non-blocking pipe that is
readable whenever items may be waiting: zmq.Poller, select and poll all accept it.
`put` appends, then writes a wake byte; `drain` empties the pipe, then the queue. In that
order no item can be left behind without a wake byte after it, and a wake with nothing
behind it (an item already taken) costs one empty drain.
"""
from __future__ import annotations

import collections
import math
import os
import select


class Inbox:
    def __init__(self):
        self._items: collections.deque = collections.deque()
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self.closed = False

    def fileno(self) -> int:
        return self._r

    def put(self, item) -> None:
        if self.closed:                # stop producers before close(): the fd numbers get reused
            return
        self._items.append(item)       # deque.append is atomic under the GIL
        try:
            os.write(self._w, b"\0")
        except (BlockingIOError, OSError):
            pass                       # pipe full: it is readable already; closed: nobody to wake

    def drain(self, limit: int | None = None) -> list:
        """Everything waiting (at most `limit` items), oldest first; [] when empty."""
        try:
            while os.read(self._r, 65536):
                pass
        except (BlockingIOError, OSError):
            pass
        out, pop = [], self._items.popleft
        try:
            while limit is None or len(out) < limit:
                out.append(pop())
        except IndexError:
            pass
        if self._items:                # left some for next time: stay readable
            self._wake()
        return out

    def _wake(self) -> None:
        try:
            os.write(self._w, b"\0")
        except (BlockingIOError, OSError):
            pass

    def wait(self, timeout: float | None) -> bool:
        """Block until items may be waiting or `timeout` seconds pass (None: forever)."""
        if self._items:
            return True
        ms = -1 if timeout is None else max(0, math.ceil(timeout * 1000))
        p = select.poll()
        p.register(self._r, select.POLLIN)
        return bool(p.poll(ms))

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._r)
            os.close(self._w)
