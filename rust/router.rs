//! decide(): the request pipeline, composing authentication, profiles and placement.

use crate::auth::Verifier;
use crate::catalog::Catalog;
use crate::cells::{Cell, CellTable, InFlight};
use crate::clock::Clock;
use crate::placement;
use crate::profiles::ProfileTable;
use crate::ratelimit::{self, Quota, RateLimiter, Verdict};
use crate::reason::{Reason, Refusal};
use crate::request_id::RequestIds;
use crate::settings::{CoreSettings, ForwardSettings, HealthSettings};
use std::sync::{Arc, RwLock};

/// What the gateway knows of a request before reading its body.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub authorization: Option<&'a str>,
    pub client: &'a str,
    pub user_agent: Option<&'a str>,
}

/// A routed request: its customer, the cell slot it holds until the outcome is known, and the
/// fields the answer carries (the RateLimit fields of the customer's quota).
#[derive(Debug)]
pub struct Route {
    pub customer: Arc<str>,
    pub slot: InFlight,
    pub answer_fields: Vec<(&'static str, String)>,
}

impl Route {
    /// The chosen cell.
    pub fn cell(&self) -> &Arc<Cell> {
        self.slot.cell()
    }
}

/// The router: compiled configuration, profiles and live cell state.
pub struct Router {
    catalog: Catalog,
    verifier: Verifier,
    profiles: RwLock<ProfileTable>,
    cells: CellTable,
    clock: Clock,
    request_ids: RequestIds,
    /// Each tier's quota, by tier id; None: not limited.
    quotas: Vec<Option<Quota>>,
    limiter: RateLimiter,
    forward: ForwardSettings,
    health: HealthSettings,
}

impl Router {
    /// Compiles settings and a profile source (JSON Lines) into a router, listing every error.
    pub fn build(
        settings: CoreSettings,
        profiles_jsonl: &[u8],
        clock: Clock,
    ) -> Result<Self, Vec<String>> {
        let catalog = Catalog::build(&settings);
        let mut errors = Vec::new();
        for (name, tier) in &settings.tiers {
            if tier.placement != "least_loaded" {
                errors.push(format!(
                    "tiers.{name}.placement: unknown placement {:?}",
                    tier.placement
                ));
            }
        }
        let mut quotas = Vec::new();
        for name in catalog.tiers() {
            let quota = settings.tiers.get(name).and_then(|t| t.rate_limit.as_ref());
            quotas.push(quota.and_then(|quota| {
                Quota::new(name, quota)
                    .map_err(|quota_errors| {
                        let prefix = format!("rate_limits.{name}");
                        let path = format!("tiers.{name}.rate_limit");
                        errors.extend(quota_errors.iter().map(|e| e.replacen(&prefix, &path, 1)));
                    })
                    .ok()
            }));
        }
        let verifier = Verifier::build(&settings.jwt)
            .map_err(|key_errors| {
                for e in key_errors {
                    errors.push(format!("jwt.keys[{}].{}", e.index, e.message));
                }
            })
            .ok();
        let cells = CellTable::build(&settings.cells, &catalog)
            .map_err(|cell_errors| errors.extend(cell_errors))
            .ok();
        let profiles = ProfileTable::parse_jsonl(profiles_jsonl, &catalog)
            .map_err(|profile_errors| {
                errors.extend(profile_errors.into_iter().map(|e| format!("profiles: {e}")))
            })
            .ok();
        match (verifier, cells, profiles) {
            (Some(verifier), Some(cells), Some(profiles)) if errors.is_empty() => Ok(Router {
                catalog,
                verifier,
                profiles: RwLock::new(profiles),
                cells,
                clock,
                request_ids: RequestIds::new(),
                quotas,
                limiter: RateLimiter::new(),
                forward: settings.forward,
                health: settings.health,
            }),
            _ => Err(errors),
        }
    }

    /// Decides where a request goes, or why it may not.
    pub fn decide(&self, request: &RequestFacts) -> Result<Route, Refusal> {
        let now_us = self.clock.now_us();
        let now_s = now_us / 1_000_000;
        let verified = self.verifier.verify_header(request.authorization, now_s)?;
        let profile = {
            let profiles = self
                .profiles
                .read()
                .map_err(|_| internal("profile table poisoned"))?;
            profiles.get(&verified.customer)
        }
        .ok_or_else(|| {
            Refusal::new(
                Reason::CustomerNotFound,
                format!("no profile for customer {:?}", &*verified.customer),
            )
        })?;
        let answer_fields = self.rate_limit(&verified.customer, profile.tier, now_us)?;
        let group = self.cells.group(profile.tier, profile.region);
        let start = self.cells.next_rotation();
        let chosen = placement::least_loaded(group, start, |cell| cell.load.healthy())
            .ok_or_else(|| self.explain_no_cell(profile.tier, profile.region, group))?;
        Ok(Route {
            customer: verified.customer.clone(),
            slot: InFlight::acquire(chosen.clone()),
            answer_fields,
        })
    }

    /// Counts the request against the customer's tier quota: the RateLimit fields for the answer,
    /// or a 429 refusal with Retry-After.
    fn rate_limit(
        &self,
        customer: &str,
        tier: u16,
        now_us: u64,
    ) -> Result<Vec<(&'static str, String)>, Refusal> {
        let Some(Some(quota)) = self.quotas.get(tier as usize) else {
            return Ok(Vec::new());
        };
        let verdict = self.limiter.check(customer, quota, now_us);
        let fields = vec![
            (
                "ratelimit-policy",
                ratelimit::policy_field(quota).to_string(),
            ),
            (
                "ratelimit",
                ratelimit::ratelimit_field(quota, &verdict).to_string(),
            ),
        ];
        match verdict {
            Verdict::Allowed { .. } => Ok(fields),
            Verdict::Limited { retry_after_s, .. } => {
                let detail = format!(
                    "over the {} quota of {} requests per {} s (burst {}); retry in {retry_after_s} s",
                    quota.name(),
                    quota.requests(),
                    quota.period_s(),
                    quota.burst()
                );
                let mut refusal = Refusal::new(Reason::RateLimited, detail)
                    .with_field("retry-after", retry_after_s.to_string());
                refusal.fields.extend(fields);
                Err(refusal)
            }
        }
    }

    fn explain_no_cell(&self, tier: u16, region: u16, group: &[Arc<Cell>]) -> Refusal {
        let tier_name = self.catalog.tier_name(tier);
        let region_name = self.catalog.region_name(region);
        let detail = if group.is_empty() {
            format!("no {tier_name} cell in region {region_name}")
        } else {
            let down: Vec<String> = group
                .iter()
                .map(|cell| format!("{}: unhealthy", cell.id))
                .collect();
            format!(
                "no eligible {tier_name} cell in region {region_name} ({})",
                down.join("; ")
            )
        };
        Refusal::new(Reason::NoEligibleCell, detail)
    }

    /// The next request id.
    pub fn next_request_id(&self) -> String {
        self.request_ids.next()
    }

    /// The cell table.
    pub fn cells(&self) -> &CellTable {
        &self.cells
    }

    /// The profile table.
    pub fn profiles(&self) -> &RwLock<ProfileTable> {
        &self.profiles
    }

    /// The interned names.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The token verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The router's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// How requests are forwarded.
    pub fn forward_settings(&self) -> &ForwardSettings {
        &self.forward
    }

    /// How cells are health-checked.
    pub fn health_settings(&self) -> &HealthSettings {
        &self.health
    }
}

fn internal(detail: &str) -> Refusal {
    Refusal::new(Reason::Internal, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{router, token};

    fn facts(authorization: &str) -> RequestFacts<'_> {
        RequestFacts {
            method: "GET",
            path: "/api/accounts",
            authorization: Some(authorization),
            client: "127.0.0.1:5000",
            user_agent: None,
        }
    }

    #[test]
    fn routes_to_a_cell_of_the_customers_tier_and_region() {
        let router = router();
        let auth = format!("Bearer {}", token("corp-eu"));
        let route = router.decide(&facts(&auth)).unwrap();
        assert_eq!(&*route.cell().id, "corp-eu-1");
        assert_eq!(route.cell().load.in_flight(), 1);
        drop(route);
        assert_eq!(router.cells().get("corp-eu-1").unwrap().load.in_flight(), 0);
    }

    #[test]
    fn unknown_customer_is_404() {
        let router = router();
        let auth = format!("Bearer {}", token("nobody"));
        let refusal = router.decide(&facts(&auth)).unwrap_err();
        assert_eq!(refusal.reason, Reason::CustomerNotFound);
        assert_eq!(refusal.reason.status(), 404);
    }

    #[test]
    fn unhealthy_cells_are_skipped_until_none_is_left() {
        let router = router();
        let auth = format!("Bearer {}", token("retail-us"));
        router
            .cells()
            .get("retail-a")
            .unwrap()
            .load
            .set_healthy(false);
        for _ in 0..5 {
            assert_eq!(
                &*router.decide(&facts(&auth)).unwrap().cell().id,
                "retail-b"
            );
        }
        router
            .cells()
            .get("retail-b")
            .unwrap()
            .load
            .set_healthy(false);
        let refusal = router.decide(&facts(&auth)).unwrap_err();
        assert_eq!(refusal.reason, Reason::NoEligibleCell);
        assert!(
            refusal.detail.contains("retail-a: unhealthy"),
            "{}",
            refusal.detail
        );
    }

    #[test]
    fn a_region_without_cells_of_the_tier_is_explained() {
        let router = router();
        let auth = format!("Bearer {}", token("retail-eu"));
        let refusal = router.decide(&facts(&auth)).unwrap_err();
        assert_eq!(refusal.detail, "no retail cell in region eu-west");
    }

    #[test]
    fn load_spreads_across_equal_cells() {
        let router = router();
        let auth = format!("Bearer {}", token("retail-us"));
        let routes: Vec<Route> = (0..10)
            .map(|_| router.decide(&facts(&auth)).unwrap())
            .collect();
        let on_a = routes
            .iter()
            .filter(|r| &*r.cell().id == "retail-a")
            .count();
        // retail-a has a third of retail-b's capacity: least-loaded keeps them proportional.
        assert!((2..=4).contains(&on_a), "{on_a} of 10 on retail-a");
    }

    #[test]
    fn every_configuration_error_is_listed() {
        let mut settings: CoreSettings =
            serde_json::from_str(crate::testing::SETTINGS_JSON).unwrap();
        settings.cells[0].capacity = 0;
        settings.cells[1].encryption = "weak".into();
        settings.cells[2].endpoint = "ftp://x".into();
        settings.jwt.keys[0].alg = "RS1".into();
        let errors = Router::build(settings, b"{}", Clock::System).err().unwrap();
        let joined = errors.join("\n");
        assert!(
            joined.contains("cells[0].capacity: must be > 0"),
            "{joined}"
        );
        assert!(joined.contains("cells[1].encryption"), "{joined}");
        assert!(joined.contains("cells[2].endpoint"), "{joined}");
        assert!(joined.contains("jwt.keys[0].alg"), "{joined}");
        assert!(joined.contains("profiles: line 1"), "{joined}");
    }
}
