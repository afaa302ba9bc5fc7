//! decide(): the request pipeline, composing authentication, profiles and placement.

use crate::audit::{Names, Trail};
use crate::auth::{Verified, Verifier};
use crate::breaker::{self, Breaker, Permit};
use crate::catalog::Catalog;
use crate::cells::{Cell, CellTable, InFlight};
use crate::client_address::ClientAddressing;
use crate::clock::Clock;
use crate::compliance::Compliance;
use crate::ingress::{Arrival, Ingress};
use crate::profiles::{Profile, ProfileTable};
use crate::ratelimit::{self, Quota, Verdict};
use crate::reason::{Reason, Refusal};
use crate::request_id::RequestIds;
use crate::risk::{Assessment, Level, RiskFacts, RiskModel, ZoneId};
use crate::selection::{Chosen, Request, Selector};
use crate::settings::{CoreSettings, ForwardSettings, HealthSettings};
use crate::state::{Admission, Customer, Exchange, LaterVerdict, QuotaStore, Scope, Zone};
use crate::target::PathSettings;
use crate::trace::{TraceContext, TraceIds};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// The refusal of a request that arrives while the gateway shuts down: the client is told to
/// close the connection, and to come back (to another node) at once.
fn draining() -> Refusal {
    Refusal::new(
        Reason::Draining,
        "the gateway is shutting down; send the request again on a new connection",
    )
    .with_field("connection", "close".to_owned())
    .with_field("retry-after", "0".to_owned())
}

/// What the gateway knows of a request before reading its body, as every rule sees it.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// The canonical path (`target::canonicalize`), the one the cell receives.
    pub path: &'a str,
    pub authorization: Option<&'a str>,
    /// The client's address as earned (`client_address`): None when the peer is not an IP.
    pub client: Option<IpAddr>,
    pub user_agent: Option<&'a str>,
}

/// A routed request: its customer, the cell slot and breaker permit it holds until the outcome
/// is known, its risk, and the rate-limit verdict its answer reports.
pub struct Route {
    pub customer: Arc<str>,
    pub slot: InFlight,
    pub permit: Option<Permit>,
    /// When the call to the cell began (the decision; the forward resets it once the body is
    /// read), for the breaker's slow-call rule.
    pub started_us: u64,
    pub risk: Option<Assessment>,
    /// The client's address, for X-Forwarded-For.
    pub client: Option<IpAddr>,
    /// The trusted proxies between the client and the gateway (the peer last), for
    /// X-Forwarded-For; empty when the peer is not trusted.
    pub via: Vec<IpAddr>,
    /// The quota's verdict, for the RateLimit fields of the answer (formatted only when sent).
    pub rate: Option<(u16, Verdict)>,
    /// The quota's verdict still to come from a remote store, by tier: the forward settles it
    /// ([`Router::settle_rate`]) before the request leaves.
    pub rate_later: Option<(u16, LaterVerdict)>,
    /// The customer's tier, sent to the cell as X-Customer-Tier.
    pub tier: u16,
    /// Whether the token proved step-up authentication, sent as X-Step-Up.
    pub step_up: bool,
    /// The request's trace context, when it came through `decide_ingress`.
    pub trace: Option<TraceContext>,
    /// What the cell was chosen by, so that a retry can choose the next one the same way.
    pub selection: Selection,
}

/// A quota's verdict now, or the one a remote store gives later.
type Rate = (Option<(u16, Verdict)>, Option<(u16, LaterVerdict)>);

/// What a cell is chosen by, beyond the customer and the tier.
#[derive(Debug, Clone, Copy)]
pub struct Selection {
    pub region: u16,
    /// The compliance rules the customer's flags call for.
    pub required: u64,
    pub prefer_maximum: bool,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("customer", &self.customer)
            .field("cell", &self.cell().id)
            .finish()
    }
}

/// What the decision learnt on its way, kept for the request's audit record whether it ends
/// routed or refused.
#[derive(Debug, Default)]
pub struct Notes {
    pub customer: Option<Arc<str>>,
    pub tier: Option<u16>,
    pub region: Option<u16>,
    pub risk: Option<Assessment>,
    /// At HIGH risk: whether the token proved step-up.
    pub step_up: Option<bool>,
    /// Every cell of the customer's tier and region with the rule that excludes it (none: the
    /// chosen one, or eligible); gathered only when `want_cells`.
    pub cells: Vec<(usize, Option<&'static str>)>,
    pub want_cells: bool,
}

/// How a forwarded request ended, as the cell's breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The cell answered below 500.
    Success,
    /// The cell answered 500 or above, timed out or could not be reached.
    Failure,
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
    limiter: Box<dyn QuotaStore>,
    /// The node's shared-memory zone, when `[state]` maps one.
    zone: Option<Arc<Zone>>,
    /// What keeps this node in step with the others through Redis, when `[state]` names one.
    exchange: Option<Arc<Exchange>>,
    risk: Option<RiskModel>,
    compliance: Compliance,
    selector: Selector,
    forward: ForwardSettings,
    health: HealthSettings,
    paths: PathSettings,
    addressing: ClientAddressing,
    trace_ids: TraceIds,
    /// The worker's audit trail, when `[audit]` is configured.
    audit: Option<Trail>,
    /// Set once the gateway is shutting down: what arrives meanwhile (on kept-alive
    /// connections) is refused 503 draining and its connection closed.
    draining: AtomicBool,
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
        let mut quotas = Vec::new();
        for name in catalog.tiers() {
            let quota = settings.tiers.get(name).and_then(|t| t.rate_limit.as_ref());
            quotas.push(quota.and_then(|quota| {
                Quota::new(name, quota, &format!("tiers.{name}.rate_limit"))
                    .map_err(|quota_errors| errors.extend(quota_errors))
                    .ok()
            }));
        }
        if let Err(breaker_errors) = Breaker::new(&settings.breaker) {
            errors.extend(breaker_errors.iter().map(ToString::to_string));
        }
        let cell_ids = settings.cells.iter().map(|cell| cell.id.clone()).collect();
        let stores = crate::state::build(&settings.state, cell_ids, &clock)
            .map_err(|error| errors.push(format!("state.{error}")))
            .ok();
        let verifier = Verifier::build(&settings.jwt)
            .map_err(|key_errors| {
                for e in key_errors {
                    errors.push(format!("jwt.keys[{}].{}", e.index, e.message));
                }
            })
            .ok();
        let risk = match &settings.risk {
            Some(risk) => RiskModel::build(risk)
                .map_err(|risk_errors| errors.extend(risk_errors))
                .ok(),
            None => None,
        };
        let load: Arc<dyn crate::state::LoadStore> = match &stores {
            Some(stores) => stores.load.clone(),
            None => Arc::new(crate::state::InProcessLoad::new(settings.cells.len())),
        };
        let cells = CellTable::build(
            &settings.cells,
            &settings.breaker,
            &settings.forward,
            &catalog,
            &load,
        )
        .map_err(|cell_errors| errors.extend(cell_errors))
        .ok();
        let compliance = cells.as_ref().and_then(|cells| {
            Compliance::build(&settings.compliance, cells.all(), &catalog)
                .map_err(|rule_errors| errors.extend(rule_errors))
                .ok()
        });
        let selector = cells.as_ref().and_then(|cells| {
            Selector::build(&settings.tiers, &catalog, cells)
                .map_err(|tier_errors| errors.extend(tier_errors))
                .ok()
        });
        let flags = compliance
            .as_ref()
            .map(Compliance::flags)
            .unwrap_or_default();
        let addressing = ClientAddressing::build(
            &settings.forward.trusted_proxies,
            settings.forward.forwarded_header,
        )
        .map_err(|proxy_errors| {
            for (index, message) in proxy_errors {
                errors.push(format!("forward.trusted_proxies[{index}]: {message}"));
            }
        })
        .ok();
        let audit = match (settings.audit.clone(), &cells) {
            (Some(audit), Some(cells)) => {
                let names = Names {
                    tiers: catalog.tiers().to_vec(),
                    regions: catalog.regions().to_vec(),
                    cells: cells
                        .all()
                        .iter()
                        .map(|cell| (cell.id.clone(), cell.encryption.name()))
                        .collect(),
                };
                Trail::build(audit, names, clock.clone())
                    .map_err(|audit_errors| errors.extend(audit_errors))
                    .ok()
            }
            _ => None,
        };
        let zones = |name: &str| zone_of(risk.as_ref(), name);
        let profiles = ProfileTable::parse_jsonl(profiles_jsonl, &catalog, &flags, &zones)
            .map_err(|profile_errors| {
                errors.extend(profile_errors.into_iter().map(|e| format!("profiles: {e}")))
            })
            .ok();
        match (
            verifier, cells, compliance, selector, profiles, addressing, stores,
        ) {
            (
                Some(mut verifier),
                Some(cells),
                Some(compliance),
                Some(selector),
                Some(profiles),
                Some(addressing),
                Some(stores),
            ) if errors.is_empty() => Ok(Router {
                catalog,
                verifier: {
                    verifier.use_revocations(stores.revocations);
                    verifier.limit_token_lifetime(settings.state.max_token_lifetime_s);
                    verifier
                },
                profiles: RwLock::new(profiles),
                cells,
                clock,
                request_ids: RequestIds::new(),
                quotas,
                limiter: stores.quotas,
                zone: stores.zone,
                exchange: stores.exchange,
                risk,
                compliance,
                selector,
                forward: settings.forward,
                health: settings.health,
                paths: settings.paths,
                addressing,
                trace_ids: TraceIds::new(),
                audit,
                draining: AtomicBool::new(false),
            }),
            _ => Err(errors),
        }
    }

    /// Reads a request as it arrived: canonical path, earned client address, trace context.
    pub fn ingress<'a>(&self, arrival: &Arrival<'a>) -> Ingress<'a> {
        Ingress::read(arrival, &self.paths, &self.addressing, &self.trace_ids)
    }

    /// `decide` on what `ingress` made of a request: 400 bad_path before any rule runs; the
    /// route carries the trace context and the trusted hops.
    pub fn decide_ingress(&self, ingress: &Ingress, notes: &mut Notes) -> Result<Route, Refusal> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(draining());
        }
        let mut route = self.decide_noting(&ingress.facts()?, notes)?;
        route.trace = Some(ingress.trace);
        route.via = ingress.origin.via.clone();
        Ok(route)
    }

    /// Decides where a request goes, or why it may not.
    pub fn decide(&self, request: &RequestFacts) -> Result<Route, Refusal> {
        self.decide_noting(request, &mut Notes::default())
    }

    /// `decide`, keeping in `notes` what it learns on the way.
    pub fn decide_noting(
        &self,
        request: &RequestFacts,
        notes: &mut Notes,
    ) -> Result<Route, Refusal> {
        let now_us = self.clock.now_us();
        let now_s = now_us / 1_000_000;
        let verified = self.verifier.verify_header(request.authorization, now_s)?;
        notes.customer = Some(verified.customer.clone());
        let profile = self.profile(&verified.customer)?;
        (notes.tier, notes.region) = (Some(profile.tier), Some(profile.region));
        let customer = Customer {
            id: &verified.customer,
            key: verified.customer_key,
        };
        // Without money paths configured, every request is taken to move money.
        let moves_money = self
            .risk
            .as_ref()
            .and_then(|risk| risk.moves_money(request.method, request.path));
        let (rate, rate_later) =
            self.rate_limit(customer, profile.tier, moves_money.unwrap_or(true), now_us)?;
        let client = request.client;
        let risk = self.assess_with(request, client, &profile, now_s);
        notes.risk = risk;
        let step_up = self.verifier.proves_step_up(&verified, now_s);
        if let Some(assessment) = &risk {
            if assessment.level() == Level::High {
                notes.step_up = Some(step_up);
            }
            self.require_step_up(assessment, &verified, request, now_s)?;
        }
        let selection = Selection {
            region: profile.region,
            required: self.compliance.required(profile.flags),
            prefer_maximum: risk.is_some_and(|a| a.level() == Level::High),
        };
        let wanted = Request {
            customer: &verified.customer,
            tier: profile.tier,
            region: selection.region,
            required: selection.required,
            prefer_maximum: selection.prefer_maximum,
            now_us,
        };
        let chosen = self
            .selector
            .choose(&wanted, &self.cells, &self.compliance, &self.catalog);
        if notes.want_cells {
            let chosen_index = chosen.as_ref().ok().map(|c| c.cell.index);
            notes.cells = self
                .cells
                .group(profile.tier, profile.region)
                .iter()
                .map(|cell| match Some(cell.index) == chosen_index {
                    true => (cell.index, None),
                    false => (
                        cell.index,
                        Selector::exclusion(cell, &wanted, &self.compliance, true)
                            .map(|e| e.rule()),
                    ),
                })
                .collect();
            if let Some(index) = chosen_index.filter(|i| notes.cells.iter().all(|(c, _)| c != i)) {
                notes.cells.push((index, None));
            }
        }
        let chosen = chosen?;
        Ok(Route {
            customer: verified.customer.clone(),
            slot: chosen.slot,
            permit: Some(chosen.permit),
            started_us: now_us,
            risk,
            client,
            via: Vec::new(),
            rate,
            rate_later,
            tier: profile.tier,
            step_up,
            trace: None,
            selection,
        })
    }

    /// The same request routed again to its own cell: a new slot and permit there, if its
    /// breaker admits one. For a retry that must not leave the cell.
    pub fn reroute_to(&self, route: &Route) -> Result<Route, Refusal> {
        let now_us = self.clock.now_us();
        let cell = route.cell().clone();
        let shared_open = cell.opened_elsewhere(now_us).map_or(Ok(()), |_| Err(()));
        let permit = shared_open.and_then(|()| cell.breaker.try_acquire(now_us).map_err(|_| ()));
        let permit = permit.map_err(|()| {
            Refusal::new(
                Reason::NoEligibleCell,
                format!("{}: its breaker admits no retry now", cell.id),
            )
        })?;
        let slot = InFlight::acquire(cell.clone());
        let chosen = Chosen { cell, slot, permit };
        Ok(self.routed_again(route, chosen, now_us))
    }

    /// The same request routed again, to the next eligible cell none of `tried` (cell indexes)
    /// is: a new slot and permit, everything else as decided. For a retry.
    pub fn reroute(&self, route: &Route, tried: &[usize]) -> Result<Route, Refusal> {
        let now_us = self.clock.now_us();
        let chosen = self.selector.choose_excluding(
            &Request {
                customer: &route.customer,
                tier: route.tier,
                region: route.selection.region,
                required: route.selection.required,
                prefer_maximum: route.selection.prefer_maximum,
                now_us,
            },
            &self.cells,
            &self.compliance,
            &self.catalog,
            tried,
        )?;
        Ok(self.routed_again(route, chosen, now_us))
    }

    fn routed_again(&self, route: &Route, chosen: Chosen, now_us: u64) -> Route {
        Route {
            customer: route.customer.clone(),
            slot: chosen.slot,
            permit: Some(chosen.permit),
            started_us: now_us,
            risk: route.risk,
            client: route.client,
            via: route.via.clone(),
            rate: route.rate,
            rate_later: None,
            tier: route.tier,
            step_up: route.step_up,
            trace: route.trace,
            selection: route.selection,
        }
    }

    /// Feeds a forwarded request's outcome to its cell's breaker and gives its slot back.
    pub fn report(&self, mut route: Route, outcome: Outcome) {
        let now_us = self.clock.now_us();
        if let Some(permit) = route.permit.take() {
            let outcome = match outcome {
                Outcome::Success => breaker::Outcome::Success,
                Outcome::Failure => breaker::Outcome::Failure,
            };
            let duration_us = now_us.saturating_sub(route.started_us);
            let cell = route.cell();
            let moved = cell.breaker.report(permit, outcome, duration_us, now_us);
            if moved == Some(breaker::BreakerState::Open) {
                // Every worker sharing the cell's load treats it as open until the same time.
                cell.load.opened_until(cell.breaker.open_until_us());
            }
        }
    }

    /// Starts (or stops) refusing requests because the gateway is shutting down.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    /// Whether the gateway is shutting down.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The worker's audit trail, when configured.
    pub fn audit(&self) -> Option<&Trail> {
        self.audit.as_ref()
    }

    /// The customer's profile, or 404.
    pub fn profile(&self, customer: &str) -> Result<Profile, Refusal> {
        let profiles = self
            .profiles
            .read()
            .map_err(|_| internal("profile table poisoned"))?;
        profiles.get(customer).ok_or_else(|| {
            Refusal::new(
                Reason::CustomerNotFound,
                format!("no profile for customer {customer:?}"),
            )
        })
    }

    /// The request's risk, when risk scoring is configured.
    pub fn assess(
        &self,
        request: &RequestFacts,
        profile: &Profile,
        now_s: u64,
    ) -> Option<Assessment> {
        self.assess_with(request, request.client, profile, now_s)
    }

    fn assess_with(
        &self,
        request: &RequestFacts,
        client: Option<IpAddr>,
        profile: &Profile,
        now_s: u64,
    ) -> Option<Assessment> {
        let model = self.risk.as_ref()?;
        let facts = RiskFacts {
            client,
            method: request.method,
            path: request.path,
            user_agent: request.user_agent,
        };
        Some(model.assess(profile.base_risk, &facts, profile.zone, now_s as i64))
    }

    /// Each factor of `assessment` that fired, as `(kind, reason)`.
    pub fn risk_factors(
        &self,
        assessment: &Assessment,
        request: &RequestFacts,
    ) -> Vec<(&'static str, String)> {
        let Some(model) = self.risk.as_ref() else {
            return Vec::new();
        };
        assessment
            .explain(model, &risk_facts(request))
            .into_iter()
            .map(|factor| (factor.kind.code(), factor.reason))
            .collect()
    }

    /// At HIGH risk, the token must prove step-up authentication: 403 step_up_required if not.
    pub fn require_step_up(
        &self,
        assessment: &Assessment,
        verified: &Verified,
        request: &RequestFacts,
        now_s: u64,
    ) -> Result<(), Refusal> {
        if assessment.level() != Level::High {
            return Ok(());
        }
        self.verifier.step_up(verified, now_s).map_err(|missing| {
            let factors: Vec<String> = self
                .risk_factors(assessment, request)
                .into_iter()
                .map(|(_, reason)| reason)
                .collect();
            let why = if factors.is_empty() {
                "the profile's base risk".to_owned()
            } else {
                factors.join("; ")
            };
            Refusal::new(
                Reason::StepUpRequired,
                format!("risk HIGH ({:.2}: {why}); {missing}", assessment.score()),
            )
        })
    }

    /// Counts the request against the customer's tier quota: the verdict for the answer's
    /// RateLimit fields (or the verdict a remote store gives later), or a 429 refusal with
    /// Retry-After and those fields.
    fn rate_limit(
        &self,
        customer: Customer<'_>,
        tier: u16,
        moves_money: bool,
        now_us: u64,
    ) -> Result<Rate, Refusal> {
        let Some(Some(quota)) = self.quotas.get(tier as usize) else {
            return Ok((None, None));
        };
        match self.limiter.admit(customer, quota, now_us, moves_money) {
            Admission::Now(verdict) => match self.rate_refusal(tier, verdict) {
                Some(refusal) => Err(refusal),
                None => Ok((Some((tier, verdict)), None)),
            },
            Admission::Later(later) => Ok((None, Some((tier, later)))),
            Admission::Refused(refusal) => Err(refusal),
        }
    }

    /// Awaits the verdict `route`'s quota store gives later, if any: the route keeps it for its
    /// answer's fields, or the request is refused (429 over the quota, or the store's refusal
    /// when it cannot be reached).
    pub async fn settle_rate(&self, route: &mut Route) -> Result<(), Refusal> {
        let Some((tier, later)) = route.rate_later.take() else {
            return Ok(());
        };
        let verdict = later.await?;
        if let Some(refusal) = self.rate_refusal(tier, verdict) {
            return Err(refusal);
        }
        route.rate = Some((tier, verdict));
        Ok(())
    }

    /// The 429 refusal of a limited verdict, with Retry-After and the RateLimit fields; None
    /// when the verdict allows the request.
    pub fn rate_refusal(&self, tier: u16, verdict: Verdict) -> Option<Refusal> {
        let Verdict::Limited { retry_after_s, .. } = verdict else {
            return None;
        };
        let quota = self.quota(tier)?;
        let detail = format!(
            "over the {} quota of {} requests per {} s (burst {}); retry in {retry_after_s} s",
            quota.name(),
            quota.requests(),
            quota.period_s(),
            quota.burst()
        );
        let mut refusal = Refusal::new(Reason::RateLimited, detail)
            .with_field("retry-after", retry_after_s.to_string());
        refusal
            .fields
            .extend(self.rate_fields(Some((tier, verdict))));
        Some(refusal)
    }

    /// The RateLimit and RateLimit-Policy fields of a verdict.
    pub fn rate_fields(&self, rate: Option<(u16, Verdict)>) -> Vec<(&'static str, String)> {
        let Some((tier, verdict)) = rate else {
            return Vec::new();
        };
        let Some(quota) = self.quota(tier) else {
            return Vec::new();
        };
        vec![
            (
                "ratelimit-policy",
                ratelimit::policy_field(quota).to_string(),
            ),
            (
                "ratelimit",
                ratelimit::ratelimit_field(quota, &verdict).to_string(),
            ),
        ]
    }

    /// The quota of `tier`, if it has one.
    pub fn quota(&self, tier: u16) -> Option<&Quota> {
        self.quotas.get(tier as usize)?.as_ref()
    }

    /// The per-customer GCRA state: this worker's or the node's.
    pub fn limiter(&self) -> &dyn QuotaStore {
        &*self.limiter
    }

    /// What keeps this node in step with the others through Redis, when configured.
    pub fn exchange(&self) -> Option<&Arc<Exchange>> {
        self.exchange.as_ref()
    }

    /// The node's shared-memory zone, when this router maps one.
    pub fn state_zone(&self) -> Option<&Arc<Zone>> {
        self.zone.as_ref()
    }

    /// Who a change of revocations reaches: this worker alone, or the node.
    pub fn state_scope(&self) -> Scope {
        self.verifier.revocations().scope()
    }

    /// The risk model, when risk scoring is configured.
    pub fn risk_model(&self) -> Option<&RiskModel> {
        self.risk.as_ref()
    }

    /// The compliance rules.
    pub fn compliance(&self) -> &Compliance {
        &self.compliance
    }

    /// The cell selection.
    pub fn selector(&self) -> &Selector {
        &self.selector
    }

    /// Resolves a profile's time zone name against the compiled zones (None without risk
    /// scoring, which is the only user of time zones).
    pub fn zone(&self, name: &str) -> Result<Option<ZoneId>, String> {
        zone_of(self.risk.as_ref(), name)
    }

    /// The next request id.
    pub fn next_request_id(&self) -> crate::request_id::RequestId {
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

    /// How request paths are made canonical.
    pub fn path_settings(&self) -> &PathSettings {
        &self.paths
    }

    /// How cells are health-checked.
    pub fn health_settings(&self) -> &HealthSettings {
        &self.health
    }
}

fn zone_of(risk: Option<&RiskModel>, name: &str) -> Result<Option<ZoneId>, String> {
    let Some(model) = risk else {
        return Ok(None);
    };
    model
        .zone_id(name)
        .map(Some)
        .ok_or_else(|| format!("unknown time zone {name:?} (not among the compiled zones)"))
}

/// What risk scoring sees of a request.
pub fn risk_facts<'a>(request: &RequestFacts<'a>) -> RiskFacts<'a> {
    RiskFacts {
        client: request.client,
        method: request.method,
        path: request.path,
        user_agent: request.user_agent,
    }
}

/// The client's IP address from `1.2.3.4:5`, `[::1]:5` or a bare address.
pub fn client_address(client: &str) -> Option<IpAddr> {
    if let Ok(addr) = client.parse::<std::net::SocketAddr>() {
        return Some(addr.ip());
    }
    client.trim_matches(|c| c == '[' || c == ']').parse().ok()
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
            client: client_address("127.0.0.1:5000"),
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

    fn set_healthy(router: &Router, id: &str, healthy: bool) {
        router.cells().get(id).unwrap().load.set_healthy(healthy);
    }

    #[test]
    fn unhealthy_cells_are_skipped_then_the_region_falls_back_then_none_is_left() {
        let router = router();
        let auth = format!("Bearer {}", token("retail-us"));
        set_healthy(&router, "retail-a", false);
        for _ in 0..5 {
            let route = router.decide(&facts(&auth)).unwrap();
            assert_eq!(&*route.cell().id, "retail-b");
        }
        set_healthy(&router, "retail-b", false);
        // Fallback: any eligible cell of the same region, whatever its tier.
        assert_eq!(
            &*router.decide(&facts(&auth)).unwrap().cell().id,
            "corp-us-1"
        );
        set_healthy(&router, "corp-us-1", false);
        let refusal = router.decide(&facts(&auth)).unwrap_err();
        assert_eq!(refusal.reason, Reason::NoEligibleCell);
        for part in [
            "retail-a: unhealthy",
            "retail-b: unhealthy",
            "corp-us-1: unhealthy",
        ] {
            assert!(refusal.detail.contains(part), "{}", refusal.detail);
        }
    }

    #[test]
    fn fallback_never_leaves_the_region() {
        let router = router();
        let auth = format!("Bearer {}", token("retail-eu"));
        // No retail cell in eu-west: the corporate one there takes it, never a us-east one.
        assert_eq!(
            &*router.decide(&facts(&auth)).unwrap().cell().id,
            "corp-eu-1"
        );
        set_healthy(&router, "corp-eu-1", false);
        let refusal = router.decide(&facts(&auth)).unwrap_err();
        assert_eq!(
            refusal.detail,
            "no eligible cell for a retail customer in region eu-west, fallback included \
             (corp-eu-1: unhealthy)"
        );
    }

    #[test]
    fn client_addresses_lose_their_ports() {
        let ip = |s: &str| client_address(s).map(|ip| ip.to_string());
        assert_eq!(ip("1.2.3.4:5678").as_deref(), Some("1.2.3.4"));
        assert_eq!(ip("[::1]:80").as_deref(), Some("::1"));
        assert_eq!(ip("::1").as_deref(), Some("::1"));
        assert_eq!(ip("1.2.3.4").as_deref(), Some("1.2.3.4"));
        assert_eq!(ip("unix:/run/sock"), None);
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
    fn a_cell_at_max_in_flight_passes_requests_on_then_503_cell_saturated() {
        let mut settings: CoreSettings =
            serde_json::from_str(crate::testing::SETTINGS_JSON).unwrap();
        for cell in &mut settings.cells {
            cell.max_in_flight = 1;
        }
        let router = Router::build(
            settings,
            crate::testing::PROFILES_JSONL.as_bytes(),
            Clock::manual(1_000_000_000_000),
        )
        .unwrap();
        let auth = format!("Bearer {}", token("retail-us"));
        let held: Vec<Route> = (0..3)
            .map(|_| router.decide(&facts(&auth)).unwrap())
            .collect();
        let mut cells: Vec<&str> = held.iter().map(|r| &*r.cell().id).collect();
        cells.sort_unstable();
        // Both retail cells at their limit: the region's fallback takes the third.
        assert_eq!(cells, ["corp-us-1", "retail-a", "retail-b"]);
        let refusal = router.decide(&facts(&auth)).unwrap_err();
        assert_eq!(refusal.reason, Reason::CellSaturated);
        assert_eq!(refusal.reason.status(), 503);
        assert!(
            refusal
                .detail
                .contains("retail-a: at its limit (1 of max_in_flight 1 in flight)"),
            "{}",
            refusal.detail
        );
        drop(held);
        assert!(router.decide(&facts(&auth)).is_ok());
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
