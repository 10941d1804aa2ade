"""The group commit of the service (realtime/groups.py), without a model or a database."""

from __future__ import annotations

import threading

import pandas as pd
import pytest

from seqchurn.realtime.groups import GroupCommit


def answer(group):
    for p in group:
        p.reply = {"rows": len(p.events)}


def test_every_request_gets_its_reply():
    commits = GroupCommit(answer, threading.Lock(), wait_s=0.01)
    replies = []

    def post(k):
        replies.append(commits.submit(pd.DataFrame({"x": range(k)})).reply["rows"])

    threads = [threading.Thread(target=post, args=(k,)) for k in range(1, 21)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(replies) == list(range(1, 21))


def test_an_interrupted_leader_leaves_the_commit_usable():
    commits = GroupCommit(answer, threading.Lock(), wait_s=0.01)
    take = commits._take

    def interrupted():
        commits._take = take
        raise KeyboardInterrupt

    commits._take = interrupted
    with pytest.raises(KeyboardInterrupt):
        commits.submit(pd.DataFrame({"x": [1]}))
    replies = []  # in a thread: a commit left leading would block the next request for good
    after = threading.Thread(
        target=lambda: replies.append(commits.submit(pd.DataFrame({"x": [1, 2]})).reply),
        daemon=True,
    )
    after.start()
    after.join(timeout=10)
    assert replies == [{"rows": 2}]


def test_an_interrupted_write_raises_in_the_leader_alone():
    def interrupted(group):
        raise KeyboardInterrupt

    commits = GroupCommit(interrupted, threading.Lock(), wait_s=0.0)
    with pytest.raises(KeyboardInterrupt):
        commits.submit(pd.DataFrame({"x": [1]}))
    commits.write = answer
    assert commits.submit(pd.DataFrame({"x": [1]})).reply == {"rows": 1}
