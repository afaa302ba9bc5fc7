//! Sets of IP networks from CIDR text: sorted, merged ranges per family, searched by bisection.
//! Risk's network lists and the trusted proxies of `[forward]` are both such sets.

use std::net::{IpAddr, Ipv6Addr};

/// IPv4 and IPv6 networks as sorted, disjoint, inclusive address ranges.
#[derive(Debug, Clone, Default)]
pub struct AddressSet {
    v4: Box<[(u128, u128)]>,
    v6: Box<[(u128, u128)]>,
}

impl AddressSet {
    /// The set of `cidrs` (`address/prefix` or a bare address), or every bad entry as
    /// `(index, message)`.
    pub fn build<S: AsRef<str>>(cidrs: &[S]) -> Result<AddressSet, Vec<(usize, String)>> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut errors = Vec::new();
        for (index, cidr) in cidrs.iter().enumerate() {
            match parse_cidr(cidr.as_ref()) {
                Ok(Network::V4(range)) => v4.push(range),
                Ok(Network::V6(range)) => v6.push(range),
                Err(message) => errors.push((index, message)),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(AddressSet {
            v4: merged(v4),
            v6: merged(v6),
        })
    }

    /// Whether `address` is in one of the networks (an IPv4-mapped IPv6 address is matched as
    /// the IPv4 address it maps).
    #[inline]
    pub fn contains(&self, address: IpAddr) -> bool {
        let (ranges, bits) = match address {
            IpAddr::V4(v4) => (&self.v4, u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (&self.v4, u128::from(u32::from(v4))),
                None => (&self.v6, u128::from(v6)),
            },
        };
        let after = ranges.partition_point(|&(first, _)| first <= bits);
        after > 0 && bits <= ranges[after - 1].1
    }

    /// How many disjoint ranges the set holds once merged.
    pub fn range_count(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether the set holds no network.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

/// A parsed CIDR as its first and last address.
enum Network {
    V4((u128, u128)),
    V6((u128, u128)),
}

/// Parses `address/prefix` (or a bare address, one host), refusing host bits and mapped ranges.
fn parse_cidr(text: &str) -> Result<Network, String> {
    let not_cidr = || format!("not a CIDR: {text:?}");
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => {
            if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(not_cidr());
            }
            (
                address,
                Some(prefix.parse::<u32>().map_err(|_| not_cidr())?),
            )
        }
        None => (text, None),
    };
    let address: IpAddr = address.parse().map_err(|_| not_cidr())?;
    let (bits, width) = match address {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    };
    let prefix = prefix.unwrap_or(width);
    if prefix > width {
        return Err(not_cidr());
    }
    // The host bits of the address's own width: the low (width - prefix) bits.
    let host_mask = if width - prefix == 128 {
        u128::MAX
    } else {
        (1u128 << (width - prefix)) - 1
    };
    if bits & host_mask != 0 {
        return Err(format!(
            "{text:?} has host bits set (the network is {}/{prefix})",
            network_text(address, bits & !host_mask)
        ));
    }
    let range = (bits, bits | host_mask);
    match address {
        IpAddr::V4(_) => Ok(Network::V4(range)),
        IpAddr::V6(v6) => {
            if prefix >= 96 && v6.to_ipv4_mapped().is_some() {
                return Err(format!(
                    "{text:?} is IPv4-mapped; clients are matched as IPv4, so write it as IPv4"
                ));
            }
            Ok(Network::V6(range))
        }
    }
}

fn network_text(address: IpAddr, bits: u128) -> String {
    match address {
        IpAddr::V4(_) => std::net::Ipv4Addr::from(bits as u32).to_string(),
        IpAddr::V6(_) => Ipv6Addr::from(bits).to_string(),
    }
}

/// Sorts ranges and merges those that overlap or touch.
fn merged(mut ranges: Vec<(u128, u128)>) -> Box<[(u128, u128)]> {
    ranges.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match out.last_mut() {
            Some(previous) if first <= previous.1.saturating_add(1) => {
                previous.1 = previous.1.max(last)
            }
            _ => out.push((first, last)),
        }
    }
    out.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn holds_its_networks_and_nothing_else() {
        let set = AddressSet::build(&["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"]).unwrap();
        for inside in ["10.0.0.0", "10.255.255.255", "192.168.1.7", "2001:db8::1"] {
            assert!(set.contains(ip(inside)), "{inside}");
        }
        for outside in ["11.0.0.0", "192.168.1.8", "2001:db9::", "::1"] {
            assert!(!set.contains(ip(outside)), "{outside}");
        }
        assert!(
            set.contains(ip("::ffff:10.1.2.3")),
            "mapped IPv4 matches as IPv4"
        );
        assert!(AddressSet::build::<&str>(&[]).unwrap().is_empty());
    }

    #[test]
    fn every_bad_entry_is_named() {
        let errors = AddressSet::build(&["10.0.0.1/8", "nope", "10.0.0.0/33", "::/0"]).unwrap_err();
        let indexes: Vec<usize> = errors.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, [0, 1, 2]);
        assert!(errors[0].1.contains("host bits"), "{}", errors[0].1);
    }
}
