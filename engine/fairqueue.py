"""A bounded fair queue: round-robin across owners, first-in-first-out within an owner.

Turns go in rounds. Every owner served by one pipeline call has had their turn in the current
round; an owner who starts waiting (with nothing queued before) joins the back of the current
round: after everyone waiting who has not had their turn since, before the owners of the latest
call. So a stream of newcomers never keeps members already served waiting: each round serves
every owner waiting when it began (the capacity simulation's surge, tests/test_capacity.py).

The queue remembers only the owners of the latest call, so its memory is the items waiting plus
one call's owners, however many owners have come and gone.

Not thread-safe by itself; the worker guards it with its condition variable.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from engine.requests import OwnerAtCapacity, QueueAtCapacity

T = TypeVar("T")

# A waiting owner's place: (the round they wait in, 0 if they joined it, 1 if they were served in
# it and wait for their next turn), then when their wait began.
_Turn = tuple[int, int, int]


@dataclass
class _Entry(Generic[T]):
    owner: str
    item: T
    size: int
    key: Hashable


class FairQueue(Generic[T]):
    def __init__(self, *, max_items: int, max_per_owner: int) -> None:
        self.max_items = max_items
        self.max_per_owner = max_per_owner
        self._queues: dict[str, deque[_Entry[T]]] = {}
        self._turns: dict[str, _Turn] = {}  # of the owners waiting
        self._clock = itertools.count()
        self._round = -1  # when the latest call was taken
        self._latest: frozenset[str] = frozenset()  # its owners
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def _order(self) -> list[str]:
        """Owners with waiting items, next to be served first."""
        return sorted(self._queues, key=self._turns.__getitem__)

    def push(self, owner: str, item: T, *, size: int = 1, key: Hashable = None) -> int:
        """Add ``item``; return its position (0 = next). Raises when full."""
        if self._len >= self.max_items:
            raise QueueAtCapacity(
                f"The queue is full ({self.max_items} jobs waiting). Try again in a few minutes."
            )
        mine = self._queues.get(owner)
        if mine is not None and len(mine) >= self.max_per_owner:
            raise OwnerAtCapacity(
                f"You already have {len(mine)} jobs waiting (the limit is "
                f"{self.max_per_owner}). Wait for one to finish or cancel one."
            )
        if mine is None:
            mine = self._queues[owner] = deque()
            # An owner of the latest call has had this round's turn, even if their queue
            # emptied meanwhile; anyone else joins the round.
            served = 1 if owner in self._latest else 0
            self._turns[owner] = (self._round, served, next(self._clock))
        mine.append(_Entry(owner, item, size, key))
        self._len += 1
        return self.position(item)

    def pop_batch(self, max_size: int) -> list[T]:
        """Take the next owner's first item, plus compatible items (same key) from the heads of
        the owners' queues, one per owner per round in turn order, while they fit in
        ``max_size`` images."""
        turns = self._order()
        if not turns:
            return []
        key = self._queues[turns[0]][0].key
        batch: list[T] = []
        owners: dict[str, None] = {}  # in turn order
        total = 0
        progressed = True
        while progressed and (not batch or total < max_size):
            progressed = False
            for owner in turns:
                entries = self._queues.get(owner)
                if not entries or entries[0].key != key:
                    continue
                if batch and total + entries[0].size > max_size:
                    continue
                entry = entries.popleft()
                batch.append(entry.item)
                owners[owner] = None
                total += entry.size
                self._len -= 1
                progressed = True
        # Everyone in one call had their turn at the same moment.
        self._round = next(self._clock)
        self._latest = frozenset(owners)
        for owner in owners:
            if self._queues[owner]:
                self._turns[owner] = (self._round, 1, next(self._clock))
            else:
                self._drop(owner)
        return batch

    def _drop(self, owner: str) -> None:
        del self._queues[owner]
        del self._turns[owner]

    def remove(self, predicate: Callable[[T], bool]) -> T | None:
        for owner, entries in self._queues.items():
            for entry in entries:
                if predicate(entry.item):
                    entries.remove(entry)
                    self._len -= 1
                    if not entries:
                        self._drop(owner)
                    return entry.item
        return None

    def position(self, item: T) -> int:
        """0 for the next item to run, counting one item per owner per round."""
        for pos, candidate in enumerate(self.order()):
            if candidate is item:
                return pos
        raise KeyError("not queued")

    def order(self) -> list[T]:
        """Items in the order they will be served (batching aside)."""
        queues = [list(self._queues[o]) for o in self._order()]
        out: list[T] = []
        for depth in itertools.count():
            layer = [q[depth].item for q in queues if depth < len(q)]
            if not layer:
                return out
            out.extend(layer)
        return out

    def items(self) -> list[tuple[str, T]]:
        return [(e.owner, e.item) for q in self._queues.values() for e in q]
