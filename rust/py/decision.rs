//! `Decision`: where a request goes, or why it may not, holding its cell slot until forwarded.

use crate::audit::Draft;
use crate::reason::Refusal;
use crate::request_id::RequestId;
use crate::risk::Assessment;
use crate::router::{RequestFacts, Route, Router};
use crate::target::CanonicalPath;
use crate::trace::TraceContext;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use std::sync::{Arc, Mutex};

/// The parts of a request its risk factors are explained from, owned by the decision in one
/// allocation: method, path, client and user agent side by side.
pub struct OwnedRiskFacts {
    text: Box<str>,
    /// Where the method and path end in `text`; the user agent is the rest.
    ends: [usize; 2],
    client: Option<std::net::IpAddr>,
    has_user_agent: bool,
}

impl OwnedRiskFacts {
    /// Keeps what `facts` says about the request.
    pub fn of(facts: &RequestFacts) -> Self {
        let agent = facts.user_agent.unwrap_or("");
        let mut text = String::with_capacity(facts.method.len() + facts.path.len() + agent.len());
        let mut ends = [0; 2];
        for (end, part) in ends.iter_mut().zip([facts.method, facts.path]) {
            text.push_str(part);
            *end = text.len();
        }
        text.push_str(agent);
        OwnedRiskFacts {
            text: text.into_boxed_str(),
            ends,
            client: facts.client,
            has_user_agent: facts.user_agent.is_some(),
        }
    }

    fn borrowed(&self) -> RequestFacts<'_> {
        let [method, path] = self.ends;
        RequestFacts {
            method: &self.text[..method],
            path: &self.text[method..path],
            authorization: None,
            client: self.client,
            user_agent: self.has_user_agent.then(|| &self.text[path..]),
        }
    }
}

/// What was decided.
// Each Decision holds one Verdict inline; boxing the routed one would add an allocation to every
// routed request to save bytes on refused ones.
#[allow(clippy::large_enum_variant)]
pub enum Verdict {
    /// Routed to a cell; the route (and its in-flight slot) is taken by `forward`.
    Routed {
        customer: Arc<str>,
        cell_id: Arc<str>,
        encryption: &'static str,
        route: Mutex<Option<Route>>,
        /// The router that decided, to format the answer's RateLimit fields when asked.
        router: Arc<Router>,
        /// The request's risk, when scored.
        risk: Option<Assessment>,
        /// What the fired factors are explained from, kept only when one fired: reasons are
        /// written when asked for, not for every request.
        risk_facts: Option<OwnedRiskFacts>,
    },
    /// Refused, with the reason.
    Refused(Refusal),
}

/// The outcome of `Router.decide()`. A routed decision holds an in-flight slot on its cell until
/// it is forwarded or released; dropping it releases the slot too.
#[pyclass(name = "Decision", frozen, module = "cellgate._core")]
pub struct PyDecision {
    pub request_id: RequestId,
    pub verdict: Verdict,
    /// The request's trace context.
    pub trace: TraceContext,
    /// The canonical path, when the target was acceptable.
    pub path: Option<CanonicalTarget>,
    /// The request's audit record under way, when the trail is configured.
    pub draft: Mutex<Option<Draft>>,
}

/// A decision's canonical path, owned: one allocation when the wire form is the same text (the
/// common case), two when it is not.
pub struct CanonicalTarget {
    path: Box<str>,
    /// The wire form when it differs from `path`.
    wire: Option<Box<str>>,
}

impl CanonicalTarget {
    /// Keeps `canonical`.
    pub fn of(canonical: &CanonicalPath<'_>) -> Self {
        CanonicalTarget {
            path: canonical.path().into(),
            wire: (canonical.wire() != canonical.path()).then(|| canonical.wire().into()),
        }
    }

    /// The path every rule saw.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path as the cell receives it.
    pub fn wire(&self) -> &str {
        self.wire.as_deref().unwrap_or(&self.path)
    }
}

impl PyDecision {
    /// Takes the audit draft out, once.
    pub fn take_draft(&self) -> Option<Draft> {
        self.draft.lock().ok()?.take()
    }

    /// Takes the route out of a routed decision, once.
    pub fn take_route(&self) -> Option<Route> {
        match &self.verdict {
            Verdict::Routed { route, .. } => route.lock().ok()?.take(),
            Verdict::Refused(_) => None,
        }
    }
}

/// A `(status, headers, body)` triple as RSGI's `response_bytes` takes it.
pub fn response_triple<'py>(
    py: Python<'py>,
    status: u16,
    headers: impl IntoIterator<Item = (impl AsRef<str>, impl AsRef<str>)>,
    body: &[u8],
) -> PyResult<Bound<'py, PyTuple>> {
    let list = PyList::empty(py);
    for (name, value) in headers {
        list.append((name.as_ref(), value.as_ref()))?;
    }
    PyTuple::new(
        py,
        [
            status.into_pyobject(py)?.into_any(),
            list.into_any(),
            PyBytes::new(py, body).into_any(),
        ],
    )
}

/// The problem+json answer for a refusal, carrying the request's trace id when known.
pub fn problem_triple<'py>(
    py: Python<'py>,
    refusal: &Refusal,
    request_id: &str,
    trace: Option<&TraceContext>,
) -> PyResult<Bound<'py, PyTuple>> {
    let trace_id = trace.map(TraceContext::trace_id_hex);
    response_triple(
        py,
        refusal.reason.status(),
        refusal.headers(request_id),
        &refusal.problem_json(request_id, trace_id.as_deref()),
    )
}

#[pymethods]
impl PyDecision {
    /// Whether the request was routed to a cell.
    #[getter]
    fn ok(&self) -> bool {
        matches!(self.verdict, Verdict::Routed { .. })
    }

    /// The HTTP status of a refusal; 200 for a routed decision.
    #[getter]
    fn status(&self) -> u16 {
        match &self.verdict {
            Verdict::Routed { .. } => 200,
            Verdict::Refused(refusal) => refusal.reason.status(),
        }
    }

    /// The refusal's reason code, or None when routed.
    #[getter]
    fn reason(&self) -> Option<&'static str> {
        match &self.verdict {
            Verdict::Routed { .. } => None,
            Verdict::Refused(refusal) => Some(refusal.reason.code()),
        }
    }

    /// What exactly was wrong, or None when routed.
    #[getter]
    fn detail(&self) -> Option<&str> {
        match &self.verdict {
            Verdict::Routed { .. } => None,
            Verdict::Refused(refusal) => Some(&refusal.detail),
        }
    }

    /// The id this request carries to the cell, the client and the audit trail.
    #[getter]
    fn request_id(&self) -> &str {
        self.request_id.as_str()
    }

    /// The request's W3C trace id (32 hex digits): continued from the client's traceparent, or new.
    #[getter]
    fn trace_id(&self) -> String {
        self.trace.trace_id_hex()
    }

    /// The `traceparent` the cell receives (the gateway's span in the trace).
    #[getter]
    fn traceparent(&self) -> String {
        self.trace.traceparent()
    }

    /// The canonical path every rule saw and the cell receives (decoded); None when the target
    /// was refused.
    #[getter]
    fn path(&self) -> Option<&str> {
        self.path.as_ref().map(CanonicalTarget::path)
    }

    /// The customer the token named, when routed.
    #[getter]
    fn customer_id(&self) -> Option<&str> {
        match &self.verdict {
            Verdict::Routed { customer, .. } => Some(customer),
            Verdict::Refused(_) => None,
        }
    }

    /// The chosen cell, when routed.
    #[getter]
    fn cell_id(&self) -> Option<&str> {
        match &self.verdict {
            Verdict::Routed { cell_id, .. } => Some(cell_id),
            Verdict::Refused(_) => None,
        }
    }

    /// The chosen cell's encryption level, when routed.
    #[getter]
    fn encryption(&self) -> Option<&'static str> {
        match &self.verdict {
            Verdict::Routed { encryption, .. } => Some(encryption),
            Verdict::Refused(_) => None,
        }
    }

    /// Whether the decision still holds its cell slot.
    #[getter]
    fn holds_slot(&self) -> bool {
        match &self.verdict {
            Verdict::Routed { route, .. } => route.lock().map(|r| r.is_some()).unwrap_or(false),
            Verdict::Refused(_) => false,
        }
    }

    /// The `(status, headers, body)` problem+json answer of a refusal; None when routed.
    #[getter]
    fn problem<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        match &self.verdict {
            Verdict::Routed { .. } => Ok(None),
            Verdict::Refused(refusal) => {
                problem_triple(py, refusal, self.request_id.as_str(), Some(&self.trace)).map(Some)
            }
        }
    }

    /// The gateway's own response fields: for a routed decision those its answer will carry
    /// (the RateLimit fields), for a refusal those of its problem answer beyond the usual ones.
    #[getter]
    fn fields(&self) -> Vec<(&'static str, String)> {
        match &self.verdict {
            Verdict::Routed { route, router, .. } => route
                .lock()
                .ok()
                .and_then(|route| route.as_ref().map(|r| router.rate_fields(r.rate)))
                .unwrap_or_default(),
            Verdict::Refused(refusal) => refusal.fields.clone(),
        }
    }

    /// The request's risk as `(score, level)`, or None when not scored or refused.
    #[getter]
    fn risk(&self) -> Option<(f32, &'static str)> {
        match &self.verdict {
            Verdict::Routed { risk, .. } => risk.map(|a| (a.score(), a.level().as_str())),
            Verdict::Refused(_) => None,
        }
    }

    /// Each risk factor that fired, as `(kind, reason)`: `("money_path", "POST /api/transfers
    /// matches /api/transfers*")`. Empty when none fired or the request was refused.
    #[getter]
    fn risk_factors(&self) -> Vec<(&'static str, String)> {
        match &self.verdict {
            Verdict::Routed {
                risk: Some(risk),
                risk_facts: Some(facts),
                router,
                ..
            } => router.risk_factors(risk, &facts.borrowed()),
            _ => Vec::new(),
        }
    }

    /// Gives the cell slot back without forwarding; says whether a slot was held.
    fn release(&self) -> bool {
        self.take_route().is_some()
    }

    fn __repr__(&self) -> String {
        match &self.verdict {
            Verdict::Routed {
                customer, cell_id, ..
            } => format!(
                "Decision(ok=True, customer_id={customer:?}, cell_id={cell_id:?}, request_id={:?})",
                self.request_id.as_str()
            ),
            Verdict::Refused(refusal) => format!(
                "Decision(ok=False, status={}, reason={:?}, detail={:?}, request_id={:?})",
                refusal.reason.status(),
                refusal.reason.code(),
                refusal.detail,
                self.request_id.as_str()
            ),
        }
    }
}
