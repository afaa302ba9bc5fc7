//! Why a request was refused: a machine-readable reason code, its HTTP status and its title.

/// Every reason the core can refuse a request for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    MissingToken,
    Malformed,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    AlgNotAllowed,
    WrongType,
    UnknownKid,
    MissingCustomer,
    TokenRevoked,
    StepUpRequired,
    CustomerNotFound,
    RateLimited,
    QuotaUnavailable,
    NoEligibleCell,
    CellSaturated,
    CellUnreachable,
    CellTimeout,
    ResponseTooLarge,
    BadPath,
    BodyTooLarge,
    BodyIncomplete,
    ClientBodyTimeout,
    AuditUnavailable,
    Draining,
    Internal,
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Reason; 28] = [
        Reason::MissingToken,
        Reason::Malformed,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::WrongIssuer,
        Reason::WrongAudience,
        Reason::AlgNotAllowed,
        Reason::WrongType,
        Reason::UnknownKid,
        Reason::MissingCustomer,
        Reason::TokenRevoked,
        Reason::StepUpRequired,
        Reason::CustomerNotFound,
        Reason::RateLimited,
        Reason::QuotaUnavailable,
        Reason::NoEligibleCell,
        Reason::CellSaturated,
        Reason::CellUnreachable,
        Reason::CellTimeout,
        Reason::ResponseTooLarge,
        Reason::BadPath,
        Reason::BodyTooLarge,
        Reason::BodyIncomplete,
        Reason::ClientBodyTimeout,
        Reason::AuditUnavailable,
        Reason::Draining,
        Reason::Internal,
    ];

    /// The reason whose code is `code`.
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|reason| reason.code() == code)
    }

    /// Whether the control plane makes this refusal itself, after the core decided (the body's
    /// size and time).
    pub fn made_after_deciding(self) -> bool {
        matches!(
            self,
            Reason::BodyTooLarge | Reason::BodyIncomplete | Reason::ClientBodyTimeout
        )
    }

    /// The reason code clients and audit records carry.
    pub fn code(self) -> &'static str {
        match self {
            Reason::MissingToken => "missing_token",
            Reason::Malformed => "malformed",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::WrongIssuer => "wrong_issuer",
            Reason::WrongAudience => "wrong_audience",
            Reason::AlgNotAllowed => "alg_not_allowed",
            Reason::WrongType => "wrong_type",
            Reason::UnknownKid => "unknown_kid",
            Reason::MissingCustomer => "missing_customer",
            Reason::TokenRevoked => "token_revoked",
            Reason::StepUpRequired => "step_up_required",
            Reason::CustomerNotFound => "customer_not_found",
            Reason::RateLimited => "rate_limited",
            Reason::NoEligibleCell => "no_eligible_cell",
            Reason::CellSaturated => "cell_saturated",
            Reason::CellUnreachable => "cell_unreachable",
            Reason::CellTimeout => "cell_timeout",
            Reason::ResponseTooLarge => "response_too_large",
            Reason::BadPath => "bad_path",
            Reason::BodyTooLarge => "body_too_large",
            Reason::ClientBodyTimeout => "client_body_timeout",
            Reason::AuditUnavailable => "audit_unavailable",
            Reason::Draining => "draining",
            Reason::QuotaUnavailable => "quota_unavailable",
            Reason::BodyIncomplete => "body_incomplete",
            Reason::Internal => "internal",
        }
    }

    /// The HTTP status the refusal is answered with.
    pub fn status(self) -> u16 {
        match self {
            Reason::MissingToken
            | Reason::Malformed
            | Reason::BadSignature
            | Reason::Expired
            | Reason::NotYetValid
            | Reason::WrongIssuer
            | Reason::WrongAudience
            | Reason::AlgNotAllowed
            | Reason::WrongType
            | Reason::UnknownKid
            | Reason::MissingCustomer
            | Reason::TokenRevoked => 401,
            Reason::BadPath | Reason::BodyIncomplete => 400,
            Reason::ClientBodyTimeout => 408,
            Reason::BodyTooLarge => 413,
            Reason::StepUpRequired => 403,
            Reason::CustomerNotFound => 404,
            Reason::RateLimited => 429,
            Reason::NoEligibleCell
            | Reason::CellSaturated
            | Reason::AuditUnavailable
            | Reason::QuotaUnavailable
            | Reason::Draining => 503,
            Reason::CellUnreachable | Reason::ResponseTooLarge => 502,
            Reason::CellTimeout => 504,
            Reason::Internal => 500,
        }
    }

    /// A short human-readable summary of the problem type (RFC 9457 `title`).
    pub fn title(self) -> &'static str {
        match self {
            Reason::MissingToken => "A bearer token is required",
            Reason::Malformed => "The bearer token is malformed",
            Reason::BadSignature => "The token's signature does not verify",
            Reason::Expired => "The token has expired",
            Reason::NotYetValid => "The token is not valid yet",
            Reason::WrongIssuer => "The token was issued by an untrusted issuer",
            Reason::WrongAudience => "The token is not meant for this gateway",
            Reason::AlgNotAllowed => "The token's algorithm is not allowed for its key",
            Reason::WrongType => "The token is not of the required type",
            Reason::UnknownKid => "The token names an unknown key",
            Reason::MissingCustomer => "The token does not name a customer",
            Reason::TokenRevoked => "The token has been revoked",
            Reason::StepUpRequired => "Stronger authentication is required for this request",
            Reason::CustomerNotFound => "No profile exists for this customer",
            Reason::RateLimited => "Too many requests",
            Reason::NoEligibleCell => "No cell can serve this request now",
            Reason::CellSaturated => "Every cell that could serve this request is at its limit",
            Reason::CellUnreachable => "The cell could not be reached",
            Reason::CellTimeout => "The cell did not answer in time",
            Reason::ResponseTooLarge => "The cell's answer was too large",
            Reason::BadPath => "The request target is not acceptable",
            Reason::BodyTooLarge => "The request body is too large",
            Reason::ClientBodyTimeout => "The request body arrived too slowly",
            Reason::AuditUnavailable => "The audit trail cannot record this request now",
            Reason::Draining => "The gateway is shutting down",
            Reason::QuotaUnavailable => "The customer's quota cannot be checked now",
            Reason::BodyIncomplete => "The request body ended before it was whole",
            Reason::Internal => "The gateway failed internally",
        }
    }

    /// Whether the refusal is an authentication failure (answered with `WWW-Authenticate`).
    pub fn is_auth(self) -> bool {
        self.status() == 401
    }
}

/// A refusal: the reason, a detail saying what exactly was wrong, and any response fields the
/// reason calls for (`Retry-After` and the RateLimit fields of a 429).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub detail: String,
    pub fields: Vec<(&'static str, String)>,
}

impl Refusal {
    /// A refusal for `reason` with a detail.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Refusal {
            reason,
            detail: detail.into(),
            fields: Vec::new(),
        }
    }

    /// The same refusal answered with one more response field.
    pub fn with_field(mut self, name: &'static str, value: String) -> Self {
        self.fields.push((name, value));
        self
    }

    /// The RFC 9457 problem+json body for this refusal, with the request's trace id when known.
    pub fn problem_json(&self, request_id: &str, trace_id: Option<&str>) -> Vec<u8> {
        let mut body = serde_json::json!({
            "type": format!("urn:cellgate:problem:{}", self.reason.code()),
            "title": self.reason.title(),
            "status": self.reason.status(),
            "detail": self.detail,
            "reason": self.reason.code(),
            "request_id": request_id,
        });
        if let Some(trace_id) = trace_id {
            body["trace_id"] = trace_id.into();
        }
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// The response headers for this refusal, `content-type` first.
    pub fn headers(&self, request_id: &str) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("content-type", "application/problem+json".to_owned()),
            ("x-request-id", request_id.to_owned()),
            ("cache-control", "no-store".to_owned()),
        ];
        if self.reason.is_auth() {
            let error = if self.reason == Reason::MissingToken {
                String::from("Bearer")
            } else {
                format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\"",
                    self.reason.code()
                )
            };
            headers.push(("www-authenticate", error));
        }
        headers.extend(self.fields.iter().cloned());
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_body_carries_reason_and_request_id() {
        let refusal = Refusal::new(Reason::Expired, "expired 31 s ago");
        let body: serde_json::Value =
            serde_json::from_slice(&refusal.problem_json("abc", Some("t1"))).unwrap();
        assert_eq!(body["status"], 401);
        assert_eq!(body["reason"], "expired");
        assert_eq!(body["request_id"], "abc");
        assert_eq!(body["type"], "urn:cellgate:problem:expired");
        assert_eq!(body["detail"], "expired 31 s ago");
        assert_eq!(body["trace_id"], "t1");
    }

    #[test]
    fn every_reason_is_found_by_its_code() {
        for reason in Reason::ALL {
            assert_eq!(Reason::from_code(reason.code()), Some(reason));
        }
        assert_eq!(Reason::from_code("nonsense"), None);
    }

    #[test]
    fn auth_refusals_challenge_with_bearer() {
        let headers = Refusal::new(Reason::BadSignature, "").headers("r");
        let challenge = headers
            .iter()
            .find(|(n, _)| *n == "www-authenticate")
            .unwrap();
        assert!(challenge.1.contains("invalid_token"));
        let headers = Refusal::new(Reason::NoEligibleCell, "").headers("r");
        assert!(headers.iter().all(|(n, _)| *n != "www-authenticate"));
    }
}
