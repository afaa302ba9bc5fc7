//! Placement: which of the eligible cells takes the request.

use crate::cells::Cell;
use std::sync::Arc;

/// The eligible cell with the lowest in-flight / capacity, ties broken by rotating from `start`.
///
/// Loads are compared as cross products, so no division and no float rounding decides a tie.
pub fn least_loaded(
    cells: &[Arc<Cell>],
    start: usize,
    eligible: impl Fn(&Cell) -> bool,
) -> Option<&Arc<Cell>> {
    let n = cells.len();
    let mut best: Option<&Arc<Cell>> = None;
    for offset in 0..n {
        let cell = &cells[(start + offset) % n];
        if !eligible(cell) {
            continue;
        }
        best = match best {
            Some(current)
                if u64::from(current.load.in_flight()) * u64::from(cell.capacity)
                    <= u64::from(cell.load.in_flight()) * u64::from(current.capacity) =>
            {
                Some(current)
            }
            _ => Some(cell),
        };
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cells::InFlight;
    use crate::router::Router;
    use crate::testing::router;

    fn retail_cells(router: &Router) -> Vec<Arc<Cell>> {
        let catalog = router.catalog();
        let (tier, region) = (
            catalog.tier_id("retail").unwrap(),
            catalog.region_id("us-east").unwrap(),
        );
        router.cells().group(tier, region).to_vec()
    }

    #[test]
    fn picks_the_lowest_relative_load() {
        let router = router();
        let retail = retail_cells(&router);
        assert_eq!(retail.len(), 2);
        // retail-a has capacity 100, retail-b capacity 300.
        let _a: Vec<_> = (0..10)
            .map(|_| InFlight::acquire(retail[0].clone()))
            .collect();
        let _b: Vec<_> = (0..20)
            .map(|_| InFlight::acquire(retail[1].clone()))
            .collect();
        for start in 0..4 {
            let chosen = least_loaded(&retail, start, |_| true).unwrap();
            assert_eq!(&*chosen.id, "retail-b", "20/300 < 10/100");
        }
    }

    #[test]
    fn ties_rotate_and_ineligible_cells_are_skipped() {
        let router = router();
        let retail = retail_cells(&router);
        let first = least_loaded(&retail, 0, |_| true).unwrap().id.clone();
        let second = least_loaded(&retail, 1, |_| true).unwrap().id.clone();
        assert_ne!(first, second);
        let only_b = least_loaded(&retail, 0, |c| &*c.id == "retail-b").unwrap();
        assert_eq!(&*only_b.id, "retail-b");
        assert!(least_loaded(&retail, 0, |_| false).is_none());
    }
}
