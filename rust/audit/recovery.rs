//! Taking a chain at start: the lowest free `chain-N` (an exclusive flock on its `lock`, which a
//! dead worker's kernel releases), and where the chain stands after whatever happened to the
//! worker before (a clean stop, or a crash that may have torn its last line).

use crate::audit::digest::Coverage;
use crate::audit::segment;
use crate::audit::sha256;
use serde::Deserialize;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// A chain taken by this worker.
pub struct Claimed {
    pub chain: u32,
    pub dir: PathBuf,
    /// Held for the worker's life.
    pub lock: File,
}

/// Takes the lowest `chain-N` of `root` no live worker holds.
pub fn claim(root: &Path) -> io::Result<Claimed> {
    fs::create_dir_all(root)?;
    for chain in 0..4096u32 {
        let dir = root.join(format!("chain-{chain}"));
        fs::create_dir_all(&dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        match lock.try_lock() {
            Ok(()) => return Ok(Claimed { chain, dir, lock }),
            Err(fs::TryLockError::WouldBlock) => continue,
            Err(fs::TryLockError::Error(err)) => return Err(err),
        }
    }
    Err(io::Error::other("every chain from 0 to 4095 is held"))
}

/// Where a chain stands.
#[derive(Debug, Default)]
pub struct ChainState {
    /// The last intact record's seq (0: none) and its line's hash.
    pub seq: u64,
    pub prev: [u8; 32],
    /// The digest log's last intact entry: its number, line hash and the log's intact length.
    pub digest_number: u64,
    pub digest_prev: [u8; 32],
    pub digest_len: u64,
    /// The digest that closes the last segment, when the worker before did not (a crash).
    pub recovery: Option<Coverage>,
}

#[derive(Deserialize)]
struct RecordHead {
    seq: u64,
    prev: String,
    time: String,
}

#[derive(Deserialize)]
struct DigestHead {
    kind: String,
    #[serde(default)]
    segment: Option<String>,
    #[serde(default)]
    last_seq: Option<u64>,
    #[serde(default)]
    last_hash: Option<String>,
    #[serde(default)]
    segment_bytes: Option<u64>,
    #[serde(default, rename = "final")]
    last: Option<bool>,
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Reads `dir`'s digests and last segment: the chain resumes after its last intact record.
pub fn resume(dir: &Path) -> io::Result<ChainState> {
    let mut state = ChainState::default();
    let digests = match fs::read(dir.join("digests.jsonl")) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(err) => return Err(err),
    };
    let mut last_digest = None;
    let mut at = 0usize;
    // Only whole lines count: a torn last entry was never complete, so never signed.
    while let Some(end) = digests[at..].iter().position(|&b| b == b'\n') {
        let line = &digests[at..at + end];
        let Ok(head) = serde_json::from_slice::<DigestHead>(line) else {
            break;
        };
        state.digest_number += 1;
        state.digest_prev = sha256(line);
        at += end + 1;
        state.digest_len = at as u64;
        if head.kind == "records" {
            if let (Some(seq), Some(hash)) = (head.last_seq, head.last_hash.as_deref()) {
                state.seq = seq;
                state.prev = parse_hash(hash).unwrap_or_default();
            }
            last_digest = Some(head);
        }
    }
    let segments = segment::list(dir)?;
    let Some((name, first_seq)) = segments.last() else {
        return Ok(state);
    };
    let bytes = fs::read(dir.join(name))?;
    let covered = last_digest
        .as_ref()
        .filter(|d| d.segment.as_deref() == Some(name.as_str()));
    let closed = covered.is_some_and(|d| d.last == Some(true));
    let covered_bytes = covered.and_then(|d| d.segment_bytes).unwrap_or(0);
    // Walk the segment's records: each must follow the one before.
    let (mut seq, mut prev) = (first_seq - 1, None::<[u8; 32]>);
    let (mut intact, mut first_uncovered, mut times) =
        (0usize, None, (String::new(), String::new()));
    while let Some(end) = bytes[intact..].iter().position(|&b| b == b'\n') {
        let line = &bytes[intact..intact + end];
        let Ok(head) = serde_json::from_slice::<RecordHead>(line) else {
            break;
        };
        let chained = match prev {
            Some(hash) => parse_hash(&head.prev) == Some(hash),
            None => parse_hash(&head.prev).is_some(),
        };
        if head.seq != seq + 1 || !chained {
            break;
        }
        seq = head.seq;
        prev = Some(sha256(line));
        intact += end + 1;
        if intact as u64 > covered_bytes {
            if first_uncovered.is_none() {
                first_uncovered = Some(seq);
                times.0 = head.time.clone();
            }
            times.1 = head.time;
        }
    }
    if let Some(hash) = prev {
        state.seq = seq;
        state.prev = hash;
    }
    let torn = bytes.len() - intact;
    if intact == 0 && covered.is_none() && !bytes.contains(&b'\n') {
        // A segment the worker before opened and died in before a whole record: at most a torn
        // fragment of a record never acknowledged. Its name is the one the next segment takes.
        // (A first line that is whole but does not parse or chain is evidence: kept, a gap.)
        fs::remove_file(dir.join(name))?;
        eprintln!("cellgate audit: removed {name}, which held no whole record ({torn} bytes)");
        return Ok(state);
    }
    if closed && torn == 0 && intact as u64 == covered_bytes {
        return Ok(state);
    }
    state.recovery = Some(Coverage {
        segment: name.clone(),
        range: first_uncovered.map(|first| (first, seq, times.0, times.1, state.prev)),
        segment_bytes: intact as u64,
        segment_sha256: sha256(&bytes[..intact]),
        last: true,
        lost: 0,
        gap: Some((seq, torn as u64)),
    });
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cellgate-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_segment_without_a_whole_record_is_removed_so_its_name_is_free() {
        let dir = scratch("torn-only");
        fs::write(
            dir.join("000000000001-20261201T21.jsonl"),
            b"{\"v\":1,\"cha",
        )
        .unwrap();
        let state = resume(&dir).unwrap();
        assert_eq!((state.seq, state.recovery.is_none()), (0, true));
        assert!(segment::list(&dir).unwrap().is_empty());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_segment_whose_whole_first_line_is_damaged_is_kept_as_a_gap() {
        let dir = scratch("damaged-first");
        let second = format!(
            "{{\"v\":1,\"chain\":0,\"seq\":2,\"time\":\"2026-12-01T21:00:00.000000Z\",\"prev\":\"{}\",\"event\":\"admin\"}}",
            "0".repeat(64)
        );
        let name = "000000000001-20261201T21.jsonl";
        fs::write(
            dir.join(name),
            format!("{{\"v\":1,\"seq\":1,damaged\n{second}\n"),
        )
        .unwrap();
        let state = resume(&dir).unwrap();
        assert!(
            dir.join(name).exists(),
            "the records after the damaged line are kept"
        );
        assert!(state.recovery.is_some_and(|r| r.gap.is_some()));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_torn_last_line_is_a_gap_after_the_last_intact_record() {
        let dir = scratch("torn-tail");
        let first = format!(
            "{{\"v\":1,\"chain\":0,\"seq\":1,\"time\":\"2026-12-01T21:00:00.000000Z\",\"prev\":\"{}\",\"event\":\"admin\"}}",
            "0".repeat(64)
        );
        let text = format!("{first}\n{{\"v\":1,\"seq\":2,\"ti");
        fs::write(dir.join("000000000001-20261201T21.jsonl"), text).unwrap();
        let state = resume(&dir).unwrap();
        assert_eq!(state.seq, 1);
        assert_eq!(state.prev, sha256(first.as_bytes()));
        let recovery = state.recovery.unwrap();
        assert_eq!(recovery.gap, Some((1, 18)));
        assert_eq!(recovery.segment_bytes, first.len() as u64 + 1);
        assert!(recovery.last);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn two_workers_take_two_chains() {
        let dir = scratch("claims");
        let a = claim(&dir).unwrap();
        let b = claim(&dir).unwrap();
        assert_eq!((a.chain, b.chain), (0, 1));
        drop(a);
        assert_eq!(claim(&dir).unwrap().chain, 0);
        fs::remove_dir_all(dir).unwrap();
    }
}
