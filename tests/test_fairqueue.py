"""The fair queue on its own: round-robin across owners, FIFO within one, bounded, batching."""

from __future__ import annotations

import itertools

import pytest

from engine.fairqueue import FairQueue
from engine.requests import OwnerAtCapacity, QueueAtCapacity


def test_round_robin_across_owners_fifo_within():
    q: FairQueue[str] = FairQueue(max_items=10, max_per_owner=5)
    for item in ["a1", "a2", "a3"]:
        q.push("a", item)
    q.push("b", "b1")
    q.push("c", "c1")
    assert q.order() == ["a1", "b1", "c1", "a2", "a3"]
    assert q.position("a2") == 3
    served = [q.pop_batch(0)[0] for _ in range(5)]
    assert served == ["a1", "b1", "c1", "a2", "a3"]
    assert len(q) == 0 and q.pop_batch(4) == []


def test_late_owner_is_served_before_a_busy_owners_backlog():
    q: FairQueue[str] = FairQueue(max_items=10, max_per_owner=5)
    q.push("a", "a1")
    q.push("a", "a2")
    assert q.pop_batch(0) == ["a1"]
    q.push("b", "b1")  # arrives after a1 started: still goes before a's second job
    assert q.order() == ["b1", "a2"]
    assert q.pop_batch(0) == ["b1"]
    q.push("b", "b2")
    assert q.pop_batch(0) == ["a2"]


def test_an_owner_whose_queue_emptied_keeps_their_place_in_turn():
    q: FairQueue[str] = FairQueue(max_items=10, max_per_owner=5)
    q.push("a", "a1")
    q.push("b", "b1")
    assert q.pop_batch(0) == ["a1"]  # a's queue is now empty
    q.push("a", "a2")  # a comes straight back, but b has waited longer
    assert q.order() == ["b1", "a2"]


def test_limits_refuse_with_a_clear_message():
    q: FairQueue[str] = FairQueue(max_items=3, max_per_owner=2)
    q.push("a", "a1")
    q.push("a", "a2")
    with pytest.raises(OwnerAtCapacity, match="You already have 2 jobs waiting"):
        q.push("a", "a3")
    q.push("b", "b1")
    with pytest.raises(QueueAtCapacity, match="The queue is full"):
        q.push("c", "c1")


def test_batches_take_compatible_heads_in_turn_up_to_the_size():
    q: FairQueue[str] = FairQueue(max_items=20, max_per_owner=5)
    q.push("a", "a1", size=4, key="512")
    q.push("a", "a2", size=4, key="512")
    q.push("b", "b1", size=4, key="768")  # incompatible: waits for its own call
    q.push("c", "c1", size=4, key="512")
    q.push("d", "d1", size=1, key="512")
    batch = q.pop_batch(8)
    # One per owner per round: a1 and c1 fill 8 images; a2 waits its turn; d1 does not fit.
    assert batch == ["a1", "c1"]
    assert q.pop_batch(8) == ["b1"]
    assert q.pop_batch(8) == ["d1", "a2"]


def test_remove():
    q: FairQueue[str] = FairQueue(max_items=5, max_per_owner=5)
    q.push("a", "a1")
    q.push("b", "b1")
    assert q.remove(lambda x: x == "a1") == "a1"
    assert q.remove(lambda x: x == "zz") is None
    assert q.order() == ["b1"] and len(q) == 1


def test_memory_stays_bounded_however_many_owners_come_and_go():
    q: FairQueue[str] = FairQueue(max_items=10, max_per_owner=5)
    for i in range(10_000):  # a server's worth of users, each sending one job
        q.push(f"user{i}", f"job{i}")
        assert q.pop_batch(0) == [f"job{i}"]
    assert not q._queues and not q._turns and len(q._latest) == 1
    # The owner just served, coming straight back, waits behind a newcomer.
    q.push("user9999", "again")
    q.push("newcomer", "first")
    assert q.order() == ["first", "again"]


def test_owners_already_served_keep_a_turn_every_round_while_newcomers_stream_in():
    """Two owners keep two jobs queued; a newcomer arrives after every call (more than are
    served, so the queue fills and some are refused). Each round serves everyone waiting when
    it began, so the two are served at least once per queue's worth of calls."""
    q: FairQueue[str] = FairQueue(max_items=6, max_per_owner=2)
    for owner in ("a", "b"):
        q.push(owner, owner)
        q.push(owner, owner)
    served: list[str] = []
    refused = 0
    for i in range(60):
        (item,) = q.pop_batch(0)
        served.append(item)
        if item in ("a", "b"):
            q.push(item, item)  # straight back: a reroll as soon as the grid arrives
        try:
            q.push(f"n{i}", f"n{i}")
        except QueueAtCapacity:
            refused += 1
    assert refused > 0  # a real surge
    for owner in ("a", "b"):
        turns = [i for i, item in enumerate(served) if item == owner]
        gaps = [later - earlier for earlier, later in itertools.pairwise(turns)]
        assert turns[0] <= 1 and max(gaps) <= q.max_items, (owner, served)


def test_leaving_the_queue_and_coming_back_gains_no_place():
    q: FairQueue[str] = FairQueue(max_items=10, max_per_owner=5)
    for owner in ("a", "b", "c"):
        q.push(owner, f"{owner}1")
        q.push(owner, f"{owner}2")
    assert q.pop_batch(0) == ["a1"]
    assert q.pop_batch(0) == ["b1"]
    assert q.order() == ["c1", "a2", "b2", "c2"]
    q.push("d", "d1")  # joins the round after a, who has waited since before d came
    assert q.order() == ["c1", "a2", "d1", "b2", "c2"]
    # b cancels their job and sends it again: back of the round, not ahead of a or d.
    assert q.remove(lambda item: item == "b2") == "b2"
    q.push("b", "b2")
    assert q.order() == ["c1", "a2", "d1", "b2", "c2"]
