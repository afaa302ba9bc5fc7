//! The cell table: each cell's placement facts, its live load and health, grouped by tier and region.

use crate::breaker::{Breaker, BreakerSettings};
use crate::catalog::Catalog;
use crate::forward::tls::CellTls;
use crate::settings::{CellSettings, ForwardSettings};
use crate::signing::Signer;
use crate::state::{InProcessLoad, LoadStore};
use hyper::header::HeaderValue;
use hyper::http::uri::Authority;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How strongly a cell encrypts the data it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Encryption {
    Standard,
    Enhanced,
    Maximum,
}

impl Encryption {
    /// Parses a configuration name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "standard" => Some(Encryption::Standard),
            "enhanced" => Some(Encryption::Enhanced),
            "maximum" => Some(Encryption::Maximum),
            _ => None,
        }
    }

    /// The name sent to cells in `X-Encryption-Level`.
    pub fn name(self) -> &'static str {
        match self {
            Encryption::Standard => "standard",
            Encryption::Enhanced => "enhanced",
            Encryption::Maximum => "maximum",
        }
    }
}

/// A cell's live state: requests in flight and whether health checks pass, kept in the
/// configured [`LoadStore`] (this worker's own, or the node's zone) at the cell's position.
#[derive(Debug, Clone)]
pub struct CellLoad {
    store: Arc<dyn LoadStore>,
    index: usize,
}

impl Default for CellLoad {
    fn default() -> Self {
        Self::new()
    }
}

impl CellLoad {
    /// An idle, healthy cell's load, kept in a store of its own.
    pub fn new() -> Self {
        Self::of(Arc::new(InProcessLoad::new(1)), 0)
    }

    /// Cell `index`'s load in `store`.
    pub fn of(store: Arc<dyn LoadStore>, index: usize) -> Self {
        CellLoad { store, index }
    }

    /// Requests currently held by decisions on this cell (every worker's, with the zone).
    #[inline]
    pub fn in_flight(&self) -> u32 {
        self.store.in_flight(self.index)
    }

    /// Whether the cell passes its health checks.
    #[inline]
    pub fn healthy(&self) -> bool {
        self.store.healthy(self.index)
    }

    /// Marks the cell up or down; returns the previous state.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.store.set_healthy(self.index, healthy)
    }

    /// Whether this worker is the node's prober now (see `LoadStore::may_probe`).
    pub fn may_probe(&self, now_s: u64, lease_s: u64) -> bool {
        self.store.may_probe(now_s, lease_s)
    }

    /// Says that this worker's breaker for the cell opened until `until_us`.
    pub fn opened_until(&self, until_us: u64) {
        self.store.opened_until(self.index, until_us);
    }
}

/// One cell: what it serves, where it is, and its live load.
#[derive(Debug)]
pub struct Cell {
    /// Position in configuration order, for per-cell tables kept elsewhere.
    pub index: usize,
    pub id: Arc<str>,
    pub tier: u16,
    pub region: u16,
    pub capacity: u32,
    /// The most forwards held on this cell at once.
    pub max_in_flight: u32,
    pub certifications: Vec<String>,
    pub encryption: Encryption,
    pub signed: bool,
    /// Whether the client's `Authorization` goes on to this cell.
    pub forward_bearer_token: bool,
    /// Signs every request forwarded here (RFC 9421), when the cell is signed.
    pub signer: Option<Signer>,
    /// The timeouts of forwards to this cell.
    pub timeouts: CellTimeouts,
    /// How connections to an `https://` cell are made (none: plain HTTP).
    pub tls: Option<CellTls>,
    /// `scheme://authority` of the cell, without a trailing slash.
    pub origin: String,
    /// The authority alone, sent as the `Host` of forwarded requests.
    pub authority: String,
    /// The authority as forwarded requests' URIs carry it, parsed once.
    pub uri_authority: Authority,
    /// `authority` and `id` as header values, made once for every request forwarded here.
    pub host_header: HeaderValue,
    pub id_header: HeaderValue,
    pub load: CellLoad,
    /// The cell's circuit breaker, fed by the outcome of every request it takes.
    pub breaker: Breaker,
}

impl Cell {
    /// How long until the opening said on the node (by any worker's breaker, or another
    /// node's through Redis) ends, if one holds at `now_us`; this worker's breaker takes it as
    /// its own the first time it is seen, so that it, too, goes half-open when it ends.
    #[inline]
    pub fn opened_elsewhere(&self, now_us: u64) -> Option<u64> {
        let until_us = self.load.store.open_until_us(self.load.index);
        if until_us <= now_us {
            return None;
        }
        if until_us > self.breaker.open_until_us() {
            self.breaker.adopt_opening(until_us);
        }
        Some(until_us - now_us)
    }
}

/// The timeouts of forwards to one cell: `[forward]`'s, or the cell's own.
#[derive(Debug, Clone, Copy)]
pub struct CellTimeouts {
    pub connect: Duration,
    /// Until the first byte of the answer; none: only `total` holds.
    pub first_byte: Option<Duration>,
    /// The whole exchange, answer body included.
    pub total: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle: Duration,
}

impl CellTimeouts {
    fn of(cell: &CellSettings, forward: &ForwardSettings) -> Self {
        let ms = Duration::from_millis;
        CellTimeouts {
            connect: ms(cell
                .connect_timeout_ms
                .unwrap_or(forward.connect_timeout_ms)),
            first_byte: cell
                .first_byte_timeout_ms
                .or(forward.first_byte_timeout_ms)
                .map(ms),
            total: ms(cell
                .request_timeout_ms
                .unwrap_or(forward.request_timeout_ms)),
            pool_idle: ms(cell
                .pool_idle_timeout_ms
                .unwrap_or(forward.pool_idle_timeout_ms)),
        }
    }
}

/// An in-flight slot held on a cell; dropping it gives the slot back.
#[derive(Debug)]
pub struct InFlight {
    cell: Arc<Cell>,
}

impl InFlight {
    /// Takes a slot on `cell`, whatever it holds (a retry on the slot's own cell, whose old
    /// slot goes back once the new one is taken).
    pub fn acquire(cell: Arc<Cell>) -> Self {
        cell.load.store.acquire(cell.load.index);
        InFlight { cell }
    }

    /// Takes a slot on `cell` if it holds fewer than its `max_in_flight`.
    pub fn try_acquire(cell: &Arc<Cell>) -> Option<Self> {
        let taken = cell
            .load
            .store
            .try_acquire(cell.load.index, cell.max_in_flight);
        taken.then(|| InFlight { cell: cell.clone() })
    }

    /// The cell the slot is held on.
    pub fn cell(&self) -> &Arc<Cell> {
        &self.cell
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.cell.load.store.release(self.cell.load.index);
    }
}

/// Every configured cell, with the candidates of each (tier, region) precomputed.
pub struct CellTable {
    cells: Vec<Arc<Cell>>,
    groups: HashMap<(u16, u16), Vec<Arc<Cell>>>,
    regions: HashMap<u16, Vec<Arc<Cell>>>,
    rotation: AtomicUsize,
}

/// A cell's endpoint, parsed: `http://host:port` or `https://host[:port]`.
struct Endpoint {
    /// `scheme://authority`, without a trailing slash.
    origin: String,
    authority: Authority,
    /// The authority as a `Host` value.
    host_header: HeaderValue,
    https: bool,
}

/// Parses an endpoint; the message names the field.
fn parse_endpoint(endpoint: &str) -> Result<Endpoint, String> {
    let uri: hyper::Uri = endpoint
        .parse()
        .map_err(|err| format!("endpoint: not a URL: {err}"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("endpoint: must be http:// or https://".into()),
    };
    let authority = uri.authority().ok_or("endpoint: has no host")?.clone();
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("endpoint: must not carry a path or query".into());
    }
    let host_header = HeaderValue::from_str(authority.as_str())
        .map_err(|_| format!("endpoint: {authority} cannot be sent as a Host"))?;
    let scheme = if https { "https" } else { "http" };
    Ok(Endpoint {
        origin: format!("{scheme}://{authority}"),
        authority,
        host_header,
        https,
    })
}

/// The cell's TLS configuration: `Some(None)` for a plain cell, `None` after reporting why it
/// cannot be built (each message naming its field under `tls.`).
fn cell_tls(
    cell: &CellSettings,
    endpoint: Option<&Endpoint>,
    fail: &mut impl FnMut(String),
) -> Option<Option<CellTls>> {
    let endpoint = endpoint?;
    match (&cell.tls, endpoint.https) {
        (None, false) => Some(None),
        (Some(_), false) => {
            fail("tls: given, but the endpoint is http://".into());
            None
        }
        (None, true) => {
            fail("tls: required for an https:// endpoint (ca_file at least)".into());
            None
        }
        (Some(settings), true) => match CellTls::build(settings, endpoint.authority.host()) {
            Ok(tls) => Some(Some(tls)),
            Err(tls_errors) => {
                for e in tls_errors {
                    // The default server name is the endpoint's host: its error is the endpoint's.
                    fail(match e.starts_with("endpoint: ") {
                        true => e,
                        false => format!("tls.{e}"),
                    });
                }
                None
            }
        },
    }
}

impl CellTable {
    /// Builds the table, each cell's load kept in `load` at its position in `settings`; errors
    /// are `cells[i].field: message`.
    pub fn build(
        settings: &[CellSettings],
        default_breaker: &BreakerSettings,
        forward: &ForwardSettings,
        catalog: &Catalog,
        load: &Arc<dyn LoadStore>,
    ) -> Result<Self, Vec<String>> {
        let mut cells = Vec::new();
        let mut errors = Vec::new();
        for (index, cell) in settings.iter().enumerate() {
            let mut fail = |message: String| errors.push(format!("cells[{index}].{message}"));
            let tier = catalog.tier_id(&cell.tier);
            if tier.is_none() {
                fail(format!("tier: unknown tier {:?}", cell.tier));
            }
            let encryption = Encryption::parse(&cell.encryption);
            if encryption.is_none() {
                fail(format!("encryption: unknown level {:?}", cell.encryption));
            }
            if cell.capacity == 0 {
                fail("capacity: must be > 0".into());
            }
            if cell.max_in_flight == 0 {
                fail("max_in_flight: must be > 0".into());
            }
            if cells.iter().any(|c: &Arc<Cell>| *c.id == *cell.id) {
                fail(format!("id: duplicate cell id {:?}", cell.id));
            }
            let id_header = HeaderValue::from_str(&cell.id)
                .map_err(|_| fail(format!("id: {:?} cannot be sent in a header", cell.id)))
                .ok();
            let endpoint = parse_endpoint(&cell.endpoint).map_err(&mut fail).ok();
            let tls = cell_tls(cell, endpoint.as_ref(), &mut fail);
            let signer = match (&cell.signing, cell.signed) {
                (Some(signing), true) => match Signer::from_settings(signing) {
                    Ok(signer) => Some(Some(signer)),
                    Err(signer_errors) => {
                        // The key's fields are written in the cell's signing table itself.
                        for e in signer_errors {
                            fail(format!("signing.{}", e.strip_prefix("key.").unwrap_or(&e)));
                        }
                        None
                    }
                },
                (None, true) => {
                    fail("signing: required when signed = true".into());
                    None
                }
                (Some(_), false) => {
                    fail("signing: given, but signed = false".into());
                    None
                }
                (None, false) => Some(None),
            };
            let breaker = Breaker::new(cell.breaker.as_ref().unwrap_or(default_breaker))
                .map_err(|breaker_errors| {
                    // The default breaker's errors are reported once, by the router.
                    if cell.breaker.is_some() {
                        errors.extend(breaker_errors.iter().map(|e| format!("cells[{index}].{e}")));
                    }
                })
                .ok();
            let (
                Some(tier),
                Some(encryption),
                Some(endpoint),
                Some(tls),
                Some(breaker),
                Some(id_header),
                Some(signer),
            ) = (tier, encryption, endpoint, tls, breaker, id_header, signer)
            else {
                continue;
            };
            cells.push(Arc::new(Cell {
                index: cells.len(),
                id: Arc::from(cell.id.as_str()),
                tier,
                region: catalog.region_id(&cell.region).unwrap_or(u16::MAX),
                capacity: cell.capacity,
                max_in_flight: cell.max_in_flight,
                certifications: cell.certifications.clone(),
                encryption,
                signed: cell.signed,
                forward_bearer_token: cell.forward_bearer_token,
                signer,
                timeouts: CellTimeouts::of(cell, forward),
                tls,
                origin: endpoint.origin,
                authority: endpoint.authority.as_str().to_owned(),
                uri_authority: endpoint.authority,
                host_header: endpoint.host_header,
                id_header,
                load: CellLoad::of(load.clone(), index),
                breaker,
            }));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut groups: HashMap<(u16, u16), Vec<Arc<Cell>>> = HashMap::new();
        let mut regions: HashMap<u16, Vec<Arc<Cell>>> = HashMap::new();
        for cell in &cells {
            groups
                .entry((cell.tier, cell.region))
                .or_default()
                .push(cell.clone());
            regions.entry(cell.region).or_default().push(cell.clone());
        }
        Ok(CellTable {
            cells,
            groups,
            regions,
            rotation: AtomicUsize::new(0),
        })
    }

    /// Every cell, in configuration order.
    pub fn all(&self) -> &[Arc<Cell>] {
        &self.cells
    }

    /// The cell named `id`.
    pub fn get(&self, id: &str) -> Option<&Arc<Cell>> {
        self.cells.iter().find(|c| &*c.id == id)
    }

    /// The cells of one tier and region, in configuration order.
    pub fn group(&self, tier: u16, region: u16) -> &[Arc<Cell>] {
        self.groups.get(&(tier, region)).map_or(&[], Vec::as_slice)
    }

    /// Every cell of one region, whatever its tier, in configuration order.
    pub fn region(&self, region: u16) -> &[Arc<Cell>] {
        self.regions.get(&region).map_or(&[], Vec::as_slice)
    }

    /// Every (tier, region) group and its cells.
    pub fn groups(&self) -> impl Iterator<Item = (&(u16, u16), &Vec<Arc<Cell>>)> {
        self.groups.iter()
    }

    /// A rotating start index, so that ties between equally loaded cells spread evenly.
    #[inline]
    pub fn next_rotation(&self) -> usize {
        self.rotation.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::tls::tests::mtls_settings;

    fn forward() -> ForwardSettings {
        serde_json::from_value(serde_json::json!({
            "connect_timeout_ms": 1000, "request_timeout_ms": 5000, "pool_idle_timeout_ms": 4000,
            "pool_max_idle_per_cell": 8, "max_response_bytes": 1024,
        }))
        .unwrap()
    }

    fn cell(endpoint: &str, tls: Option<crate::forward::tls::TlsSettings>) -> CellSettings {
        let mut cell: CellSettings = serde_json::from_value(serde_json::json!({
            "id": "hnw-1", "tier": "hnw", "region": "us-east", "endpoint": endpoint,
            "capacity": 10, "certifications": [], "encryption": "maximum", "signed": false,
        }))
        .unwrap();
        cell.tls = tls;
        cell
    }

    fn build(cells: &[CellSettings]) -> Result<CellTable, Vec<String>> {
        let catalog = Catalog::from_names(vec!["hnw".into()], vec!["us-east".into()]);
        let load: Arc<dyn LoadStore> = Arc::new(InProcessLoad::new(cells.len()));
        CellTable::build(
            cells,
            &BreakerSettings::default(),
            &forward(),
            &catalog,
            &load,
        )
    }

    #[test]
    fn an_https_cell_carries_its_tls_configuration_and_a_plain_one_none() {
        let mut plain = cell("http://127.0.0.1:9101", None);
        plain.id = "hnw-2".into();
        let table = build(&[cell("https://127.0.0.1:9443", Some(mtls_settings())), plain]).unwrap();
        let (tls, plain) = (&table.all()[0], &table.all()[1]);
        assert_eq!(tls.origin, "https://127.0.0.1:9443");
        assert!(tls.tls.is_some() && plain.tls.is_none());
        // The scheme of the URI a forward carries is what picks TLS in the connector.
        let uri = |cell: &Cell| crate::forward::request::cell_uri(cell, "/api/x".parse().unwrap());
        assert_eq!(uri(tls).to_string(), "https://127.0.0.1:9443/api/x");
        assert_eq!(uri(plain).to_string(), "http://127.0.0.1:9101/api/x");
        // The default port of https is 443, as the connector will assume.
        let table = build(&[cell("https://localhost", Some(mtls_settings()))]).unwrap();
        assert_eq!(table.all()[0].origin, "https://localhost");
    }

    #[test]
    fn tls_must_match_the_scheme_and_its_errors_name_the_cell() {
        let errors = build(&[cell("https://127.0.0.1:9443", None)])
            .err()
            .unwrap();
        assert_eq!(
            errors,
            ["cells[0].tls: required for an https:// endpoint (ca_file at least)"]
        );
        let errors = build(&[cell("http://127.0.0.1:9101", Some(mtls_settings()))])
            .err()
            .unwrap();
        assert_eq!(errors, ["cells[0].tls: given, but the endpoint is http://"]);
        let bad_key = crate::forward::tls::TlsSettings {
            key_pem: Some("junk".into()),
            ..mtls_settings()
        };
        let errors = build(&[cell("https://127.0.0.1:9443", Some(bad_key))])
            .err()
            .unwrap();
        assert_eq!(
            errors,
            ["cells[0].tls.key_file: holds no PEM PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY"]
        );
        let errors = build(&[cell("ftp://127.0.0.1:21", None)]).err().unwrap();
        assert_eq!(errors, ["cells[0].endpoint: must be http:// or https://"]);
    }
}
