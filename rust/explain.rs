//! Every decision can explain itself: the token, the profile, the rate limit, each factor of the
//! risk score, step-up, every cell and the first rule that excluded it, and why the chosen cell
//! won. Nothing is counted or taken: no quota is spent, no breaker permit or cell slot held.

use crate::ingress::Ingress;
use crate::ratelimit;
use crate::reason::{Reason, Refusal};
use crate::router::{risk_facts, Router};
use crate::selection::{Request, Selector, Stage, TierPlacement};
use crate::state::Customer;
use serde_json::{json, Value};

/// The explanation of what `router.decide(request)` would decide now for the request that sent
/// `sent_path` and that `ingress` made sense of, as JSON.
pub fn explain(router: &Router, sent_path: &str, ingress: &Ingress) -> Value {
    let now_us = router.clock().now_us();
    let now_s = now_us / 1_000_000;
    let mut out = json!({
        "request": {
            "method": ingress.method,
            "path": ingress.path.as_ref().ok().map(|p| p.path()),
            "client": ingress.origin.client.map(|ip| ip.to_string()),
            "user_agent": ingress.user_agent,
            "at_s": now_s,
            "trace_id": ingress.trace.trace_id_hex(),
        },
    });
    let canonical = ingress.path.as_ref().ok().map(|p| p.path());
    if canonical != Some(sent_path) {
        out["request"]["sent_path"] = sent_path.into();
    }
    if !ingress.origin.via.is_empty() {
        out["request"]["via"] = ingress
            .origin
            .via
            .iter()
            .map(|ip| ip.to_string())
            .collect::<Vec<_>>()
            .into();
    }
    let facts = match ingress.facts() {
        Ok(facts) => facts,
        Err(refusal) => {
            out["path"] =
                json!({"ok": false, "reason": refusal.reason.code(), "detail": refusal.detail});
            return finish(out, Err(refusal));
        }
    };
    let request = &facts;
    let verified = match router
        .verifier()
        .verify_header(request.authorization, now_s)
    {
        Ok(verified) => verified,
        Err(refusal) => {
            out["token"] =
                json!({"ok": false, "reason": refusal.reason.code(), "detail": refusal.detail});
            return finish(out, Err(refusal));
        }
    };
    out["token"] = json!({
        "ok": true,
        "customer": &*verified.customer,
        "jti": verified.jti.as_deref(),
        "issued_at_s": verified.issued_at_s,
    });
    let profile = match router.profile(&verified.customer) {
        Ok(profile) => profile,
        Err(refusal) => return finish(out, Err(refusal)),
    };
    let catalog = router.catalog();
    let flags: Vec<String> = router
        .profiles()
        .read()
        .map(|table| {
            table
                .flag_names(profile.flags)
                .into_iter()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    out["profile"] = json!({
        "tier": catalog.tier_name(profile.tier),
        "region": catalog.region_name(profile.region),
        "base_risk": profile.base_risk,
        "flags": flags,
        "timezone": profile.zone.and_then(|z| router.risk_model()?.zone(z)).map(|z| z.name()),
    });

    // A refusal after the profile is known still shows the cells: the first one found stands.
    let mut refused: Option<Refusal> = None;
    if let Some(quota) = router.quota(profile.tier) {
        let verdict = router.limiter().peek(
            Customer {
                id: &verified.customer,
                key: verified.customer_key,
            },
            quota,
            now_us,
        );
        out["rate_limit"] = json!({
            "policy": ratelimit::policy_field(quota).to_string(),
            "ratelimit": ratelimit::ratelimit_field(quota, &verdict).to_string(),
            "allowed": verdict.is_allowed(),
        });
        refused = router.rate_refusal(profile.tier, verdict);
    } else {
        out["rate_limit"] = Value::Null;
    }

    let assessment = router.assess(request, &profile, now_s);
    let high = assessment.is_some_and(|a| a.level() == crate::risk::Level::High);
    if let (Some(assessment), Some(model)) = (&assessment, router.risk_model()) {
        let factors: Vec<Value> = assessment
            .explain(model, &risk_facts(request))
            .into_iter()
            .map(|f| {
                json!({"kind": f.kind.code(), "name": f.name, "weight": f.weight(), "reason": f.reason})
            })
            .collect();
        out["risk"] = json!({
            "base": profile.base_risk,
            "score": assessment.score(),
            "level": assessment.level().as_str(),
            "factors": factors,
        });
    } else {
        out["risk"] = Value::Null;
    }
    match &assessment {
        Some(assessment) if high => {
            let proof = router.verifier().step_up(&verified, now_s);
            out["step_up"] =
                json!({"required": true, "satisfied": proof.is_ok(), "missing": proof.err()});
            if let Err(refusal) = router.require_step_up(assessment, &verified, request, now_s) {
                refused.get_or_insert(refusal);
            }
        }
        _ => out["step_up"] = json!({"required": false}),
    }

    let selection = Request {
        customer: &verified.customer,
        tier: profile.tier,
        region: profile.region,
        required: router.compliance().required(profile.flags),
        prefer_maximum: high,
        now_us,
    };
    let placement = router.selector().placement(profile.tier);
    out["placement"] = json!(placement.name());
    out["cells"] = Value::Array(
        router
            .cells()
            .all()
            .iter()
            .map(|cell| {
                let exclusion = Selector::exclusion(cell, &selection, router.compliance(), true);
                let in_fallback = exclusion.as_ref().is_some_and(|e| e.rule() == "tier")
                    && Selector::exclusion(cell, &selection, router.compliance(), false).is_none();
                json!({
                    "id": &*cell.id,
                    "tier": catalog.tier_name(cell.tier),
                    "region": catalog.region_name(cell.region),
                    "encryption": cell.encryption.name(),
                    "in_flight": cell.load.in_flight(),
                    "capacity": cell.capacity,
                    "excluded_by": exclusion.as_ref().map(|e| e.rule()),
                    "detail": exclusion.as_ref().map(|e| e.describe(catalog)),
                    "fallback_candidate": in_fallback,
                })
            })
            .collect(),
    );
    match router
        .selector()
        .preview(&selection, router.cells(), router.compliance())
    {
        Some((cell, stage, placed_by)) => {
            let why = match (stage, placed_by) {
                (Stage::PreferredMaximum, _) => {
                    "risk is HIGH: a maximum-encryption cell of the tier is preferred".to_owned()
                }
                (Stage::Fallback, _) => format!(
                    "no {} cell in {} is eligible: fallback to the least loaded eligible cell of the region",
                    catalog.tier_name(profile.tier),
                    catalog.region_name(profile.region)
                ),
                (Stage::Primary, TierPlacement::Sticky) => {
                    "sticky: the highest capacity-weighted rendezvous score among the eligible cells"
                        .to_owned()
                }
                (Stage::Primary, TierPlacement::LeastLoaded) => format!(
                    "least loaded: {}/{} in flight is the lowest among the eligible cells",
                    cell.load.in_flight(),
                    cell.capacity
                ),
            };
            out["chosen"] = json!({"id": &*cell.id, "stage": stage_name(stage), "why": why});
            finish(out, refused.map_or(Ok(()), Err))
        }
        None => {
            out["chosen"] = Value::Null;
            let refusal = refused.unwrap_or_else(|| {
                Refusal::new(
                    Reason::NoEligibleCell,
                    format!(
                        "no eligible cell in region {} (see cells)",
                        catalog.region_name(profile.region)
                    ),
                )
            });
            finish(out, Err(refusal))
        }
    }
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::PreferredMaximum => "preferred_maximum",
        Stage::Primary => "primary",
        Stage::Fallback => "fallback",
    }
}

fn finish(mut out: Value, outcome: Result<(), Refusal>) -> Value {
    out["decision"] = match outcome {
        Ok(()) => json!({"ok": true, "status": 200}),
        Err(refusal) => json!({
            "ok": false,
            "status": refusal.reason.status(),
            "reason": refusal.reason.code(),
            "detail": refusal.detail,
        }),
    };
    out
}
