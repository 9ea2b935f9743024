"""On a shared topic (``gov``) the inbox queues each signer apart (found in a QA pass: one
account's 2,000 votes filled the gov queue and every other's proposal was turned away as busy)."""

from __future__ import annotations

import json

from peerwatt.bus import Topics
from peerwatt.node.inbox import SHARED_QUEUES, FairInbox

GOV = Topics.gov("oak-street")


def _message(signer: str, n: int) -> bytes:
    return json.dumps({"body": {"n": n, "signer": "not this"}, "signer": signer, "type": "vote"}).encode()


def test_one_signer_filling_its_share_does_not_turn_away_another(tmp_path):
    inbox = FairInbox(max_per_topic=10)
    for n in range(10):
        flood = _message("a" * 32, n)
        assert inbox.has_room(GOV, len(flood), flood)
        inbox.put(("tx", GOV, flood))
    flood = _message("a" * 32, 10)
    assert not inbox.has_room(GOV, len(flood), flood)  # its share is full
    honest = _message("b" * 32, 0)
    assert inbox.has_room(GOV, len(honest), honest)
    inbox.put(("tx", GOV, honest))
    assert [inbox.get_nowait()[2] for _ in range(2)] == [_message("a" * 32, 0), honest]  # served in turn


def test_a_shared_topic_is_bounded_as_a_whole_and_drains(tmp_path):
    inbox = FairInbox(max_per_topic=2)
    for signer in range(SHARED_QUEUES):
        for n in range(2):
            inbox.put(("tx", GOV, _message(f"{signer:032x}", n)))
    late = _message("f" * 32, 0)
    assert not inbox.has_room(GOV, len(late), late)  # every share the topic holds is taken
    assert not inbox.has_room(GOV, len(late))
    inbox.get_nowait()
    assert inbox.has_room(GOV, len(late), late)
    while inbox.qsize():
        inbox.get_nowait()
    assert inbox.has_room(GOV, 0) and not inbox._shared and not inbox._shared_bytes


def test_a_members_own_topic_is_still_one_queue():
    inbox = FairInbox(max_per_topic=1)
    topic = Topics.orders("oak-street", "c" * 32)
    inbox.put(("tx", topic, _message("a" * 32, 0)))
    other = _message("b" * 32, 0)
    assert not inbox.has_room(topic, len(other), other)
