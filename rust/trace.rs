//! W3C Trace Context: a valid `traceparent` is continued with a new span id for the gateway's
//! hop, an absent or malformed one is replaced by a new trace; `tracestate` travels with a valid
//! parent, within the recommendation's limits (32 members, 512 bytes).

use std::sync::atomic::{AtomicU64, Ordering};

/// The most `tracestate` list members passed on (W3C Trace Context section 3.3.1.1).
pub const MAX_TRACESTATE_MEMBERS: usize = 32;
/// The most `tracestate` bytes passed on.
pub const MAX_TRACESTATE_BYTES: usize = 512;

/// Makes trace and span ids: a per-process random seed stepped and mixed (SplitMix64), cheap on
/// the hot path and unpredictable enough for ids that are not secrets.
pub struct TraceIds {
    state: AtomicU64,
}

impl Default for TraceIds {
    fn default() -> Self {
        Self::new()
    }
}

impl TraceIds {
    /// A generator with a fresh random seed.
    pub fn new() -> Self {
        let mut seed = [0u8; 8];
        let rng = ring::rand::SystemRandom::new();
        // A failing system RNG leaves the time as the seed: ids stay distinct, only guessable.
        if ring::rand::SecureRandom::fill(&rng, &mut seed).is_err() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            seed = now.to_le_bytes();
        }
        TraceIds {
            state: AtomicU64::new(u64::from_le_bytes(seed)),
        }
    }

    /// Three non-zero 64-bit values from one step of the shared state.
    #[inline]
    fn next_three(&self) -> [u64; 3] {
        const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
        let base = self
            .state
            .fetch_add(GOLDEN.wrapping_mul(3), Ordering::Relaxed);
        [1, 2, 3].map(|step: u64| mix(base.wrapping_add(step.wrapping_mul(GOLDEN))))
    }

    /// The trace context of a request that arrived with `traceparent` (the header's value).
    pub fn context(&self, traceparent: Option<&str>) -> TraceContext {
        let [span_id, high, low] = self.next_three();
        match traceparent.and_then(parse_traceparent) {
            Some((trace_id, flags)) => TraceContext {
                trace_id,
                span_id,
                flags,
                continued: true,
            },
            None => TraceContext {
                trace_id: (u128::from(high) << 64) | u128::from(low),
                span_id,
                flags: 0,
                continued: false,
            },
        }
    }
}

/// SplitMix64's output function; never zero (a zero id is invalid).
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)).max(1)
}

/// One request's place in a trace: the trace it belongs to and the gateway's span in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    /// The gateway's span: the parent of the cell's.
    pub span_id: u64,
    /// The trace flags (bit 0: sampled), kept from a continued parent.
    pub flags: u8,
    /// Whether the client's traceparent was valid and is continued.
    pub continued: bool,
}

impl TraceContext {
    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The `traceparent` the cell receives (version 00).
    pub fn traceparent(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

/// The trace id and flags of a valid `traceparent`, or None.
fn parse_traceparent(value: &str) -> Option<(u128, u8)> {
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    let bytes = value.as_bytes();
    if bytes.len() < 55 || bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let version = lower_hex(&value[0..2])? as u8;
    // Version ff is invalid; version 00 is exactly 55 characters; a later version may append
    // fields after a dash, which are ignored.
    if version == 0xff
        || (version == 0 && bytes.len() != 55)
        || (bytes.len() > 55 && bytes[55] != b'-')
    {
        return None;
    }
    let trace_id = lower_hex(&value[3..35])?;
    let parent_id = lower_hex(&value[36..52])?;
    let flags = lower_hex(&value[53..55])? as u8;
    if trace_id == 0 || parent_id == 0 {
        return None;
    }
    Some((trace_id, flags))
}

/// The value of lower-case hex digits (at most 32), or None.
fn lower_hex(text: &str) -> Option<u128> {
    if text.is_empty()
        || text.len() > 32
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u128::from_str_radix(text, 16).ok()
}

/// The `tracestate` passed on: the first members within the limits (empty ones and ones that no
/// longer fit dropped); None when nothing is left.
pub fn bounded_tracestate<'a>(values: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut out = String::new();
    let mut members = 0;
    for member in values.flat_map(|v| v.split(',')) {
        let member = member.trim_matches(|c| c == ' ' || c == '\t');
        if member.is_empty() || !member.contains('=') {
            continue;
        }
        let added = member.len() + usize::from(!out.is_empty());
        if members == MAX_TRACESTATE_MEMBERS {
            break;
        }
        if out.len() + added > MAX_TRACESTATE_BYTES {
            // A member that does not fit is dropped; a shorter one after it may still fit.
            continue;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(member);
        members += 1;
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_parent_is_continued_with_a_new_span() {
        let ids = TraceIds::new();
        let context = ids.context(Some(PARENT));
        assert!(context.continued);
        assert_eq!(context.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.flags, 1);
        let header = context.traceparent();
        assert!(header.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(
            !header.contains("00f067aa0ba902b7"),
            "the hop gets a new span id"
        );
        assert!(header.ends_with("-01"));
        assert_ne!(ids.context(Some(PARENT)).span_id, context.span_id);
    }

    #[test]
    fn malformed_parents_are_replaced() {
        let ids = TraceIds::new();
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let context = ids.context(Some(bad));
            assert!(!context.continued, "{bad:?} was continued");
            assert_ne!(context.trace_id, 0);
        }
        assert!(!ids.context(None).continued);
        assert_ne!(ids.context(None).trace_id, ids.context(None).trace_id);
    }

    #[test]
    fn a_later_version_may_carry_more_fields() {
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes";
        assert!(TraceIds::new().context(Some(future)).continued);
    }

    #[test]
    fn tracestate_is_bounded() {
        assert_eq!(
            bounded_tracestate(["a=1, ,b=2", "c=3"].into_iter()).as_deref(),
            Some("a=1,b=2,c=3")
        );
        let many: Vec<String> = (0..40).map(|i| format!("k{i}=v")).collect();
        let joined = many.join(",");
        let kept = bounded_tracestate([joined.as_str()].into_iter()).unwrap();
        assert_eq!(kept.split(',').count(), MAX_TRACESTATE_MEMBERS);
        let long = format!("a={},b=1", "x".repeat(600));
        assert_eq!(
            bounded_tracestate([long.as_str()].into_iter()).as_deref(),
            Some("b=1")
        );
        assert_eq!(bounded_tracestate(["", "junk"].into_iter()), None);
    }
}
