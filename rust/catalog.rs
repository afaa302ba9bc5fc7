//! Interned names: tiers and regions become small integers at configuration time.

use crate::settings::CoreSettings;

/// The tiers and regions a configuration knows, by index.
#[derive(Debug, Clone)]
pub struct Catalog {
    tiers: Vec<String>,
    regions: Vec<String>,
}

impl Catalog {
    /// The tiers of `[tiers]` and the regions that have at least one cell.
    pub fn build(settings: &CoreSettings) -> Self {
        let tiers: Vec<String> = settings.tiers.keys().cloned().collect();
        let mut regions: Vec<String> = Vec::new();
        for cell in &settings.cells {
            if !regions.contains(&cell.region) {
                regions.push(cell.region.clone());
            }
        }
        Catalog { tiers, regions }
    }

    /// A catalog of these tiers and regions, in this order (as [`Catalog::build`] would find them).
    pub fn from_names(tiers: Vec<String>, regions: Vec<String>) -> Self {
        Catalog { tiers, regions }
    }

    /// The index of tier `name`.
    pub fn tier_id(&self, name: &str) -> Option<u16> {
        self.tiers.iter().position(|t| t == name).map(|i| i as u16)
    }

    /// The index of region `name`.
    pub fn region_id(&self, name: &str) -> Option<u16> {
        self.regions
            .iter()
            .position(|r| r == name)
            .map(|i| i as u16)
    }

    /// The name of tier `id`.
    pub fn tier_name(&self, id: u16) -> &str {
        self.tiers.get(id as usize).map_or("?", String::as_str)
    }

    /// The name of region `id`.
    pub fn region_name(&self, id: u16) -> &str {
        self.regions.get(id as usize).map_or("?", String::as_str)
    }

    /// Every known region, for error messages.
    pub fn regions(&self) -> &[String] {
        &self.regions
    }

    /// Every known tier, for error messages.
    pub fn tiers(&self) -> &[String] {
        &self.tiers
    }
}
