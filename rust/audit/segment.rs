//! Segments: a chain's JSON Lines files, named by their first record's seq and UTC hour.

use crate::audit::time::{hour_name, hour_of};
use ring::digest::{Context, SHA256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// `000000000001-20261201T21.jsonl`.
pub fn segment_name(first_seq: u64, time_us: u64) -> String {
    format!("{first_seq:012}-{}.jsonl", hour_name(time_us))
}

/// The first seq a segment's name gives, if it is a segment's name.
pub fn first_seq_of(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".jsonl")?;
    let (seq, hour) = stem.split_once('-')?;
    (seq.len() == 12 && hour.len() == 11).then_some(())?;
    seq.parse().ok()
}

/// A chain directory's segments, in chain order: `(name, first_seq)`.
pub fn list(dir: &Path) -> io::Result<Vec<(String, u64)>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(first) = first_seq_of(&name) {
            segments.push((name, first));
        }
    }
    segments.sort_by_key(|(_, first)| *first);
    Ok(segments)
}

/// The segment records are being appended to.
pub struct Segment {
    pub name: String,
    path: PathBuf,
    file: File,
    /// Bytes known written, and their running SHA-256.
    pub len: u64,
    hash: Context,
    /// The UTC hour its first record fell in.
    pub hour: u64,
}

impl Segment {
    /// Creates a new segment for a chain whose next record is `first_seq`, at `time_us`.
    pub fn create(dir: &Path, first_seq: u64, time_us: u64) -> io::Result<Self> {
        let name = segment_name(first_seq, time_us);
        let path = dir.join(&name);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        // The new name is durable before any record in it is acknowledged.
        File::open(dir).and_then(|d| d.sync_all())?;
        Ok(Segment {
            name,
            path,
            file,
            len: 0,
            hash: Context::new(&SHA256),
            hour: hour_of(time_us),
        })
    }

    /// Appends `bytes`; on failure the file is cut back to what it held, so it never keeps half
    /// a batch.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Err(err) = self.file.write_all(bytes) {
            let _ = self.file.set_len(self.len);
            return Err(err);
        }
        self.len += bytes.len() as u64;
        self.hash.update(bytes);
        Ok(())
    }

    /// Makes what was appended durable.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Cuts the segment back to `len` bytes whose hash is `hash` (a batch that could not be made
    /// durable).
    pub fn truncate(&mut self, len: u64, hash: Context) -> io::Result<()> {
        self.file.set_len(len)?;
        self.len = len;
        self.hash = hash;
        Ok(())
    }

    /// The running hash, to restore with `truncate`.
    pub fn hash_state(&self) -> Context {
        self.hash.clone()
    }

    /// SHA-256 of everything appended so far.
    pub fn sha256(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.hash.clone().finish().as_ref());
        out
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_chain_order() {
        let name = segment_name(1, 1_796_161_375_123_456);
        assert_eq!(name, "000000000001-20261201T21.jsonl");
        assert_eq!(first_seq_of(&name), Some(1));
        assert_eq!(first_seq_of("digests.jsonl"), None);
        assert_eq!(first_seq_of("000000000001-2026.jsonl"), None);
    }
}
