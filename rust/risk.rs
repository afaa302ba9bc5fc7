//! Explained risk scoring: a customer's base risk plus configured factors into LOW / MEDIUM / HIGH.
//!
//! The control plane compiles [`RiskSettings`] (factors with weights, thresholds, time zone tables)
//! and [`RiskModel::build`] checks them, listing every error with its dotted path. Per request,
//! [`RiskModel::assess`] returns a small `Copy` [`Assessment`] without allocating; only
//! [`Assessment::explain`] renders the fired factors' reasons, when a caller asks.
//!
//! Scores are fixed-point: weights, thresholds and scores are whole points of 1/10 000, so that
//! 0.7 + 0.1 reaches a 0.8 threshold exactly (in binary floating point it falls just short).
//!
//! Factor semantics, all case-insensitive for ASCII where text is compared:
//! - `high_risk_networks`: named CIDR lists (IPv4 and IPv6; a bare address is one host). Each list
//!   that holds the client fires on its own. An IPv4-mapped IPv6 client (`::ffff:a.b.c.d`, what a
//!   dual-stack socket reports for an IPv4 peer) is matched as the IPv4 address it maps, so only
//!   IPv4 lists match it; an IPv4-mapped range in a list is refused for that reason.
//! - `unusual_hours`: a local time-of-day window, start inclusive, end exclusive, wrapping midnight
//!   when end < start, in the profile's zone (UTC when it names none).
//! - `money_paths`: `*` patterns matched against the whole canonical path (`target.rs`: already
//!   decoded, no query, exactly what the cell serves, so a `%` in it is text), `*` matching any
//!   run of characters including `/`; `methods` limits them to some methods (omitted: every
//!   method).
//! - `suspicious_user_agents`: substrings of the User-Agent; `missing_weight`, when set, makes an
//!   absent or blank (ASCII whitespace only) User-Agent a factor of its own.
//!
//! `assess` allocates nothing unless the User-Agent is over 512 bytes; network lists are merged into sorted ranges at build time and searched by bisection.
//!
//! A factor with weight 0 still fires and is explained without changing the score: a way to watch
//! a new factor before it counts. A factor that is omitted never fires.

use crate::networks::AddressSet;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Score points per 1.0: weights, thresholds and scores are whole multiples of 1/10 000.
pub const POINTS_PER_UNIT: u16 = 10_000;

/// The most network lists one model holds (each takes a bit of the fired set).
pub const MAX_NETWORK_LISTS: usize = 60;

const SECONDS_PER_DAY: i64 = 86_400;
const UNUSUAL_HOUR_BIT: u32 = 60;
const MONEY_PATH_BIT: u32 = 61;
const SUSPICIOUS_AGENT_BIT: u32 = 62;
const MISSING_AGENT_BIT: u32 = 63;

/// Risk scoring as the control plane compiles it: factors, thresholds and time zone tables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskSettings {
    /// Named CIDR lists; each that holds the client adds its weight.
    #[serde(default)]
    pub high_risk_networks: Vec<NetworkListSettings>,
    /// The local time-of-day window; omitted, time never counts.
    pub unusual_hours: Option<UnusualHoursSettings>,
    /// Money-moving path patterns; omitted, paths never count.
    pub money_paths: Option<MoneyPathSettings>,
    /// User-Agent substrings and the missing-agent weight; omitted, the agent never counts.
    pub suspicious_user_agents: Option<UserAgentSettings>,
    /// Where MEDIUM and HIGH begin.
    pub thresholds: ThresholdSettings,
    /// Per IANA zone name, `[utc_seconds, offset_seconds]` pairs in increasing time order.
    #[serde(default)]
    pub zones: BTreeMap<String, Vec<(i64, i32)>>,
}

/// A named list of networks whose clients add `weight`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkListSettings {
    /// The list's name, unique, as fired factors and reasons carry it (e.g. `tor-exits`).
    pub name: String,
    /// What a client in the list adds, in [0, 1].
    pub weight: f64,
    /// CIDRs such as `"203.0.113.0/24"` or `"2001:db8::/32"`; a bare address is a single host.
    pub cidrs: Vec<String>,
}

/// A local time-of-day window (`"HH:MM"`, start inclusive, end exclusive) that adds `weight`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnusualHoursSettings {
    /// The first local minute of the window, `"HH:MM"`.
    pub start: String,
    /// The first local minute after the window, `"HH:MM"`; before `start`, the window wraps.
    pub end: String,
    /// What a request inside the window adds, in [0, 1].
    pub weight: f64,
}

/// Money-moving path patterns (`*` wildcards) that add `weight` for the listed methods.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoneyPathSettings {
    /// What a matching request adds, in [0, 1].
    pub weight: f64,
    /// Whole-path patterns starting with `/` or `*`, e.g. `/api/transfers*`, `/api/*/withdraw`.
    pub patterns: Vec<String>,
    /// The methods the patterns apply to; omitted, every method.
    pub methods: Option<Vec<String>>,
}

/// User-Agent substrings that add `weight`; `missing_weight` scores an absent one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserAgentSettings {
    /// What an agent containing a pattern adds, in [0, 1].
    pub weight: f64,
    /// Case-insensitive substrings, e.g. `bot`, `crawler`.
    pub patterns: Vec<String>,
    /// What an absent or blank User-Agent adds; omitted, it adds nothing and does not fire.
    pub missing_weight: Option<f64>,
}

/// Scores at or above `medium` are MEDIUM, at or above `high` HIGH.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSettings {
    /// The lowest MEDIUM score, in [0, 1].
    pub medium: f64,
    /// The lowest HIGH score, in [0, 1], not below `medium`.
    pub high: f64,
}

/// How risky a request is, by the configured thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Below the medium threshold.
    Low,
    /// At or above the medium threshold, below the high one.
    Medium,
    /// At or above the high threshold: the request needs step-up proof.
    High,
}

impl Level {
    /// The level's name as decisions and audit records carry it: `LOW`, `MEDIUM` or `HIGH`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Low => "LOW",
            Level::Medium => "MEDIUM",
            Level::High => "HIGH",
        }
    }
}

/// The kinds of factor a request can fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FactorKind {
    /// The client is in a named high-risk network list.
    HighRiskNetwork,
    /// The customer's local time is inside the unusual-hours window.
    UnusualHour,
    /// The method and path match a money-moving pattern.
    MoneyPath,
    /// The User-Agent contains a suspicious substring.
    SuspiciousUserAgent,
    /// The User-Agent is absent or blank.
    MissingUserAgent,
}

impl FactorKind {
    /// The kind's machine-readable code, e.g. `money_path`.
    pub fn code(self) -> &'static str {
        match self {
            FactorKind::HighRiskNetwork => "high_risk_network",
            FactorKind::UnusualHour => "unusual_hour",
            FactorKind::MoneyPath => "money_path",
            FactorKind::SuspiciousUserAgent => "suspicious_user_agent",
            FactorKind::MissingUserAgent => "missing_user_agent",
        }
    }
}

/// What scoring reads of a request: the earned client address, method, path and User-Agent.
#[derive(Debug, Clone, Copy)]
pub struct RiskFacts<'a> {
    /// The client address (see DESIGN: the peer, or the right-most untrusted forwarded entry).
    pub client: Option<IpAddr>,
    /// The request method as received.
    pub method: &'a str,
    /// The request target's path; a query after `?` is ignored.
    pub path: &'a str,
    /// The User-Agent header, if the request carried one.
    pub user_agent: Option<&'a str>,
}

/// A compiled time zone: its name and its UTC-offset changes, searched by binary search.
#[derive(Debug, Clone)]
pub struct Zone {
    name: Box<str>,
    starts_s: Box<[i64]>,
    offsets_s: Box<[i32]>,
}

impl Zone {
    /// Checks a `[utc_seconds, offset_seconds]` table: non-empty, strictly increasing, sane offsets.
    ///
    /// Errors name `path` (the table's place in the settings) and the pair at fault.
    pub fn from_table(name: &str, table: &[(i64, i32)], path: &str) -> Result<Zone, Vec<String>> {
        let mut errors = Errors::default();
        if name.is_empty() {
            errors.push(path, "a zone needs a name");
        }
        if table.is_empty() {
            errors.push(
                path,
                "must hold at least one [utc_seconds, offset_seconds] pair",
            );
        }
        for (index, &(start_s, offset_s)) in table.iter().enumerate() {
            if i64::from(offset_s).abs() >= SECONDS_PER_DAY {
                errors.push(
                    &format!("{path}[{index}]"),
                    format!("offset {offset_s} s is not within a day of UTC"),
                );
            }
            if index > 0 && start_s <= table[index - 1].0 {
                errors.push(
                    &format!("{path}[{index}]"),
                    format!(
                        "{start_s} is not after the previous transition ({})",
                        table[index - 1].0
                    ),
                );
            }
        }
        if !errors.0.is_empty() {
            return Err(errors.0);
        }
        Ok(Zone {
            name: name.into(),
            starts_s: table.iter().map(|&(start_s, _)| start_s).collect(),
            offsets_s: table.iter().map(|&(_, offset_s)| offset_s).collect(),
        })
    }

    /// The zone's IANA name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The UTC offset at `utc_s`; the first offset also holds before the table, the last after it.
    #[inline]
    pub fn offset_s_at(&self, utc_s: i64) -> i32 {
        let after = self.starts_s.partition_point(|&start_s| start_s <= utc_s);
        self.offsets_s[after.saturating_sub(1)]
    }
}

/// A zone of a [`RiskModel`], resolved once (e.g. when a profile is loaded) and cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ZoneId(u16);

/// The outcome of scoring one request: score, level and which factors fired; `Copy`, no heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assessment {
    score_points: u16,
    level: Level,
    /// Bit i < 60: network list i; then the unusual hour, money path and the two agent factors.
    fired: u64,
    zone: Option<ZoneId>,
    local_s_of_day: u32,
    money_pattern: u16,
    agent_pattern: u16,
}

impl Assessment {
    /// The score in points (0 to 10 000): base plus fired weights, clamped.
    pub fn score_points(&self) -> u16 {
        self.score_points
    }

    /// The score as a fraction in [0, 1].
    pub fn score(&self) -> f32 {
        f32::from(self.score_points) / f32::from(POINTS_PER_UNIT)
    }

    /// The level the score reaches.
    pub fn level(&self) -> Level {
        self.level
    }

    /// How many factors fired.
    pub fn fired_count(&self) -> u32 {
        self.fired.count_ones()
    }

    /// The kind of each fired factor, networks first, in bit order (no model needed).
    pub fn fired_kinds(&self) -> impl Iterator<Item = FactorKind> + '_ {
        (0..64u32)
            .filter(|bit| self.fired & (1u64 << bit) != 0)
            .map(|bit| match bit {
                UNUSUAL_HOUR_BIT => FactorKind::UnusualHour,
                MONEY_PATH_BIT => FactorKind::MoneyPath,
                SUSPICIOUS_AGENT_BIT => FactorKind::SuspiciousUserAgent,
                MISSING_AGENT_BIT => FactorKind::MissingUserAgent,
                _ => FactorKind::HighRiskNetwork,
            })
    }

    /// The fired factors with their weights and human reasons, in configuration order.
    ///
    /// `model` and `facts` must be the ones this assessment was made from.
    pub fn explain<'m>(&self, model: &'m RiskModel, facts: &RiskFacts) -> Vec<FiredFactor<'m>> {
        let mut fired = Vec::with_capacity(self.fired.count_ones() as usize);
        let mut bits = self.fired;
        while bits != 0 {
            let bit = bits.trailing_zeros();
            bits &= bits - 1;
            if let Some(factor) = self.explain_bit(bit, model, facts) {
                fired.push(factor);
            }
        }
        fired
    }

    fn explain_bit<'m>(
        &self,
        bit: u32,
        model: &'m RiskModel,
        facts: &RiskFacts,
    ) -> Option<FiredFactor<'m>> {
        let factor = match bit {
            UNUSUAL_HOUR_BIT => {
                let window = model.unusual_hours.as_ref()?;
                let local = clock_text(self.local_s_of_day);
                let zone = self.zone.and_then(|id| model.zones.get(usize::from(id.0)));
                let when = match zone {
                    Some(zone) => format!("{local} local time ({})", zone.name()),
                    None => format!("{local} UTC"),
                };
                FiredFactor {
                    kind: FactorKind::UnusualHour,
                    name: FactorKind::UnusualHour.code(),
                    weight_points: window.weight,
                    reason: format!(
                        "{when} is within {}-{}",
                        clock_text(window.start_s),
                        clock_text(window.end_s)
                    ),
                }
            }
            MONEY_PATH_BIT => {
                let paths = model.money_paths.as_ref()?;
                FiredFactor {
                    kind: FactorKind::MoneyPath,
                    name: FactorKind::MoneyPath.code(),
                    weight_points: paths.weight,
                    reason: format!(
                        "{} {} matches {}",
                        facts.method,
                        facts.path,
                        paths.patterns.get(usize::from(self.money_pattern))?.source
                    ),
                }
            }
            SUSPICIOUS_AGENT_BIT => {
                let agents = model.user_agents.as_ref()?;
                FiredFactor {
                    kind: FactorKind::SuspiciousUserAgent,
                    name: FactorKind::SuspiciousUserAgent.code(),
                    weight_points: agents.weight,
                    reason: format!(
                        "user agent contains \"{}\"",
                        agents.patterns.get(usize::from(self.agent_pattern))?
                    ),
                }
            }
            MISSING_AGENT_BIT => FiredFactor {
                kind: FactorKind::MissingUserAgent,
                name: FactorKind::MissingUserAgent.code(),
                weight_points: model.user_agents.as_ref()?.missing_weight?,
                reason: "no user agent".to_owned(),
            },
            list => {
                let list = model.networks.get(list as usize)?;
                FiredFactor {
                    kind: FactorKind::HighRiskNetwork,
                    name: &list.name,
                    weight_points: list.weight,
                    reason: format!("client {} is in {}", canonical(facts.client?), list.name),
                }
            }
        };
        Some(factor)
    }
}

/// One fired factor: its kind, its name (the list's name for networks), weight and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredFactor<'m> {
    /// What kind of factor fired.
    pub kind: FactorKind,
    /// The network list's name, or the kind's code for the other factors.
    pub name: &'m str,
    /// The factor's configured weight in points.
    pub weight_points: u16,
    /// A short human reason, e.g. `client 203.0.113.9 is in tor-exits`.
    pub reason: String,
}

impl FiredFactor<'_> {
    /// The weight as a fraction in [0, 1].
    pub fn weight(&self) -> f32 {
        f32::from(self.weight_points) / f32::from(POINTS_PER_UNIT)
    }
}

impl RiskModel {
    /// Whether `method` and `path` (canonical) are on a money-moving path; None when no money
    /// paths are configured.
    pub fn moves_money(&self, method: &str, path: &str) -> Option<bool> {
        let paths = self.money_paths.as_ref()?;
        Some(paths.matching(method, path).is_some())
    }
}

/// Compiled risk scoring: every factor precompiled, thresholds in points, zones by id.
#[derive(Debug, Clone)]
pub struct RiskModel {
    networks: Vec<NetworkList>,
    unusual_hours: Option<HourWindow>,
    money_paths: Option<MoneyPaths>,
    user_agents: Option<UserAgents>,
    medium_points: u16,
    high_points: u16,
    zones: Vec<Zone>,
}

impl RiskModel {
    /// Checks and compiles settings, listing every error as `risk.<path>: <message>`.
    pub fn build(settings: &RiskSettings) -> Result<RiskModel, Vec<String>> {
        let mut errors = Errors::default();
        if settings.high_risk_networks.len() > MAX_NETWORK_LISTS {
            errors.push(
                "risk.high_risk_networks",
                format!(
                    "at most {MAX_NETWORK_LISTS} lists, got {}",
                    settings.high_risk_networks.len()
                ),
            );
        }
        let mut networks = Vec::with_capacity(settings.high_risk_networks.len());
        for (index, list) in settings.high_risk_networks.iter().enumerate() {
            let path = format!("risk.high_risk_networks[{index}]");
            if let Some(list) = NetworkList::build(list, index, settings, &path, &mut errors) {
                networks.push(list);
            }
        }
        let unusual_hours = settings
            .unusual_hours
            .as_ref()
            .and_then(|hours| HourWindow::build(hours, &mut errors));
        let money_paths = settings
            .money_paths
            .as_ref()
            .and_then(|paths| MoneyPaths::build(paths, &mut errors));
        let user_agents = settings
            .suspicious_user_agents
            .as_ref()
            .and_then(|agents| UserAgents::build(agents, &mut errors));
        let thresholds = &settings.thresholds;
        let medium_points = points(thresholds.medium, "risk.thresholds.medium", &mut errors);
        let high_points = points(thresholds.high, "risk.thresholds.high", &mut errors);
        if let (Some(medium), Some(high)) = (medium_points, high_points) {
            if medium > high {
                errors.push(
                    "risk.thresholds",
                    format!(
                        "medium ({}) must not be above high ({})",
                        thresholds.medium, thresholds.high
                    ),
                );
            }
        }
        if settings.zones.len() > usize::from(u16::MAX) {
            errors.push("risk.zones", format!("at most {} zones", u16::MAX));
        }
        let mut zones = Vec::with_capacity(settings.zones.len());
        for (name, table) in &settings.zones {
            match Zone::from_table(name, table, &format!("risk.zones[{name:?}]")) {
                Ok(zone) => zones.push(zone),
                Err(zone_errors) => errors.0.extend(zone_errors),
            }
        }
        match (errors.0.is_empty(), medium_points, high_points) {
            (true, Some(medium_points), Some(high_points)) => Ok(RiskModel {
                networks,
                unusual_hours,
                money_paths,
                user_agents,
                medium_points,
                high_points,
                zones,
            }),
            _ => Err(errors.0),
        }
    }

    /// The id of the zone called `name`, if the settings carried its table.
    pub fn zone_id(&self, name: &str) -> Option<ZoneId> {
        let index = self
            .zones
            .binary_search_by(|zone| zone.name().cmp(name))
            .ok()?;
        Some(ZoneId(index as u16))
    }

    /// The zone behind `id`.
    pub fn zone(&self, id: ZoneId) -> Option<&Zone> {
        self.zones.get(usize::from(id.0))
    }

    /// Scores a request at `now_s` (seconds since the Unix epoch) for a customer of `base_risk`
    /// in `zone` (UTC when `None`); a base outside [0, 1] is clamped into it.
    pub fn assess(
        &self,
        base_risk: f32,
        facts: &RiskFacts,
        zone: Option<ZoneId>,
        now_s: i64,
    ) -> Assessment {
        let mut fired = 0u64;
        let mut total = u32::from(base_points(base_risk));
        if let Some(client) = facts.client {
            let client = canonical(client);
            for (bit, list) in self.networks.iter().enumerate() {
                if list.contains(client) {
                    fired |= 1 << bit;
                    total += u32::from(list.weight);
                }
            }
        }
        let zone = zone.filter(|id| usize::from(id.0) < self.zones.len());
        let mut local_s_of_day = 0;
        if let Some(window) = &self.unusual_hours {
            let offset_s = zone.map_or(0, |id| self.zones[usize::from(id.0)].offset_s_at(now_s));
            local_s_of_day = now_s
                .saturating_add(i64::from(offset_s))
                .rem_euclid(SECONDS_PER_DAY) as u32;
            if window.contains(local_s_of_day) {
                fired |= 1 << UNUSUAL_HOUR_BIT;
                total += u32::from(window.weight);
            }
        }
        let mut money_pattern = 0;
        if let Some(paths) = &self.money_paths {
            if let Some(pattern) = paths.matching(facts.method, facts.path) {
                fired |= 1 << MONEY_PATH_BIT;
                total += u32::from(paths.weight);
                money_pattern = pattern;
            }
        }
        let mut agent_pattern = 0;
        if let Some(agents) = &self.user_agents {
            match facts
                .user_agent
                .filter(|agent| !agent.trim_ascii().is_empty())
            {
                Some(agent) => {
                    if let Some(pattern) = agents.matching(agent) {
                        fired |= 1 << SUSPICIOUS_AGENT_BIT;
                        total += u32::from(agents.weight);
                        agent_pattern = pattern;
                    }
                }
                None => {
                    if let Some(weight) = agents.missing_weight {
                        fired |= 1 << MISSING_AGENT_BIT;
                        total += u32::from(weight);
                    }
                }
            }
        }
        let score_points = total.min(u32::from(POINTS_PER_UNIT)) as u16;
        let level = if score_points >= self.high_points {
            Level::High
        } else if score_points >= self.medium_points {
            Level::Medium
        } else {
            Level::Low
        };
        Assessment {
            score_points,
            level,
            fired,
            zone,
            local_s_of_day,
            money_pattern,
            agent_pattern,
        }
    }
}

/// Validation errors, each `path: message`.
#[derive(Default)]
struct Errors(Vec<String>);

impl Errors {
    fn push(&mut self, path: &str, message: impl std::fmt::Display) {
        self.0.push(format!("{path}: {message}"));
    }
}

/// A weight or threshold in [0, 1] with at most four decimals, as points.
fn points(value: f64, path: &str, errors: &mut Errors) -> Option<u16> {
    if !(0.0..=1.0).contains(&value) {
        errors.push(path, format!("must be between 0 and 1, got {value}"));
        return None;
    }
    let scaled = value * f64::from(POINTS_PER_UNIT);
    if (scaled - scaled.round()).abs() > 1e-6 {
        errors.push(path, format!("must be a multiple of 0.0001, got {value}"));
        return None;
    }
    Some(scaled.round() as u16)
}

/// A profile's base risk in points, rounded to the nearest point and clamped into [0, 1].
fn base_points(base_risk: f32) -> u16 {
    // NaN saturates to 0 in the cast.
    (f64::from(base_risk) * f64::from(POINTS_PER_UNIT))
        .round()
        .clamp(0.0, f64::from(POINTS_PER_UNIT)) as u16
}

/// The address as scored: an IPv4-mapped IPv6 address becomes the IPv4 address it maps.
fn canonical(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
        v4 => v4,
    }
}

/// Seconds of the day as `HH:MM`.
fn clock_text(s_of_day: u32) -> String {
    format!("{:02}:{:02}", s_of_day / 3600, s_of_day / 60 % 60)
}

/// A named network list as sorted, disjoint, inclusive address ranges per family.
#[derive(Debug, Clone)]
struct NetworkList {
    name: Box<str>,
    weight: u16,
    addresses: AddressSet,
}

impl NetworkList {
    fn build(
        list: &NetworkListSettings,
        index: usize,
        settings: &RiskSettings,
        path: &str,
        errors: &mut Errors,
    ) -> Option<NetworkList> {
        let failed_before = errors.0.len();
        if list.name.trim_ascii().is_empty() {
            errors.push(&format!("{path}.name"), "must not be empty");
        } else if let Some(first) = settings.high_risk_networks[..index]
            .iter()
            .position(|other| other.name == list.name)
        {
            errors.push(
                &format!("{path}.name"),
                format!(
                    "{:?} is already the name of high_risk_networks[{first}]",
                    list.name
                ),
            );
        }
        let weight = points(list.weight, &format!("{path}.weight"), errors);
        let addresses = AddressSet::build(&list.cidrs)
            .map_err(|cidr_errors| {
                for (cidr_index, message) in cidr_errors {
                    errors.push(&format!("{path}.cidrs[{cidr_index}]"), message);
                }
            })
            .ok();
        if errors.0.len() > failed_before {
            return None;
        }
        Some(NetworkList {
            name: list.name.as_str().into(),
            weight: weight?,
            addresses: addresses?,
        })
    }

    #[inline]
    fn contains(&self, client: IpAddr) -> bool {
        self.addresses.contains(client)
    }
}

/// The unusual-hours window in seconds of the local day.
#[derive(Debug, Clone)]
struct HourWindow {
    start_s: u32,
    end_s: u32,
    weight: u16,
}

impl HourWindow {
    fn build(hours: &UnusualHoursSettings, errors: &mut Errors) -> Option<HourWindow> {
        let weight = points(hours.weight, "risk.unusual_hours.weight", errors);
        let start_s = time_of_day_s(&hours.start, "risk.unusual_hours.start", errors);
        let end_s = time_of_day_s(&hours.end, "risk.unusual_hours.end", errors);
        let (start_s, end_s) = (start_s?, end_s?);
        if start_s == end_s {
            errors.push(
                "risk.unusual_hours",
                format!(
                    "start and end are both {:?}; the window would be empty",
                    hours.start
                ),
            );
            return None;
        }
        Some(HourWindow {
            start_s,
            end_s,
            weight: weight?,
        })
    }

    #[inline]
    fn contains(&self, s_of_day: u32) -> bool {
        if self.start_s < self.end_s {
            (self.start_s..self.end_s).contains(&s_of_day)
        } else {
            s_of_day >= self.start_s || s_of_day < self.end_s
        }
    }
}

/// `"HH:MM"` (00:00 to 23:59) as seconds of the day.
fn time_of_day_s(text: &str, path: &str, errors: &mut Errors) -> Option<u32> {
    let parsed = match text.as_bytes() {
        [h1, h2, b':', m1, m2] if [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit()) => {
            let digit = |b: &u8| u32::from(b - b'0');
            let (hours, minutes) = (digit(h1) * 10 + digit(h2), digit(m1) * 10 + digit(m2));
            (hours < 24 && minutes < 60).then_some(hours * 3600 + minutes * 60)
        }
        _ => None,
    };
    if parsed.is_none() {
        errors.push(
            path,
            format!("not a time of day \"HH:MM\" from 00:00 to 23:59: {text:?}"),
        );
    }
    parsed
}

/// The money-path factor: patterns and the methods they apply to.
#[derive(Debug, Clone)]
struct MoneyPaths {
    weight: u16,
    patterns: Box<[PathPattern]>,
    /// `None`: every method.
    methods: Option<Box<[Box<str>]>>,
}

impl MoneyPaths {
    fn build(paths: &MoneyPathSettings, errors: &mut Errors) -> Option<MoneyPaths> {
        let failed_before = errors.0.len();
        let weight = points(paths.weight, "risk.money_paths.weight", errors);
        if paths.patterns.is_empty() {
            errors.push(
                "risk.money_paths.patterns",
                "must list at least one pattern",
            );
        }
        if paths.patterns.len() > usize::from(u16::MAX) {
            errors.push("risk.money_paths.patterns", "too many patterns");
        }
        let mut patterns = Vec::with_capacity(paths.patterns.len());
        for (index, pattern) in paths.patterns.iter().enumerate() {
            match PathPattern::compile(pattern) {
                Ok(pattern) => patterns.push(pattern),
                Err(message) => {
                    errors.push(&format!("risk.money_paths.patterns[{index}]"), message)
                }
            }
        }
        let methods = paths.methods.as_ref().map(|methods| {
            if methods.is_empty() {
                errors.push(
                    "risk.money_paths.methods",
                    "must list at least one method (omit it for every method)",
                );
            }
            for (index, method) in methods.iter().enumerate() {
                if method.is_empty() || !method.bytes().all(is_token_byte) {
                    errors.push(
                        &format!("risk.money_paths.methods[{index}]"),
                        format!("not an HTTP method: {method:?}"),
                    );
                }
            }
            methods.iter().map(|m| m.as_str().into()).collect()
        });
        if errors.0.len() > failed_before {
            return None;
        }
        Some(MoneyPaths {
            weight: weight?,
            patterns: patterns.into_boxed_slice(),
            methods,
        })
    }

    /// The index of the first pattern the request matches, if its method is one that counts.
    #[inline]
    fn matching(&self, method: &str, path: &str) -> Option<u16> {
        if let Some(methods) = &self.methods {
            if !methods.iter().any(|m| m.eq_ignore_ascii_case(method)) {
                return None;
            }
        }
        let path = path.as_bytes();
        let index = self.patterns.iter().position(|p| p.matches(path))?;
        Some(index as u16)
    }
}

/// Whether `b` may appear in an HTTP method (an RFC 9110 token).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A path pattern split at its `*`s: an anchored prefix and suffix with floating parts between.
#[derive(Debug, Clone)]
struct PathPattern {
    source: Box<str>,
    /// The pattern has no `*`: the path must equal `prefix`.
    exact: bool,
    prefix: Box<[u8]>,
    middle: Box<[Box<[u8]>]>,
    suffix: Box<[u8]>,
}

impl PathPattern {
    fn compile(pattern: &str) -> Result<PathPattern, String> {
        if !(pattern.starts_with('/') || pattern.starts_with('*')) {
            return Err(format!("must start with \"/\" or \"*\": {pattern:?}"));
        }
        if pattern.contains('?') {
            return Err(format!(
                "must not contain \"?\" (the query is not matched): {pattern:?}"
            ));
        }
        let parts: Vec<&[u8]> = pattern.as_bytes().split(|&b| b == b'*').collect();
        let last = parts.len() - 1;
        Ok(PathPattern {
            source: pattern.into(),
            exact: last == 0,
            prefix: parts[0].into(),
            middle: parts[1..last.max(1)]
                .iter()
                .filter(|part| !part.is_empty())
                .map(|&part| part.into())
                .collect(),
            suffix: if last == 0 { &b""[..] } else { parts[last] }.into(),
        })
    }

    /// Whether the whole path matches, ASCII case-insensitively; `*` matches any run of bytes.
    fn matches(&self, path: &[u8]) -> bool {
        if self.exact {
            return path.eq_ignore_ascii_case(&self.prefix);
        }
        let (prefix, suffix) = (self.prefix.len(), self.suffix.len());
        if path.len() < prefix + suffix
            || !path[..prefix].eq_ignore_ascii_case(&self.prefix)
            || !path[path.len() - suffix..].eq_ignore_ascii_case(&self.suffix)
        {
            return false;
        }
        // With `*` as the only wildcard, taking each middle part at its leftmost place is optimal.
        let mut rest = &path[prefix..path.len() - suffix];
        for part in self.middle.iter() {
            match find_ignore_case(rest, part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        true
    }
}

/// The first index where `needle` occurs in `haystack`, ASCII case-insensitively.
fn find_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let Some((&first, rest)) = needle.split_first() else {
        return Some(0);
    };
    let last_start = haystack.len().checked_sub(needle.len())?;
    // Comparing the first byte alone before the rest is what keeps this cheap on long agents.
    let (lower, upper) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
    (0..=last_start).find(|&at| {
        let byte = haystack[at];
        (byte == lower || byte == upper)
            && haystack[at + 1..at + needle.len()].eq_ignore_ascii_case(rest)
    })
}

/// User-Agents up to this long are lowercased on the stack; longer ones (rare) on the heap.
const AGENT_BUFFER_BYTES: usize = 512;

/// The User-Agent factors: substrings (stored lowercase) and the missing-agent weight.
#[derive(Debug, Clone)]
struct UserAgents {
    weight: u16,
    patterns: Box<[Box<str>]>,
    missing_weight: Option<u16>,
}

impl UserAgents {
    fn build(agents: &UserAgentSettings, errors: &mut Errors) -> Option<UserAgents> {
        let failed_before = errors.0.len();
        let path = "risk.suspicious_user_agents";
        let weight = points(agents.weight, &format!("{path}.weight"), errors);
        let missing_weight = agents
            .missing_weight
            .map(|weight| points(weight, &format!("{path}.missing_weight"), errors));
        if agents.patterns.len() > usize::from(u16::MAX) {
            errors.push(&format!("{path}.patterns"), "too many patterns");
        }
        for (index, pattern) in agents.patterns.iter().enumerate() {
            if pattern.trim_ascii().is_empty() {
                errors.push(&format!("{path}.patterns[{index}]"), "must not be blank");
            }
        }
        if agents.patterns.is_empty() && agents.missing_weight.is_none() {
            errors.push(
                path,
                "lists no patterns and no missing_weight, so it can never fire",
            );
        }
        if errors.0.len() > failed_before {
            return None;
        }
        Some(UserAgents {
            weight: weight?,
            patterns: agents
                .patterns
                .iter()
                .map(|p| p.to_ascii_lowercase().into())
                .collect(),
            missing_weight: missing_weight.flatten(),
        })
    }

    /// The index of the first pattern the agent contains.
    #[inline]
    fn matching(&self, agent: &str) -> Option<u16> {
        // Lowercased once (on the stack unless the agent is long), then std's fast substring search.
        let mut buffer = [0u8; AGENT_BUFFER_BYTES];
        let owned;
        let lowered = if agent.len() <= AGENT_BUFFER_BYTES {
            let lowered = &mut buffer[..agent.len()];
            lowered.copy_from_slice(agent.as_bytes());
            lowered.make_ascii_lowercase();
            std::str::from_utf8(lowered).expect("ASCII lowercasing keeps UTF-8 valid")
        } else {
            owned = agent.to_ascii_lowercase();
            owned.as_str()
        };
        let index = self
            .patterns
            .iter()
            .position(|pattern| lowered.contains(&**pattern))?;
        Some(index as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// Europe/Berlin and America/New_York for 2024-2026, from
    /// `cellgate.timezones.compile_zones(["Europe/Berlin", "America/New_York"], 2024, 2026)`.
    const ZONES_JSON: &str = r#"{
        "Europe/Berlin": [[1704067200, 3600], [1711846800, 7200], [1729990800, 3600],
            [1743296400, 7200], [1761440400, 3600], [1774746000, 7200], [1792890000, 3600]],
        "America/New_York": [[1704067200, -18000], [1710054000, -14400], [1730613600, -18000],
            [1741503600, -14400], [1762063200, -18000], [1772953200, -14400],
            [1793512800, -18000]]
    }"#;

    /// 2025-01-15T00:00:00Z, a Wednesday in winter.
    const JAN_15_2025_S: i64 = 1_736_899_200;
    const HOUR_S: i64 = 3600;

    fn settings_json(unusual_hours: &str) -> String {
        format!(
            r#"{{
            "high_risk_networks": [
                {{"name": "tor-exits", "weight": 0.3,
                  "cidrs": ["203.0.113.0/24", "2001:db8:dead::/48", "198.51.100.7"]}},
                {{"name": "hosting", "weight": 0.1, "cidrs": ["203.0.113.128/25", "192.0.2.0/24"]}}
            ],
            "unusual_hours": {unusual_hours},
            "money_paths": {{"weight": 0.1, "patterns": ["/api/transfers*", "/api/*/withdraw"],
                             "methods": ["POST", "PUT", "PATCH", "DELETE"]}},
            "suspicious_user_agents": {{"weight": 0.3, "patterns": ["bot", "Crawler", "automated"],
                                        "missing_weight": 0.2}},
            "thresholds": {{"medium": 0.5, "high": 0.8}},
            "zones": {ZONES_JSON}
        }}"#
        )
    }

    fn model_with_hours(unusual_hours: &str) -> RiskModel {
        let settings: RiskSettings = serde_json::from_str(&settings_json(unusual_hours)).unwrap();
        RiskModel::build(&settings).unwrap()
    }

    fn model() -> RiskModel {
        model_with_hours(r#"{"start": "00:00", "end": "05:00", "weight": 0.1}"#)
    }

    fn build_errors(json: &str) -> Vec<String> {
        let settings: RiskSettings = serde_json::from_str(json).unwrap();
        RiskModel::build(&settings).err().unwrap()
    }

    /// A quiet request: no listed network, no money path, an ordinary browser.
    fn facts(client: &str) -> RiskFacts<'static> {
        RiskFacts {
            client: Some(client.parse().unwrap()),
            method: "GET",
            path: "/api/accounts",
            user_agent: Some("Mozilla/5.0"),
        }
    }

    /// Noon UTC: outside the 00:00-05:00 window in UTC, Berlin and New York.
    const NOON_S: i64 = JAN_15_2025_S + 12 * HOUR_S;

    fn fired_names(
        model: &RiskModel,
        facts: &RiskFacts,
        zone: Option<ZoneId>,
        now_s: i64,
    ) -> Vec<String> {
        let assessment = model.assess(0.0, facts, zone, now_s);
        assessment
            .explain(model, facts)
            .into_iter()
            .map(|factor| factor.name.to_owned())
            .collect()
    }

    fn network_fires(model: &RiskModel, client: &str) -> Vec<String> {
        fired_names(model, &facts(client), None, NOON_S)
    }

    #[test]
    fn a_quiet_request_fires_nothing() {
        let model = model();
        let assessment = model.assess(0.2, &facts("192.0.3.1"), None, NOON_S);
        assert_eq!(assessment.score_points(), 2000);
        assert_eq!(assessment.level(), Level::Low);
        assert_eq!(assessment.fired_count(), 0);
        assert!(assessment.explain(&model, &facts("192.0.3.1")).is_empty());
    }

    #[test]
    fn ipv4_networks_match_from_first_to_last_address() {
        let model = model();
        assert_eq!(network_fires(&model, "203.0.113.0"), ["tor-exits"]);
        assert_eq!(network_fires(&model, "203.0.113.127"), ["tor-exits"]);
        assert_eq!(
            network_fires(&model, "203.0.113.128"),
            ["tor-exits", "hosting"]
        );
        assert_eq!(
            network_fires(&model, "203.0.113.255"),
            ["tor-exits", "hosting"]
        );
        assert!(network_fires(&model, "203.0.112.255").is_empty());
        assert!(network_fires(&model, "203.0.114.0").is_empty());
        // A bare address is a /32.
        assert_eq!(network_fires(&model, "198.51.100.7"), ["tor-exits"]);
        assert!(network_fires(&model, "198.51.100.6").is_empty());
        assert!(network_fires(&model, "198.51.100.8").is_empty());
    }

    #[test]
    fn ipv6_networks_match_from_first_to_last_address() {
        let model = model();
        assert_eq!(network_fires(&model, "2001:db8:dead::"), ["tor-exits"]);
        assert_eq!(
            network_fires(&model, "2001:db8:dead:ffff:ffff:ffff:ffff:ffff"),
            ["tor-exits"]
        );
        assert!(network_fires(&model, "2001:db8:deac:ffff:ffff:ffff:ffff:ffff").is_empty());
        assert!(network_fires(&model, "2001:db8:deae::").is_empty());
    }

    fn one_list(cidrs: &str) -> RiskModel {
        let json = format!(
            r#"{{"high_risk_networks": [{{"name": "l", "weight": 0.2, "cidrs": {cidrs}}}],
                "thresholds": {{"medium": 0.5, "high": 0.8}}}}"#
        );
        RiskModel::build(&serde_json::from_str(&json).unwrap()).unwrap()
    }

    #[test]
    fn prefix_zero_holds_its_whole_family_only() {
        let v4_all = one_list(r#"["0.0.0.0/0"]"#);
        assert_eq!(network_fires(&v4_all, "0.0.0.0"), ["l"]);
        assert_eq!(network_fires(&v4_all, "255.255.255.255"), ["l"]);
        assert!(network_fires(&v4_all, "::1").is_empty());
        let v6_all = one_list(r#"["::/0"]"#);
        assert_eq!(network_fires(&v6_all, "::"), ["l"]);
        assert_eq!(
            network_fires(&v6_all, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ["l"]
        );
        assert!(network_fires(&v6_all, "10.0.0.1").is_empty());
        // A mapped client is IPv4, so ::/0 does not hold it.
        assert!(network_fires(&v6_all, "::ffff:10.0.0.1").is_empty());
    }

    #[test]
    fn prefix_128_is_one_host() {
        let model = one_list(r#"["2001:db8::7/128", "2001:db8::9"]"#);
        assert_eq!(network_fires(&model, "2001:db8::7"), ["l"]);
        assert_eq!(network_fires(&model, "2001:db8::9"), ["l"]);
        assert!(network_fires(&model, "2001:db8::6").is_empty());
        assert!(network_fires(&model, "2001:db8::8").is_empty());
        assert!(network_fires(&model, "2001:db8::a").is_empty());
    }

    #[test]
    fn ipv4_mapped_clients_match_ipv4_lists() {
        let model = model();
        let mapped = facts("::ffff:203.0.113.9");
        let assessment = model.assess(0.0, &mapped, None, NOON_S);
        let fired = assessment.explain(&model, &mapped);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].reason, "client 203.0.113.9 is in tor-exits");
        // The deprecated IPv4-compatible form (::a.b.c.d) is an IPv6 address like any other.
        assert!(network_fires(&model, "::203.0.113.9").is_empty());
    }

    #[test]
    fn touching_and_nested_ranges_merge() {
        let model = one_list(r#"["10.0.0.0/25", "10.0.0.128/25", "10.0.0.64/26", "10.0.2.0/24"]"#);
        let list = &model.networks[0];
        assert_eq!(list.addresses.range_count(), 2);
        assert_eq!(network_fires(&model, "10.0.0.200"), ["l"]);
        assert!(network_fires(&model, "10.0.1.0").is_empty());
        assert_eq!(network_fires(&model, "10.0.2.255"), ["l"]);
    }

    #[test]
    fn an_unknown_client_fires_no_network() {
        let model = one_list(r#"["0.0.0.0/0", "::/0"]"#);
        let unknown = RiskFacts {
            client: None,
            ..facts("1.2.3.4")
        };
        assert_eq!(model.assess(0.0, &unknown, None, NOON_S).fired_count(), 0);
    }

    fn hour_fires(model: &RiskModel, zone: Option<ZoneId>, now_s: i64) -> bool {
        let names = fired_names(model, &facts("192.0.3.1"), zone, now_s);
        names.iter().any(|name| name == "unusual_hour")
    }

    #[test]
    fn the_window_starts_inclusive_and_ends_exclusive_in_utc() {
        let model = model();
        let day = JAN_15_2025_S;
        assert!(hour_fires(&model, None, day));
        assert!(hour_fires(&model, None, day + 5 * HOUR_S - 1));
        assert!(!hour_fires(&model, None, day + 5 * HOUR_S));
        assert!(!hour_fires(&model, None, day - 1));
        // Before the epoch the day still starts at midnight.
        assert!(hour_fires(&model, None, -HOUR_S * 24 * 365 + 60));
        assert!(!hour_fires(&model, None, -1));
    }

    #[test]
    fn a_window_may_wrap_midnight() {
        let model = model_with_hours(r#"{"start": "23:00", "end": "06:00", "weight": 0.1}"#);
        let day = JAN_15_2025_S;
        assert!(hour_fires(&model, None, day + 23 * HOUR_S));
        assert!(!hour_fires(&model, None, day + 23 * HOUR_S - 1));
        assert!(hour_fires(&model, None, day));
        assert!(hour_fires(&model, None, day + 6 * HOUR_S - 1));
        assert!(!hour_fires(&model, None, day + 6 * HOUR_S));
        assert!(!hour_fires(&model, None, NOON_S));
    }

    #[test]
    fn berlin_local_time_follows_daylight_saving() {
        let model = model();
        let berlin = model.zone_id("Europe/Berlin");
        assert!(berlin.is_some());
        let day = JAN_15_2025_S;
        // Winter, UTC+1: 03:59:59 UTC is 04:59:59 local, 04:00 UTC is 05:00 local.
        assert!(hour_fires(&model, berlin, day + 4 * HOUR_S - 1));
        assert!(!hour_fires(&model, berlin, day + 4 * HOUR_S));
        assert!(hour_fires(&model, berlin, day - HOUR_S));
        assert!(!hour_fires(&model, berlin, day - HOUR_S - 1));
        // Summer, UTC+2 (2025-07-15): 02:59:59 UTC is 04:59:59 local, 03:00 UTC is 05:00 local.
        let july_15 = 1_752_537_600;
        assert!(hour_fires(&model, berlin, july_15 + 3 * HOUR_S - 1));
        assert!(!hour_fires(&model, berlin, july_15 + 3 * HOUR_S));
        assert!(hour_fires(&model, berlin, july_15 - 2 * HOUR_S));
        assert!(!hour_fires(&model, berlin, july_15 - 2 * HOUR_S - 1));
        // The spring change, 2025-03-30 01:00 UTC: 02:59:59 UTC is 04:59:59 local after it...
        let spring = 1_743_296_400;
        assert_eq!(
            model.zone(berlin.unwrap()).unwrap().offset_s_at(spring - 1),
            3600
        );
        assert_eq!(
            model.zone(berlin.unwrap()).unwrap().offset_s_at(spring),
            7200
        );
        assert!(hour_fires(&model, berlin, spring + 2 * HOUR_S - 1));
        // ...and 03:00 UTC is 05:00 local, where a day earlier 03:00 UTC was 04:00 local.
        assert!(!hour_fires(&model, berlin, spring + 2 * HOUR_S));
        assert!(hour_fires(
            &model,
            berlin,
            spring + 2 * HOUR_S - 24 * HOUR_S
        ));
    }

    #[test]
    fn new_york_skips_and_repeats_an_hour() {
        let model = model_with_hours(r#"{"start": "01:00", "end": "02:00", "weight": 0.1}"#);
        let new_york = model.zone_id("America/New_York");
        // 2025-03-09 07:00 UTC: 02:00 EST becomes 03:00 EDT.
        let spring = 1_741_503_600;
        assert!(hour_fires(&model, new_york, spring - HOUR_S)); // 01:00 EST
        assert!(!hour_fires(&model, new_york, spring)); // 03:00 EDT
                                                        // 2025-11-02 06:00 UTC: 02:00 EDT becomes 01:00 EST; 01:xx happens twice.
        let autumn = 1_762_063_200;
        assert!(!hour_fires(&model, new_york, autumn - HOUR_S - 1)); // 00:59:59 EDT
        assert!(hour_fires(&model, new_york, autumn - HOUR_S)); // 01:00 EDT
        assert!(hour_fires(&model, new_york, autumn - 1)); // 01:59:59 EDT
        assert!(hour_fires(&model, new_york, autumn)); // 01:00 EST
        assert!(hour_fires(&model, new_york, autumn + HOUR_S - 1)); // 01:59:59 EST
        assert!(!hour_fires(&model, new_york, autumn + HOUR_S)); // 02:00 EST
    }

    #[test]
    fn a_table_holds_its_first_offset_before_it_and_its_last_after_it() {
        let model = model();
        let new_york = model
            .zone(model.zone_id("America/New_York").unwrap())
            .unwrap();
        assert_eq!(new_york.name(), "America/New_York");
        assert_eq!(new_york.offset_s_at(i64::MIN), -18000);
        assert_eq!(new_york.offset_s_at(1_704_067_199), -18000);
        assert_eq!(new_york.offset_s_at(i64::MAX), -18000);
        assert_eq!(new_york.offset_s_at(1_772_953_200), -14400);
        assert!(model.zone_id("Europe/Paris").is_none());
        // Extreme instants do not overflow local time.
        assert!(!hour_fires(
            &model,
            model.zone_id("Europe/Berlin"),
            i64::MAX
        ));
        model.assess(
            0.0,
            &facts("192.0.3.1"),
            model.zone_id("America/New_York"),
            i64::MIN,
        );
    }

    fn money_fires(model: &RiskModel, method: &str, path: &str) -> bool {
        let request = RiskFacts {
            method,
            path,
            ..facts("192.0.3.1")
        };
        let names = fired_names(model, &request, None, NOON_S);
        names.iter().any(|name| name == "money_path")
    }

    #[test]
    fn money_paths_match_whole_paths_with_wildcards() {
        let model = model();
        assert!(money_fires(&model, "POST", "/api/transfers"));
        assert!(money_fires(&model, "POST", "/api/transfers/42/confirm"));
        assert!(money_fires(&model, "POST", "/api/accounts/7/withdraw"));
        assert!(money_fires(&model, "POST", "/api/a/b/withdraw"));
        assert!(!money_fires(&model, "POST", "/api/transfer"));
        assert!(!money_fires(&model, "POST", "/v2/api/transfers"));
        assert!(!money_fires(&model, "POST", "/api/withdraw"));
        assert!(!money_fires(&model, "POST", "/api/accounts/7/withdrawals"));
        assert!(!money_fires(&model, "POST", "/api/accounts"));
    }

    #[test]
    fn money_paths_apply_to_their_methods_only() {
        let model = model();
        assert!(!money_fires(&model, "GET", "/api/transfers"));
        assert!(!money_fires(&model, "HEAD", "/api/transfers"));
        assert!(money_fires(&model, "DELETE", "/api/transfers/1"));
        assert!(money_fires(&model, "post", "/api/transfers"));
        let any_method: RiskSettings = serde_json::from_str(
            r#"{"money_paths": {"weight": 0.1, "patterns": ["/pay"]},
                "thresholds": {"medium": 0.5, "high": 0.8}}"#,
        )
        .unwrap();
        let any_method = RiskModel::build(&any_method).unwrap();
        assert!(money_fires(&any_method, "GET", "/pay"));
        assert!(!money_fires(&any_method, "GET", "/pay/"));
    }

    #[test]
    fn money_paths_ignore_case_and_take_the_canonical_path_as_text() {
        let model = model();
        assert!(money_fires(&model, "POST", "/API/Transfers"));
        assert!(money_fires(&model, "POST", "/api/x/y/withdraw"));
        // The canonical path is decoded already: an escape left in it is text, as the cell
        // serves it, and is not decoded a second time.
        assert!(!money_fires(&model, "POST", "/api/%74ransfers"));
        assert!(!money_fires(&model, "POST", "/api/accounts?/api/transfers"));
        assert!(money_fires(&model, "POST", "/api/transfers%"));
    }

    #[test]
    fn path_patterns_compile_into_anchored_parts() {
        let matches = |pattern: &str, path: &str| {
            PathPattern::compile(pattern)
                .unwrap()
                .matches(path.as_bytes())
        };
        assert!(matches("*", ""));
        assert!(matches("/a**b", "/ab"));
        assert!(matches("/a*b*c", "/abc"));
        assert!(matches("/a*b*c", "/axbxbxc"));
        assert!(!matches("/a*b*c", "/acb"));
        assert!(!matches("/ab*ba", "/aba"));
        assert!(matches("*/withdraw", "/x/withdraw"));
        assert!(matches("/exact", "/EXACT"));
        assert!(!matches("/exact", "/exact/"));
    }

    fn agent_fires(model: &RiskModel, user_agent: Option<&str>) -> Vec<String> {
        let request = RiskFacts {
            user_agent,
            ..facts("192.0.3.1")
        };
        fired_names(model, &request, None, NOON_S)
    }

    #[test]
    fn suspicious_agents_are_case_insensitive_substrings() {
        let model = model();
        assert_eq!(
            agent_fires(&model, Some("Googlebot/2.1")),
            ["suspicious_user_agent"]
        );
        assert_eq!(
            agent_fires(&model, Some("my-CRAWLER")),
            ["suspicious_user_agent"]
        );
        assert_eq!(
            agent_fires(&model, Some("AutoMated tests")),
            ["suspicious_user_agent"]
        );
        assert!(agent_fires(&model, Some("Mozilla/5.0 (Bo t)")).is_empty());
        assert!(agent_fires(&model, Some("bo")).is_empty());
        // Long agents are lowercased on the heap, with the same result.
        let long = format!("{}Bot", "x".repeat(AGENT_BUFFER_BYTES));
        assert_eq!(agent_fires(&model, Some(&long)), ["suspicious_user_agent"]);
        assert!(agent_fires(&model, Some(&long[..AGENT_BUFFER_BYTES + 2])).is_empty());
    }

    #[test]
    fn a_missing_or_blank_agent_is_its_own_factor() {
        let model = model();
        assert_eq!(agent_fires(&model, None), ["missing_user_agent"]);
        assert_eq!(agent_fires(&model, Some("")), ["missing_user_agent"]);
        assert_eq!(agent_fires(&model, Some(" \t")), ["missing_user_agent"]);
        let without: RiskSettings = serde_json::from_str(
            r#"{"suspicious_user_agents": {"weight": 0.3, "patterns": ["bot"]},
                "thresholds": {"medium": 0.5, "high": 0.8}}"#,
        )
        .unwrap();
        assert!(agent_fires(&RiskModel::build(&without).unwrap(), None).is_empty());
    }

    fn everything_fires() -> RiskFacts<'static> {
        RiskFacts {
            client: Some("203.0.113.200".parse().unwrap()),
            method: "POST",
            path: "/api/transfers",
            user_agent: Some("evil-bot/1.0"),
        }
    }

    #[test]
    fn the_score_is_clamped_at_one() {
        let model = model();
        // 0.5 + 0.3 + 0.1 + 0.1 + 0.1 + 0.3 = 1.4
        let assessment = model.assess(0.5, &everything_fires(), None, JAN_15_2025_S);
        assert_eq!(assessment.fired_count(), 5);
        assert_eq!(assessment.score_points(), 10_000);
        assert_eq!(assessment.score(), 1.0);
        assert_eq!(assessment.level(), Level::High);
    }

    #[test]
    fn the_base_is_clamped_into_zero_to_one() {
        let model = model();
        let quiet = facts("192.0.3.1");
        assert_eq!(model.assess(-0.5, &quiet, None, NOON_S).score_points(), 0);
        assert_eq!(
            model.assess(1.5, &quiet, None, NOON_S).score_points(),
            10_000
        );
        assert_eq!(
            model.assess(f32::NAN, &quiet, None, NOON_S).score_points(),
            0
        );
        assert_eq!(
            model.assess(0.123_45, &quiet, None, NOON_S).score_points(),
            1235
        );
    }

    #[test]
    fn levels_start_exactly_at_their_thresholds() {
        let model = model();
        let quiet = facts("192.0.3.1");
        let money = RiskFacts {
            method: "POST",
            path: "/api/transfers",
            ..quiet
        };
        let level = |base: f32, facts: &RiskFacts| model.assess(base, facts, None, NOON_S).level();
        assert_eq!(level(0.4999, &quiet), Level::Low);
        assert_eq!(level(0.5, &quiet), Level::Medium);
        assert_eq!(level(0.4, &money), Level::Medium);
        assert_eq!(level(0.7999, &quiet), Level::Medium);
        assert_eq!(level(0.8, &quiet), Level::High);
        // 0.7 + 0.1 is 0.7999999999999999 in binary floating point; in points it is 0.8.
        assert_eq!(level(0.7, &money), Level::High);
        assert_eq!(model.assess(0.7, &money, None, NOON_S).score_points(), 8000);
    }

    #[test]
    fn a_zero_weight_factor_fires_without_counting() {
        let settings: RiskSettings = serde_json::from_str(
            r#"{"suspicious_user_agents": {"weight": 0, "patterns": ["bot"]},
                "thresholds": {"medium": 0, "high": 1}}"#,
        )
        .unwrap();
        let model = RiskModel::build(&settings).unwrap();
        let request = RiskFacts {
            user_agent: Some("bot"),
            ..facts("192.0.3.1")
        };
        let assessment = model.assess(0.25, &request, None, NOON_S);
        assert_eq!(assessment.score_points(), 2500);
        assert_eq!(assessment.level(), Level::Medium);
        let fired = assessment.explain(&model, &request);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].weight_points, 0);
    }

    #[test]
    fn every_fired_factor_is_explained() {
        let model = model();
        let request = everything_fires();
        let berlin = model.zone_id("Europe/Berlin");
        // 2025-01-15 03:12:30 UTC is 04:12:30 in Berlin.
        let now_s = JAN_15_2025_S + 3 * HOUR_S + 12 * 60 + 30;
        let assessment = model.assess(0.1, &request, berlin, now_s);
        let fired = assessment.explain(&model, &request);
        let rendered: Vec<(FactorKind, &str, u16, &str)> = fired
            .iter()
            .map(|f| (f.kind, f.name, f.weight_points, f.reason.as_str()))
            .collect();
        assert_eq!(
            rendered,
            [
                (
                    FactorKind::HighRiskNetwork,
                    "tor-exits",
                    3000,
                    "client 203.0.113.200 is in tor-exits"
                ),
                (
                    FactorKind::HighRiskNetwork,
                    "hosting",
                    1000,
                    "client 203.0.113.200 is in hosting"
                ),
                (
                    FactorKind::UnusualHour,
                    "unusual_hour",
                    1000,
                    "04:12 local time (Europe/Berlin) is within 00:00-05:00"
                ),
                (
                    FactorKind::MoneyPath,
                    "money_path",
                    1000,
                    "POST /api/transfers matches /api/transfers*"
                ),
                (
                    FactorKind::SuspiciousUserAgent,
                    "suspicious_user_agent",
                    3000,
                    "user agent contains \"bot\""
                ),
            ]
        );
        assert_eq!(fired[0].weight(), 0.3);
        assert_eq!(assessment.score_points(), 10_000);
        let utc = model
            .assess(0.1, &request, None, now_s)
            .explain(&model, &request);
        assert_eq!(utc[2].reason, "03:12 UTC is within 00:00-05:00");
        let crawler = RiskFacts {
            user_agent: Some("A CRAWLER"),
            ..request
        };
        let fired = model
            .assess(0.0, &crawler, None, NOON_S)
            .explain(&model, &crawler);
        assert_eq!(
            fired.last().unwrap().reason,
            "user agent contains \"crawler\""
        );
        let anonymous = RiskFacts {
            user_agent: None,
            ..request
        };
        let fired = model
            .assess(0.0, &anonymous, None, NOON_S)
            .explain(&model, &anonymous);
        assert_eq!(fired.last().unwrap().reason, "no user agent");
        assert_eq!(fired.last().unwrap().kind.code(), "missing_user_agent");
        assert_eq!(Level::Medium.as_str(), "MEDIUM");
    }

    #[test]
    fn every_settings_error_is_listed_with_its_path() {
        let errors = build_errors(
            r#"{
            "high_risk_networks": [
                {"name": "ok", "weight": 0.1, "cidrs": ["10.0.0.0/8"]},
                {"name": "bad", "weight": 1.5, "cidrs": ["10.0.0.0/33", "10.0.0.1/8", "::ffff:10.0.0.0/104",
                                                       "10.0.0.0/", "10.0.0.0/+8", "example.com", "::/129"]},
                {"name": "ok", "weight": 0.12345, "cidrs": []},
                {"name": " ", "weight": -0.1, "cidrs": ["2001:db8::1/64"]}
            ],
            "unusual_hours": {"start": "24:00", "end": "5:00", "weight": 0.1},
            "money_paths": {"weight": 0.1, "patterns": ["api/transfers", "/a?b"], "methods": ["GET", "PO ST"]},
            "suspicious_user_agents": {"weight": 0.3, "patterns": ["bot", ""], "missing_weight": 2},
            "thresholds": {"medium": 0.9, "high": 0.8},
            "zones": {"Europe/Berlin": [[0, 3600], [0, 7200], [10, 90000]], "Etc/Empty": []}
        }"#,
        );
        let expected = [
            "risk.high_risk_networks[1].weight: must be between 0 and 1, got 1.5",
            "risk.high_risk_networks[1].cidrs[0]: not a CIDR: \"10.0.0.0/33\"",
            "risk.high_risk_networks[1].cidrs[1]: \"10.0.0.1/8\" has host bits set (the network is 10.0.0.0/8)",
            "risk.high_risk_networks[1].cidrs[2]: \"::ffff:10.0.0.0/104\" is IPv4-mapped; clients are matched as IPv4, so write it as IPv4",
            "risk.high_risk_networks[1].cidrs[3]: not a CIDR: \"10.0.0.0/\"",
            "risk.high_risk_networks[1].cidrs[4]: not a CIDR: \"10.0.0.0/+8\"",
            "risk.high_risk_networks[1].cidrs[5]: not a CIDR: \"example.com\"",
            "risk.high_risk_networks[1].cidrs[6]: not a CIDR: \"::/129\"",
            "risk.high_risk_networks[2].name: \"ok\" is already the name of high_risk_networks[0]",
            "risk.high_risk_networks[2].weight: must be a multiple of 0.0001, got 0.12345",
            "risk.high_risk_networks[3].name: must not be empty",
            "risk.high_risk_networks[3].weight: must be between 0 and 1, got -0.1",
            "risk.high_risk_networks[3].cidrs[0]: \"2001:db8::1/64\" has host bits set (the network is 2001:db8::/64)",
            "risk.unusual_hours.start: not a time of day \"HH:MM\" from 00:00 to 23:59: \"24:00\"",
            "risk.unusual_hours.end: not a time of day \"HH:MM\" from 00:00 to 23:59: \"5:00\"",
            "risk.money_paths.patterns[0]: must start with \"/\" or \"*\": \"api/transfers\"",
            "risk.money_paths.patterns[1]: must not contain \"?\" (the query is not matched): \"/a?b\"",
            "risk.money_paths.methods[1]: not an HTTP method: \"PO ST\"",
            "risk.suspicious_user_agents.missing_weight: must be between 0 and 1, got 2",
            "risk.suspicious_user_agents.patterns[1]: must not be blank",
            "risk.thresholds: medium (0.9) must not be above high (0.8)",
            "risk.zones[\"Etc/Empty\"]: must hold at least one [utc_seconds, offset_seconds] pair",
            "risk.zones[\"Europe/Berlin\"][1]: 0 is not after the previous transition (0)",
            "risk.zones[\"Europe/Berlin\"][2]: offset 90000 s is not within a day of UTC",
        ];
        assert_eq!(errors, expected);
    }

    #[test]
    fn empty_and_degenerate_factors_are_refused() {
        let errors = build_errors(
            r#"{"unusual_hours": {"start": "05:00", "end": "05:00", "weight": 0.1},
                "money_paths": {"weight": 0.1, "patterns": [], "methods": []},
                "suspicious_user_agents": {"weight": 0.3, "patterns": []},
                "thresholds": {"medium": 1.01, "high": 0.8}}"#,
        );
        assert_eq!(
            errors,
            [
                "risk.unusual_hours: start and end are both \"05:00\"; the window would be empty",
                "risk.money_paths.patterns: must list at least one pattern",
                "risk.money_paths.methods: must list at least one method (omit it for every method)",
                "risk.suspicious_user_agents: lists no patterns and no missing_weight, so it can never fire",
                "risk.thresholds.medium: must be between 0 and 1, got 1.01",
            ]
        );
        let too_many = (0..=MAX_NETWORK_LISTS)
            .map(|i| format!(r#"{{"name": "l{i}", "weight": 0.1, "cidrs": []}}"#))
            .collect::<Vec<_>>()
            .join(",");
        let errors = build_errors(&format!(
            r#"{{"high_risk_networks": [{too_many}], "thresholds": {{"medium": 0.5, "high": 0.8}}}}"#
        ));
        assert_eq!(
            errors,
            ["risk.high_risk_networks: at most 60 lists, got 61"]
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let settings = serde_json::from_str::<RiskSettings>(
            r#"{"thresholds": {"medium": 0.5, "high": 0.8, "critical": 0.9}}"#,
        );
        assert!(settings
            .unwrap_err()
            .to_string()
            .contains("unknown field `critical`"));
        let settings = serde_json::from_str::<RiskSettings>(
            r#"{"thresholds": {"medium": 0.5, "high": 0.8}, "geo": []}"#,
        );
        assert!(settings
            .unwrap_err()
            .to_string()
            .contains("unknown field `geo`"));
    }

    #[test]
    fn assessments_are_small_and_copy() {
        fn is_copy<T: Copy>() {}
        is_copy::<Assessment>();
        assert!(std::mem::size_of::<Assessment>() <= 32);
        assert_eq!(
            canonical("::ffff:1.2.3.4".parse().unwrap()),
            IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4))
        );
    }
}
