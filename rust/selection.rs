//! Which cell takes a request: eligibility over the customer's tier and region (healthy, breaker
//! admitting, compliant), the tier's placement (least loaded or sticky), a preference for
//! maximum-encryption cells at HIGH risk, and fallback to any eligible cell of the same region,
//! never outside it. Each cell that is passed over has the first rule that excluded it.

use crate::breaker::Permit;
use crate::catalog::Catalog;
use crate::cells::{Cell, CellTable, Encryption, InFlight};
use crate::compliance::{Compliance, Requirement};
use crate::placement;
use crate::reason::{Reason, Refusal};
use crate::rendezvous::Rendezvous;
use crate::settings::TierSettings;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// How a tier places its customers on its eligible cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierPlacement {
    /// The lowest in-flight / capacity.
    LeastLoaded,
    /// Rendezvous hashing weighted by capacity: a customer stays on one cell while it is eligible.
    Sticky,
}

impl TierPlacement {
    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            TierPlacement::LeastLoaded => "least_loaded",
            TierPlacement::Sticky => "sticky",
        }
    }
}

/// Why a cell could not take the request, in the order the rules are applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Exclusion<'a> {
    Tier,
    Region,
    Unhealthy,
    BreakerOpen { half_open_in_ms: u64 },
    Saturated { in_flight: u32, max_in_flight: u32 },
    NotCompliant(&'a Requirement),
}

impl Exclusion<'_> {
    /// The rule's short name: `tier`, `region`, `health`, `breaker`, `max_in_flight`,
    /// `compliance`.
    pub fn rule(&self) -> &'static str {
        match self {
            Exclusion::Tier => "tier",
            Exclusion::Region => "region",
            Exclusion::Unhealthy => "health",
            Exclusion::BreakerOpen { .. } => "breaker",
            Exclusion::Saturated { .. } => "max_in_flight",
            Exclusion::NotCompliant(_) => "compliance",
        }
    }

    /// What exactly excluded the cell.
    pub fn describe(&self, catalog: &Catalog) -> String {
        match self {
            Exclusion::Tier => "serves another tier".into(),
            Exclusion::Region => "is in another region".into(),
            Exclusion::Unhealthy => "unhealthy".into(),
            Exclusion::BreakerOpen { half_open_in_ms } => {
                format!("breaker open (half-open in {half_open_in_ms} ms)")
            }
            Exclusion::Saturated {
                in_flight,
                max_in_flight,
            } => format!("at its limit ({in_flight} of max_in_flight {max_in_flight} in flight)"),
            Exclusion::NotCompliant(rule) => {
                format!(
                    "not compliant: {} needs {}",
                    rule.flag,
                    rule.describe(catalog)
                )
            }
        }
    }
}

/// Which step of the selection found the cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The customer's tier and region, maximum-encryption cells only (HIGH risk).
    PreferredMaximum,
    /// The customer's tier and region.
    Primary,
    /// Any eligible cell of the customer's region.
    Fallback,
}

/// The chosen cell, and the in-flight slot and breaker permit taken on it.
pub struct Chosen {
    pub cell: Arc<Cell>,
    pub slot: InFlight,
    pub permit: Permit,
}

/// What the selection needs to know about one request.
pub struct Request<'a> {
    pub customer: &'a str,
    pub tier: u16,
    pub region: u16,
    /// The compliance rules the customer's flags call for.
    pub required: u64,
    /// Prefer maximum-encryption cells (the request scored HIGH).
    pub prefer_maximum: bool,
    pub now_us: u64,
}

/// One step of the selection: its stage, the cells it looks at, and how it picks among them.
type StageCells<'a> = (Stage, &'a [Arc<Cell>], TierPlacement);

/// Placement per tier and the rendezvous tables of the sticky tiers' groups.
pub struct Selector {
    placements: Vec<TierPlacement>,
    rendezvous: HashMap<(u16, u16), Rendezvous>,
}

impl Selector {
    /// Compiles each tier's placement; errors are `tiers.<name>.placement: message`.
    pub fn build(
        tiers: &BTreeMap<String, TierSettings>,
        catalog: &Catalog,
        cells: &CellTable,
    ) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let placements = catalog
            .tiers()
            .iter()
            .map(|name| match tiers.get(name).map(|t| t.placement.as_str()) {
                Some("least_loaded") | None => TierPlacement::LeastLoaded,
                Some("sticky") => TierPlacement::Sticky,
                Some(other) => {
                    errors.push(format!(
                        "tiers.{name}.placement: unknown placement {other:?}"
                    ));
                    TierPlacement::LeastLoaded
                }
            })
            .collect::<Vec<_>>();
        let mut rendezvous = HashMap::new();
        for (&(tier, region), group) in cells.groups() {
            if placements.get(tier as usize) != Some(&TierPlacement::Sticky) {
                continue;
            }
            let weights: Vec<(&str, u32)> = group.iter().map(|c| (&*c.id, c.capacity)).collect();
            match Rendezvous::new(&weights) {
                Ok(table) => {
                    rendezvous.insert((tier, region), table);
                }
                Err(err) => errors.push(format!(
                    "tiers.{}: sticky placement: {err}",
                    catalog.tier_name(tier)
                )),
            }
        }
        if errors.is_empty() {
            Ok(Selector {
                placements,
                rendezvous,
            })
        } else {
            Err(errors)
        }
    }

    /// The placement of `tier`.
    pub fn placement(&self, tier: u16) -> TierPlacement {
        self.placements
            .get(tier as usize)
            .copied()
            .unwrap_or(TierPlacement::LeastLoaded)
    }

    /// Why `cell` cannot take a request of `request`'s tier and region, if it cannot.
    pub fn exclusion<'c>(
        cell: &Cell,
        request: &Request,
        compliance: &'c Compliance,
        same_tier: bool,
    ) -> Option<Exclusion<'c>> {
        if same_tier && cell.tier != request.tier {
            return Some(Exclusion::Tier);
        }
        if cell.region != request.region {
            return Some(Exclusion::Region);
        }
        if !cell.load.healthy() {
            return Some(Exclusion::Unhealthy);
        }
        let elsewhere_us = cell.opened_elsewhere(request.now_us);
        if elsewhere_us.is_some() || cell.breaker.is_open(request.now_us) {
            let own_us = match cell.breaker.is_open(request.now_us) {
                true => cell.breaker.snapshot(request.now_us).half_open_in_us,
                false => None,
            };
            let half_open_in_us = own_us.unwrap_or(0).max(elsewhere_us.unwrap_or(0));
            return Some(Exclusion::BreakerOpen {
                half_open_in_ms: half_open_in_us.div_ceil(1000),
            });
        }
        if let Some(rule) = compliance.first_unmet(cell, request.required) {
            return Some(Exclusion::NotCompliant(rule));
        }
        let in_flight = cell.load.in_flight();
        (in_flight >= cell.max_in_flight).then_some(Exclusion::Saturated {
            in_flight,
            max_in_flight: cell.max_in_flight,
        })
    }

    /// Chooses the cell and takes a breaker permit on it, or explains why no cell can serve.
    pub fn choose(
        &self,
        request: &Request,
        cells: &CellTable,
        compliance: &Compliance,
        catalog: &Catalog,
    ) -> Result<Chosen, Refusal> {
        self.choose_excluding(request, cells, compliance, catalog, &[])
    }

    /// `choose`, passing over the cells whose indexes are in `excluded` (those a retry already
    /// tried).
    pub fn choose_excluding(
        &self,
        request: &Request,
        cells: &CellTable,
        compliance: &Compliance,
        catalog: &Catalog,
        excluded: &[usize],
    ) -> Result<Chosen, Refusal> {
        self.pick(request, cells, compliance, |cell| {
            if excluded.contains(&cell.index) || cell.opened_elsewhere(request.now_us).is_some() {
                return None;
            }
            // The slot first: a permit is only taken where a slot is held (a slot dropped
            // gives itself back; a half-open trial permit would be spent).
            let slot = InFlight::try_acquire(cell)?;
            let permit = cell.breaker.try_acquire(request.now_us).ok()?;
            Some((slot, permit))
        })
        .map(|((slot, permit), cell, _, _)| Chosen { cell, slot, permit })
        .ok_or_else(|| no_eligible_cell(request, cells, compliance, catalog))
    }

    /// The cell `choose` would pick now, without taking a permit or a slot (for explanations).
    pub fn preview(
        &self,
        request: &Request,
        cells: &CellTable,
        compliance: &Compliance,
    ) -> Option<(Arc<Cell>, Stage, TierPlacement)> {
        self.pick(request, cells, compliance, |_| Some(()))
            .map(|((), cell, stage, placement)| (cell, stage, placement))
    }

    /// Walks the stages in order and offers each stage's placement pick to `accept`; a cell it
    /// refuses is passed over and the stage picks again.
    fn pick<T>(
        &self,
        request: &Request,
        cells: &CellTable,
        compliance: &Compliance,
        mut accept: impl FnMut(&Arc<Cell>) -> Option<T>,
    ) -> Option<(T, Arc<Cell>, Stage, TierPlacement)> {
        let group = cells.group(request.tier, request.region);
        let tier_placement = self.placement(request.tier);
        let mut stages: [Option<StageCells>; 3] = [None, None, None];
        if request.prefer_maximum {
            stages[0] = Some((Stage::PreferredMaximum, group, tier_placement));
        }
        stages[1] = Some((Stage::Primary, group, tier_placement));
        stages[2] = Some((
            Stage::Fallback,
            cells.region(request.region),
            TierPlacement::LeastLoaded,
        ));
        // Cells that refused a slot or a permit after looking admitting (a race for the last
        // slot, or half-open full): allocated only when that happens.
        let mut refused: Vec<usize> = Vec::new();
        for (stage, candidates, stage_placement) in stages.into_iter().flatten() {
            let same_tier = stage != Stage::Fallback;
            loop {
                let usable = |cell: &Cell| {
                    Self::exclusion(cell, request, compliance, same_tier).is_none()
                        && (stage != Stage::PreferredMaximum
                            || cell.encryption == Encryption::Maximum)
                        && !refused.contains(&cell.index)
                };
                let pick = match stage_placement {
                    TierPlacement::LeastLoaded => {
                        placement::least_loaded(candidates, cells.next_rotation(), usable)
                    }
                    TierPlacement::Sticky => self
                        .rendezvous
                        .get(&(request.tier, request.region))
                        .and_then(|table| {
                            table.choose(request.customer, |i| usable(&candidates[i]))
                        })
                        .map(|i| &candidates[i]),
                };
                let Some(cell) = pick else { break };
                match accept(cell) {
                    Some(taken) => return Some((taken, cell.clone(), stage, stage_placement)),
                    None => refused.push(cell.index),
                }
            }
        }
        None
    }
}

/// The 503 refusal, naming every cell of the region and what excluded it.
fn no_eligible_cell(
    request: &Request,
    cells: &CellTable,
    compliance: &Compliance,
    catalog: &Catalog,
) -> Refusal {
    let tier = catalog.tier_name(request.tier);
    let region = catalog.region_name(request.region);
    let in_region = cells.region(request.region);
    // Where a cell that would serve is only at its limit, the answer says so: it will pass.
    let saturated = in_region.iter().any(|cell| {
        matches!(
            Selector::exclusion(cell, request, compliance, false),
            Some(Exclusion::Saturated { .. })
        )
    });
    let detail = if in_region.is_empty() {
        format!("no cell in region {region} (the {tier} customer's region)")
    } else {
        let reasons: Vec<String> = in_region
            .iter()
            .map(|cell| {
                let why = Selector::exclusion(cell, request, compliance, false)
                    .map(|e| e.describe(catalog))
                    .unwrap_or_else(|| {
                        "refused a slot or a permit (its last slot or trial call taken at the same moment)".into()
                    });
                format!("{}: {why}", cell.id)
            })
            .collect();
        format!(
            "no eligible cell for a {tier} customer in region {region}, fallback included ({})",
            reasons.join("; ")
        )
    };
    let reason = match saturated {
        true => Reason::CellSaturated,
        false => Reason::NoEligibleCell,
    };
    Refusal::new(reason, detail)
}
