//! The customer profile table: tier, region, base risk and compliance flags by customer id.

use crate::catalog::Catalog;
use crate::risk::ZoneId;
use foldhash::fast::RandomState;
use serde::Deserialize;
use std::collections::HashMap;

/// The most profile errors reported at once; past that, loading stops listing.
const MAX_REPORTED_ERRORS: usize = 50;

/// What the router knows of one customer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    pub tier: u16,
    pub region: u16,
    pub base_risk: f32,
    /// Compliance flags as bits of the table's flag names.
    pub flags: u64,
    /// The customer's home time zone, for the unusual-hour risk factor; None: UTC.
    pub zone: Option<ZoneId>,
}

/// Resolves a profile's time zone name (None where time zones are not used); Err says why it is
/// unknown.
pub type ZoneResolver<'a> = &'a dyn Fn(&str) -> Result<Option<ZoneId>, String>;

/// One line of a profile source, as written by operators.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileRecord {
    pub customer_id: String,
    pub tier: String,
    pub region: String,
    #[serde(default)]
    pub risk: f32,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub timezone: Option<String>,
}

/// Profiles by customer id.
pub struct ProfileTable {
    by_customer: HashMap<Box<str>, Profile, RandomState>,
    flag_names: Vec<String>,
}

impl ProfileTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::with_flags(&[])
    }

    /// An empty table whose first flag bits are `flags`, in order (the compliance rules').
    pub fn with_flags(flags: &[String]) -> Self {
        ProfileTable {
            by_customer: HashMap::with_hasher(RandomState::default()),
            flag_names: flags.to_vec(),
        }
    }

    /// Parses JSON Lines (one profile object a line; blank lines skipped), listing every bad line.
    pub fn parse_jsonl(
        source: &[u8],
        catalog: &Catalog,
        flags: &[String],
        zones: ZoneResolver,
    ) -> Result<Self, Vec<String>> {
        let mut table = ProfileTable::with_flags(flags);
        let mut errors = Vec::new();
        let mut first_line: HashMap<String, usize, RandomState> = HashMap::default();
        for (index, line) in source.split(|&b| b == b'\n').enumerate() {
            let Some(start) = line.iter().position(|b| !b.is_ascii_whitespace()) else {
                continue;
            };
            let line_no = index + 1;
            let result = if line[start] != b'{' {
                // serde's derived struct form would also take a JSON array of the fields.
                Err("a profile is a JSON object".to_owned())
            } else {
                serde_json::from_slice::<ProfileRecord>(line)
                    .map_err(|err| err.to_string())
                    .and_then(|record| match first_line.get(&record.customer_id) {
                        Some(first) => Err(format!(
                            "customer_id: {:?} is already given on line {first}",
                            record.customer_id
                        )),
                        None => {
                            first_line.insert(record.customer_id.clone(), line_no);
                            table.upsert(record, catalog, zones)
                        }
                    })
            };
            if let Err(message) = result {
                errors.push(format!("line {line_no}: {message}"));
                if errors.len() == MAX_REPORTED_ERRORS {
                    errors.push("... further errors not listed".into());
                    break;
                }
            }
        }
        if errors.is_empty() {
            Ok(table)
        } else {
            Err(errors)
        }
    }

    /// Inserts or replaces a customer's profile, refusing names the catalog does not know.
    pub fn upsert(
        &mut self,
        record: ProfileRecord,
        catalog: &Catalog,
        zones: ZoneResolver,
    ) -> Result<(), String> {
        if record.customer_id.is_empty() {
            return Err("customer_id: must not be empty".into());
        }
        let tier = catalog.tier_id(&record.tier).ok_or_else(|| {
            format!(
                "tier: unknown tier {:?} (known: {})",
                record.tier,
                catalog.tiers().join(", ")
            )
        })?;
        let region = catalog.region_id(&record.region).ok_or_else(|| {
            format!(
                "region: no cell serves region {:?} (regions: {})",
                record.region,
                catalog.regions().join(", ")
            )
        })?;
        if !(0.0..=1.0).contains(&record.risk) {
            return Err(format!(
                "risk: must be between 0 and 1, got {}",
                record.risk
            ));
        }
        let mut flags = 0u64;
        for flag in &record.flags {
            flags |= 1 << self.flag_bit(flag)?;
        }
        let zone = match &record.timezone {
            Some(name) => zones(name).map_err(|err| format!("timezone: {err}"))?,
            None => None,
        };
        let profile = Profile {
            tier,
            region,
            base_risk: record.risk,
            flags,
            zone,
        };
        self.by_customer
            .insert(record.customer_id.into_boxed_str(), profile);
        Ok(())
    }

    fn flag_bit(&mut self, flag: &str) -> Result<u32, String> {
        if let Some(bit) = self.flag_names.iter().position(|f| f == flag) {
            return Ok(bit as u32);
        }
        if self.flag_names.len() == 64 {
            return Err(format!("flags: more than 64 distinct flags ({flag:?})"));
        }
        self.flag_names.push(flag.to_owned());
        Ok(self.flag_names.len() as u32 - 1)
    }

    /// Removes a customer; says whether it was there.
    pub fn remove(&mut self, customer_id: &str) -> bool {
        self.by_customer.remove(customer_id).is_some()
    }

    /// The profile of `customer_id`.
    #[inline]
    pub fn get(&self, customer_id: &str) -> Option<Profile> {
        self.by_customer.get(customer_id).copied()
    }

    /// The names of the flags set in `flags`.
    pub fn flag_names(&self, flags: u64) -> Vec<&str> {
        (0..self.flag_names.len())
            .filter(|bit| flags & (1 << bit) != 0)
            .map(|bit| self.flag_names[bit].as_str())
            .collect()
    }

    /// How many customers the table holds.
    pub fn len(&self) -> usize {
        self.by_customer.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.by_customer.is_empty()
    }
}

impl Default for ProfileTable {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::CoreSettings;

    fn no_zones(name: &str) -> Result<Option<ZoneId>, String> {
        Err(format!("unknown zone {name:?}"))
    }

    fn catalog() -> Catalog {
        let settings: CoreSettings = serde_json::from_str(crate::testing::SETTINGS_JSON).unwrap();
        Catalog::build(&settings)
    }

    #[test]
    fn parses_lines_and_flags() {
        let source = br#"{"customer_id":"a","tier":"retail","region":"us-east","risk":0.2,"flags":["EU_RESIDENT"]}

{"customer_id":"b","tier":"corporate","region":"us-east"}"#;
        let table = ProfileTable::parse_jsonl(source, &catalog(), &[], &no_zones).unwrap();
        assert_eq!(table.len(), 2);
        let a = table.get("a").unwrap();
        assert_eq!(table.flag_names(a.flags), vec!["EU_RESIDENT"]);
        assert!((a.base_risk - 0.2).abs() < 1e-6);
        assert_eq!(table.get("b").unwrap().flags, 0);
        assert!(table.get("c").is_none());
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let source = br#"{"customer_id":"a","tier":"gold","region":"us-east"}
not json
{"customer_id":"c","tier":"retail","region":"mars"}
{"customer_id":"d","tier":"retail","region":"us-east","risk":3}
{"customer_id":"e","tier":"retail","region":"us-east","colour":"red"}
["f","retail","us-east"]
{"customer_id":"g","tier":"retail","region":"us-east"}
  {"customer_id":"g","tier":"retail","region":"us-east"}"#;
        let errors = ProfileTable::parse_jsonl(source, &catalog(), &[], &no_zones)
            .err()
            .unwrap();
        assert_eq!(errors.len(), 7, "{errors:?}");
        assert_eq!(errors[5], "line 6: a profile is a JSON object");
        assert_eq!(
            errors[6],
            "line 8: customer_id: \"g\" is already given on line 7"
        );
        assert!(errors[0].starts_with("line 1: tier: unknown tier \"gold\""));
        assert!(errors[1].starts_with("line 2:"));
        assert!(errors[2].starts_with("line 3: region:"));
        assert!(errors[3].starts_with("line 4: risk:"));
        assert!(errors[4].contains("unknown field"));
    }

    #[test]
    fn upsert_replaces_and_remove_forgets() {
        let catalog = catalog();
        let mut table = ProfileTable::new();
        let record = |tier: &str| ProfileRecord {
            customer_id: "a".into(),
            tier: tier.into(),
            region: "us-east".into(),
            risk: 0.0,
            flags: vec![],
            timezone: None,
        };
        table.upsert(record("retail"), &catalog, &no_zones).unwrap();
        table
            .upsert(record("corporate"), &catalog, &no_zones)
            .unwrap();
        assert_eq!(
            table.get("a").unwrap().tier,
            catalog.tier_id("corporate").unwrap()
        );
        assert!(table.remove("a"));
        assert!(!table.remove("a"));
    }
}
