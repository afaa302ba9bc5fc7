//! Sticky placement: rendezvous (highest-random-weight) hashing weighted by capacity.
//!
//! Every (customer, cell) pair gets a score `weight / -ln(u)`, with `u` in the open interval
//! (0, 1) drawn from a 64-bit hash of the pair (the "logarithmic method" of weighted rendezvous
//! hashing); the highest score wins. A cell's score does not depend on which other cells exist,
//! so a customer stays on its cell while that cell is eligible, removing a cell moves only the
//! customers that were on it, and each cell's share of customers is its share of total weight.
//!
//! The hash, bit for bit (all arithmetic on u64 wraps; `python/cellgate/reference/rendezvous.py`
//! computes the same choices):
//!
//! - `fnv1a64(bytes)`: FNV-1a 64 (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`).
//! - `mix64(z)`: the SplitMix64 finalizer, `z ^= z >> 30; z *= 0xbf58476d1ce4e5b9;
//!   z ^= z >> 27; z *= 0x94d049bb133111eb; z ^= z >> 31`.
//! - `seed(cell) = mix64(fnv1a64(utf8(cell_id)))`, computed once when the cells are built.
//! - `key(customer) = mix64(fnv1a64(utf8(customer_id)))`, computed once per call.
//! - `h(customer, cell) = mix64(key(customer) ^ seed(cell))`.
//! - `u = ((h >> 12) + 0.5) / 2^52` in f64: exact, and never 0 or 1.
//! - `score = weight / -ln(u)` in f64; ties on score go to the smaller cell id (byte order).

use std::cmp::Ordering;
use std::fmt;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const TWO_POW_52: f64 = 4_503_599_627_370_496.0;

/// FNV-1a 64 of `bytes`.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

/// The SplitMix64 finalizer: a bijection on u64 with full avalanche.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The top 52 bits of `hash` as the centre of one of 2^52 equal slices of (0, 1).
///
/// 52 bits, not 53: `(2^53 - 1) + 0.5` is not an f64 and rounds up to 2^53, which would give
/// exactly 1.0, `ln(1.0) = 0` and an infinite score.
fn unit_interval(hash: u64) -> f64 {
    ((hash >> 12) as f64 + 0.5) / TWO_POW_52
}

/// One cell as the hot path needs it: its hash seed, its weight and its place in id order.
#[derive(Clone, Copy, Debug)]
struct CellSeed {
    seed: u64,
    weight: f64,
    id_rank: u32,
}

impl CellSeed {
    /// This cell's score for the customer whose key is `key`.
    #[inline]
    fn score(&self, key: u64) -> f64 {
        self.weight / -unit_interval(mix64(key ^ self.seed)).ln()
    }
}

/// The order of two candidates `(score, id_rank)`: `Less` when the first is preferred.
///
/// Higher score first, then the smaller cell id. Scores are finite and > 0, so `total_cmp` is
/// the numeric order; with unique ids two different cells never compare `Equal`.
#[inline]
fn preference(score: f64, id_rank: u32, other_score: f64, other_id_rank: u32) -> Ordering {
    other_score
        .total_cmp(&score)
        .then(id_rank.cmp(&other_id_rank))
}

/// Why a set of cells cannot be built into a [`Rendezvous`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The cell at `index` has weight 0; every weight must be > 0.
    ZeroWeight { index: usize },
    /// The cell at `index` repeats the id of the cell at `first`.
    DuplicateId { index: usize, first: usize },
    /// More cells than a u32 can count.
    TooManyCells,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::ZeroWeight { index } => write!(f, "cells[{index}].weight: must be > 0"),
            BuildError::DuplicateId { index, first } => {
                write!(f, "cells[{index}].id: repeats the id of cells[{first}]")
            }
            BuildError::TooManyCells => write!(f, "cells: more than 2^32 - 1 cells"),
        }
    }
}

impl std::error::Error for BuildError {}

/// Weighted rendezvous placement over a fixed list of cells, built once and shared read-only.
///
/// Cells are named by their index in the slice given to [`Rendezvous::new`].
#[derive(Clone, Debug)]
pub struct Rendezvous {
    cells: Box<[CellSeed]>,
}

impl Rendezvous {
    /// Builds the placement from `(cell id, weight)` pairs; ids must be unique, weights > 0.
    pub fn new(cells: &[(&str, u32)]) -> Result<Self, BuildError> {
        if u32::try_from(cells.len()).is_err() {
            return Err(BuildError::TooManyCells);
        }
        let mut by_id: Vec<usize> = (0..cells.len()).collect();
        by_id.sort_by(|&a, &b| {
            cells[a]
                .0
                .as_bytes()
                .cmp(cells[b].0.as_bytes())
                .then(a.cmp(&b))
        });
        let mut id_ranks = vec![0u32; cells.len()];
        for (rank, pair) in by_id.windows(2).enumerate() {
            if cells[pair[0]].0 == cells[pair[1]].0 {
                return Err(BuildError::DuplicateId {
                    index: pair[1],
                    first: pair[0],
                });
            }
            id_ranks[pair[1]] = rank as u32 + 1;
        }
        let seeds = cells
            .iter()
            .zip(id_ranks)
            .enumerate()
            .map(|(index, (&(id, weight), id_rank))| {
                if weight == 0 {
                    return Err(BuildError::ZeroWeight { index });
                }
                Ok(CellSeed {
                    seed: mix64(fnv1a64(id.as_bytes())),
                    weight: f64::from(weight),
                    id_rank,
                })
            })
            .collect::<Result<Box<[_]>, _>>()?;
        Ok(Rendezvous { cells: seeds })
    }

    /// The number of cells.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether there are no cells (then every customer gets `None`).
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// The eligible cell with the highest score for `customer`: one pass, no allocation.
    ///
    /// Equals `self.ranked(customer).find(|&i| eligible(i))`; `eligible` is asked once per cell.
    pub fn choose(&self, customer: &str, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let key = mix64(fnv1a64(customer.as_bytes()));
        let mut best: Option<(usize, f64, u32)> = None;
        for (index, cell) in self.cells.iter().enumerate() {
            if !eligible(index) {
                continue;
            }
            let score = cell.score(key);
            match best {
                Some((_, best_score, best_rank))
                    if preference(score, cell.id_rank, best_score, best_rank).is_ge() => {}
                _ => best = Some((index, score, cell.id_rank)),
            }
        }
        best.map(|(index, _, _)| index)
    }

    /// Every cell index for `customer`, most preferred first: the caller takes the first eligible.
    pub fn ranked(&self, customer: &str) -> impl ExactSizeIterator<Item = usize> {
        let key = mix64(fnv1a64(customer.as_bytes()));
        let mut order: Vec<(f64, u32, usize)> = self
            .cells
            .iter()
            .enumerate()
            .map(|(index, cell)| (cell.score(key), cell.id_rank, index))
            .collect();
        order.sort_unstable_by(|a, b| preference(a.0, a.1, b.0, b.1));
        order.into_iter().map(|(_, _, index)| index)
    }

    /// The score of cell `index` for `customer` (higher is preferred), for explaining a choice.
    ///
    /// Panics if `index >= self.len()`.
    pub fn score(&self, customer: &str, index: usize) -> f64 {
        self.cells[index].score(mix64(fnv1a64(customer.as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// (customer id, cell id, weight, h(customer, cell), score as f64 bits).
    /// Pinned identically in tests/test_reference_rendezvous.py.
    const X64: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

    const VECTORS: &[(&str, &str, u32, u64, u64)] = &[
        (
            "customer-000000",
            "retail-us-east-1",
            100,
            0xf2ca_1c90_74e5_cb15,
            0x409d_7da4_94ad_40df,
        ),
        (
            "customer-000001",
            "retail-us-east-2",
            300,
            0xd2ad_bffb_fc01_36b7,
            0x4098_0ecc_a6d0_e0d7,
        ),
        (
            "cust-42",
            "hnw-us-east-1",
            7,
            0xf445_4eee_7f2e_acc1,
            0x4062_a817_bcdb_319b,
        ),
        ("", "a", 1, 0x3be5_d845_2221_ad66, 0x3fe6_07c9_73c3_d9ae),
        ("a", "", 1, 0x3be5_d845_2221_ad66, 0x3fe6_07c9_73c3_d9ae),
        (
            "Zoë-Ünïcødé",
            "corp-eu-west-1",
            u32::MAX,
            0x3bb8_e8a5_f34b_e6fc,
            0x41e5_fc6a_33a7_8014,
        ),
        // customer id == cell id: key ^ seed = 0, mix64(0) = 0, u = 2^-53, the smallest score.
        (
            "customer-000000",
            "customer-000000",
            1,
            0,
            0x3f9b_dfbb_a5a3_a303,
        ),
        (
            X64,
            "cell-0999",
            250,
            0x82b2_5923_5850_23d3,
            0x4077_3dbd_7274_06c2,
        ),
    ];

    fn customers(n: usize) -> impl Iterator<Item = String> {
        (0..n).map(|i| format!("customer-{i:06}"))
    }

    fn placement(cells: &[(&str, u32)]) -> Rendezvous {
        Rendezvous::new(cells).unwrap()
    }

    /// The chosen cell id of every customer, all cells eligible.
    fn assignment<'a>(cells: &[(&'a str, u32)], n: usize) -> HashMap<String, &'a str> {
        let rendezvous = placement(cells);
        customers(n)
            .map(|c| {
                let index = rendezvous.choose(&c, |_| true).unwrap();
                (c, cells[index].0)
            })
            .collect()
    }

    fn shares(counts: &[usize]) -> Vec<f64> {
        let total: usize = counts.iter().sum();
        counts.iter().map(|&c| c as f64 / total as f64).collect()
    }

    #[test]
    fn hash_primitives_match_published_values() {
        // FNV-1a 64 of "" and "a" from the FNV reference; SplitMix64 seeded with 0 yields
        // mix64(0x9e3779b97f4a7c15) = 0xe220a8397b1dcdaf as its first output.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(mix64(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn unit_interval_stays_strictly_inside_zero_and_one() {
        assert_eq!(unit_interval(0), 0.5 / TWO_POW_52);
        assert!(unit_interval(u64::MAX) < 1.0);
        assert!(unit_interval(u64::MAX).ln() < 0.0);
        // The 53-bit mapping rounds the top value up to exactly 1.0: the reason for 52 bits.
        assert_eq!(
            ((u64::MAX >> 11) as f64 + 0.5) / 9_007_199_254_740_992.0,
            1.0
        );
    }

    #[test]
    fn pinned_test_vectors() {
        assert!(!VECTORS.is_empty());
        for &(customer, cell, weight, hash, score_bits) in VECTORS {
            let key = mix64(fnv1a64(customer.as_bytes()));
            let seed = mix64(fnv1a64(cell.as_bytes()));
            assert_eq!(mix64(key ^ seed), hash, "h({customer:?}, {cell:?})");
            let score = placement(&[(cell, weight)]).score(customer, 0);
            assert_eq!(
                score.to_bits(),
                score_bits,
                "score({customer:?}, {cell:?}, {weight}) = {score:e}"
            );
        }
    }

    #[test]
    fn choose_agrees_with_a_pinned_digest_of_10000_choices() {
        // The same digest is pinned in the Python reference's tests.
        let cells = [
            ("retail-us-east-1", 100),
            ("retail-us-east-2", 300),
            ("corp-us-east-1", 50),
            ("hnw-us-east-1", 7),
            ("retail-eu-west-1", 1000),
        ];
        let rendezvous = placement(&cells);
        let mut digest = FNV_OFFSET_BASIS;
        let mut counts = [0usize; 5];
        for c in customers(10_000) {
            let index = rendezvous.choose(&c, |_| true).unwrap();
            counts[index] += 1;
            digest = (digest ^ index as u64).wrapping_mul(FNV_PRIME);
        }
        assert_eq!((digest, counts), (DIGEST_10000, COUNTS_10000));
    }

    const DIGEST_10000: u64 = 0x12a5_ddf1_5744_6dfa;
    const COUNTS_10000: [usize; 5] = [709, 2079, 324, 44, 6844];

    #[test]
    fn the_same_customer_gets_the_same_cell_across_calls_and_cell_orders() {
        let cells = [("a", 10), ("b", 20), ("c", 30), ("d", 40), ("e", 50)];
        let mut reversed = cells;
        reversed.reverse();
        let (forward, backward) = (placement(&cells), placement(&reversed));
        for c in customers(5_000) {
            let first = forward.choose(&c, |_| true).unwrap();
            assert_eq!(forward.choose(&c, |_| true), Some(first));
            let other = backward.choose(&c, |_| true).unwrap();
            assert_eq!(cells[first].0, reversed[other].0, "{c}");
            let ranked: Vec<&str> = forward.ranked(&c).map(|i| cells[i].0).collect();
            let ranked_back: Vec<&str> = backward.ranked(&c).map(|i| reversed[i].0).collect();
            assert_eq!(ranked, ranked_back, "{c}");
        }
    }

    #[test]
    fn removing_one_of_n_cells_moves_only_its_customers() {
        let cells = [
            ("cell-0", 100),
            ("cell-1", 200),
            ("cell-2", 100),
            ("cell-3", 400),
            ("cell-4", 300),
            ("cell-5", 100),
        ];
        let before = assignment(&cells, 20_000);
        for removed in 0..cells.len() {
            let rest: Vec<(&str, u32)> = cells
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != removed)
                .map(|(_, &cell)| cell)
                .collect();
            let after = assignment(&rest, 20_000);
            let mut moved = 0;
            for (customer, &cell) in &before {
                if cell == cells[removed].0 {
                    moved += 1;
                } else {
                    assert_eq!(
                        after[customer], cell,
                        "{customer} moved off a remaining cell"
                    );
                }
            }
            assert!(moved > 0, "cell {removed} had customers");
        }
    }

    #[test]
    fn adding_a_cell_moves_customers_only_onto_it_in_proportion_to_its_weight() {
        // Tolerance: the moved share is within 1 percentage point of the new cell's weight share.
        let cells = [("cell-0", 100), ("cell-1", 200), ("cell-2", 300)];
        let grown = [
            ("cell-0", 100),
            ("cell-1", 200),
            ("cell-2", 300),
            ("cell-new", 150),
        ];
        let (before, after) = (assignment(&cells, 20_000), assignment(&grown, 20_000));
        let mut moved = 0;
        for (customer, &cell) in &before {
            if after[customer] != cell {
                assert_eq!(after[customer], "cell-new", "{customer}");
                moved += 1;
            }
        }
        let moved_share = moved as f64 / 20_000.0;
        assert!((moved_share - 150.0 / 750.0).abs() < 0.01, "{moved_share}");
    }

    #[test]
    fn shares_follow_capacity_1_2_3_4_within_one_percentage_point_over_100000_customers() {
        let cells = [("w1", 1), ("w2", 2), ("w3", 3), ("w4", 4)];
        let rendezvous = placement(&cells);
        let mut counts = [0usize; 4];
        for c in customers(100_000) {
            counts[rendezvous.choose(&c, |_| true).unwrap()] += 1;
        }
        for (share, expected) in shares(&counts).into_iter().zip([0.1, 0.2, 0.3, 0.4]) {
            assert!((share - expected).abs() < 0.01, "{counts:?}");
        }
    }

    #[test]
    fn an_ineligible_cell_is_skipped_and_its_customers_spread_in_proportion() {
        // Tolerance: displaced customers land on each remaining cell within 2 percentage points
        // of its weight share among the remaining cells (1:2:3 of 16,000 expected displaced).
        let cells = [("w1", 1), ("w2", 2), ("w3", 3), ("w4", 4)];
        let rendezvous = placement(&cells);
        let mut displaced = [0usize; 4];
        for c in customers(40_000) {
            let home = rendezvous.choose(&c, |_| true).unwrap();
            let fallback = rendezvous.choose(&c, |i| i != 3).unwrap();
            assert_ne!(fallback, 3);
            if home == 3 {
                displaced[fallback] += 1;
                assert_eq!(rendezvous.ranked(&c).nth(1), Some(fallback), "{c}");
            } else {
                assert_eq!(fallback, home, "{c}");
            }
        }
        let shares = shares(&displaced[..3]);
        for (share, expected) in shares.into_iter().zip([1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0]) {
            assert!((share - expected).abs() < 0.02, "{displaced:?}");
        }
    }

    #[test]
    fn choose_is_the_first_eligible_of_ranked() {
        let cells = [("a", 5), ("b", 1), ("c", 9), ("d", 3), ("e", 3), ("f", 7)];
        let rendezvous = placement(&cells);
        for c in customers(2_000) {
            let ranked: Vec<usize> = rendezvous.ranked(&c).collect();
            let mut sorted = ranked.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3, 4, 5]);
            for mask in 0u32..64 {
                let eligible = |i: usize| mask & (1 << i) != 0;
                let expected = ranked.iter().copied().find(|&i| eligible(i));
                assert_eq!(rendezvous.choose(&c, eligible), expected, "{c} {mask:#b}");
            }
        }
    }

    #[test]
    fn equal_scores_go_to_the_smaller_cell_id() {
        assert_eq!(preference(2.0, 5, 1.0, 0), Ordering::Less);
        assert_eq!(preference(1.0, 0, 1.0, 1), Ordering::Less);
        assert_eq!(preference(1.0, 1, 1.0, 0), Ordering::Greater);
        assert_eq!(preference(1.0, 1, 1.0, 1), Ordering::Equal);
        let rendezvous = placement(&[("b", 1), ("c", 1), ("a", 1)]);
        let ranks: Vec<u32> = rendezvous.cells.iter().map(|c| c.id_rank).collect();
        assert_eq!(ranks, [1, 2, 0]);
    }

    #[test]
    fn bad_cell_sets_are_refused_and_no_cells_choose_nothing() {
        assert_eq!(
            Rendezvous::new(&[("a", 1), ("b", 0)]).unwrap_err(),
            BuildError::ZeroWeight { index: 1 }
        );
        let err = Rendezvous::new(&[("a", 1), ("b", 2), ("a", 3)]).unwrap_err();
        assert_eq!(err, BuildError::DuplicateId { index: 2, first: 0 });
        assert_eq!(err.to_string(), "cells[2].id: repeats the id of cells[0]");
        let empty = placement(&[]);
        assert!(empty.is_empty());
        assert_eq!(empty.choose("anyone", |_| true), None);
        assert_eq!(empty.ranked("anyone").len(), 0);
        assert_eq!(placement(&[("a", 1)]).choose("anyone", |_| false), None);
    }

    #[test]
    #[ignore = "timing, not correctness: cargo test --release -- --ignored --nocapture"]
    fn choose_cost_per_call() {
        use std::hint::black_box;
        use std::time::Instant;
        for n in [4usize, 100, 1_000] {
            let ids: Vec<String> = (0..n).map(|i| format!("cell-{i:04}")).collect();
            let cells: Vec<(&str, u32)> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id.as_str(), 50 + (i as u32 * 37) % 400))
                .collect();
            let rendezvous = placement(&cells);
            let names: Vec<String> = customers(1_024).collect();
            let calls = 4_000_000 / n;
            let start = Instant::now();
            let mut sink = 0usize;
            for i in 0..calls {
                let customer = black_box(names[i % names.len()].as_str());
                sink = sink.wrapping_add(rendezvous.choose(customer, |_| true).unwrap());
            }
            let elapsed = start.elapsed();
            black_box(sink);
            println!(
                "choose over {n} cells: {:.1} ns/call ({:.2} ns/cell)",
                elapsed.as_nanos() as f64 / calls as f64,
                elapsed.as_nanos() as f64 / (calls * n) as f64
            );
        }
    }
}
