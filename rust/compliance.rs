//! Compliance as data: what a cell must offer to serve a customer whose profile carries a flag
//! (`PII_RESTRICTED` -> a certification, `EU_RESIDENT` -> a region, `HIGH_RISK` -> an encryption
//! level). Applied as a hard filter before any cell is chosen, so a compliant cell is never
//! missed and a non-compliant one is never chosen.
//!
//! Rule `i` is profile flag bit `i`: the profile table is seeded with the rules' flag names, so a
//! profile's required rules are one AND, and each cell's satisfied rules are one precomputed mask.

use crate::catalog::Catalog;
use crate::cells::{Cell, Encryption};
use crate::settings::RequirementSettings;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The most rules: one bit each in a profile's flags.
pub const MAX_RULES: usize = 64;

/// One flag's requirement, with names resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Requirement {
    pub flag: String,
    pub certification: Option<String>,
    pub region: Option<u16>,
    pub encryption: Option<Encryption>,
}

impl Requirement {
    /// Whether `cell` meets this requirement.
    pub fn met_by(&self, cell: &Cell) -> bool {
        self.certification
            .as_ref()
            .is_none_or(|c| cell.certifications.iter().any(|have| have == c))
            && self.region.is_none_or(|r| cell.region == r)
            && self.encryption.is_none_or(|e| cell.encryption >= e)
    }

    /// What the requirement asks, for explanations: `certification FedRAMP`, `region eu-west`.
    pub fn describe(&self, catalog: &Catalog) -> String {
        let mut parts = Vec::new();
        if let Some(c) = &self.certification {
            parts.push(format!("certification {c}"));
        }
        if let Some(r) = self.region {
            parts.push(format!("region {}", catalog.region_name(r)));
        }
        if let Some(e) = self.encryption {
            parts.push(format!("encryption {} or stronger", e.name()));
        }
        parts.join(", ")
    }
}

/// The compiled rules and, per cell, which of them it satisfies.
#[derive(Debug, Default)]
pub struct Compliance {
    rules: Vec<Requirement>,
    /// Bit i set for every rule i: the profile flag bits that carry a rule.
    rule_mask: u64,
    /// By cell index: bit i set when the cell meets rule i.
    satisfied: Vec<u64>,
}

impl Compliance {
    /// Compiles the rules against the cells; errors are `compliance.<FLAG>.<field>: message`.
    pub fn build(
        settings: &BTreeMap<String, RequirementSettings>,
        cells: &[Arc<Cell>],
        catalog: &Catalog,
    ) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        if settings.len() > MAX_RULES {
            errors.push(format!(
                "compliance: at most {MAX_RULES} rules, got {}",
                settings.len()
            ));
        }
        let mut rules = Vec::new();
        for (flag, rule) in settings {
            if rule.certification.is_none() && rule.region.is_none() && rule.encryption.is_none() {
                errors.push(format!(
                    "compliance.{flag}: give a certification, a region or an encryption level"
                ));
            }
            let mut fail = |field: &str, message: String| {
                errors.push(format!("compliance.{flag}.{field}: {message}"))
            };
            let region = rule.region.as_ref().and_then(|name| {
                let id = catalog.region_id(name);
                if id.is_none() {
                    fail("region", format!("no cell is in region {name:?}"));
                }
                id
            });
            let encryption = rule.encryption.as_ref().and_then(|name| {
                let level = Encryption::parse(name);
                if level.is_none() {
                    fail("encryption", format!("unknown level {name:?}"));
                }
                level
            });
            if let Some(cert) = &rule.certification {
                if !cells.iter().any(|c| c.certifications.contains(cert)) {
                    fail("certification", format!("no cell is certified {cert:?}"));
                }
            }
            rules.push(Requirement {
                flag: flag.clone(),
                certification: rule.certification.clone(),
                region,
                encryption,
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let satisfied = cells
            .iter()
            .map(|cell| {
                rules
                    .iter()
                    .enumerate()
                    .filter(|(_, rule)| rule.met_by(cell))
                    .fold(0u64, |mask, (i, _)| mask | 1 << i)
            })
            .collect();
        let rule_mask = match rules.len() {
            MAX_RULES => u64::MAX,
            n => (1u64 << n) - 1,
        };
        Ok(Compliance {
            rules,
            rule_mask,
            satisfied,
        })
    }

    /// The flag names, in bit order, to seed the profile table with.
    pub fn flags(&self) -> Vec<String> {
        self.rules.iter().map(|r| r.flag.clone()).collect()
    }

    /// The rules a profile's flags call for.
    #[inline]
    pub fn required(&self, profile_flags: u64) -> u64 {
        profile_flags & self.rule_mask
    }

    /// The first required rule `cell` fails, if any.
    #[inline]
    pub fn first_unmet(&self, cell: &Cell, required: u64) -> Option<&Requirement> {
        let unmet = required & !self.satisfied.get(cell.index).copied().unwrap_or(0);
        (unmet != 0).then(|| &self.rules[unmet.trailing_zeros() as usize])
    }
}
