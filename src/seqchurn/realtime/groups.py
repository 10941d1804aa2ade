"""Group commit: the requests that arrive while one write runs are written together in the next.

Each request still gets its reply only once its own group is committed, and the model scores
a group's users in one pass instead of one pass per request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sized
from dataclasses import dataclass


@dataclass
class Pending:
    """One request waiting to be written: its events, then its reply or its error."""

    events: Sized  # as the writer takes them: it checks them, a whole group at a time
    reply: dict | None = None
    error: BaseException | None = None
    done: bool = False  # its group's write has ended, with a reply or an error


class GroupCommit:
    """`submit(events)` queues a request and returns it once its group is written.

    `write(group)` sets each request's reply (or error) and runs under `lock`, which other
    writers (the sweep) share. Requests wait for the group that holds them, not for the
    lock: its next holder would make them wait for a write that is not theirs.
    """

    def __init__(self, write: Callable[[list[Pending]], None], lock: threading.Lock, wait_s: float):
        self.write, self.lock, self.wait_s = write, lock, float(wait_s)
        self._queue: list[Pending] = []
        self._state = threading.Condition()  # guards the queue and the two fields below
        self._leading = False  # a request is writing (or gathering) a group
        self._clients = 1  # requests in the service when the last write ended

    def submit(self, events: Sized) -> Pending:
        pending = Pending(events)
        with self._state:
            self._queue.append(pending)
            self._state.notify_all()
            while self._leading and not pending.done:
                self._state.wait()
            if pending.done:
                return pending
            self._leading = True  # lead the next group, which holds this request
            try:
                group = self._take()
            except BaseException:  # interrupted while gathering: another request may lead
                self._leading = False
                self._state.notify_all()
                raise
        try:
            with self.lock:
                self.write(group)
        except Exception as err:  # every request of the group gets the failure
            for p in group:
                p.error = p.error or err
        except BaseException as err:  # an interrupt: raised in the leader's thread alone
            for p in group:
                if p is not pending:
                    p.error = p.error or RuntimeError(f"the write was interrupted: {err!r}")
            raise
        finally:
            with self._state:
                for p in group:
                    p.done = True
                # the clients just answered, who come back together, and those queued
                self._clients = len(group) + len(self._queue)
                self._leading = False
                self._state.notify_all()
        return pending

    def _take(self) -> list[Pending]:
        """The queued requests (`_state` held), after waiting up to `wait_s` for as many as
        were in the service when the last write ended, as PostgreSQL's commit_delay does
        when other transactions are active. Clients answered together come back together:
        without the wait they settle into alternate groups that each pay the whole cost of
        a write. A lone client never waits."""
        if self._clients > 1:
            self._state.wait_for(lambda: len(self._queue) >= self._clients, timeout=self.wait_s)
        group, self._queue = self._queue, []
        return group
