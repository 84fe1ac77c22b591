"""A bounded fair queue: round-robin across owners, first-in-first-out within an owner.

Not thread-safe by itself; the worker guards it with its condition variable.
"""

from __future__ import annotations

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
    def __init__(self, *, max_items: int, max_per_owner: int) -> None:
        self.max_items = max_items
        self.max_per_owner = max_per_owner
        # Owners in turn order; the first one is served next.
        self._owners: OrderedDict[str, deque[_Entry[T]]] = OrderedDict()
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def push(self, owner: str, item: T, *, size: int = 1, key: Hashable = None) -> int:
        """Add ``item``; return its position (0 = next). Raises when full."""
        if self._len >= self.max_items:
            raise QueueFull(
                f"The queue is full ({self.max_items} jobs waiting). Try again in a few minutes."
            )
        mine = self._owners.get(owner)
        if mine is not None and len(mine) >= self.max_per_owner:
            raise OwnerQueueFull(
                f"You already have {len(mine)} jobs waiting (the limit is "
                f"{self.max_per_owner}). Wait for one to finish or cancel one."
            )
        if mine is None:
            mine = self._owners[owner] = deque()
        mine.append(_Entry(owner, item, size, key))
        self._len += 1
        return self.position(item)

    def pop_batch(self, max_size: int) -> list[T]:
        """Take the next owner's first item, plus compatible items (same key) from the heads of
        the owners' queues, one per owner per round in turn order, while they fit in
        ``max_size``. Owners served move to the back of the turn order."""
        if not self._owners:
            return []
        key = next(iter(self._owners.values()))[0].key
        batch: list[T] = []
        total = 0
        served: list[str] = []
        progressed = True
        while progressed and (not batch or total < max_size):
            progressed = False
            for owner, entries in self._owners.items():
                if not entries or entries[0].key != key:
                    continue
                if batch and total + entries[0].size > max_size:
                    continue
                entry = entries.popleft()
                batch.append(entry.item)
                total += entry.size
                self._len -= 1
                progressed = True
                if owner not in served:
                    served.append(owner)
        for owner in served:
            if self._owners[owner]:
                self._owners.move_to_end(owner)
            else:
                del self._owners[owner]
        return batch

    def remove(self, predicate: Callable[[T], bool]) -> T | None:
        for owner, entries in self._owners.items():
            for entry in entries:
                if predicate(entry.item):
                    entries.remove(entry)
                    self._len -= 1
                    if not entries:
                        del self._owners[owner]
                    return entry.item
        return None

    def position(self, item: T) -> int:
        """0 for the next item to run. Round-robin order: each owner's k-th item comes after
        every owner's (k-1)-th."""
        for pos, candidate in enumerate(self.order()):
            if candidate is item:
                return pos
        raise KeyError("not queued")

    def order(self) -> list[T]:
        """Items in the order they will be served (ignoring batching)."""
        queues = [list(q) for q in self._owners.values()]
        out: list[T] = []
        depth = 0
        while True:
            layer = [q[depth].item for q in queues if depth < len(q)]
            if not layer:
                return out
            out.extend(layer)
            depth += 1

    def owners_count(self, owner: str) -> int:
        return len(self._owners.get(owner, ()))

    def items(self) -> list[tuple[str, T]]:
        return [(e.owner, e.item) for q in self._owners.values() for e in q]
