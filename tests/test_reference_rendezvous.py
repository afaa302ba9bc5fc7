"""The pure-Python rendezvous reference: pinned vectors shared with rust/rendezvous.rs, and the
placement properties (stickiness, minimal movement, shares that follow capacity)."""

from __future__ import annotations

import math
import struct

import pytest
from cellgate.reference.rendezvous import (
    FNV_OFFSET_BASIS,
    FNV_PRIME,
    MASK64,
    Rendezvous,
    fnv1a64,
    mix64,
    pair_hash,
    score,
    unit_interval,
)
from hypothesis import given, settings
from hypothesis import strategies as st

X64 = "x" * 64

# (customer id, cell id, weight, pair hash, score as f64 bits): the same table as VECTORS in
# rust/rendezvous.rs; a change to either side must change both.
VECTORS = [
    ("customer-000000", "retail-us-east-1", 100, 0xF2CA1C9074E5CB15, 0x409D7DA494AD40DF),
    ("customer-000001", "retail-us-east-2", 300, 0xD2ADBFFBFC0136B7, 0x40980ECCA6D0E0D7),
    ("cust-42", "hnw-us-east-1", 7, 0xF4454EEE7F2EACC1, 0x4062A817BCDB319B),
    ("", "a", 1, 0x3BE5D8452221AD66, 0x3FE607C973C3D9AE),
    ("a", "", 1, 0x3BE5D8452221AD66, 0x3FE607C973C3D9AE),
    ("Zoë-Ünïcødé", "corp-eu-west-1", 2**32 - 1, 0x3BB8E8A5F34BE6FC, 0x41E5FC6A33A78014),
    ("customer-000000", "customer-000000", 1, 0, 0x3F9BDFBBA5A3A303),
    (X64, "cell-0999", 250, 0x82B25923585023D3, 0x40773DBD727406C2),
]

# choose() over 10,000 customers on these cells, folded into FNV-1a (as DIGEST_10000 in Rust).
DIGEST_CELLS = [
    ("retail-us-east-1", 100),
    ("retail-us-east-2", 300),
    ("corp-us-east-1", 50),
    ("hnw-us-east-1", 7),
    ("retail-eu-west-1", 1000),
]
DIGEST_10000 = 0x12A5DDF157446DFA
COUNTS_10000 = [709, 2079, 324, 44, 6844]


def customers(n: int) -> list[str]:
    return [f"customer-{i:06}" for i in range(n)]


def everyone(_: int) -> bool:
    return True


def assignment(cells: list[tuple[str, int]], n: int) -> dict[str, str]:
    """The chosen cell id of each of the first ``n`` customers, all cells eligible."""
    rendezvous = Rendezvous(cells)
    return {c: cells[rendezvous.choose(c, everyone)][0] for c in customers(n)}


def f64_bits(value: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", value))[0]


def test_hash_primitives_match_published_values() -> None:
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert mix64(0x9E3779B97F4A7C15) == 0xE220A8397B1DCDAF


def test_unit_interval_stays_strictly_inside_zero_and_one() -> None:
    assert unit_interval(0) == 0.5 / 2**52
    assert unit_interval(MASK64) < 1.0
    assert math.log(unit_interval(MASK64)) < 0.0
    # The 53-bit mapping rounds the top value up to exactly 1.0: the reason for 52 bits.
    assert ((MASK64 >> 11) + 0.5) / 2**53 == 1.0


@pytest.mark.parametrize(("customer", "cell", "weight", "h", "bits"), VECTORS)
def test_pinned_vectors(customer: str, cell: str, weight: int, h: int, bits: int) -> None:
    assert pair_hash(customer, cell) == h
    assert f64_bits(score(customer, cell, weight)) == bits
    assert f64_bits(-Rendezvous([(cell, weight)])._preference(customer, 0)[0]) == bits


def test_choose_agrees_with_the_digest_pinned_in_rust() -> None:
    rendezvous = Rendezvous(DIGEST_CELLS)
    digest, counts = FNV_OFFSET_BASIS, [0] * len(DIGEST_CELLS)
    for c in customers(10_000):
        index = rendezvous.choose(c, everyone)
        counts[index] += 1
        digest = ((digest ^ index) * FNV_PRIME) & MASK64
    assert (digest, counts) == (DIGEST_10000, COUNTS_10000)


def test_the_same_customer_gets_the_same_cell_across_calls_and_cell_orders() -> None:
    cells = [("a", 10), ("b", 20), ("c", 30), ("d", 40), ("e", 50)]
    reversed_cells = cells[::-1]
    forward, backward = Rendezvous(cells), Rendezvous(reversed_cells)
    for c in customers(1_000):
        first = forward.choose(c, everyone)
        assert forward.choose(c, everyone) == first
        assert cells[first][0] == reversed_cells[backward.choose(c, everyone)][0]
        assert [cells[i][0] for i in forward.ranked(c)] == [
            reversed_cells[i][0] for i in backward.ranked(c)
        ]


@pytest.mark.parametrize("removed", range(6))
def test_removing_one_of_n_cells_moves_only_its_customers(removed: int) -> None:
    cells = [
        ("cell-0", 100),
        ("cell-1", 200),
        ("cell-2", 100),
        ("cell-3", 400),
        ("cell-4", 300),
        ("cell-5", 100),
    ]
    before = assignment(cells, 3_000)
    after = assignment(cells[:removed] + cells[removed + 1 :], 3_000)
    gone = cells[removed][0]
    assert any(cell == gone for cell in before.values())
    assert all(after[c] == cell for c, cell in before.items() if cell != gone)


def test_adding_a_cell_moves_customers_only_onto_it_in_proportion_to_its_weight() -> None:
    # Tolerance: the moved share is within 2 percentage points of the new cell's weight share.
    cells = [("cell-0", 100), ("cell-1", 200), ("cell-2", 300)]
    before = assignment(cells, 10_000)
    after = assignment([*cells, ("cell-new", 150)], 10_000)
    moved = [c for c in before if after[c] != before[c]]
    assert all(after[c] == "cell-new" for c in moved)
    assert abs(len(moved) / 10_000 - 150 / 750) < 0.02


def test_shares_follow_capacity_1_2_3_4_within_two_percentage_points_over_20000_customers() -> None:
    rendezvous = Rendezvous([("w1", 1), ("w2", 2), ("w3", 3), ("w4", 4)])
    counts = [0] * 4
    for c in customers(20_000):
        counts[rendezvous.choose(c, everyone)] += 1
    for count, expected in zip(counts, [0.1, 0.2, 0.3, 0.4], strict=True):
        assert abs(count / 20_000 - expected) < 0.02, counts


def test_an_ineligible_cell_is_skipped_and_its_customers_spread_in_proportion() -> None:
    # Tolerance: displaced customers land on each remaining cell within 3 percentage points of its
    # weight share among the remaining cells (1:2:3 of about 4,000 displaced).
    rendezvous = Rendezvous([("w1", 1), ("w2", 2), ("w3", 3), ("w4", 4)])
    displaced = [0] * 3
    for c in customers(10_000):
        home = rendezvous.choose(c, everyone)
        fallback = rendezvous.choose(c, lambda i: i != 3)
        if home == 3:
            assert fallback == rendezvous.ranked(c)[1]
            displaced[fallback] += 1
        else:
            assert fallback == home
    total = sum(displaced)
    for count, expected in zip(displaced, [1 / 6, 2 / 6, 3 / 6], strict=True):
        assert abs(count / total - expected) < 0.03, displaced


def test_choose_is_the_first_eligible_of_ranked() -> None:
    rendezvous = Rendezvous([("a", 5), ("b", 1), ("c", 9), ("d", 3), ("e", 3), ("f", 7)])
    for c in customers(200):
        ranked = rendezvous.ranked(c)
        assert sorted(ranked) == list(range(6))
        for mask in range(64):

            def eligible(i: int, mask: int = mask) -> bool:
                return bool(mask & (1 << i))

            expected = next((i for i in ranked if eligible(i)), None)
            assert rendezvous.choose(c, eligible) == expected


def test_bad_cell_sets_are_refused_and_no_cells_choose_nothing() -> None:
    with pytest.raises(ValueError, match=r"cells\[1\]\.weight: must be > 0"):
        Rendezvous([("a", 1), ("b", 0)])
    with pytest.raises(ValueError, match=r"cells\[2\]\.id: repeats the id of cells\[0\]"):
        Rendezvous([("a", 1), ("b", 2), ("a", 3)])
    assert Rendezvous([]).choose("anyone", everyone) is None
    assert Rendezvous([]).ranked("anyone") == []
    assert Rendezvous([("a", 1)]).choose("anyone", lambda _: False) is None


cell_sets = st.dictionaries(
    keys=st.text(min_size=1, max_size=12),
    values=st.integers(min_value=1, max_value=10_000),
    min_size=2,
    max_size=8,
).map(lambda cells: list(cells.items()))


@settings(max_examples=60, deadline=None)
@given(cells=cell_sets, removed=st.integers(min_value=0), data=st.data())
def test_removing_any_cell_moves_only_its_customers(
    cells: list[tuple[str, int]], removed: int, data: st.DataObject
) -> None:
    removed %= len(cells)
    shuffled = data.draw(st.permutations(cells[:removed] + cells[removed + 1 :]))
    keys = data.draw(st.lists(st.text(max_size=20), min_size=1, max_size=50, unique=True))
    before, after = Rendezvous(cells), Rendezvous(shuffled)
    for key in keys:
        home = cells[before.choose(key, everyone)][0]
        if home != cells[removed][0]:
            assert shuffled[after.choose(key, everyone)][0] == home
        else:
            # The displaced customer goes to its second choice, whatever the order of the cells.
            second = cells[before.ranked(key)[1]][0]
            assert shuffled[after.choose(key, everyone)][0] == second
