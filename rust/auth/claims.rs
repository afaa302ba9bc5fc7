//! The registered claims the gateway checks, read in one pass without building a map; a member
//! named twice, at any depth, is refused (see [`super::members`]).

use super::members::{MemberName, MemberNames, UniqueMembers};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;

/// The JOSE header fields that matter to verification.
///
/// RFC 7515 section 4 makes the header a JSON object, so it is read only as a map: serde's derived
/// form would also take `["HS256","k1"]` as a sequence of fields.
pub struct Header<'a> {
    pub alg: Cow<'a, str>,
    pub kid: Option<Cow<'a, str>>,
    /// The media type of the whole token (RFC 7515 section 4.1.9), a string when present.
    pub typ: Option<Cow<'a, str>>,
    /// Whether `crit` was present with any value: no extension is understood, so any refuses.
    pub has_crit: bool,
}

impl<'de> Deserialize<'de> for Header<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(HeaderVisitor)
    }
}

struct HeaderVisitor;

impl<'de> Visitor<'de> for HeaderVisitor {
    type Value = Header<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object (the JOSE header)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut names = MemberNames::default();
        let mut alg = None;
        let mut kid = None;
        let mut typ = None;
        let mut has_crit = false;
        while let Some(key) = map.next_key_seed(MemberName)? {
            names.insert(key.clone(), None)?;
            match key.as_ref() {
                "alg" => alg = Some(map.next_value::<Cow<'de, str>>()?),
                "kid" => kid = map.next_value::<Option<Cow<'de, str>>>()?,
                "typ" => typ = Some(map.next_value::<Cow<'de, str>>()?),
                "crit" => {
                    has_crit = true;
                    map.next_value_seed(UniqueMembers { within: &key })?;
                }
                _ => map.next_value_seed(UniqueMembers { within: &key })?,
            }
        }
        let alg = alg.ok_or_else(|| de::Error::missing_field("alg"))?;
        Ok(Header {
            alg,
            kid,
            typ,
            has_crit,
        })
    }
}

/// The `aud` claim: one audience or several.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum Audience<'a> {
    One(#[serde(borrow)] Cow<'a, str>),
    Many(#[serde(borrow)] Vec<Cow<'a, str>>),
}

impl Audience<'_> {
    /// Whether `expected` is among the audiences.
    pub fn contains(&self, expected: &str) -> bool {
        match self {
            Audience::One(aud) => aud == expected,
            Audience::Many(auds) => auds.iter().any(|aud| aud == expected),
        }
    }
}

/// The claims of a token, with the customer read from a configured claim name.
#[derive(Default)]
pub struct Claims<'a> {
    pub exp: Option<f64>,
    pub nbf: Option<f64>,
    pub iss: Option<Cow<'a, str>>,
    pub aud: Option<Audience<'a>>,
    pub iat: Option<f64>,
    pub jti: Option<Cow<'a, str>>,
    /// Authentication methods (RFC 8176 values such as `mfa`, `otp`, `hwk`).
    pub amr: Option<Vec<Cow<'a, str>>>,
    /// Authentication context class (OpenID Connect Core 2).
    pub acr: Option<Cow<'a, str>>,
    /// When the customer last authenticated, seconds since the epoch (OpenID Connect Core 2).
    pub auth_time: Option<f64>,
    /// The value of the customer claim when it is a string.
    pub customer: Option<Cow<'a, str>>,
    /// Whether the customer claim was present with a value that is not a string.
    pub customer_not_string: bool,
}

/// Deserializes [`Claims`] given the name of the claim that names the customer.
pub struct ClaimsSeed<'n> {
    pub customer_claim: &'n str,
}

impl<'de> DeserializeSeed<'de> for ClaimsSeed<'_> {
    type Value = Claims<'de>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ClaimsSeed<'_> {
    type Value = Claims<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object of claims")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut names = MemberNames::default();
        let mut claims = Claims::default();
        while let Some(key) = map.next_key_seed(MemberName)? {
            names.insert(key.clone(), None)?;
            let names_customer = key == self.customer_claim;
            // A registered claim is checked even when it also names the customer.
            match key.as_ref() {
                "exp" => {
                    claims.exp = Some(map.next_value()?);
                    claims.customer_not_string |= names_customer;
                }
                "nbf" => {
                    claims.nbf = Some(map.next_value()?);
                    claims.customer_not_string |= names_customer;
                }
                "iss" => {
                    let iss: Cow<'de, str> = map.next_value()?;
                    if names_customer {
                        claims.customer = Some(iss.clone());
                    }
                    claims.iss = Some(iss);
                }
                "aud" => {
                    let aud: Audience<'de> = map.next_value()?;
                    if names_customer {
                        match &aud {
                            Audience::One(one) => claims.customer = Some(one.clone()),
                            Audience::Many(_) => claims.customer_not_string = true,
                        }
                    }
                    claims.aud = Some(aud);
                }
                "iat" => {
                    claims.iat = Some(map.next_value()?);
                    claims.customer_not_string |= names_customer;
                }
                "jti" => {
                    let jti: Cow<'de, str> = map.next_value()?;
                    if names_customer {
                        claims.customer = Some(jti.clone());
                    }
                    claims.jti = Some(jti);
                }
                "amr" => {
                    claims.amr = Some(map.next_value()?);
                    claims.customer_not_string |= names_customer;
                }
                "acr" => {
                    let acr: Cow<'de, str> = map.next_value()?;
                    if names_customer {
                        claims.customer = Some(acr.clone());
                    }
                    claims.acr = Some(acr);
                }
                "auth_time" => {
                    claims.auth_time = Some(map.next_value()?);
                    claims.customer_not_string |= names_customer;
                }
                _ if names_customer => match map.next_value_seed(CustomerValue { within: &key })? {
                    Some(Some(customer)) => claims.customer = Some(customer),
                    Some(None) => claims.customer_not_string = true,
                    None => {}
                },
                _ => map.next_value_seed(UniqueMembers { within: &key })?,
            }
        }
        Ok(claims)
    }
}

/// Reads the value of an unregistered customer claim: `None` for null, `Some(None)` for a value
/// that is not a string (whose objects must still name each member once), else the string.
struct CustomerValue<'w> {
    within: &'w str,
}

impl<'de> DeserializeSeed<'de> for CustomerValue<'_> {
    type Value = Option<Option<Cow<'de, str>>>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CustomerValue<'_> {
    type Value = Option<Option<Cow<'de, str>>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Some(Cow::Borrowed(s))))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Some(Some(Cow::Owned(s.to_owned()))))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(Some(Some(Cow::Owned(s))))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Some(None))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Some(None))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Some(None))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Some(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        UniqueMembers {
            within: self.within,
        }
        .visit_seq(seq)
        .map(|()| Some(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        UniqueMembers {
            within: self.within,
        }
        .visit_map(map)
        .map(|()| Some(None))
    }
}
