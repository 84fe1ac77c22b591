"""A bounded fair queue: the owner served least recently goes first (round-robin across owners),
first-in-first-out within an owner.

Not thread-safe by itself; the worker guards it with its condition variable.

Owners are remembered after their queue empties (so someone who sends job after job does not
jump ahead of people who have been waiting), but not forever: once :attr:`FairQueue.remember`
other owners have been served since, an idle owner is forgotten and comes back as a newcomer.
That moves them ahead only of owners served before them who still wait; such an owner would
have had the turn before any of those later ones, unless all of them were newcomers, who go
first anyway. Memory stays bounded by ``remember`` plus the owners waiting.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from engine.requests import OwnerQueueFull, QueueFull

T = TypeVar("T")


@dataclass
class _Entry(Generic[T]):
    owner: str
    item: T
    size: int
    key: Hashable


class FairQueue(Generic[T]):
    def __init__(self, *, max_items: int, max_per_owner: int, remember: int = 1000) -> None:
        self.max_items = max_items
        self.max_per_owner = max_per_owner
        # Idle owners remembered; at least as many as can wait, so no waiting owner's turn is
        # ever forgotten.
        self.remember = max(remember, max_items)
        self._queues: dict[str, deque[_Entry[T]]] = {}
        # When each owner was last served, least recently first. Kept after their queue
        # empties, up to ``remember`` owners (see the module's docstring).
        self._served: OrderedDict[str, int] = OrderedDict()
        self._arrived: dict[str, int] = {}
        self._clock = itertools.count()
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def _turns(self) -> list[str]:
        """Owners with waiting items, next to be served first."""
        return sorted(self._queues, key=lambda o: (self._served.get(o, -1), self._arrived[o]))

    def push(self, owner: str, item: T, *, size: int = 1, key: Hashable = None) -> int:
        """Add ``item``; return its position (0 = next). Raises when full."""
        if self._len >= self.max_items:
            raise QueueFull(
                f"The queue is full ({self.max_items} jobs waiting). Try again in a few minutes."
            )
        mine = self._queues.get(owner)
        if mine is not None and len(mine) >= self.max_per_owner:
            raise OwnerQueueFull(
                f"You already have {len(mine)} jobs waiting (the limit is "
                f"{self.max_per_owner}). Wait for one to finish or cancel one."
            )
        if mine is None:
            mine = self._queues[owner] = deque()
            self._arrived[owner] = next(self._clock)
        mine.append(_Entry(owner, item, size, key))
        self._len += 1
        return self.position(item)

    def pop_batch(self, max_size: int) -> list[T]:
        """Take the next owner's first item, plus compatible items (same key) from the heads of
        the owners' queues, one per owner per round in turn order, while they fit in
        ``max_size`` images."""
        turns = self._turns()
        if not turns:
            return []
        key = self._queues[turns[0]][0].key
        batch: list[T] = []
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
                total += entry.size
                self._len -= 1
                progressed = True
                self._served[owner] = next(self._clock)
                self._served.move_to_end(owner)
        for owner in turns:
            if not self._queues[owner]:
                del self._queues[owner]
                del self._arrived[owner]
        self._forget()
        return batch

    def _forget(self) -> None:
        excess = len(self._served) - self.remember
        if excess <= 0:
            return
        for owner in list(self._served):  # least recently served first
            if owner not in self._queues:  # waiting owners keep their turn
                del self._served[owner]
                excess -= 1
                if excess == 0:
                    return

    def remove(self, predicate: Callable[[T], bool]) -> T | None:
        for owner, entries in self._queues.items():
            for entry in entries:
                if predicate(entry.item):
                    entries.remove(entry)
                    self._len -= 1
                    if not entries:
                        del self._queues[owner]
                        del self._arrived[owner]
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
        queues = [list(self._queues[o]) for o in self._turns()]
        out: list[T] = []
        for depth in itertools.count():
            layer = [q[depth].item for q in queues if depth < len(q)]
            if not layer:
                return out
            out.extend(layer)
        return out

    def items(self) -> list[tuple[str, T]]:
        return [(e.owner, e.item) for q in self._queues.values() for e in q]
