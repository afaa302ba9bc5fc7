//! What the gateway makes of a request as it arrives, before any rule runs: the canonical path,
//! the earned client address and the trace context, read in one pass over the headers.

use crate::client_address::{ClientAddressing, ClientOrigin};
use crate::reason::{Reason, Refusal};
use crate::router::{client_address, RequestFacts};
use crate::target::{canonicalize, CanonicalPath, PathSettings};
use crate::trace::{TraceContext, TraceIds};

/// A request as the server handed it over.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    pub method: &'a str,
    /// The path as the server decoded it (granian percent-decodes it once).
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    /// The connection's peer, `address:port`.
    pub peer: &'a str,
    /// `Authorization` and `User-Agent` when the caller has them apart from `headers` (they win
    /// over any in `headers`).
    pub authorization: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    /// Whether the request line carried an absolute-form target (`GET http://host/path`), which
    /// the server reduces to its path: refused, since the gateway alone picks the authority.
    pub absolute_form: bool,
}

/// The arrival, made sense of: every rule reads these instead of the raw request.
#[derive(Debug)]
pub struct Ingress<'a> {
    pub method: &'a str,
    /// The canonical path, or why the target is refused (400 bad_path).
    pub path: Result<CanonicalPath<'a>, Refusal>,
    pub origin: ClientOrigin,
    pub trace: TraceContext,
    pub authorization: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

impl<'a> Ingress<'a> {
    /// Parses `arrival`: path, client address and trace context.
    pub fn read(
        arrival: &Arrival<'a>,
        paths: &PathSettings,
        addressing: &ClientAddressing,
        trace_ids: &TraceIds,
    ) -> Ingress<'a> {
        let mut authorization = arrival.authorization;
        let mut user_agent = arrival.user_agent;
        let mut traceparent = None;
        for &(name, value) in arrival.headers {
            if name.eq_ignore_ascii_case("authorization") {
                authorization.get_or_insert(value);
            } else if name.eq_ignore_ascii_case("user-agent") {
                user_agent.get_or_insert(value);
            } else if name.eq_ignore_ascii_case("traceparent") {
                // More than one traceparent is malformed: a new trace starts.
                traceparent = match traceparent {
                    None => Some(Some(value)),
                    Some(_) => Some(None),
                };
            }
        }
        let peer = client_address(arrival.peer);
        let header = addressing.header_name();
        // Read only when the peer is trusted (`origin` decides), right to left.
        let forwarded = arrival
            .headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(header))
            .map(|&(_, value)| value);
        let origin = addressing.origin(peer, forwarded);
        Ingress {
            method: arrival.method,
            path: match arrival.absolute_form {
                true => Err(Refusal::new(
                    Reason::BadPath,
                    "the request target is absolute-form; send origin-form (a path)",
                )),
                false => canonicalize(arrival.path, paths),
            },
            origin,
            trace: trace_ids.context(traceparent.flatten()),
            authorization,
            user_agent,
        }
    }

    /// What the rules see of the request, or the bad_path refusal.
    pub fn facts(&self) -> Result<RequestFacts<'_>, Refusal> {
        let path = self.path.as_ref().map_err(Clone::clone)?;
        Ok(RequestFacts {
            method: self.method,
            path: path.path(),
            authorization: self.authorization,
            client: self.origin.client,
            user_agent: self.user_agent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_address::ForwardedHeader;

    fn read<'a>(
        path: &'a str,
        headers: &'a [(&'a str, &'a str)],
        addressing: &ClientAddressing,
    ) -> Ingress<'a> {
        let arrival = Arrival {
            method: "POST",
            path,
            headers,
            peer: "10.0.0.1:5555",
            authorization: None,
            user_agent: None,
            absolute_form: false,
        };
        Ingress::read(
            &arrival,
            &PathSettings::default(),
            addressing,
            &TraceIds::new(),
        )
    }

    #[test]
    fn the_rules_see_the_canonical_path_and_the_earned_client() {
        let headers = [
            ("Authorization", "Bearer t"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("User-Agent", "ua"),
        ];
        let ingress = read(
            "/api//x/../transfers",
            &headers,
            &ClientAddressing::default(),
        );
        let facts = ingress.facts().unwrap();
        assert_eq!(facts.path, "/api/transfers");
        assert_eq!(facts.client, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(facts.authorization, Some("Bearer t"));
        assert_eq!(facts.user_agent, Some("ua"));
        let trusted =
            ClientAddressing::build(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor).unwrap();
        let ingress = read("/api/transfers", &headers, &trusted);
        assert_eq!(
            ingress.facts().unwrap().client,
            Some("6.6.6.6".parse().unwrap())
        );
    }

    #[test]
    fn a_bad_path_still_has_a_trace() {
        let ingress = read("/api\\transfers", &[], &ClientAddressing::default());
        assert_eq!(ingress.facts().unwrap_err().reason, Reason::BadPath);
        assert_ne!(ingress.trace.trace_id, 0);
    }

    #[test]
    fn two_traceparents_start_a_new_trace() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let one = [("traceparent", parent)];
        assert!(
            read("/", &one, &ClientAddressing::default())
                .trace
                .continued
        );
        let two = [("traceparent", parent), ("Traceparent", parent)];
        assert!(
            !read("/", &two, &ClientAddressing::default())
                .trace
                .continued
        );
    }
}
