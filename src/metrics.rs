//! The metrics `cfgsync run` serves on `/metrics` (crate `prometheus-client`,
//! OpenMetrics text).
//!
//! Names follow the Prometheus conventions: base units (`_seconds`), `_total`
//! on counters (added by the encoder), labels with small, closed value sets
//! (env names, target kinds, source names; never a key, a path or a value).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `cfgsync_reconcile_duration_seconds` | histogram | `env` |
//! | `cfgsync_target_writes_total` | counter | `kind`, `result` = `ok` / `error` / `fenced` |
//! | `cfgsync_drift_total` | counter | `env` |
//! | `cfgsync_source_errors_total` | counter | `source` = `etcd` / `vault` / `file` |
//! | `cfgsync_last_success_timestamp_seconds` | gauge | `env` |
//! | `cfgsync_leader` | gauge (1 = this replica may write the env now) | `env` |
//! | `cfgsync_env_led` | gauge (1 = some replica leads the env, as seen now) | `env` |
//! | `cfgsync_env_ready` | gauge (1 = the env is ready by the `/readyz` rule) | `env` |
//! | `cfgsync_passes_total` | counter (passes started, by what triggered them) | `env`, `reason` |
//! | `cfgsync_pass_rate` | gauge (this replica's passes per second over the last 10 s) | `env` |
//! | `cfgsync_pass_rate_allowed` | gauge (the most passes per second the interval, debounce and changes allow) | `env` |
//! | `cfgsync_config_reloads_total` | counter | `result` = `ok` / `rejected` |
//! | `cfgsync_vault_credential_events_total` | counter | `method`, `event` |
//! | `cfgsync_watch_up` | gauge (1 = this replica's watch on the env is established) | `env`, `kind` = `etcd`, `kubernetes`, `file` |
//! | `cfgsync_secret_reads_total` | counter (secret reads sent to Vault; per minute: `rate(…[5m]) * 60`, or `increase(…[1m])`) | `env` |
//!
//! Pass values are recorded by the service's worker from the pass's
//! summary ([`Metrics::record_pass`]), so `reconcile` itself knows nothing
//! about metrics. The three per-env gauges are set when `/metrics` is
//! scraped, from the election's fence and the readiness rule, so they agree
//! with `/readyz` at that moment: `sum(cfgsync_leader) by (env)` across
//! replicas is 1, and `cfgsync_env_led == 0` on any replica means nobody
//! leads that env (or this replica cannot reach etcd to know). Label sets
//! that are known up front are created at start, so a dashboard sees a 0
//! rather than no series.
//!
//! `cfgsync_pass_rate > cfgsync_pass_rate_allowed` is a
//! service that passes in a loop (a bug; `/readyz` says `spinning` then);
//! `rate(cfgsync_passes_total[5m])` by `reason` says which trigger drives it.
//!
//! `cfgsync_watch_up` exists for as long as a watch does: created at 0 when
//! the watch task starts, 1 once the server confirmed the watch, 0 again
//! while it reconnects, and removed when the watch ends (env removed from
//! the config, shutdown), so a removed env leaves no series stuck at 0.
//! `kind` names what is watched; a new kind of watch reuses the metric
//! with its own `kind` value ([`Metrics::watch_up`]). `cfgsync_secret_reads_total`
//! counts every KV read sent to Vault (one per referenced path per pass,
//! whatever its outcome), the number a Vault rate-limit quota or an audit
//! log sees. Its rate is Prometheus's to compute from the counter; the
//! status page and `/readyz` show the same reads of each env over the last
//! minute from a sliding window kept beside it ([`Metrics::secret_reads_last_minute`]:
//! 60 one-second buckets per env, one lock and an add per read, no
//! allocation after the first). docs/observability.md is the operator's
//! view of all of these.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::source::SourceKind;
use crate::source::vault::{CredentialEvent, CredentialObserver};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnvLabel {
    pub env: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PassLabels {
    pub env: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub kind: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    pub env: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialLabels {
    pub method: String,
    pub event: String,
}

type DurationFamily = Family<EnvLabel, Histogram, fn() -> Histogram>;

/// Every metric of the service, registered once.
pub struct Metrics {
    registry: Registry,
    pub reconcile_duration: DurationFamily,
    pub target_writes: Family<WriteLabels, Counter>,
    pub drift: Family<EnvLabel, Counter>,
    pub source_errors: Family<SourceLabel, Counter>,
    pub last_success: Family<EnvLabel, Gauge<f64, AtomicU64>>,
    pub leader: Family<EnvLabel, Gauge>,
    pub env_led: Family<EnvLabel, Gauge>,
    pub env_ready: Family<EnvLabel, Gauge>,
    pub passes: Family<PassLabels, Counter>,
    pub pass_rate: Family<EnvLabel, Gauge<f64, AtomicU64>>,
    pub pass_rate_allowed: Family<EnvLabel, Gauge<f64, AtomicU64>>,
    pub config_reloads: Family<ResultLabel, Counter>,
    pub vault_credentials: Family<CredentialLabels, Counter>,
    pub watch_up: Family<WatchLabels, Gauge>,
    pub secret_reads: Family<EnvLabel, Counter>,
    /// The secret reads of each env in the last minute (not exported:
    /// Prometheus computes rates from `secret_reads`).
    recent_secret_reads: Mutex<HashMap<String, MinuteWindow>>,
    /// What the windows' seconds count from.
    started: Instant,
}

/// How many seconds [`MinuteWindow`] looks back.
const WINDOW_SECONDS: u64 = 60;

/// Events in the last minute, in one-second buckets: each bucket holds the
/// second it counts (since [`Metrics::started`]) and its count, so a bucket
/// last written a minute ago or more is simply not summed.
struct MinuteWindow {
    buckets: [(u64, u32); WINDOW_SECONDS as usize],
}

impl Default for MinuteWindow {
    fn default() -> Self {
        Self { buckets: [(0, 0); WINDOW_SECONDS as usize] }
    }
}

impl MinuteWindow {
    fn add(&mut self, second: u64) {
        let bucket = &mut self.buckets[(second % WINDOW_SECONDS) as usize];
        if bucket.0 != second {
            *bucket = (second, 0);
        }
        bucket.1 = bucket.1.saturating_add(1);
    }

    /// The events of `second` and the 59 before it.
    fn count(&self, second: u64) -> u64 {
        let since = (second + 1).saturating_sub(WINDOW_SECONDS);
        self.buckets.iter().filter(|(s, _)| (since..=second).contains(s)).map(|(_, n)| u64::from(*n)).sum()
    }
}

fn duration_histogram() -> Histogram {
    // 1 ms .. ~65 s: a file pass takes milliseconds, a pass against a slow
    // Vault or Kubernetes API seconds.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconcile_duration: DurationFamily = Family::new_with_constructor(duration_histogram);
        let target_writes = Family::<WriteLabels, Counter>::default();
        let drift = Family::<EnvLabel, Counter>::default();
        let source_errors = Family::<SourceLabel, Counter>::default();
        let last_success = Family::<EnvLabel, Gauge<f64, AtomicU64>>::default();
        let leader = Family::<EnvLabel, Gauge>::default();
        let env_led = Family::<EnvLabel, Gauge>::default();
        let env_ready = Family::<EnvLabel, Gauge>::default();
        let passes = Family::<PassLabels, Counter>::default();
        let pass_rate = Family::<EnvLabel, Gauge<f64, AtomicU64>>::default();
        let pass_rate_allowed = Family::<EnvLabel, Gauge<f64, AtomicU64>>::default();
        let config_reloads = Family::<ResultLabel, Counter>::default();
        let vault_credentials = Family::<CredentialLabels, Counter>::default();
        let watch_up = Family::<WatchLabels, Gauge>::default();
        let secret_reads = Family::<EnvLabel, Counter>::default();
        registry.register(
            "cfgsync_reconcile_duration_seconds",
            "Duration of one reconcile pass for one env",
            reconcile_duration.clone(),
        );
        registry.register(
            "cfgsync_target_writes",
            "Write batches applied to targets, by target kind and result",
            target_writes.clone(),
        );
        registry.register(
            "cfgsync_drift",
            "Targets found changed by someone else since cfgsync wrote them, and reverted",
            drift.clone(),
        );
        registry.register("cfgsync_source_errors", "Failed reads of a source of truth", source_errors.clone());
        registry.register(
            "cfgsync_last_success_timestamp_seconds",
            "Unix time of the last pass of an env that had no failure",
            last_success.clone(),
        );
        registry.register("cfgsync_leader", "1 when this replica leads (writes) the env, else 0", leader.clone());
        registry.register(
            "cfgsync_env_led",
            "1 when some replica holds the env's lead as this replica sees it now; 0 when nobody does or etcd cannot be reached",
            env_led.clone(),
        );
        registry.register(
            "cfgsync_env_ready",
            "1 when the env is ready: led, and its last pass succeeded within two intervals",
            env_ready.clone(),
        );
        registry.register("cfgsync_passes", "Passes started, by env and by what triggered them", passes.clone());
        registry.register(
            "cfgsync_pass_rate",
            "Passes of the env this replica started, per second over the last 10 s",
            pass_rate.clone(),
        );
        registry.register(
            "cfgsync_pass_rate_allowed",
            "The most passes of the env per second that its interval, its debounce and the changes that came allow; more is a service bug",
            pass_rate_allowed.clone(),
        );
        registry.register("cfgsync_config_reloads", "Reloads of cfgsync.toml and templates", config_reloads.clone());
        registry.register(
            "cfgsync_vault_credential_events",
            "Vault token renewals and logins, by auth method and outcome",
            vault_credentials.clone(),
        );
        registry.register(
            "cfgsync_watch_up",
            "1 while this replica's watch on the env is established, 0 while it is down and reconnecting",
            watch_up.clone(),
        );
        registry.register(
            "cfgsync_secret_reads",
            "Secret reads sent to Vault, one per referenced path per pass",
            secret_reads.clone(),
        );
        Self {
            registry,
            reconcile_duration,
            target_writes,
            drift,
            source_errors,
            last_success,
            leader,
            env_led,
            env_ready,
            passes,
            pass_rate,
            pass_rate_allowed,
            config_reloads,
            vault_credentials,
            watch_up,
            secret_reads,
            recent_secret_reads: Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }

    /// Seconds since [`Metrics::started`]: the windows' clock.
    fn second(&self) -> u64 {
        Instant::now().saturating_duration_since(self.started).as_secs()
    }

    /// The secret reads sent to Vault for `env` in the last minute; `None`
    /// when the env has no Vault (no read counted and no series preset).
    pub fn secret_reads_last_minute(&self, env: &str) -> Option<u64> {
        let second = self.second();
        let windows = self.recent_secret_reads.lock().unwrap_or_else(|p| p.into_inner());
        windows.get(env).map(|w| w.count(second))
    }

    /// Creates the series known up front, so they read 0 rather than absent.
    pub fn init_series(&self, envs: &[String], sources: &[SourceKind], target_kinds: &[&str]) {
        for env in envs {
            let l = EnvLabel { env: env.clone() };
            let _ = self.drift.get_or_create(&l);
            let _ = self.leader.get_or_create(&l);
            let _ = self.env_led.get_or_create(&l);
            let _ = self.env_ready.get_or_create(&l);
            let _ = self.last_success.get_or_create(&l);
            let _ = self.pass_rate.get_or_create(&l);
            let _ = self.pass_rate_allowed.get_or_create(&l);
        }
        for s in sources {
            let _ = self.source_errors.get_or_create(&SourceLabel { source: source_label(*s).to_owned() });
        }
        if sources.contains(&SourceKind::Vault) {
            let mut windows = self.recent_secret_reads.lock().unwrap_or_else(|p| p.into_inner());
            for env in envs {
                let _ = self.secret_reads.get_or_create(&EnvLabel { env: env.clone() });
                windows.entry(env.clone()).or_default();
            }
        }
        for kind in target_kinds {
            for result in ["ok", "error"] {
                let _ = self
                    .target_writes
                    .get_or_create(&WriteLabels { kind: (*kind).to_owned(), result: result.to_owned() });
            }
        }
        for result in ["ok", "rejected"] {
            let _ = self.config_reloads.get_or_create(&ResultLabel { result: result.to_owned() });
        }
    }

    /// Records what one pass of `env` did: `source_error` names the
    /// source that failed, `writes` gives each target's kind and result
    /// (`ok`, `error`, `fenced`), `ok` says nothing failed. `drifted` is
    /// counted by the caller, which remembers what it wrote before.
    pub fn record_pass<'a>(
        &self,
        env: &str,
        took: Duration,
        drifted: u64,
        source_error: Option<&str>,
        writes: impl Iterator<Item = (&'a str, &'static str)>,
        ok: bool,
    ) {
        let env_label = EnvLabel { env: env.to_owned() };
        self.reconcile_duration.get_or_create(&env_label).observe(took.as_secs_f64());
        if drifted > 0 {
            let _ = self.drift.get_or_create(&env_label).inc_by(drifted);
        }
        if let Some(source) = source_error {
            let _ = self.source_errors.get_or_create(&SourceLabel { source: source.to_owned() }).inc();
        }
        for (kind, result) in writes {
            let _ = self
                .target_writes
                .get_or_create(&WriteLabels { kind: kind.to_owned(), result: result.to_owned() })
                .inc();
        }
        if ok {
            let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            let _ = self.last_success.get_or_create(&env_label).set(now.as_secs_f64());
        }
    }

    /// A pass of `env` starts; `reason` is what triggered it.
    pub fn pass_started(&self, env: &str, reason: &str) {
        let _ = self.passes.get_or_create(&PassLabels { env: env.to_owned(), reason: reason.to_owned() }).inc();
    }

    /// This replica's passes of `env` per second, and the allowance.
    pub fn set_pass_rate(&self, env: &str, per_second: f64, allowed: f64) {
        let l = EnvLabel { env: env.to_owned() };
        let _ = self.pass_rate.get_or_create(&l).set(per_second);
        let _ = self.pass_rate_allowed.get_or_create(&l).set(allowed);
    }

    /// Whether some replica leads `env`, and whether it is ready.
    pub fn set_env_state(&self, env: &str, led: bool, ready: bool) {
        let l = EnvLabel { env: env.to_owned() };
        let _ = self.env_led.get_or_create(&l).set(i64::from(led));
        let _ = self.env_ready.get_or_create(&l).set(i64::from(ready));
    }

    pub fn set_leader(&self, env: &str, leading: bool) {
        let _ = self.leader.get_or_create(&EnvLabel { env: env.to_owned() }).set(i64::from(leading));
    }

    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "rejected" };
        let _ = self.config_reloads.get_or_create(&ResultLabel { result: result.to_owned() }).inc();
    }

    /// The `cfgsync_watch_up` series of a watch of `env` on `kind` (e.g.
    /// `etcd`): 0 until [`WatchUp::set`] says the watch is established,
    /// removed when the returned value is dropped. Each call makes a new
    /// series, so an env removed and added again gets its own, which the
    /// old watch, ending late, cannot remove.
    pub fn watch_up(&self, env: &str, kind: &str) -> WatchUp {
        let labels = WatchLabels { env: env.to_owned(), kind: kind.to_owned() };
        self.watch_up.remove(&labels);
        let gauge = self.watch_up.get_or_create_owned(&labels);
        WatchUp { family: self.watch_up.clone(), labels, gauge }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// One watch's `cfgsync_watch_up` series, for as long as the watch exists.
pub struct WatchUp {
    family: Family<WatchLabels, Gauge>,
    labels: WatchLabels,
    gauge: Gauge,
}

impl WatchUp {
    pub fn set(&self, up: bool) {
        let _ = self.gauge.set(i64::from(up));
    }
}

impl Drop for WatchUp {
    fn drop(&mut self) {
        let ours = self.family.get(&self.labels).is_some_and(|g| std::ptr::eq(g.inner(), self.gauge.inner()));
        if ours {
            self.family.remove(&self.labels);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CredentialObserver for Metrics {
    fn credential_event(&self, method: &'static str, event: CredentialEvent) {
        let event = match event {
            CredentialEvent::Renewed => "renewed",
            CredentialEvent::RenewFailed => "renew_failed",
            CredentialEvent::LoggedIn => "login",
            CredentialEvent::LoginFailed => "login_failed",
        };
        self.vault_credentials
            .get_or_create(&CredentialLabels { method: method.to_owned(), event: event.to_owned() })
            .inc();
    }

    fn secret_read(&self, env: &str) {
        let _ = self.secret_reads.get_or_create(&EnvLabel { env: env.to_owned() }).inc();
        let second = self.second();
        let mut windows = self.recent_secret_reads.lock().unwrap_or_else(|p| p.into_inner());
        match windows.get_mut(env) {
            Some(w) => w.add(second),
            None => windows.entry(env.to_owned()).or_default().add(second),
        }
    }
}

/// The metric label of a source.
pub fn source_label(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::File => "file",
        SourceKind::Etcd => "etcd",
        SourceKind::Vault => "vault",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_total_and_preset_series_read_zero() {
        let m = Metrics::new();
        m.init_series(&["prod".to_owned()], &[SourceKind::Etcd], &["file"]);
        m.set_leader("prod", true);
        let text = m.encode();
        assert!(text.contains("cfgsync_drift_total{env=\"prod\"} 0\n"), "{text}");
        assert!(text.contains("cfgsync_leader{env=\"prod\"} 1\n"), "{text}");
        assert!(text.contains("cfgsync_source_errors_total{source=\"etcd\"} 0\n"), "{text}");
        assert!(text.contains("cfgsync_target_writes_total{kind=\"file\",result=\"error\"} 0\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn a_watch_reads_zero_until_established_and_its_series_goes_with_it() {
        let m = Metrics::new();
        let up = m.watch_up("prod", "etcd");
        assert!(m.encode().contains("cfgsync_watch_up{env=\"prod\",kind=\"etcd\"} 0\n"));
        up.set(true);
        assert!(m.encode().contains("cfgsync_watch_up{env=\"prod\",kind=\"etcd\"} 1\n"));
        up.set(false);
        assert!(m.encode().contains("cfgsync_watch_up{env=\"prod\",kind=\"etcd\"} 0\n"));
        drop(up);
        assert!(!m.encode().contains("cfgsync_watch_up{"), "{}", m.encode());

        // The env is removed and added again before the old watch ends.
        let old = m.watch_up("prod", "etcd");
        let new = m.watch_up("prod", "etcd");
        new.set(true);
        drop(old);
        assert!(m.encode().contains("cfgsync_watch_up{env=\"prod\",kind=\"etcd\"} 1\n"), "{}", m.encode());
    }

    #[test]
    fn secret_reads_are_counted_per_env_and_preset_with_vault() {
        let m = Metrics::new();
        m.init_series(&["prod".to_owned()], &[SourceKind::Vault], &[]);
        assert!(m.encode().contains("cfgsync_secret_reads_total{env=\"prod\"} 0\n"));
        m.secret_read("prod");
        m.secret_read("prod");
        assert!(m.encode().contains("cfgsync_secret_reads_total{env=\"prod\"} 2\n"));
        let without = Metrics::new();
        without.init_series(&["prod".to_owned()], &[SourceKind::Etcd], &[]);
        assert!(!without.encode().contains("cfgsync_secret_reads_total{"));
        assert_eq!(without.secret_reads_last_minute("prod"), None, "no Vault: nothing to show");
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_minute_of_secret_reads_slides() {
        let m = Metrics::new();
        m.init_series(&["prod".to_owned(), "dev".to_owned()], &[SourceKind::Vault], &[]);
        assert_eq!(m.secret_reads_last_minute("prod"), Some(0));
        m.secret_read("prod");
        m.secret_read("prod");
        tokio::time::advance(Duration::from_secs(30)).await;
        m.secret_read("prod");
        assert_eq!(m.secret_reads_last_minute("prod"), Some(3));
        assert_eq!(m.secret_reads_last_minute("dev"), Some(0), "per env");
        // The first two leave the window a minute after they were made ...
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(m.secret_reads_last_minute("prod"), Some(1));
        // ... and a bucket reused a minute later counts afresh.
        m.secret_read("prod");
        assert_eq!(m.secret_reads_last_minute("prod"), Some(2));
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(m.secret_reads_last_minute("prod"), Some(0));
        // The counter keeps them all.
        assert!(m.encode().contains("cfgsync_secret_reads_total{env=\"prod\"} 4\n"), "{}", m.encode());
    }
}
