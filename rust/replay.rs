//! Replaying an audit record: what the configuration in force today would decide for the request
//! the record describes, and what differs from what was decided then.
//!
//! A record keeps no token, so what only the token decided (its signature, expiry, revocation) is
//! not replayed: the record's customer and step-up stand. What the configuration decides is
//! decided again at the record's time: the profile (tier, region, flags), the risk score, level
//! and factors, step-up at HIGH, and each cell's tier, region and compliance. What was live state
//! then (health, breakers, in-flight counts, the customer's quota) is taken from the record, and
//! least-loaded placement is not repeated: the recorded cell must still be eligible. With no
//! cell of the customer's tier eligible, the region's other cells are, as the fallback stage.

use crate::reason::Reason;
use crate::risk::Level;
use crate::router::{RequestFacts, Router};
use crate::selection::Request;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::IpAddr;

/// The rules that were live state when the record was written, taken from it as they were.
const LIVE_RULES: [&str; 3] = ["health", "breaker", "max_in_flight"];

#[derive(Debug, Deserialize)]
pub struct RecordedRisk {
    pub level: String,
    #[serde(default)]
    pub factors: Vec<String>,
}

/// What replay reads of a request record (FORMAT.md, "Records").
#[derive(Debug, Deserialize)]
pub struct Recorded {
    pub event: String,
    pub time: String,
    pub request_id: Option<String>,
    pub customer: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub client: Option<String>,
    pub user_agent: Option<String>,
    pub tier: Option<String>,
    pub region: Option<String>,
    pub risk: Option<RecordedRisk>,
    pub step_up: Option<bool>,
    #[serde(default)]
    pub cells: Vec<(String, Option<String>)>,
    pub cell: Option<String>,
    pub outcome: Option<String>,
    pub reason: Option<String>,
    #[serde(default)]
    pub latency_us: u64,
}

/// Seconds since the epoch of a record's `time` (`2026-12-01T21:42:55.123456Z`).
fn epoch_s(time: &str) -> Option<u64> {
    let b = time.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |from: usize, len: usize| time.get(from..from + len)?.parse::<i64>().ok();
    let (y, m, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hh, mm, ss) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// What `router` decides today for the request `recorded` describes, beside what was decided.
pub fn replay(router: &Router, recorded: &Recorded) -> Value {
    let original = json!({
        "outcome": recorded.outcome,
        "reason": recorded.reason,
        "tier": recorded.tier,
        "region": recorded.region,
        "risk_level": recorded.risk.as_ref().map(|r| &r.level),
        "risk_factors": recorded.risk.as_ref().map(|r| &r.factors),
        "cell": recorded.cell,
    });
    let mut out = json!({"request_id": recorded.request_id, "original": original});
    let not_replayable = |out: &mut Value, why: String| {
        out["replayable"] = false.into();
        out["why"] = why.into();
    };
    if recorded.event != "request" {
        not_replayable(
            &mut out,
            format!("a {} record is not a request", recorded.event),
        );
        return out;
    }
    // Only the token (every 401) or the raw path decided these, and records keep neither.
    let by_token_or_path = |reason: &Reason| reason.is_auth() || *reason == Reason::BadPath;
    if let Some(reason) = recorded
        .reason
        .as_deref()
        .and_then(Reason::from_code)
        .filter(by_token_or_path)
    {
        not_replayable(
            &mut out,
            format!(
                "{} was decided by the token or the path, which records do not keep",
                reason.code()
            ),
        );
        return out;
    }
    let (Some(customer), Some(method), Some(path), Some(at_s)) = (
        recorded.customer.as_deref(),
        recorded.method.as_deref(),
        recorded.path.as_deref(),
        epoch_s(&recorded.time),
    ) else {
        not_replayable(
            &mut out,
            "the record lacks its customer, method, path or time".into(),
        );
        return out;
    };
    // The decision was made at arrival: the record's time less its latency.
    let at_s = at_s.saturating_sub(recorded.latency_us / 1_000_000);
    let mut incomplete = Vec::new();
    let client = match recorded.client.as_deref() {
        Some(text) => text.parse::<IpAddr>().ok().or_else(|| {
            incomplete.push("client (hashed: network factors are not compared)");
            None
        }),
        None => {
            incomplete.push("client (not kept)");
            None
        }
    };
    let user_agent = match recorded.user_agent.as_deref() {
        Some(agent) if agent.starts_with("hmac-sha256:") => {
            incomplete.push("user_agent (hashed: agent factors are not compared)");
            None
        }
        agent => agent,
    };
    out["replayable"] = true.into();
    out["incomplete"] = incomplete.clone().into();
    let today = decide_today(
        router, customer, method, path, client, user_agent, recorded, at_s,
    );
    let compared = |key: &str| match key {
        "risk_factors" => !incomplete
            .iter()
            .any(|i| i.starts_with("client") || i.starts_with("user_agent")),
        _ => true,
    };
    let mut differences = Vec::new();
    for key in [
        "outcome",
        "reason",
        "tier",
        "region",
        "risk_level",
        "risk_factors",
        "cell",
    ] {
        let (then, now) = (&out["original"][key], &today[key]);
        if compared(key) && then != now && !(key == "cell" && today["cell_eligible"] == true) {
            differences.push(format!("{key}: {then} then, {now} today"));
        }
    }
    out["same"] = differences.is_empty().into();
    out["differences"] = differences.into();
    out["today"] = today;
    out
}

#[allow(clippy::too_many_arguments)]
fn decide_today(
    router: &Router,
    customer: &str,
    method: &str,
    path: &str,
    client: Option<IpAddr>,
    user_agent: Option<&str>,
    recorded: &Recorded,
    at_s: u64,
) -> Value {
    let refused = |reason: &str, extra: Value| {
        let mut today = json!({"outcome": "refused", "reason": reason});
        if let (Value::Object(today), Value::Object(extra)) = (&mut today, extra) {
            today.extend(extra);
        }
        today
    };
    let profile = match router.profile(customer) {
        Ok(profile) => profile,
        Err(_) => {
            return refused(
                Reason::CustomerNotFound.code(),
                json!({"tier": null, "region": null}),
            )
        }
    };
    let catalog = router.catalog();
    let facts = RequestFacts {
        method,
        path,
        authorization: None,
        client,
        user_agent,
    };
    let risk = router.assess(&facts, &profile, at_s);
    let level = risk.map(|r| r.level());
    let mut today = json!({
        "tier": catalog.tier_name(profile.tier),
        "region": catalog.region_name(profile.region),
        "risk_level": level.map(Level::as_str),
        "risk_factors": risk.map(|r| r.fired_kinds().map(|k| k.code()).collect::<Vec<_>>()),
    });
    let set = |today: &mut Value, key: &str, value: Value| today[key] = value;
    // A refusal the record cannot decide again stands: the quota and its store were live
    // state, and the body's refusals (or a client gone) came after the decision.
    let standing = recorded.reason.as_deref().is_some_and(|code| {
        code == "client_disconnected"
            || Reason::from_code(code).is_some_and(|reason| {
                matches!(reason, Reason::RateLimited | Reason::QuotaUnavailable)
                    || reason.made_after_deciding()
            })
    });
    if standing {
        set(&mut today, "outcome", recorded.outcome.clone().into());
        set(&mut today, "reason", recorded.reason.clone().into());
        set(&mut today, "cell", Value::Null);
        return today;
    }
    let high = level == Some(Level::High);
    if high && recorded.step_up != Some(true) {
        set(&mut today, "outcome", "refused".into());
        set(&mut today, "reason", Reason::StepUpRequired.code().into());
        set(&mut today, "cell", Value::Null);
        return today;
    }
    let request = Request {
        customer,
        tier: profile.tier,
        region: profile.region,
        required: router.compliance().required(profile.flags),
        prefer_maximum: high,
        now_us: at_s * 1_000_000,
    };
    let live: Vec<(&str, &str)> = recorded
        .cells
        .iter()
        .filter_map(|(id, rule)| {
            rule.as_deref()
                .filter(|r| LIVE_RULES.contains(r))
                .map(|r| (id.as_str(), r))
        })
        .collect();
    // A cell's rule today: compliance as configured now, live state as recorded then.
    let rule_of = |cell: &crate::cells::Cell| {
        if router
            .compliance()
            .first_unmet(cell, request.required)
            .is_some()
        {
            Some("compliance")
        } else {
            live.iter()
                .find(|(id, _)| *id == &*cell.id)
                .map(|(_, rule)| *rule)
        }
    };
    let mut cells = Vec::new();
    let mut eligible = Vec::new();
    for cell in router.cells().group(profile.tier, profile.region) {
        let rule = rule_of(cell);
        if rule.is_none() {
            eligible.push(cell.clone());
        }
        cells.push(json!([&*cell.id, rule]));
    }
    // At HIGH risk a maximum-encryption cell of the group is preferred when one is eligible.
    let preferred: Vec<_> = eligible
        .iter()
        .filter(|c| high && c.encryption == crate::cells::Encryption::Maximum)
        .cloned()
        .collect();
    // With none of the group eligible, any eligible cell of the region (the fallback stage).
    let fallback = eligible.is_empty();
    if fallback {
        let others = router.cells().region(profile.region).iter();
        for cell in others.filter(|cell| cell.tier != profile.tier) {
            let rule = rule_of(cell);
            if rule.is_none() {
                eligible.push(cell.clone());
            }
            cells.push(json!([&*cell.id, rule]));
        }
    }
    let candidates = if preferred.is_empty() {
        &eligible
    } else {
        &preferred
    };
    let recorded_cell = recorded.cell.as_deref();
    let cell_eligible = recorded_cell.is_some_and(|id| candidates.iter().any(|c| &*c.id == id));
    set(&mut today, "cells", cells.into());
    set(&mut today, "fallback", fallback.into());
    set(&mut today, "cell_eligible", cell_eligible.into());
    match candidates.first() {
        None => {
            set(&mut today, "outcome", "refused".into());
            set(&mut today, "reason", Reason::NoEligibleCell.code().into());
            set(&mut today, "cell", Value::Null);
        }
        Some(first) => {
            // Routed today; the cell that answered then stands when it is still eligible.
            let outcome = match recorded.outcome.as_deref() {
                Some("refused") | None => "forwarded",
                Some(outcome) => outcome,
            };
            let reason = match recorded.outcome.as_deref() {
                Some("refused") | None => Value::Null,
                _ => recorded.reason.as_deref().into(),
            };
            set(&mut today, "outcome", outcome.into());
            set(&mut today, "reason", reason);
            let cell = if cell_eligible {
                recorded_cell.unwrap_or(&first.id)
            } else {
                &first.id
            };
            set(&mut today, "cell", cell.into());
        }
    }
    today
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_record_times() {
        assert_eq!(epoch_s("2026-12-01T21:42:55.123456Z"), Some(1_796_161_375));
        assert_eq!(epoch_s("1970-01-01T00:00:00.000000Z"), Some(0));
        assert_eq!(epoch_s("2000-02-29T00:00:00.000001Z"), Some(951_782_400));
        assert_eq!(epoch_s("yesterday"), None);
    }
}
