//! JSON objects whose member names are unique, checked while reading without keeping any values.
//!
//! RFC 7515 section 4 and RFC 7519 section 4 let a parser either refuse a repeated header
//! parameter or claim name, or take the last one; RFC 8725 section 3.1 warns that parsers which
//! disagree on this read one token two ways. The gateway refuses: every object of a token, nested
//! ones included, must name each member once.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

/// Past this many members an object's names are hashed, so that a token of thousands of tiny
/// members cannot make the check quadratic.
const LINEAR_MEMBERS: usize = 16;

/// The member names of one JSON object seen so far.
#[derive(Default)]
pub struct MemberNames<'de> {
    few: Vec<Cow<'de, str>>,
    many: HashSet<Cow<'de, str>>,
}

impl<'de> MemberNames<'de> {
    /// Records `name`; a name already seen is an error naming it (and the member it is inside).
    pub fn insert<E: de::Error>(
        &mut self,
        name: Cow<'de, str>,
        within: Option<&str>,
    ) -> Result<(), E> {
        let repeated = if self.many.is_empty() && self.few.len() < LINEAR_MEMBERS {
            self.few.contains(&name)
        } else {
            self.many.extend(self.few.drain(..));
            self.many.contains(&name)
        };
        match (repeated, within) {
            (false, _) => {
                if self.many.is_empty() {
                    self.few.push(name);
                } else {
                    self.many.insert(name);
                }
                Ok(())
            }
            (true, None) => Err(E::custom(format_args!("duplicate member {name:?}"))),
            (true, Some(outer)) => Err(E::custom(format_args!(
                "duplicate member {name:?} inside {outer:?}"
            ))),
        }
    }
}

/// Reads a member name, borrowing it from the input where it has no escapes.
#[derive(Clone, Copy)]
pub struct MemberName;

impl<'de> DeserializeSeed<'de> for MemberName {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for MemberName {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: de::Error>(self, name: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(name))
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(name.to_owned()))
    }

    fn visit_string<E: de::Error>(self, name: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(name))
    }
}

/// Reads and discards any JSON value (as serde's `IgnoredAny`), refusing an object inside it that
/// names a member twice; `within` is the top-level member the value belongs to, for the error.
#[derive(Clone, Copy)]
pub struct UniqueMembers<'w> {
    pub within: &'w str,
}

impl<'de> DeserializeSeed<'de> for UniqueMembers<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueMembers<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut names = MemberNames::default();
        while let Some(name) = map.next_key_seed(MemberName)? {
            names.insert(name, Some(self.within))?;
            map.next_value_seed(self)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str) -> Result<(), String> {
        let mut deserializer = serde_json::Deserializer::from_str(json);
        UniqueMembers { within: "x" }
            .deserialize(&mut deserializer)
            .and_then(|()| deserializer.end())
            .map_err(|err| err.to_string())
    }

    #[test]
    fn any_value_without_repeats_is_read() {
        for json in [
            "1",
            "-2.5",
            "true",
            "null",
            r#""s""#,
            "[1,[2],{}]",
            r#"{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}"#,
        ] {
            assert_eq!(check(json), Ok(()), "{json}");
        }
    }

    #[test]
    fn a_repeat_at_any_depth_is_refused_and_named() {
        let err = check(r#"{"a":1,"b":2,"a":3}"#).unwrap_err();
        assert!(
            err.starts_with(r#"duplicate member "a" inside "x""#),
            "{err}"
        );
        let err = check(r#"[{"ok":1},{"deep":{"k":1,"k":2}}]"#).unwrap_err();
        assert!(err.starts_with(r#"duplicate member "k""#), "{err}");
        // An escaped spelling is the same name.
        assert!(check(r#"{"a":1,"\u0061":2}"#).is_err());
    }

    #[test]
    fn many_members_switch_to_hashing_and_still_find_repeats() {
        let members: Vec<String> = (0..100).map(|i| format!(r#""m{i}":{i}"#)).collect();
        let unique = format!("{{{}}}", members.join(","));
        assert_eq!(check(&unique), Ok(()));
        for repeat in ["m3", "m99"] {
            let repeated = format!("{{{},\"{repeat}\":0}}", members.join(","));
            assert!(check(&repeated).unwrap_err().contains(repeat));
        }
    }

    #[test]
    fn names_at_top_level_are_named_alone() {
        let mut names = MemberNames::default();
        names
            .insert::<serde_json::Error>(Cow::Borrowed("a"), None)
            .unwrap();
        let err = names
            .insert::<serde_json::Error>(Cow::Borrowed("a"), None)
            .unwrap_err();
        assert_eq!(err.to_string(), r#"duplicate member "a""#);
    }
}
