//! Public keys as X.509 SubjectPublicKeyInfo (RFC 5280 4.1.2.7, what a PEM "PUBLIC KEY" holds):
//! just enough DER to find the algorithm and the key bits. Nothing here verifies anything.

/// A public key as the verifier needs it.
#[derive(Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA modulus and exponent, big-endian, without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// An EC point in uncompressed form (0x04 || x || y) on the named curve.
    Ec { curve: Curve, point: Vec<u8> },
    /// A 32-byte Ed25519 public key.
    Ed25519(Vec<u8>),
}

/// The curves JWS uses (RFC 7518 3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

impl Curve {
    /// The length of one coordinate in bytes.
    pub fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }

    /// The JWK `crv` name.
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        }
    }
}

const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const PRIME256V1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const SECP384R1: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const ED25519: &[u8] = &[0x2b, 0x65, 0x70];

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const BIT_STRING: u8 = 0x03;
const INTEGER: u8 = 0x02;

/// Reads one DER TLV of `tag` from the front of `input`; returns its contents and the rest.
fn take(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), String> {
    let (&found, rest) = input.split_first().ok_or("truncated DER")?;
    if found != tag {
        return Err(format!("expected DER tag {tag:#04x}, found {found:#04x}"));
    }
    let (&first, mut rest) = rest.split_first().ok_or("truncated DER length")?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let count = (first & 0x7f) as usize;
        if count == 0 || count > 4 || rest.len() < count {
            return Err("unsupported DER length".into());
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        rest = &rest[count..];
        len
    };
    if rest.len() < len {
        return Err("truncated DER contents".into());
    }
    Ok(rest.split_at(len))
}

fn unsigned(integer: &[u8]) -> Vec<u8> {
    let start = integer
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(integer.len());
    integer[start..].to_vec()
}

/// Parses a DER SubjectPublicKeyInfo holding an RSA, P-256, P-384 or Ed25519 key.
pub fn parse(der: &[u8]) -> Result<PublicKey, String> {
    let (spki, trailing) = take(der, SEQUENCE)?;
    if !trailing.is_empty() {
        return Err("trailing bytes after the key".into());
    }
    let (algorithm, rest) = take(spki, SEQUENCE)?;
    let (bits, rest) = take(rest, BIT_STRING)?;
    if !rest.is_empty() {
        return Err("unexpected fields in SubjectPublicKeyInfo".into());
    }
    let key = match bits.split_first() {
        Some((0, key)) => key,
        _ => return Err("the key BIT STRING has unused bits".into()),
    };
    let (oid, parameters) = take(algorithm, OID)?;
    match oid {
        RSA_ENCRYPTION => {
            let (rsa, _) = take(key, SEQUENCE)?;
            let (n, rest) = take(rsa, INTEGER)?;
            let (e, _) = take(rest, INTEGER)?;
            Ok(PublicKey::Rsa {
                n: unsigned(n),
                e: unsigned(e),
            })
        }
        EC_PUBLIC_KEY => {
            let (curve, _) = take(parameters, OID)?;
            let curve = match curve {
                PRIME256V1 => Curve::P256,
                SECP384R1 => Curve::P384,
                _ => return Err("unsupported EC curve (P-256 and P-384 are)".into()),
            };
            Ok(PublicKey::Ec {
                curve,
                point: key.to_vec(),
            })
        }
        ED25519 => Ok(PublicKey::Ed25519(key.to_vec())),
        _ => Err("unsupported key algorithm (RSA, EC and Ed25519 are)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;

    /// RFC 8410 section 10.1: the example Ed25519 public key.
    const RFC8410_ED25519: &str = "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=";

    #[test]
    fn reads_the_rfc8410_ed25519_example() {
        let der = STANDARD.decode(RFC8410_ED25519).unwrap();
        let PublicKey::Ed25519(key) = parse(&der).unwrap() else {
            panic!("not Ed25519");
        };
        assert_eq!(key.len(), 32);
        assert_eq!(key[0], 0x19);
    }

    #[test]
    fn damaged_keys_are_refused_with_a_reason() {
        let der = STANDARD.decode(RFC8410_ED25519).unwrap();
        assert!(parse(&der[..der.len() - 1])
            .unwrap_err()
            .contains("truncated"));
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(parse(&trailing).unwrap_err().contains("trailing"));
        let mut other_oid = der.clone();
        other_oid[8] = 0x71; // 1.3.101.113: Ed448
        assert!(parse(&other_oid).unwrap_err().contains("unsupported"));
        assert!(parse(b"").is_err());
    }
}
