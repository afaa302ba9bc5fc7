//! The client's address, earned: the connection's peer, unless the peer is a configured trusted
//! proxy; then the right-most address of `X-Forwarded-For` (or of RFC 7239 `Forwarded`) that is
//! not itself trusted. Entries a client writes itself sit left of that one and change nothing.

use crate::networks::AddressSet;
use serde::Deserialize;
use std::fmt::Write;
use std::net::IpAddr;

/// Which header a trusted proxy names the client in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

/// Who may tell the gateway where a request came from.
#[derive(Debug, Clone, Default)]
pub struct ClientAddressing {
    trusted: AddressSet,
    header: ForwardedHeader,
}

/// Where a request came from, as the gateway will tell the cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOrigin {
    /// The client's address (None: the peer is not an IP socket).
    pub client: Option<IpAddr>,
    /// The trusted hops between the client and the gateway, nearest the client first, the peer
    /// last; empty when the peer is not trusted.
    pub via: Vec<IpAddr>,
}

impl ClientOrigin {
    /// The `X-Forwarded-For` value the cell receives: the client, then every trusted hop.
    pub fn forwarded_for(&self) -> String {
        forwarded_for(self.client, &self.via)
    }
}

/// `X-Forwarded-For` of `client` (`unknown` when not an IP peer) reached through `via`.
pub fn forwarded_for(client: Option<IpAddr>, via: &[IpAddr]) -> String {
    let mut out = String::with_capacity(16 * (1 + via.len()));
    match client {
        Some(ip) => {
            let _ = write!(out, "{ip}");
        }
        None => out.push_str("unknown"),
    }
    for hop in via {
        let _ = write!(out, ", {hop}");
    }
    out
}

impl ClientAddressing {
    /// Trusts the proxies in `cidrs`, which name the client in `header`; errors as
    /// `(index, message)`.
    pub fn build<S: AsRef<str>>(
        cidrs: &[S],
        header: ForwardedHeader,
    ) -> Result<ClientAddressing, Vec<(usize, String)>> {
        Ok(ClientAddressing {
            trusted: AddressSet::build(cidrs)?,
            header,
        })
    }

    /// The header a trusted proxy names the client in, lower-case.
    pub fn header_name(&self) -> &'static str {
        match self.header {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        }
    }

    /// The client of a request from `peer` whose forwarded header lines are `values` (in the
    /// order received).
    pub fn origin<'a>(
        &self,
        peer: Option<IpAddr>,
        values: impl DoubleEndedIterator<Item = &'a str>,
    ) -> ClientOrigin {
        let Some(peer) = peer.filter(|&peer| self.trusted.contains(peer)) else {
            return ClientOrigin {
                client: peer,
                via: Vec::new(),
            };
        };
        let mut via = vec![peer];
        let mut client = peer;
        'lines: for value in values.rev() {
            for entry in value.rsplit(',') {
                let address = match self.header {
                    ForwardedHeader::XForwardedFor => parse_forwarded_for(entry),
                    ForwardedHeader::Forwarded => parse_forwarded_element(entry),
                };
                // An entry that is not an address (obfuscated, "unknown", garbage) ends the
                // walk: nothing left of it can be attributed.
                let Some(address) = address else {
                    break 'lines;
                };
                if !self.trusted.contains(address) {
                    via.reverse();
                    return ClientOrigin {
                        client: Some(address),
                        via,
                    };
                }
                via.push(address);
                client = address;
            }
        }
        // Every hop is trusted: the left-most one reached is the nearest the client we know.
        via.pop();
        via.reverse();
        ClientOrigin {
            client: Some(client),
            via,
        }
    }
}

/// One `X-Forwarded-For` entry: an address, an IPv6 address in brackets, either with a port.
fn parse_forwarded_for(entry: &str) -> Option<IpAddr> {
    parse_node(entry.trim())
}

/// The `for=` node of one RFC 7239 `Forwarded` element (`for=192.0.2.60;proto=http;by=...`).
fn parse_forwarded_element(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        parse_node(value)
    })
}

/// An address with or without a port: `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`, `[::1]:80`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        let (address, after) = rest.split_once(']')?;
        if !(after.is_empty() || is_port(after.strip_prefix(':')?)) {
            return None;
        }
        return address.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let (address, port) = node.rsplit_once(':')?;
    if !is_port(port) {
        return None;
    }
    address.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn addressing(header: ForwardedHeader) -> ClientAddressing {
        ClientAddressing::build(&["10.0.0.0/8", "2001:db8::/32"], header).unwrap()
    }

    fn client(header: ForwardedHeader, peer: &str, values: &[&str]) -> ClientOrigin {
        addressing(header).origin(Some(ip(peer)), values.iter().copied())
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let origin = client(
            ForwardedHeader::XForwardedFor,
            "203.0.113.9",
            &["1.1.1.1", "10.0.0.1"],
        );
        assert_eq!(origin.client, Some(ip("203.0.113.9")));
        assert!(origin.via.is_empty());
        assert_eq!(origin.forwarded_for(), "203.0.113.9");
        let none =
            ClientAddressing::default().origin(Some(ip("10.0.0.1")), ["1.1.1.1"].into_iter());
        assert_eq!(
            none.client,
            Some(ip("10.0.0.1")),
            "nothing is trusted by default"
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_right_most_untrusted_address() {
        // The client forged "6.6.6.6"; the load balancer 10.0.0.2 appended the real 198.51.100.7.
        let origin = client(
            ForwardedHeader::XForwardedFor,
            "10.0.0.1",
            &["6.6.6.6, 198.51.100.7", "10.0.0.2"],
        );
        assert_eq!(origin.client, Some(ip("198.51.100.7")));
        assert_eq!(origin.via, [ip("10.0.0.2"), ip("10.0.0.1")]);
        assert_eq!(origin.forwarded_for(), "198.51.100.7, 10.0.0.2, 10.0.0.1");
    }

    #[test]
    fn without_a_forwarded_header_the_trusted_peer_is_the_client() {
        let origin = client(ForwardedHeader::XForwardedFor, "10.0.0.1", &[]);
        assert_eq!(origin.client, Some(ip("10.0.0.1")));
        assert!(origin.via.is_empty());
    }

    #[test]
    fn when_every_hop_is_trusted_the_left_most_is_the_client() {
        let origin = client(
            ForwardedHeader::XForwardedFor,
            "10.0.0.1",
            &["10.0.0.3, 10.0.0.2"],
        );
        assert_eq!(origin.client, Some(ip("10.0.0.3")));
        assert_eq!(origin.via, [ip("10.0.0.2"), ip("10.0.0.1")]);
    }

    #[test]
    fn garbage_ends_the_walk_at_the_last_trusted_hop() {
        let origin = client(
            ForwardedHeader::XForwardedFor,
            "10.0.0.1",
            &["1.2.3.4, nonsense, 10.0.0.2"],
        );
        assert_eq!(origin.client, Some(ip("10.0.0.2")));
    }

    #[test]
    fn addresses_with_ports_and_brackets() {
        assert_eq!(parse_node("1.2.3.4:80"), Some(ip("1.2.3.4")));
        assert_eq!(parse_node("[2001:db8::1]:4711"), Some(ip("2001:db8::1")));
        assert_eq!(parse_node("[::1]"), Some(ip("::1")));
        assert_eq!(parse_node("::1"), Some(ip("::1")));
        for bad in [
            "",
            "unknown",
            "_hidden",
            "1.2.3.4:",
            "[::1]x",
            "1.2.3.4:123456",
            "[1.2.3.4]",
        ] {
            assert_eq!(parse_node(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc_7239_forwarded_elements() {
        let origin = client(
            ForwardedHeader::Forwarded,
            "10.0.0.1",
            &["for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=https, for=10.1.2.3;by=x"],
        );
        // 2001:db8:cafe::17 is inside the trusted 2001:db8::/32; the one left of it is not.
        assert_eq!(origin.client, Some(ip("6.6.6.6")));
        let obfuscated = client(ForwardedHeader::Forwarded, "10.0.0.1", &["for=_hidden"]);
        assert_eq!(obfuscated.client, Some(ip("10.0.0.1")));
        let proto_only = client(
            ForwardedHeader::Forwarded,
            "10.0.0.1",
            &["proto=https;for=198.51.100.1"],
        );
        assert_eq!(proto_only.client, Some(ip("198.51.100.1")));
    }
}
