//! The profile source checked on its own, for a configuration refused before a router is built.

use crate::catalog::Catalog;
use crate::profiles::ProfileTable;
use pyo3::prelude::*;

/// Every error of a profile source (`line N: message`) against these tiers, the regions that
/// have a cell and the compliance flags; time zones are not checked (the router's build does).
#[pyfunction]
pub fn check_profiles(
    source: &[u8],
    tiers: Vec<String>,
    regions: Vec<String>,
    flags: Vec<String>,
) -> Vec<String> {
    let catalog = Catalog::from_names(tiers, regions);
    ProfileTable::parse_jsonl(source, &catalog, &flags, &|_| Ok(None))
        .err()
        .unwrap_or_default()
}
