//! How the client address and the user agent appear in records: kept, hashed or dropped.

use crate::audit::settings::Keep;
use ring::hmac;
use std::borrow::Cow;
use std::fmt::Write as _;

/// The trail's rule for the two personal fields, and the key it hashes them with.
pub struct Privacy {
    client: Keep,
    user_agent: Keep,
    key: Option<hmac::Key>,
}

impl Privacy {
    /// `key` is required when either field is hashed.
    pub fn new(client: Keep, user_agent: Keep, key: Option<&[u8]>) -> Result<Self, String> {
        let hashed = client == Keep::Hash || user_agent == Keep::Hash;
        let key = match (hashed, key) {
            (true, None) => return Err("audit.hash_key: required to hash a field".into()),
            (true, Some(key)) if key.len() < 32 => {
                return Err("audit.hash_key: must be at least 32 bytes".into())
            }
            (_, key) => key.map(|k| hmac::Key::new(hmac::HMAC_SHA256, k)),
        };
        Ok(Privacy {
            client,
            user_agent,
            key,
        })
    }

    /// Everything kept as it is.
    pub fn keep_all() -> Self {
        Privacy {
            client: Keep::Keep,
            user_agent: Keep::Keep,
            key: None,
        }
    }

    pub fn client<'a>(&self, value: Option<&'a str>) -> Option<Cow<'a, str>> {
        self.apply(self.client, value)
    }

    pub fn user_agent<'a>(&self, value: Option<&'a str>) -> Option<Cow<'a, str>> {
        self.apply(self.user_agent, value)
    }

    fn apply<'a>(&self, rule: Keep, value: Option<&'a str>) -> Option<Cow<'a, str>> {
        let value = value?;
        match (rule, &self.key) {
            (Keep::Keep, _) => Some(Cow::Borrowed(value)),
            (Keep::Hash, Some(key)) => {
                let tag = hmac::sign(key, value.as_bytes());
                let mut out = String::with_capacity(12 + 64);
                out.push_str("hmac-sha256:");
                for byte in tag.as_ref() {
                    let _ = write!(out, "{byte:02x}");
                }
                Some(Cow::Owned(out))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_with_hmac_sha256_and_drops() {
        let key = [7u8; 32];
        let privacy = Privacy::new(Keep::Hash, Keep::Drop, Some(&key)).unwrap();
        let hashed = privacy.client(Some("203.0.113.9")).unwrap();
        let expected = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), b"203.0.113.9");
        assert_eq!(hashed, format!("hmac-sha256:{}", hex(expected.as_ref())));
        assert_eq!(privacy.user_agent(Some("curl/8")), None);
        assert!(Privacy::new(Keep::Hash, Keep::Keep, None).is_err());
        assert!(Privacy::new(Keep::Keep, Keep::Hash, Some(&[1; 8])).is_err());
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
