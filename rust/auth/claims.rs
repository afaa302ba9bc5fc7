//! The registered claims the gateway checks, read in one pass without building a map.

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;

/// The JOSE header fields that matter to verification.
#[derive(Deserialize)]
pub struct Header<'a> {
    #[serde(borrow)]
    pub alg: Cow<'a, str>,
    #[serde(borrow, default)]
    pub kid: Option<Cow<'a, str>>,
    /// Critical extensions: none is understood, so any makes the token unacceptable.
    #[serde(default)]
    pub crit: Option<IgnoredAny>,
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
        let mut claims = Claims::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == self.customer_claim {
                match map.next_value::<serde_json::Value>()? {
                    serde_json::Value::String(s) => claims.customer = Some(Cow::Owned(s)),
                    serde_json::Value::Null => {}
                    _ => claims.customer_not_string = true,
                }
                continue;
            }
            match key.as_ref() {
                "exp" => claims.exp = Some(map.next_value()?),
                "nbf" => claims.nbf = Some(map.next_value()?),
                "iss" => claims.iss = Some(map.next_value()?),
                "aud" => claims.aud = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(claims)
    }
}
