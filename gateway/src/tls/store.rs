//! The certificates being served, swapped whole on reload. rustls asks
//! the store's resolver on every handshake; it reads the current set with
//! one atomic load (no lock) and picks a pair by SNI. A reload reads the
//! files off the runtime's workers; a pair that fails to load keeps
//! serving its previous version, and the failure is logged, counted and
//! shown on `/admin/tls`. The client CA bundle (`tls.client_ca`) is read
//! again by the same reload; a new one rebuilds the server configuration,
//! which each new connection takes with one atomic load. Connections
//! already open keep what they began with.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedProtocolVersion};
use serde_json::json;
use tokio_rustls::TlsAcceptor;

use super::cert::{self, LoadedCert};
use super::client_auth::ClientCa;
use super::server::server_config;
use super::sni::SniTable;
use crate::config::CertSpec;

/// Counter: reload runs, by trigger (`file`, `sighup`, `admin`).
pub const RELOADS_METRIC: &str = "kgw_tls_reloads_total";
/// Counter: pairs that failed to load on a reload, by name.
pub const RELOAD_FAILURES_METRIC: &str = "kgw_tls_reload_failures_total";
/// Gauge: days until a served certificate expires, by name.
pub const EXPIRY_METRIC: &str = "kgw_tls_cert_expiry_days";

/// One configured pair and the version of it being served.
#[derive(Debug)]
struct Entry {
    spec: CertSpec,
    current: Arc<LoadedCert>,
    loaded_at: SystemTime,
    /// The last reload's failure, cleared by a successful one.
    last_error: Option<String>,
}

/// Everything a handshake needs, immutable once published.
#[derive(Debug)]
struct CertSet {
    /// The default pair first.
    entries: Vec<Entry>,
    sni: SniTable,
}

impl CertSet {
    fn new(entries: Vec<Entry>) -> CertSet {
        let sni = SniTable::build(
            entries
                .iter()
                .enumerate()
                .map(|(i, e)| (i, &e.current.names[..])),
        );
        CertSet { entries, sni }
    }
}

/// The served certificates, as rustls's [`ResolvesServerCert`].
#[derive(Debug)]
struct Certs(ArcSwap<CertSet>);

/// The HTTPS listener's TLS state: certificates, client CA, and the
/// server configuration built from them.
#[derive(Debug)]
pub struct CertStore {
    certs: Arc<Certs>,
    /// `tls.client_ca` as verified against, if set.
    client_ca: Option<ArcSwap<ClientCa>>,
    /// What a new connection's handshake uses.
    server: ArcSwap<ServerConfig>,
    versions: &'static [&'static SupportedProtocolVersion],
    provider: Arc<CryptoProvider>,
    /// One reload at a time, so two triggers cannot interleave their swaps.
    reloading: tokio::sync::Mutex<()>,
}

impl CertStore {
    /// Loads every pair and the client CA bundle; any failure is fatal here
    /// (start-up), as `"<config key>: <file>: <why>"`. Blocking: reads
    /// files.
    pub fn load(
        specs: Vec<CertSpec>,
        client_ca: Option<&Path>,
        versions: &'static [&'static SupportedProtocolVersion],
        provider: Arc<CryptoProvider>,
    ) -> Result<CertStore, String> {
        let now = SystemTime::now();
        let mut entries = Vec::with_capacity(specs.len());
        for spec in specs {
            let loaded =
                cert::load(&spec.files, &provider).map_err(|e| format!("{}: {e}", spec.key))?;
            entries.push(Entry {
                spec,
                current: Arc::new(loaded),
                loaded_at: now,
                last_error: None,
            });
        }
        if entries.is_empty() {
            return Err("tls: no certificate configured".into());
        }
        let certs = Arc::new(Certs(ArcSwap::from_pointee(CertSet::new(entries))));
        let client_ca = client_ca
            .map(|path| ClientCa::load(path, &provider).map_err(|e| format!("tls.client_ca: {e}")))
            .transpose()?;
        let verifier = client_ca.as_ref().map(|ca| ca.verifier.clone());
        let server = server_config(&provider, versions, verifier, certs.clone())?;
        Ok(CertStore {
            certs,
            client_ca: client_ca.map(ArcSwap::from_pointee),
            server: ArcSwap::from_pointee(server),
            versions,
            provider,
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// The acceptor for a new connection: the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.server.load_full())
    }

    /// Reads every pair again and swaps in the ones that load; `trigger`
    /// labels the reload in metrics and logs. Returns the new status.
    pub async fn reload(&self, trigger: &'static str) -> serde_json::Value {
        let _one_at_a_time = self.reloading.lock().await;
        let old = self.certs.0.load_full();
        let specs: Vec<CertSpec> = old.entries.iter().map(|e| e.spec.clone()).collect();
        let provider = self.provider.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            specs
                .iter()
                .map(|spec| cert::load(&spec.files, &provider))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_else(|e| {
            (0..old.entries.len())
                .map(|_| Err(format!("reload task failed: {e}")))
                .collect()
        });
        let now = SystemTime::now();
        let entries = old
            .entries
            .iter()
            .zip(loaded)
            .map(|(entry, result)| next_entry(entry, result, now))
            .collect();
        self.certs.0.store(Arc::new(CertSet::new(entries)));
        self.reload_client_ca().await;
        metrics::counter!(RELOADS_METRIC, "trigger" => trigger).increment(1);
        tracing::info!(trigger, "TLS certificates reloaded");
        let status = self.status();
        let failed = status["certs"].as_array().map_or(0, |c| {
            c.iter()
                .filter(|c| !c["last_reload_error"].is_null())
                .count()
        }) + usize::from(!status["client_ca"]["last_reload_error"].is_null());
        crate::events::record(
            crate::events::Kind::Certificate,
            match failed {
                0 => format!("TLS certificates reloaded ({trigger})"),
                n => format!("TLS reload ({trigger}): {n} pair(s) failed, previous kept"),
            },
            serde_json::json!({"trigger": trigger, "status": status}),
        );
        status
    }

    /// Reads the client CA bundle again; a new one rebuilds the server
    /// configuration, one that fails to load keeps the previous in force.
    async fn reload_client_ca(&self) {
        let Some(client_ca) = &self.client_ca else {
            return;
        };
        let old = client_ca.load_full();
        let (path, provider) = (old.path.clone(), self.provider.clone());
        let loaded = tokio::task::spawn_blocking(move || ClientCa::load(&path, &provider))
            .await
            .unwrap_or_else(|e| Err(format!("reload task failed: {e}")));
        let next = old.next(loaded);
        if let Some(error) = &next.last_error {
            tracing::warn!(
                "TLS reload: tls.client_ca: {error}; the previous bundle stays in force"
            );
            metrics::counter!(RELOAD_FAILURES_METRIC, "name" => "tls.client_ca").increment(1);
        } else if next.sha256 != old.sha256 {
            match server_config(
                &self.provider,
                self.versions,
                Some(next.verifier.clone()),
                self.certs.clone(),
            ) {
                Ok(server) => self.server.store(Arc::new(server)),
                // Built once already with these versions: not expected.
                Err(error) => tracing::error!("TLS reload: {error}"),
            }
        }
        client_ca.store(Arc::new(next));
    }

    /// `/admin/tls`: each pair as served, with its last reload error, and
    /// the client CA bundle (`null` without one).
    pub fn status(&self) -> serde_json::Value {
        let set = self.certs.0.load();
        let certs: Vec<_> = set
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                json!({
                    "name": e.spec.key,
                    "default": i == 0,
                    "cert_file": e.spec.files.cert,
                    "key_file": e.spec.files.key,
                    "sni_names": e.current.names,
                    "subject": e.current.info.subject,
                    "issuer": e.current.info.issuer,
                    "not_before": e.current.info.not_before,
                    "not_after": e.current.info.not_after,
                    "not_after_unix": e.current.info.not_after_unix,
                    "sha256": e.current.info.sha256,
                    "dns_names": e.current.info.dns_names,
                    "ip_addresses": e.current.info.ip_addresses,
                    "loaded_at_unix_ms": unix_ms(e.loaded_at),
                    "last_reload_error": e.last_error,
                })
            })
            .collect();
        let client_ca = self.client_ca.as_ref().map(|ca| ca.load().status());
        json!({ "certs": certs, "client_ca": client_ca })
    }

    /// Sets the expiry gauges; called at scrape time so they stay current
    /// without a timer.
    pub fn export_gauges(&self) {
        let now = unix_ms(SystemTime::now()) / 1000;
        for e in &self.certs.0.load().entries {
            metrics::gauge!(EXPIRY_METRIC, "name" => e.spec.key.clone())
                .set(e.current.info.days_left(now as i64));
        }
    }
}

/// The entry after a reload: the new pair, or the old one with the error.
fn next_entry(entry: &Entry, result: Result<LoadedCert, String>, now: SystemTime) -> Entry {
    match result {
        Ok(loaded) => {
            // An unchanged file (a touch, or the other file of the pair
            // changing) keeps its load time: it tells when the served
            // certificate changed.
            let loaded_at = if loaded.info == entry.current.info {
                entry.loaded_at
            } else {
                now
            };
            Entry {
                spec: entry.spec.clone(),
                current: Arc::new(loaded),
                loaded_at,
                last_error: None,
            }
        }
        Err(error) => {
            tracing::warn!(
                "TLS reload: {}: {error}; still serving the previous certificate",
                entry.spec.key
            );
            metrics::counter!(RELOAD_FAILURES_METRIC, "name" => entry.spec.key.clone())
                .increment(1);
            Entry {
                spec: entry.spec.clone(),
                current: entry.current.clone(),
                loaded_at: entry.loaded_at,
                last_error: Some(error),
            }
        }
    }
}

pub(super) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl ResolvesServerCert for Certs {
    /// Per handshake: one atomic load, a hash lookup, an `Arc` clone.
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.0.load();
        let index = set.sni.select(client_hello.server_name()).unwrap_or(0);
        set.entries
            .get(index)
            .map(|entry| entry.current.certified.clone())
    }
}
