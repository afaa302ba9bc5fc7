//! What one record holds, as the core knows it, and its line (FORMAT.md, "Records").
//!
//! A record is plain owned data, built from what the decision and the forward already hold; the
//! writer thread turns it into its line, so no JSON is made on the request's thread.

use crate::audit::privacy::Privacy;
use crate::risk::Assessment;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

/// How a request ended, as its record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    /// The cell answered.
    Forwarded,
    /// The gateway answered; nothing was sent to a cell.
    Refused,
    /// Sent, without a usable answer.
    Failed,
    /// The client went away first.
    Cancelled,
}

impl RecordOutcome {
    pub fn name(self) -> &'static str {
        match self {
            RecordOutcome::Forwarded => "forwarded",
            RecordOutcome::Refused => "refused",
            RecordOutcome::Failed => "failed",
            RecordOutcome::Cancelled => "cancelled",
        }
    }
}

/// The status a cancelled request's record carries: nothing was answered (nginx's 499).
pub const CLIENT_CLOSED: u16 = 499;

/// One request, from arrival to answer.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub arrived_us: u64,
    pub request_id: String,
    pub trace_id: Option<u128>,
    pub customer: Option<Arc<str>>,
    pub method: Box<str>,
    /// The canonical path; none when the target was refused.
    pub path: Option<Box<str>>,
    pub client: Option<IpAddr>,
    pub user_agent: Option<Box<str>>,
    pub tier: Option<u16>,
    pub region: Option<u16>,
    pub risk: Option<Assessment>,
    /// Asked only at HIGH risk: whether the token proved step-up.
    pub step_up: Option<bool>,
    /// Every cell considered (by index) and the rule that excluded it.
    pub cells: Vec<(usize, Option<&'static str>)>,
    /// The cell the request went to last.
    pub cell: Option<usize>,
    pub retries: u32,
    pub cell_status: Option<u16>,
    pub status: u16,
    pub outcome: RecordOutcome,
    pub reason: Option<&'static str>,
}

/// One admin action, recorded before it takes effect.
#[derive(Debug, Clone)]
pub struct AdminRecord {
    pub admin: String,
    pub action: String,
    /// The action's target, a JSON object as the admin API wrote it.
    pub target_json: String,
    pub status: u16,
    pub outcome: String,
    pub reason: Option<String>,
}

/// What is recorded.
#[derive(Debug, Clone)]
pub enum Event {
    Request(Box<RequestRecord>),
    Admin(AdminRecord),
}

/// A record waiting for its place in the chain: its time and what happened.
#[derive(Debug, Clone)]
pub struct Record {
    pub time_us: u64,
    pub event: Event,
}

/// The names records give the core's ids: tiers, regions, cells and their encryption levels.
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub tiers: Vec<String>,
    pub regions: Vec<String>,
    /// By cell index: id and encryption level.
    pub cells: Vec<(Arc<str>, &'static str)>,
}

/// Appends `text` as a JSON string.
fn string(out: &mut String, text: &str) {
    let plain = text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
    if plain {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        // serde_json escapes exactly as FORMAT.md's compact JSON does (orjson agrees).
        out.push_str(&serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into()));
    }
}

fn optional(out: &mut String, text: Option<&str>) {
    match text {
        Some(text) => string(out, text),
        None => out.push_str("null"),
    }
}

fn key(out: &mut String, name: &str) {
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":");
}

/// A score in points (1/10 000) as the shortest decimal: 3500 -> `0.35`, 0 -> `0.0`.
fn score(out: &mut String, points: u16) {
    let whole = points / 10_000;
    let mut fraction = format!("{:04}", points % 10_000);
    while fraction.len() > 1 && fraction.ends_with('0') {
        fraction.pop();
    }
    let _ = write!(out, "{whole}.{fraction}");
}

impl Record {
    /// Appends the part of the line after `"event":`, up to the closing brace included.
    pub fn write_body(&self, out: &mut String, names: &Names, privacy: &Privacy) {
        match &self.event {
            Event::Request(r) => r.write(out, self.time_us, names, privacy),
            Event::Admin(a) => a.write(out),
        }
        out.push('}');
    }
}

impl RequestRecord {
    fn write(&self, out: &mut String, time_us: u64, names: &Names, privacy: &Privacy) {
        out.push_str("\"request\"");
        key(out, "request_id");
        string(out, &self.request_id);
        key(out, "trace_id");
        match self.trace_id {
            Some(id) => {
                let _ = write!(out, "\"{id:032x}\"");
            }
            None => out.push_str("null"),
        }
        key(out, "customer");
        optional(out, self.customer.as_deref());
        key(out, "method");
        string(out, &self.method);
        key(out, "path");
        optional(out, self.path.as_deref());
        key(out, "client");
        let client = self.client.map(|ip| ip.to_string());
        optional(out, privacy.client(client.as_deref()).as_deref());
        key(out, "user_agent");
        optional(
            out,
            privacy.user_agent(self.user_agent.as_deref()).as_deref(),
        );
        key(out, "tier");
        optional(
            out,
            self.tier
                .and_then(|t| names.tiers.get(t as usize))
                .map(String::as_str),
        );
        key(out, "region");
        optional(
            out,
            self.region
                .and_then(|r| names.regions.get(r as usize))
                .map(String::as_str),
        );
        key(out, "risk");
        match &self.risk {
            Some(risk) => {
                out.push_str("{\"score\":");
                score(out, risk.score_points());
                out.push_str(",\"level\":");
                string(out, risk.level().as_str());
                out.push_str(",\"factors\":[");
                for (i, factor) in risk.fired_kinds().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    string(out, factor.code());
                }
                out.push_str("]}");
            }
            None => out.push_str("null"),
        }
        key(out, "step_up");
        out.push_str(match self.step_up {
            Some(true) => "true",
            Some(false) => "false",
            None => "null",
        });
        key(out, "cells");
        out.push('[');
        for (i, (index, excluded)) in self.cells.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('[');
            optional(out, names.cells.get(*index).map(|(id, _)| &**id));
            out.push(',');
            optional(out, *excluded);
            out.push(']');
        }
        out.push(']');
        let cell = self.cell.and_then(|index| names.cells.get(index));
        key(out, "cell");
        optional(out, cell.map(|(id, _)| &**id));
        key(out, "encryption");
        optional(out, cell.map(|(_, encryption)| *encryption));
        let _ = write!(out, ",\"retries\":{}", self.retries);
        key(out, "cell_status");
        match self.cell_status {
            Some(status) => {
                let _ = write!(out, "{status}");
            }
            None => out.push_str("null"),
        }
        let _ = write!(
            out,
            ",\"status\":{},\"latency_us\":{}",
            self.status,
            time_us.saturating_sub(self.arrived_us)
        );
        key(out, "outcome");
        string(out, self.outcome.name());
        key(out, "reason");
        optional(out, self.reason);
    }
}

impl AdminRecord {
    fn write(&self, out: &mut String) {
        out.push_str("\"admin\"");
        key(out, "admin");
        string(out, &self.admin);
        key(out, "action");
        string(out, &self.action);
        key(out, "target");
        out.push_str(&self.target_json);
        let _ = write!(out, ",\"status\":{}", self.status);
        key(out, "outcome");
        string(out, &self.outcome);
        key(out, "reason");
        optional(out, self.reason.as_deref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_print_as_the_shortest_decimal() {
        for (points, text) in [
            (0, "0.0"),
            (3500, "0.35"),
            (10_000, "1.0"),
            (1, "0.0001"),
            (8000, "0.8"),
        ] {
            let mut out = String::new();
            score(&mut out, points);
            assert_eq!(out, text);
        }
    }
}
