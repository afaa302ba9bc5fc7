//! `Router`: decide in the core, forward through the core, inspect live cell state.

use crate::audit::{AdminRecord, Draft, Event, Record, Ticket, Trail, Unavailable};
use crate::cells::Cell;
use crate::forward::client::CellClient;
use crate::forward::probe::ProbeClient;
use crate::forward::request::build_request;
use crate::forward::retry;
use crate::forward::Outbound;
use crate::health::HealthChecker;
use crate::ingress::{Arrival, Ingress};
use crate::profiles::ProfileRecord;
use crate::py::bridge::{Outcome, Pending, PyBridge};
use crate::py::clock::PyClock;
use crate::py::decision::{problem_triple, CanonicalTarget, OwnedRiskFacts, PyDecision, Verdict};
use crate::py::errors::CoreConfigError;
use crate::reason::{Reason, Refusal};
use crate::request_id::RequestId;
use crate::router::{Notes, Outcome as CellOutcome, Route, Router};
use crate::runtime::runtime;
use crate::settings::CoreSettings;
use crate::state::redis::SharedRevocation;
use crate::trace::TraceContext;
use bytes::Bytes;
use pyo3::exceptions::{PyKeyError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

/// The hot path: compiled configuration, profiles, cells, and the client that forwards to them.
#[pyclass(name = "Router", frozen, module = "cellgate._core")]
pub struct PyRouter {
    core: Arc<Router>,
    /// The pooled client every forward goes through.
    client: Arc<CellClient>,
    probes: Arc<ProbeClient>,
    health: Mutex<Option<HealthChecker>>,
}

/// The `(name, value)` string pairs of a header list, borrowed from Python.
fn text_pairs<'a>(
    headers: &'a [(Bound<'_, PyString>, Bound<'_, PyString>)],
) -> PyResult<Vec<(&'a str, &'a str)>> {
    headers
        .iter()
        .map(|(name, value)| Ok((name.to_str()?, value.to_str()?)))
        .collect()
}

impl PyRouter {
    /// Sends `outbound` to `route`'s cell on the worker's tokio thread; returns the future of its
    /// answer, resolved on the bridge's loop (in strict audit mode, once its record is durable).
    fn start_forward(
        &self,
        py: Python<'_>,
        bridge: &PyBridge,
        mut route: Route,
        request_id: String,
        outbound: Outbound<'_>,
        mut draft: Option<Draft>,
    ) -> PyResult<Py<PyAny>> {
        let tier = self.core.catalog().tier_name(route.tier);
        let request = build_request(&route, tier, outbound, &request_id);
        let trace = route.trace;
        let (future, pending) = bridge.pending(py, request_id.clone(), trace)?;
        let core = self.core.clone();
        let client = self.client.clone();
        let cancel = bridge.cancellation(&future);
        let work = async move {
            let settled = match request {
                Ok(request) => core.settle_rate(&mut route).await.map(|()| request),
                Err(refusal) => Err(refusal),
            };
            // The cell's time starts now: reading the client's body, or waiting for a quota's
            // verdict, is not the cell's slowness.
            route.started_us = core.clock().now_us();
            let fields = core.rate_fields(route.rate);
            let (result, sent) = match settled {
                Ok(request) => {
                    // On its way to its cell: recorded with it from now, should it be cancelled.
                    if let Some(record) = draft.as_mut().and_then(Draft::record) {
                        record.cell = Some(route.cell().index);
                    }
                    let (result, attempts, cell) =
                        retry::forward(&core, &client, route, request, &request_id).await;
                    if let Some(record) = draft.as_mut().and_then(Draft::record) {
                        record.retries = attempts.saturating_sub(1);
                        record.cell = Some(cell);
                    }
                    (result, true)
                }
                Err(refusal) => {
                    // The client's request was bad (or could not be signed), or over its quota:
                    // nothing to count against the cell.
                    drop(route);
                    (Err(refusal), false)
                }
            };
            if let Some(draft) = &mut draft {
                draft.answered(&result, sent);
            }
            let outcome = match result {
                Ok(answer) => Outcome::Answer {
                    answer,
                    request_id,
                    fields,
                },
                Err(refusal) => Outcome::Refused {
                    refusal,
                    request_id,
                    trace,
                },
            };
            answer_when_recorded(draft, pending, outcome, trace);
        };
        runtime().spawn(async move {
            tokio::select! {
                biased;
                // The client went away: dropping the forward closes its connection to the cell
                // and gives back the slot and the permit, counting nothing against the cell;
                // its record says it was cancelled.
                () = cancel.notified() => {}
                () = work => {}
            }
        });
        Ok(future)
    }

    /// The request's audit record under way (with a ticket): what the decision learnt, and its
    /// refusal (its cell is recorded once the request leaves for it).
    fn draft(
        &self,
        ticket: Option<Ticket>,
        ingress: &Ingress,
        request_id: &RequestId,
        arrived_us: u64,
        notes: Notes,
        decided: Result<(), &Refusal>,
    ) -> Option<Draft> {
        let clock = self.core.clock().clone();
        let mut draft = Draft::new(ticket?, ingress, request_id.as_str(), arrived_us, clock);
        draft.note(notes);
        if let Err(refusal) = decided {
            draft.refused(refusal);
        }
        Some(draft)
    }

    /// A ticket for the request's record, when the trail is configured; Err: the trail cannot
    /// take one (fail-closed), and the request is refused 503 audit_unavailable.
    fn audit_ticket(&self) -> Result<Option<Ticket>, Refusal> {
        match self.core.audit().map(Trail::ticket) {
            None => Ok(None),
            Some(Ok(ticket)) => Ok(Some(ticket)),
            Some(Err(Unavailable)) => Err(audit_unavailable()),
        }
    }

    /// The answer of a refusal made before any forward: the problem triple, or in strict audit
    /// mode the future of it, resolved once its record is durable.
    fn answer_refusal(
        &self,
        py: Python<'_>,
        bridge: &PyBridge,
        draft: Option<Draft>,
        refusal: Refusal,
        request_id: &str,
        trace: Option<TraceContext>,
    ) -> PyResult<Py<PyAny>> {
        match draft {
            Some(mut draft) if draft.strict() => {
                draft.refused(&refusal);
                let (future, pending) = bridge.pending(py, request_id.to_owned(), trace)?;
                let outcome = Outcome::Refused {
                    refusal,
                    request_id: request_id.to_owned(),
                    trace,
                };
                answer_when_recorded(Some(draft), pending, outcome, trace);
                Ok(future)
            }
            draft => {
                if let Some(mut draft) = draft {
                    draft.refused(&refusal);
                    draft.finish(None);
                }
                Ok(problem_triple(py, &refusal, request_id, trace.as_ref())?
                    .into_any()
                    .unbind())
            }
        }
    }
}

/// The 503 of a trail that cannot take the request's record.
fn audit_unavailable() -> Refusal {
    Refusal::new(
        Reason::AuditUnavailable,
        "the audit trail cannot take the request's record now; it is refused rather than served unaudited",
    )
}

/// Completes `pending` with `outcome` once the record is durable (strict mode) or at once; a
/// record that cannot be made durable turns the answer into 503 audit_unavailable.
fn answer_when_recorded(
    draft: Option<Draft>,
    pending: Pending,
    outcome: Outcome,
    trace: Option<TraceContext>,
) {
    match draft {
        Some(draft) if draft.strict() => draft.finish(Some(Box::new(move |durable| {
            let outcome = match (durable, outcome) {
                (true, outcome) => outcome,
                (
                    false,
                    Outcome::Answer { request_id, .. } | Outcome::Refused { request_id, .. },
                ) => Outcome::Refused {
                    refusal: audit_unavailable(),
                    request_id,
                    trace,
                },
                (false, outcome) => outcome,
            };
            pending.complete(outcome);
        }))),
        draft => {
            if let Some(draft) = draft {
                draft.finish(None);
            }
            pending.complete(outcome);
        }
    }
}

#[pymethods]
impl PyRouter {
    /// Compiles `settings_json` (the control plane's compiled configuration) and `profiles_jsonl`.
    /// Raises CoreConfigError listing every problem.
    #[new]
    #[pyo3(signature = (settings_json, profiles_jsonl, clock=None))]
    fn new(
        settings_json: &[u8],
        profiles_jsonl: &[u8],
        clock: Option<PyRef<'_, PyClock>>,
    ) -> PyResult<Self> {
        let settings: CoreSettings = serde_json::from_slice(settings_json)
            .map_err(|err| CoreConfigError::new_err(vec![format!("settings: {err}")]))?;
        let clock = clock.map(|c| c.inner.clone()).unwrap_or_default();
        let core =
            Router::build(settings, profiles_jsonl, clock).map_err(CoreConfigError::new_err)?;
        let probes = Arc::new(ProbeClient::new(
            core.forward_settings(),
            core.cells().all(),
        ));
        let client = Arc::new(CellClient::new(core.forward_settings(), core.cells().all()));
        Ok(PyRouter {
            core: Arc::new(core),
            client,
            probes,
            health: Mutex::new(None),
        })
    }

    /// Decides where a request goes, from what is known before its body is read. `path` is the
    /// path as the server decoded it; it is made canonical before any rule runs. `headers` (the
    /// client's, optional) supply the trace context and, from a trusted proxy, the client's
    /// address; `authorization` and `user_agent`, when given, are read before any in `headers`.
    #[allow(clippy::too_many_arguments)] // the Python signature, argument for argument
    #[pyo3(signature = (
        method, path, authorization, client, user_agent=None, *, headers=None, absolute_form=false
    ))]
    fn decide(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        client: &str,
        user_agent: Option<&str>,
        headers: Option<Vec<(Bound<'_, PyString>, Bound<'_, PyString>)>>,
        absolute_form: bool,
    ) -> PyResult<PyDecision> {
        let headers = text_pairs(headers.as_deref().unwrap_or(&[]))?;
        let arrived_us = self.core.clock().now_us();
        let ingress = self.core.ingress(&Arrival {
            method,
            path,
            headers: &headers,
            peer: client,
            authorization,
            user_agent,
            absolute_form,
        });
        let request_id = self.core.next_request_id();
        let trace = ingress.trace;
        let canonical = ingress.path.as_ref().ok().map(CanonicalTarget::of);
        let ticket = match self.audit_ticket() {
            Ok(ticket) => ticket,
            Err(refusal) => {
                return Ok(PyDecision {
                    request_id,
                    verdict: Verdict::Refused(refusal),
                    trace,
                    path: canonical,
                    draft: Mutex::new(None),
                })
            }
        };
        let mut notes = Notes {
            want_cells: ticket.is_some(),
            ..Notes::default()
        };
        let decided = self.core.decide_ingress(&ingress, &mut notes);
        let draft = self.draft(
            ticket,
            &ingress,
            &request_id,
            arrived_us,
            notes,
            decided.as_ref().map(|_| ()),
        );
        let verdict = match decided {
            Ok(route) => {
                let cell = route.cell();
                Verdict::Routed {
                    customer: route.customer.clone(),
                    cell_id: cell.id.clone(),
                    encryption: cell.encryption.name(),
                    risk: route.risk,
                    risk_facts: route
                        .risk
                        .filter(|risk| risk.fired_count() > 0)
                        .and_then(|_| ingress.facts().ok())
                        .map(|facts| OwnedRiskFacts::of(&facts)),
                    route: Mutex::new(Some(route)),
                    router: self.core.clone(),
                }
            }
            Err(refusal) => Verdict::Refused(refusal),
        };
        Ok(PyDecision {
            request_id,
            verdict,
            trace,
            path: canonical,
            draft: Mutex::new(draft),
        })
    }

    /// Forwards a routed decision's request to its cell on the bridge's loop, to the canonical
    /// path the decision was made on; returns a future that resolves to `(status, headers,
    /// body)`. The request is written before this returns; the slot is released when the cell
    /// answers.
    #[allow(clippy::too_many_arguments)] // the Python signature, argument for argument
    #[pyo3(signature = (bridge, decision, method, query, headers, body, scheme="http"))]
    fn forward(
        &self,
        py: Python<'_>,
        bridge: &PyBridge,
        decision: &PyDecision,
        method: &str,
        query: &str,
        headers: Vec<(Bound<'_, PyString>, Bound<'_, PyString>)>,
        body: &[u8],
        scheme: &str,
    ) -> PyResult<Py<PyAny>> {
        let headers = text_pairs(&headers)?;
        let (Some(target), Some(route)) = (decision.path.as_ref(), decision.take_route()) else {
            return Err(PyValueError::new_err(
                "the decision is refused, or already forwarded or released",
            ));
        };
        let outbound = Outbound {
            method,
            path: target.wire(),
            query,
            headers: &headers,
            body: Bytes::copy_from_slice(body),
            scheme,
        };
        let request_id = decision.request_id.as_str().to_owned();
        let draft = decision.take_draft();
        self.start_forward(py, bridge, route, request_id, outbound, draft)
    }

    /// Answers a decision that is not forwarded, and records it: its own refusal (`reason`
    /// None), or one the control plane made after deciding (`body_too_large`, `body_incomplete`,
    /// `client_body_timeout`, with `detail`), giving the cell slot back. Returns the problem
    /// triple, or in strict audit mode the future of it; None for `client_disconnected` (nobody
    /// is left to answer).
    #[pyo3(signature = (bridge, decision, reason=None, detail=None))]
    fn refuse(
        &self,
        py: Python<'_>,
        bridge: &PyBridge,
        decision: &PyDecision,
        reason: Option<&str>,
        detail: Option<&str>,
    ) -> PyResult<Option<Py<PyAny>>> {
        // Checked before the draft is taken: a call refused here leaves the decision whole.
        let refusal = match (reason, &decision.verdict) {
            (None, Verdict::Refused(refusal)) => Some(refusal.clone()),
            (None, Verdict::Routed { .. }) => {
                return Err(PyValueError::new_err(
                    "a routed decision is refused only with a reason",
                ))
            }
            (Some("client_disconnected"), _) => None,
            (Some(code), _) => {
                let reason = Reason::from_code(code)
                    .filter(|reason| reason.made_after_deciding())
                    .ok_or_else(|| PyValueError::new_err(format!("reason: unknown {code:?}")))?;
                Some(Refusal::new(reason, detail.unwrap_or(reason.title())))
            }
        };
        let draft = decision.take_draft();
        decision.take_route();
        let Some(refusal) = refusal else {
            // The client is gone: the draft is dropped as it stands, cancelled.
            drop(draft);
            return Ok(None);
        };
        let request_id = decision.request_id.as_str();
        self.answer_refusal(py, bridge, draft, refusal, request_id, Some(decision.trace))
            .map(Some)
    }

    /// `decide`, then `forward` when routed, in one call, for a request without a body (it has
    /// neither Content-Length nor Transfer-Encoding). Returns a refusal's `(status, headers,
    /// body)` at once, or a future of the cell's answer.
    #[allow(clippy::too_many_arguments)] // the Python signature, argument for argument
    #[pyo3(signature = (
        bridge, method, path, query, headers, client, scheme="http", absolute_form=false
    ))]
    fn serve(
        &self,
        py: Python<'_>,
        bridge: &PyBridge,
        method: &str,
        path: &str,
        query: &str,
        headers: Vec<(Bound<'_, PyString>, Bound<'_, PyString>)>,
        client: &str,
        scheme: &str,
        absolute_form: bool,
    ) -> PyResult<Py<PyAny>> {
        let headers = text_pairs(&headers)?;
        let arrived_us = self.core.clock().now_us();
        let ingress = self.core.ingress(&Arrival {
            method,
            path,
            headers: &headers,
            peer: client,
            authorization: None,
            user_agent: None,
            absolute_form,
        });
        let request_id = self.core.next_request_id();
        let trace = Some(ingress.trace);
        let ticket = match self.audit_ticket() {
            Ok(ticket) => ticket,
            Err(refusal) => {
                return Ok(
                    problem_triple(py, &refusal, request_id.as_str(), trace.as_ref())?
                        .into_any()
                        .unbind(),
                )
            }
        };
        let mut notes = Notes {
            want_cells: ticket.is_some(),
            ..Notes::default()
        };
        let decided = ingress
            .path
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|path| Ok((path, self.core.decide_ingress(&ingress, &mut notes)?)));
        let routed = decided.as_ref().map(|_| ());
        let draft = self.draft(ticket, &ingress, &request_id, arrived_us, notes, routed);
        let (path, route) = match decided {
            Ok(decided) => decided,
            Err(refusal) => {
                return self.answer_refusal(py, bridge, draft, refusal, request_id.as_str(), trace)
            }
        };
        let outbound = Outbound {
            method,
            path: path.wire(),
            query,
            headers: &headers,
            body: Bytes::new(),
            scheme,
        };
        let request_id = request_id.as_str().to_owned();
        self.start_forward(py, bridge, route, request_id, outbound, draft)
    }

    /// What `decide` would decide now and why, as JSON: the canonical path (and the path sent,
    /// when it differs), the client address, the trace id, the token, the profile, the rate
    /// limit, the risk factors, step-up, every cell with the first rule that excludes it, and
    /// the chosen cell. Nothing is counted or taken.
    #[pyo3(signature = (method, path, authorization, client, user_agent=None, *, headers=None))]
    fn explain(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        client: &str,
        user_agent: Option<&str>,
        headers: Option<Vec<(Bound<'_, PyString>, Bound<'_, PyString>)>>,
    ) -> PyResult<String> {
        let headers = text_pairs(headers.as_deref().unwrap_or(&[]))?;
        let ingress = self.core.ingress(&Arrival {
            method,
            path,
            headers: &headers,
            peer: client,
            authorization,
            user_agent,
            absolute_form: false,
        });
        Ok(crate::explain::explain(&self.core, path, &ingress).to_string())
    }

    /// What this configuration decides today for the request an audit record (its JSON line)
    /// describes, beside what was decided then, as JSON: `replayable`, `same`, `differences`,
    /// `original`, `today`. Raises ValueError for a line that is not a record.
    fn replay(&self, record_json: &str) -> PyResult<String> {
        let recorded: crate::replay::Recorded = serde_json::from_str(record_json)
            .map_err(|err| PyValueError::new_err(format!("not an audit record: {err}")))?;
        Ok(crate::replay::replay(&self.core, &recorded).to_string())
    }

    /// Reports how a routed decision's request ended when it was not forwarded through the core:
    /// feeds its cell's breaker and gives the slot back. Says whether the decision held a slot.
    fn report(&self, decision: &PyDecision, success: bool) -> bool {
        let Some(route) = decision.take_route() else {
            return false;
        };
        let outcome = match success {
            true => CellOutcome::Success,
            false => CellOutcome::Failure,
        };
        self.core.report(route, outcome);
        true
    }

    /// Whether requests are refused 503 draining (set when the gateway starts shutting down).
    #[getter]
    fn draining(&self) -> bool {
        self.core.draining()
    }

    #[setter]
    fn set_draining(&self, draining: bool) {
        self.core.set_draining(draining);
    }

    /// Takes this worker's audit chain and starts its writer (idempotent); raises OSError when
    /// the trail's directory cannot be used. Without `[audit]`, does nothing.
    fn start_audit(&self) -> PyResult<()> {
        match self.core.audit() {
            Some(trail) => trail.start().map_err(PyOSError::new_err),
            None => Ok(()),
        }
    }

    /// Writes, signs and closes everything the trail holds, and stops its writer.
    fn stop_audit(&self, py: Python<'_>) {
        if let Some(trail) = self.core.audit() {
            py.detach(|| trail.stop());
        }
    }

    /// The trail's state: `{"state", "chain", "written", "lost", "refused", "queued"}`, or None
    /// without `[audit]`.
    #[getter]
    fn audit<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(trail) = self.core.audit() else {
            return Ok(None);
        };
        let (state, chain, written, lost, refused, queued) = trail.status();
        let d = PyDict::new(py);
        d.set_item("state", state)?;
        d.set_item("chain", chain)?;
        d.set_item("written", written)?;
        d.set_item("lost", lost)?;
        d.set_item("refused", refused)?;
        d.set_item("queued", queued)?;
        Ok(Some(d))
    }

    /// Records an admin action before it takes effect: `target_json` is a JSON object. Returns
    /// whether the trail took it (in strict mode: made it durable); False means the action must
    /// be refused 503 audit_unavailable. Without `[audit]`, True.
    #[allow(clippy::too_many_arguments)] // the Python signature, argument for argument
    #[pyo3(signature = (admin, action, target_json, status, outcome, reason=None))]
    fn record_admin(
        &self,
        py: Python<'_>,
        admin: &str,
        action: &str,
        target_json: &str,
        status: u16,
        outcome: &str,
        reason: Option<&str>,
    ) -> PyResult<bool> {
        let Some(trail) = self.core.audit() else {
            return Ok(true);
        };
        if serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(target_json).is_err()
        {
            return Err(PyValueError::new_err("target_json: must be a JSON object"));
        }
        let Ok(ticket) = trail.ticket() else {
            return Ok(false);
        };
        let strict = ticket.strict();
        let record = Record {
            time_us: self.core.clock().now_us(),
            event: Event::Admin(AdminRecord {
                admin: admin.to_owned(),
                action: action.to_owned(),
                target_json: target_json.to_owned(),
                status,
                outcome: outcome.to_owned(),
                reason: reason.map(str::to_owned),
            }),
        };
        if !strict {
            ticket.submit(record, None);
            return Ok(true);
        }
        let (tell, told) = std::sync::mpsc::channel();
        ticket.submit(
            record,
            Some(Box::new(move |durable| {
                let _ = tell.send(durable);
            })),
        );
        Ok(py.detach(move || {
            told.recv_timeout(std::time::Duration::from_secs(10))
                .unwrap_or(false)
        }))
    }

    /// Starts probing every cell's health endpoint (idempotent).
    fn start_health_checks(&self) {
        if let Ok(mut health) = self.health.lock() {
            if health.is_none() {
                *health = Some(HealthChecker::start(
                    self.core.cells().all().to_vec(),
                    self.probes.clone(),
                    self.core.health_settings().clone(),
                ));
            }
        }
    }

    /// Stops the health checks.
    fn stop_health_checks(&self) {
        if let Ok(mut health) = self.health.lock() {
            health.take();
        }
    }

    /// Marks a cell up or down by hand.
    fn set_cell_health(&self, cell_id: &str, healthy: bool) -> PyResult<()> {
        let cell = self.cell(cell_id)?;
        cell.load.set_healthy(healthy);
        Ok(())
    }

    /// Live state of every cell: id, tier, region, endpoint, capacity, encryption, signed,
    /// certifications, in_flight, healthy, max_in_flight, breaker (`closed`, `open`,
    /// `half_open`).
    fn cells<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let catalog = self.core.catalog();
        self.core
            .cells()
            .all()
            .iter()
            .map(|cell| {
                let d = PyDict::new(py);
                d.set_item("id", &*cell.id)?;
                d.set_item("tier", catalog.tier_name(cell.tier))?;
                d.set_item("region", catalog.region_name(cell.region))?;
                d.set_item("endpoint", &cell.origin)?;
                d.set_item("capacity", cell.capacity)?;
                d.set_item("encryption", cell.encryption.name())?;
                d.set_item("signed", cell.signed)?;
                d.set_item("certifications", cell.certifications.clone())?;
                d.set_item("in_flight", cell.load.in_flight())?;
                d.set_item("healthy", cell.load.healthy())?;
                d.set_item("max_in_flight", cell.max_in_flight)?;
                let now_us = self.core.clock().now_us();
                let state = match cell.opened_elsewhere(now_us) {
                    Some(_) => "open",
                    None => cell.breaker.snapshot(now_us).state.as_str(),
                };
                d.set_item("breaker", state)?;
                Ok(d)
            })
            .collect()
    }

    /// Inserts or replaces one profile from its JSON object.
    fn upsert_profile(&self, profile_json: &[u8]) -> PyResult<()> {
        let record: ProfileRecord = serde_json::from_slice(profile_json)
            .map_err(|err| PyValueError::new_err(format!("profile: {err}")))?;
        let mut profiles = self
            .core
            .profiles()
            .write()
            .map_err(|_| PyValueError::new_err("profile table poisoned"))?;
        profiles
            .upsert(record, self.core.catalog(), &|name| self.core.zone(name))
            .map_err(|err| PyValueError::new_err(format!("profile: {err}")))
    }

    /// Removes a customer's profile; says whether it was there.
    fn remove_profile(&self, customer_id: &str) -> bool {
        self.core
            .profiles()
            .write()
            .map(|mut p| p.remove(customer_id))
            .unwrap_or(false)
    }

    /// How many profiles are loaded.
    #[getter]
    fn profile_count(&self) -> usize {
        self.core.profiles().read().map(|p| p.len()).unwrap_or(0)
    }

    /// How many verified tokens are cached.
    #[getter]
    fn cached_tokens(&self) -> usize {
        self.core.verifier().cache().len()
    }

    /// Revokes the token with `jti` (401 token_revoked, cached or not); the entry is forgotten
    /// after `forget_after_s` (seconds since the epoch), when the token has expired anyway.
    fn revoke_token(&self, jti: &str, forget_after_s: u64) -> PyResult<()> {
        if jti.is_empty() {
            return Err(PyValueError::new_err("jti: must not be empty"));
        }
        let now_s = self.core.clock().now_us() / 1_000_000;
        self.core
            .verifier()
            .revocations()
            .revoke_token(jti, forget_after_s, now_s);
        Ok(())
    }

    /// Revokes every token of `customer_id` issued before `issued_before_s` (and any without iat).
    fn revoke_customer(&self, customer_id: &str, issued_before_s: f64) -> PyResult<()> {
        if customer_id.is_empty() || !issued_before_s.is_finite() {
            return Err(PyValueError::new_err(
                "customer_id must not be empty and issued_before_s must be a finite time",
            ));
        }
        let now_s = self.core.clock().now_us() / 1_000_000;
        self.core
            .verifier()
            .revocations()
            .revoke_customer(customer_id, issued_before_s, now_s);
        Ok(())
    }

    /// Lifts a customer's revocation; says whether there was one.
    fn lift_customer_revocation(&self, customer_id: &str) -> bool {
        let now_s = self.core.clock().now_us() / 1_000_000;
        self.core
            .verifier()
            .revocations()
            .lift_customer(customer_id, now_s)
    }

    /// Starts keeping this node in step with the others through Redis, when `[state] redis` is
    /// set (idempotent; a worker calls it once its loop runs).
    fn start_sharing(&self) {
        if let Some(exchange) = self.core.exchange() {
            exchange.start();
        }
    }

    /// Stops the exchange with the other nodes.
    fn stop_sharing(&self) {
        if let Some(exchange) = self.core.exchange() {
            exchange.stop();
        }
    }

    /// Loads revocation log entries (a JSON array of `{"op": "revoke_token" | "revoke_customer"
    /// | "lift_customer", ...}`) into this router's state without publishing them (with a zone,
    /// which holds them already, only into what Redis is told); with Redis they are also written
    /// back to it when the exchange (re)connects. Returns how many.
    fn load_revocations(&self, entries_json: &[u8]) -> PyResult<usize> {
        let entries: Vec<SharedRevocation> = serde_json::from_slice(entries_json)
            .map_err(|err| PyValueError::new_err(format!("revocation entries: {err}")))?;
        let now_s = self.core.clock().now_us() / 1_000_000;
        match self.core.exchange() {
            Some(exchange) => exchange.load(&entries, self.core.state_zone().is_none()),
            None => {
                let store = self.core.verifier().revocations();
                for entry in &entries {
                    entry.apply(store, now_s);
                }
            }
        }
        Ok(entries.len())
    }

    /// The revocations and lifts heard from other nodes since the last call, as a JSON array of
    /// revocation log entries, for the node's log (empty without Redis).
    fn take_heard_revocations(&self) -> PyResult<Vec<u8>> {
        let heard = self
            .core
            .exchange()
            .map(|exchange| exchange.take_heard())
            .unwrap_or_default();
        serde_json::to_vec(&heard).map_err(|err| PyValueError::new_err(err.to_string()))
    }

    /// The link to Redis and what went through it; None without Redis.
    #[getter]
    fn redis<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(exchange) = self.core.exchange() else {
            return Ok(None);
        };
        let link = &exchange.link;
        let counters = &link.counters;
        let d = PyDict::new(py);
        d.set_item("url", &link.shown_url)?;
        d.set_item("up", !link.is_down())?;
        d.set_item("subscribed", exchange.subscribed())?;
        let read = |counter: &std::sync::atomic::AtomicU64| counter.load(Relaxed);
        d.set_item("errors", read(&counters.errors))?;
        d.set_item("outages", read(&counters.outages))?;
        d.set_item("local_quota_checks", read(&counters.local_quota_checks))?;
        d.set_item("refused_quota_checks", read(&counters.refused_quota_checks))?;
        d.set_item("limited_locally", read(&counters.limited_locally))?;
        d.set_item("published", read(&counters.published))?;
        d.set_item("received", read(&counters.received))?;
        d.set_item("resyncs", read(&counters.resyncs))?;
        d.set_item("reloads", read(&counters.reloads))?;
        Ok(Some(d))
    }

    /// Who a revocation through this router reaches: `"worker"` (its own state), `"node"`
    /// (every worker mapping the node's zone) or `"cluster"` (every node sharing the Redis).
    #[getter]
    fn state_scope(&self) -> &'static str {
        self.core.state_scope().name()
    }

    /// The node's zone and its counters (see `Zone.counters`); None without a zone.
    #[getter]
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        match self.core.state_zone() {
            Some(zone) => Some(super::zone::zone_counters(
                py,
                zone,
                self.core.verifier().revocations(),
            ))
            .transpose(),
            None => Ok(None),
        }
    }

    /// How many tokens and customers are revoked: `{"tokens": n, "customers": m}`.
    #[getter]
    fn revocations<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let counts = self.core.verifier().revocations().counts();
        let d = PyDict::new(py);
        d.set_item("tokens", counts.tokens)?;
        d.set_item("customers", counts.customers)?;
        Ok(d)
    }
}

impl PyRouter {
    fn cell(&self, cell_id: &str) -> PyResult<&Arc<Cell>> {
        self.core
            .cells()
            .get(cell_id)
            .ok_or_else(|| PyKeyError::new_err(format!("no cell {cell_id:?}")))
    }
}
