//! Signed digests (FORMAT.md, "Digests and retention entries"): the Ed25519 key, its public
//! form for auditors, and the append-only digest log of one chain.

use crate::audit::{hex, sha256};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32-byte key follows.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The key digests are signed with.
pub struct DigestSigner {
    key: Ed25519KeyPair,
    key_id: String,
}

impl DigestSigner {
    /// From a PKCS#8 DER Ed25519 private key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|err| format!("audit.signing_key: not an Ed25519 PKCS#8 key ({err})"))?;
        let key_id = hex(&sha256(key.public_key().as_ref())[..8]);
        Ok(DigestSigner { key, key_id })
    }

    /// The first 16 hex digits of the SHA-256 of the raw public key.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key as a PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
    pub fn public_pem(&self) -> String {
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(self.key.public_key().as_ref());
        let text = STANDARD.encode(der);
        format!("-----BEGIN PUBLIC KEY-----\n{text}\n-----END PUBLIC KEY-----\n")
    }

    /// `fields` (the entry's JSON object without its closing brace) signed: the whole line.
    fn sign(&self, mut fields: String) -> String {
        let _ = write!(fields, ",\"key_id\":\"{}\"", self.key_id);
        let mut message = fields.clone();
        message.push('}');
        let signature = STANDARD.encode(self.key.sign(message.as_bytes()).as_ref());
        let _ = write!(fields, ",\"signature\":\"{signature}\"}}");
        fields
    }
}

/// A `records` digest's content.
#[derive(Debug, Clone, Default)]
pub struct Coverage {
    pub segment: String,
    /// `(first_seq, last_seq, first_time, last_time, last_hash)`; none when no record is covered.
    pub range: Option<(u64, u64, String, String, [u8; 32])>,
    pub segment_bytes: u64,
    pub segment_sha256: [u8; 32],
    pub last: bool,
    pub lost: u64,
    /// After a crash: the last intact record and the torn bytes after it.
    pub gap: Option<(u64, u64)>,
}

/// One chain's `digests.jsonl`.
pub struct DigestLog {
    file: File,
    len: u64,
    chain: u32,
    /// The last entry's number and the hash of its line.
    number: u64,
    prev: [u8; 32],
}

impl DigestLog {
    /// Opens (or creates) the log, continuing after `number` whose line hashed to `prev`; `len`
    /// is the length of its intact part.
    pub fn open(
        path: &Path,
        chain: u32,
        number: u64,
        prev: [u8; 32],
        len: u64,
    ) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        if file.metadata()?.len() != len {
            file.set_len(len)?;
        }
        Ok(DigestLog {
            file,
            len,
            chain,
            number,
            prev,
        })
    }

    /// The number of the last entry written.
    pub fn number(&self) -> u64 {
        self.number
    }

    fn head(&self, kind: &str, time: &str) -> String {
        format!(
            "{{\"v\":1,\"chain\":{},\"digest\":{},\"kind\":\"{kind}\",\"time\":\"{time}\",\"prev_digest\":\"{}\"",
            self.chain,
            self.number + 1,
            hex(&self.prev)
        )
    }

    /// Appends a signed `records` digest and makes it durable.
    pub fn records(&mut self, signer: &DigestSigner, time: &str, c: &Coverage) -> io::Result<()> {
        let mut fields = self.head("records", time);
        let quoted = |text: &str| serde_json::to_string(text).unwrap_or_default();
        let _ = write!(fields, ",\"segment\":{}", quoted(&c.segment));
        match &c.range {
            Some((first, last, first_time, last_time, hash)) => {
                let _ = write!(
                    fields,
                    ",\"first_seq\":{first},\"last_seq\":{last},\"count\":{},\"first_time\":\"{first_time}\",\"last_time\":\"{last_time}\",\"last_hash\":\"{}\"",
                    last - first + 1,
                    hex(hash)
                );
            }
            None => fields.push_str(
                ",\"first_seq\":null,\"last_seq\":null,\"count\":0,\"first_time\":null,\"last_time\":null,\"last_hash\":null",
            ),
        }
        let _ = write!(
            fields,
            ",\"segment_bytes\":{},\"segment_sha256\":\"{}\",\"final\":{},\"lost\":{},\"gap\":",
            c.segment_bytes,
            hex(&c.segment_sha256),
            c.last,
            c.lost
        );
        match c.gap {
            Some((after, torn)) => {
                let _ = write!(fields, "{{\"after_seq\":{after},\"torn_bytes\":{torn}}}");
            }
            None => fields.push_str("null"),
        }
        self.append(signer.sign(fields))
    }

    /// Appends a signed `retention` entry naming the segments removed.
    pub fn retention(
        &mut self,
        signer: &DigestSigner,
        time: &str,
        removed: &[String],
    ) -> io::Result<()> {
        let mut fields = self.head("retention", time);
        let names = serde_json::to_string(removed).unwrap_or_else(|_| "[]".into());
        let _ = write!(fields, ",\"removed\":{names}");
        self.append(signer.sign(fields))
    }

    fn append(&mut self, line: String) -> io::Result<()> {
        let mut bytes = line.into_bytes();
        let hash = sha256(&bytes);
        bytes.push(b'\n');
        let written = self
            .file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data());
        if let Err(err) = written {
            // Nothing half-written stays: the entry is written again whole, later.
            let _ = self.file.set_len(self.len);
            return Err(err);
        }
        self.len += bytes.len() as u64;
        self.number += 1;
        self.prev = hash;
        Ok(())
    }
}
