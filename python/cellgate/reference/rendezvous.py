"""Sticky placement by weighted rendezvous hashing: the reference of ``rust/rendezvous.rs``.

Every (customer, cell) pair gets the score ``weight / -ln(u)``, with ``u`` in the open interval
(0, 1) drawn from a 64-bit hash of the pair (the "logarithmic method" of weighted rendezvous
hashing); the highest score wins, ties going to the smaller cell id. A cell's score does not depend
on the other cells, so removing a cell moves only the customers that were on it, and each cell's
share of customers is its share of the total weight.

The hash, bit for bit as the Rust core computes it (u64 arithmetic wraps):

- ``fnv1a64(bytes)``: FNV-1a 64 (offset basis ``0xcbf29ce484222325``, prime ``0x100000001b3``);
- ``mix64(z)``: the SplitMix64 finalizer;
- ``seed(cell) = mix64(fnv1a64(cell_id.encode()))``, once per cell;
- ``key(customer) = mix64(fnv1a64(customer_id.encode()))``, once per choice;
- ``h = mix64(key ^ seed)``; ``u = ((h >> 12) + 0.5) / 2**52``; ``score = weight / -log(u)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

MASK64 = (1 << 64) - 1
FNV_OFFSET_BASIS = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
TWO_POW_52 = float(1 << 52)


def fnv1a64(data: bytes) -> int:
    """FNV-1a 64 of ``data``."""
    h = FNV_OFFSET_BASIS
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & MASK64
    return h


def mix64(z: int) -> int:
    """The SplitMix64 finalizer: a bijection on 64-bit integers with full avalanche."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def customer_key(customer_id: str) -> int:
    """The per-customer half of the pair hash."""
    return mix64(fnv1a64(customer_id.encode()))


def cell_seed(cell_id: str) -> int:
    """The per-cell half of the pair hash."""
    return mix64(fnv1a64(cell_id.encode()))


def pair_hash(customer_id: str, cell_id: str) -> int:
    """The 64-bit hash of one (customer, cell) pair."""
    return mix64(customer_key(customer_id) ^ cell_seed(cell_id))


def unit_interval(h: int) -> float:
    """The top 52 bits of ``h`` as a float strictly between 0 and 1 (53 bits could round to 1.0)."""
    return ((h >> 12) + 0.5) / TWO_POW_52


def score(customer_id: str, cell_id: str, weight: int) -> float:
    """The rendezvous score of a cell for a customer: higher is preferred."""
    return weight / -math.log(unit_interval(pair_hash(customer_id, cell_id)))


class Rendezvous:
    """Weighted rendezvous placement over fixed cells, named by their index in ``cells``."""

    def __init__(self, cells: Sequence[tuple[str, int]]) -> None:
        ids = [cell_id for cell_id, _ in cells]
        for index, (cell_id, weight) in enumerate(cells):
            if weight <= 0:
                raise ValueError(f"cells[{index}].weight: must be > 0")
            first = ids.index(cell_id)
            if first != index:
                raise ValueError(f"cells[{index}].id: repeats the id of cells[{first}]")
        self.cells = list(cells)

    def _preference(self, customer_id: str, index: int) -> tuple[float, bytes]:
        """The sort key of cell ``index``: ascending means most preferred first."""
        cell_id, weight = self.cells[index]
        return (-score(customer_id, cell_id, weight), cell_id.encode())

    def ranked(self, customer_id: str) -> list[int]:
        """Every cell index, most preferred first; the caller takes the first eligible one."""
        return sorted(
            range(len(self.cells)), key=lambda index: self._preference(customer_id, index)
        )

    def choose(self, customer_id: str, eligible: Callable[[int], bool]) -> int | None:
        """The most preferred eligible cell index, or None when no cell is eligible."""
        candidates = [index for index in range(len(self.cells)) if eligible(index)]
        if not candidates:
            return None
        return min(candidates, key=lambda index: self._preference(customer_id, index))
