//! Rendering in a worker process, so that no template can abort or exhaust
//! cfgsync itself.
//!
//! The in-process limits ([`super::Limits`]) stop most runaway templates
//! cleanly, but Tera buffers some text internally (a macro's output, a
//! string built with `~` in a loop) before cfgsync sees it, and a stack
//! overflow or an allocation failure aborts a Rust process outright. So the
//! service and the one-shot commands render in a child process
//! (`cfgsync __render-worker`, hidden) that:
//!
//! - gets the template *texts* from the parent (which compiled and checked
//!   them), not paths, so it reads no file and no config;
//! - starts with an empty environment (no credentials to read even if a
//!   template found a way) in `/`;
//! - has its address space limited (`[render] max_memory`, `RLIMIT_AS`);
//! - renders the outputs it is asked for one at a time, in order, and
//!   answers each before starting the next, so the parent knows which
//!   output a crash or a timeout belongs to (the first unanswered one); the
//!   requests of a batch travel in one frame, so a batch costs one round
//!   trip, not one per output;
//! - is killed when an output takes half a second longer than its time
//!   budget (the worker enforces the budget itself first; the kill is for
//!   a template that spins without writing or calling a function);
//! - says [`FromWorker::Ready`] once it has compiled the templates and
//!   again once it has taken in each snapshot, and the parent's clock for
//!   an output starts only after that: what is timed is rendering, not
//!   process start, compiling thousands of templates or decoding a large
//!   snapshot on a loaded machine (a no-op pass over 5,000 outputs failed
//!   "took longer than its time budget" when the first output's clock ran
//!   from before the worker had read its config). Starting and loading have
//!   their own, much longer bound ([`LOAD_TIMEOUT`]), so a worker that
//!   hangs there still fails its batch.
//!
//! A dead or killed worker fails only the output it was rendering (as
//! [`LimitHit::Worker`] or [`LimitHit::Time`]); a new worker is started for
//! the rest.
//!
//! No worker outlives cfgsync, on any exit path: cfgsync stops and reaps
//! its idle workers before it returns from `main` ([`Sandbox::stop_workers`],
//! after a pass, an error, or the service's shutdown on SIGTERM/SIGINT); a
//! worker dropped mid-render is killed (`kill_on_drop`); and each worker
//! asks the kernel to SIGKILL it when its parent dies (`PR_SET_PDEATHSIG`,
//! checked against the parent's pid it is given, which closes the race with
//! a parent that died first), which covers what `main` cannot see: a
//! one-shot command killed by a signal, a panic, an abort. A worker left
//! without its parent would otherwise go on spinning on a template that
//! never writes. The kernel's signal follows the *thread* that started the
//! worker, so a pooled worker found dead before use is replaced, not used.
//!
//! There is a small pool of workers (one per core, at most [`MAX_WORKERS`]),
//! so the envs of a pass render in parallel, and [`Sandbox::prewarm`]
//! starts them (process start, compiling the templates) while the sources
//! are being read, on tasks the pool owns (a `TaskTracker` and a
//! `CancellationToken`): [`Sandbox::stop_workers`] stops and awaits them
//! before it kills the idle workers, so none starts after it.
//!
//! One env's batch is shared by the workers that are warm and free
//! ([`render_shared`]): lanes take a few consecutive outputs at a time
//! from a shared cursor, each lane in its own worker, each worker as
//! above (in order, one answer per output). A lane beyond the first joins
//! only with a worker already started for these templates, so sharing
//! never waits for a process to start nor holds a slot another env could
//! use. Before, one worker rendered a whole env while the others
//! prewarming had started stayed idle: the confd job below (one env, 100
//! outputs) took one core's time on a machine with two.
//!
//! What the worker costs, measured on the confd job (`scripts/bench.sh
//! confd`: one env, 100 outputs each looping over 1,000 keys, 7 MB
//! rendered; 2-core VM, see docs/benchmarks.md): a worker starts and
//! compiles the 100 templates in 3–8 ms, takes in the snapshot in under
//! 1 ms, and renders the 100 outputs in 35 ms alone (53 ms before its
//! answers went raw and its clock was read less often). Start-up was not
//! what cost most: prewarming hides it behind the etcd read. What did was
//! rendering the whole env in one worker, and base64-in-JSON answers that
//! both sides encoded, escaped and decoded; and, on a 64 KiB pipe, a
//! worker waiting for the parent to read each 73 KB output in pieces (the
//! answer pipe is enlarged to 1 MiB where Linux allows).
//!
//! Outputs that run no Tera code — every entry a key's bytes or a
//! [`super::simple`] template (text and `key`/`key_or`/`secret` lookups) —
//! render in the calling process: what they do is copy snapshot values
//! into a buffer through the size- and time-limited writer, which cannot
//! recurse, loop, or grow past the limits, so there is nothing for a worker
//! to contain. Most fleets are mostly such outputs, and then no worker
//! process starts at all. The protocol is length-prefixed JSON frames over the child's
//! stdin/stdout; an output's rendered bytes follow its JSON answer as one
//! raw frame (the answer gives each entry's length) and become [`Content`]
//! again on arrival, without a copy for the first entry.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{LimitHit, Limits, RenderError, Rendered, Templates, Use};
use crate::secret::{Content, SecretString};
use crate::source::{KeyData, KeyOrigin, KeyValue, Secret, Snapshot};

/// The hidden subcommand the worker runs as.
pub const WORKER_COMMAND: &str = "__render-worker";

/// Largest frame either side accepts: a snapshot or an output is far
/// smaller; this only bounds a corrupted length prefix.
const MAX_FRAME: usize = 1 << 30;

/// The size asked for the pipe a worker answers on (Linux's default
/// `pipe-max-size`).
#[cfg(any(target_os = "linux", target_os = "android"))]
const PIPE_BYTES: usize = 1 << 20;

/// How long a worker may take to start and compile the templates, or to
/// take in a snapshot, before it is given up on. Not part of any output's
/// time budget: both are linear in what the config and the sources hold.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// Where outputs are rendered.
pub struct Sandbox {
    mode: Mode,
}

static GLOBAL: std::sync::OnceLock<Sandbox> = std::sync::OnceLock::new();

impl Sandbox {
    /// The process's sandbox: what [`Sandbox::install`] set, else in
    /// process. The `cfgsync` binary installs the worker mode at start;
    /// library users (benches, tests) render in process.
    pub fn global() -> &'static Sandbox {
        GLOBAL.get_or_init(Sandbox::in_process)
    }

    /// Sets the process's sandbox; only the first call has an effect.
    pub fn install(sandbox: Sandbox) {
        let _ = GLOBAL.set(sandbox);
    }
}

enum Mode {
    /// In this process, on a thread with a large stack: for library users
    /// and tests. The limits apply; a crash of Tera is not contained.
    InProcess,
    /// In worker processes of `exe`.
    Worker { exe: PathBuf, pool: Pool },
}

/// Most render workers one process runs.
pub const MAX_WORKERS: usize = 4;

/// Worker slots: a batch takes a permit, then an idle slot (started on
/// first use, or by [`Sandbox::prewarm`]).
struct Pool {
    size: usize,
    permits: tokio::sync::Semaphore,
    idle: std::sync::Mutex<Vec<Option<Worker>>>,
    /// [`Sandbox::prewarm`]'s tasks, which [`Sandbox::stop_workers`] stops
    /// (`stop`) and waits for, so that no worker starts after it.
    prewarming: TaskTracker,
    stop: CancellationToken,
}

impl Pool {
    fn new(size: usize) -> Self {
        Self {
            size,
            permits: tokio::sync::Semaphore::new(size),
            idle: std::sync::Mutex::new((0..size).map(|_| None).collect()),
            prewarming: TaskTracker::new(),
            stop: CancellationToken::new(),
        }
    }

    async fn take(&self) -> (tokio::sync::SemaphorePermit<'_>, Option<Worker>) {
        let permit = self.permits.acquire().await.expect("the pool's semaphore is never closed");
        let mut slot = self.idle.lock().expect("pool lock").pop().flatten();
        // One that died while idle is replaced rather than failing an output.
        if let Some(w) = &mut slot
            && !matches!(w.child.try_wait(), Ok(None))
        {
            slot = None;
        }
        (permit, slot)
    }

    fn give_back(&self, slot: Option<Worker>) {
        self.idle.lock().expect("pool lock").push(slot);
    }
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// [`Templates::id`] of the set it compiled: a reloaded config gets a
    /// new worker.
    templates: u64,
    /// The [`Sandbox::render`] call whose snapshot it holds: each call
    /// sends it once per worker, however many requests the worker takes.
    snapshot_of: u64,
}

#[derive(Serialize, Deserialize)]
enum ToWorker {
    Init {
        sources: Vec<(String, String)>,
        outputs: Vec<super::OutputSpec>,
        limits: WireLimits,
    },
    /// The snapshot the following `Render`s use.
    Snapshot(WireSnapshot),
    /// Render these outputs, in order, answering each.
    Render {
        indices: Vec<usize>,
    },
}

#[derive(Serialize, Deserialize)]
struct WireLimits {
    max_entry_bytes: usize,
    max_output_bytes: usize,
    timeout_ms: u64,
    max_range: usize,
    max_memory: u64,
}

#[derive(Serialize, Deserialize)]
struct WireSnapshot {
    env: String,
    /// name → (is text, base64 bytes)
    keys: Vec<(String, bool, String)>,
    secrets: Vec<(String, Vec<(String, String)>)>,
    revision: Option<i64>,
}

#[derive(Serialize, Deserialize)]
enum FromWorker {
    /// The templates are compiled (after `Init`), or the snapshot is taken
    /// in (after `Snapshot`): the next `Render` starts rendering at once.
    Ready,
    /// Followed by one more frame, the entries' bytes one after the
    /// other, `entries` giving each one's name and length: raw bytes, not
    /// base64 in JSON (encoding, escaping and decoding 6 MB of rendered
    /// text was a fifth of the worker's time in the confd benchmark).
    Rendered {
        entries: Vec<(String, usize)>,
        tainted: bool,
        used: BTreeSet<Use>,
    },
    Failed(RenderError),
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_default()
}

impl WireSnapshot {
    fn of(s: &Snapshot) -> Self {
        WireSnapshot {
            env: s.env.clone(),
            keys: s
                .keys
                .iter()
                .map(|(k, v)| (k.clone(), matches!(v.data, KeyData::Text(_)), b64(v.data.as_bytes())))
                .collect(),
            secrets: s
                .secrets
                .iter()
                .map(|(p, sec)| {
                    (p.clone(), sec.fields.iter().map(|(f, v)| (f.clone(), v.expose().to_owned())).collect())
                })
                .collect(),
            revision: s.revision,
        }
    }

    fn into_snapshot(self) -> Snapshot {
        let keys = self
            .keys
            .into_iter()
            .map(|(k, text, bytes)| {
                let bytes = unb64(&bytes);
                // As the parent classified it (a probe value may be text with a NUL).
                let data = match String::from_utf8(bytes) {
                    Ok(t) if text => KeyData::Text(t),
                    Ok(t) => KeyData::Bytes(t.into_bytes()),
                    Err(e) => KeyData::Bytes(e.into_bytes()),
                };
                (k, KeyValue { data, origin: KeyOrigin::File })
            })
            .collect();
        let secrets = self
            .secrets
            .into_iter()
            .map(|(p, fields)| {
                let fields = fields.into_iter().map(|(f, v)| (f, SecretString::new(v))).collect();
                (p, Secret { fields, version: None })
            })
            .collect();
        Snapshot { env: self.env, keys, secrets, revision: self.revision }
    }
}

impl Sandbox {
    pub fn in_process() -> Self {
        Self { mode: Mode::InProcess }
    }

    /// Renders in workers started as `exe __render-worker`, one per core
    /// (at most [`MAX_WORKERS`]).
    pub fn worker(exe: PathBuf) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::worker_pool(exe, cores)
    }

    /// Renders in up to `size` workers (1 to [`MAX_WORKERS`]) started as
    /// `exe __render-worker`.
    pub fn worker_pool(exe: PathBuf, size: usize) -> Self {
        Self { mode: Mode::Worker { exe, pool: Pool::new(size.clamp(1, MAX_WORKERS)) } }
    }

    /// The worker mode when the running binary is cfgsync itself, else in
    /// process (library users, unit tests).
    pub fn for_current_exe() -> Self {
        match std::env::current_exe() {
            Ok(exe) if exe.file_name().is_some_and(|n| n == "cfgsync") => Self::worker(exe),
            _ => Self::in_process(),
        }
    }

    /// Renders each of `indices` (config order) for `snapshot`'s env; one
    /// result per index, in order.
    pub async fn render(
        &self,
        templates: &Templates,
        snapshot: &Arc<Snapshot>,
        indices: &[usize],
    ) -> Vec<Result<Rendered, RenderError>> {
        match &self.mode {
            // On a thread with a large stack (Tera recurses), which this
            // task waits for, as rendering inline would.
            Mode::InProcess => std::thread::scope(|scope| {
                let spawned = std::thread::Builder::new()
                    .name("render".into())
                    .stack_size(super::STACK_BYTES)
                    .spawn_scoped(scope, || indices.iter().map(|i| templates.render(*i, snapshot)).collect::<Vec<_>>());
                match spawned.map(|t| t.join()) {
                    Ok(Ok(results)) => results,
                    Ok(Err(_)) | Err(_) => indices
                        .iter()
                        .map(|i| {
                            Err(worker_error(templates, *i, &snapshot.env, "rendering failed unexpectedly".into()))
                        })
                        .collect(),
                }
            }),
            Mode::Worker { exe, pool } => {
                let (tera, simple): (Vec<usize>, Vec<usize>) = indices.iter().partition(|i| templates.runs_tera(**i));
                let mut done: BTreeMap<usize, Result<Rendered, RenderError>> = BTreeMap::new();
                // Outputs that run no Tera render here: lookups and text,
                // bounded by the size and time limits, cannot recurse, loop
                // or allocate past them. A yield now and then keeps the
                // service's other tasks (probes, watches) going meanwhile.
                for chunk in simple.chunks(256) {
                    for &i in chunk {
                        done.insert(i, templates.render(i, snapshot));
                    }
                    tokio::task::yield_now().await;
                }
                if !tera.is_empty() {
                    let wire = serde_json::to_vec(&ToWorker::Snapshot(WireSnapshot::of(snapshot))).unwrap_or_default();
                    let results = render_shared(exe, pool, templates, snapshot, &wire, &tera).await;
                    done.extend(tera.into_iter().zip(results));
                }
                indices.iter().map(|i| done.remove(i).expect("every index rendered once")).collect()
            }
        }
    }

    /// Stops prewarming (a worker being started is killed) and waits for
    /// it, then kills and reaps every idle worker: `main` calls it before
    /// cfgsync exits, whatever the outcome, so no worker outlives the
    /// command (the pool is a static, which Rust never drops). Workers in
    /// use belong to a rendering still running and are killed when it is
    /// dropped. Later renders still start workers; prewarming stays off.
    pub async fn stop_workers(&self) {
        let Mode::Worker { pool, .. } = &self.mode else { return };
        pool.stop.cancel();
        pool.prewarming.close();
        pool.prewarming.wait().await;
        let workers: Vec<Worker> = pool.idle.lock().expect("pool lock").iter_mut().filter_map(Option::take).collect();
        for mut w in workers {
            let _ = w.child.start_kill();
            let _ = w.child.wait().await;
        }
    }

    /// Starts the workers for `templates` in the background (a no-op in
    /// process, or when they run already), so that the first pass does not
    /// wait for them. The tasks are the pool's ([`Pool::prewarming`]).
    pub fn prewarm(&'static self, templates: &Templates) {
        let Mode::Worker { exe, pool } = &self.mode else { return };
        if !templates.any_runs_tera() || pool.stop.is_cancelled() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let parts = InitParts::of(templates);
        let size = pool.idle.lock().expect("pool lock").len();
        let task = async move {
            // Serialising thousands of templates takes a while: not on the caller's thread.
            let Ok(Ok(init)) = tokio::task::spawn_blocking(move || parts.build()).await else { return };
            let init = Arc::new(init);
            for _ in 0..size {
                let init = init.clone();
                pool.prewarming.spawn(warm(exe, pool, init));
            }
        };
        pool.prewarming.spawn_on(pool.stop.clone().run_until_cancelled_owned(task), &runtime);
    }
}

/// Starts one idle worker for `init`'s templates unless one runs already,
/// every slot is busy or prewarming has stopped; a worker still starting
/// when it stops is killed and reaped ([`start`]).
async fn warm(exe: &std::path::Path, pool: &Pool, init: Arc<Init>) {
    if pool.stop.is_cancelled() {
        return;
    }
    let Ok(permit) = pool.permits.try_acquire() else { return };
    let mut slot = pool.idle.lock().expect("pool lock").pop().flatten();
    if slot.as_ref().is_none_or(|w| w.templates != init.id) {
        if let Some(mut old) = slot.take() {
            let _ = old.child.start_kill();
            let _ = old.child.wait().await;
        }
        slot = start(exe, &init, Some(&pool.stop)).await.ok();
    }
    pool.give_back(slot);
    drop(permit);
}

/// What starting a worker for one set of templates takes.
struct Init {
    frame: Vec<u8>,
    id: u64,
    max_memory: u64,
}

/// What [`Init`] is built from, shared with the compiled set.
struct InitParts {
    sources: Arc<Vec<(String, String)>>,
    outputs: Arc<Vec<super::CompiledOutput>>,
    limits: Limits,
    id: u64,
}

/// [`ToWorker::Init`], serialised from borrowed parts (the same JSON).
#[derive(Serialize)]
enum InitFrame<'a> {
    Init { sources: &'a [(String, String)], outputs: Vec<SpecRef<'a>>, limits: WireLimits },
}

/// A borrowed [`super::OutputSpec`].
type SpecRef<'a> = (&'a str, &'a [String], &'a [(String, String)], (&'a BTreeSet<String>, &'a BTreeSet<String>));

impl InitParts {
    fn of(templates: &Templates) -> Self {
        Self {
            sources: templates.sources.clone(),
            outputs: templates.outputs.clone(),
            limits: templates.limits,
            id: templates.id,
        }
    }

    fn build(&self) -> Result<Init, String> {
        let l = self.limits;
        let outputs = self
            .outputs
            .iter()
            .map(|o| {
                let names = (&o.analysis.secret_paths, &*o.analysis.literal_names);
                (o.name.as_str(), o.envs.as_slice(), o.entries.as_slice(), names)
            })
            .collect();
        let init = InitFrame::Init {
            sources: &self.sources,
            outputs,
            limits: WireLimits {
                max_entry_bytes: l.max_entry_bytes,
                max_output_bytes: l.max_output_bytes,
                timeout_ms: l.timeout.as_millis() as u64,
                max_range: l.max_range,
                max_memory: l.max_memory,
            },
        };
        let frame = serde_json::to_vec(&init).map_err(|e| e.to_string())?;
        Ok(Init { frame, id: self.id, max_memory: l.max_memory })
    }
}

fn worker_error(templates: &Templates, index: usize, env: &str, cause: String) -> RenderError {
    RenderError::Worker { output: templates.outputs[index].name.clone(), env: env.to_owned(), cause }
}

/// Fewest outputs of a batch worth a lane of their own.
const MIN_SHARE: usize = 4;

/// Most outputs one request of a lane carries: a lane comes back for more
/// often enough that the lanes finish together.
const MAX_SHARE: usize = 64;

/// Renders `indices` for `snapshot` in up to [`Pool::size`] workers at
/// once, one result per index, in order. The first lane waits for a slot
/// (starting its worker if it has none); each other lane joins only with a
/// worker already warm for these templates that comes free before every
/// output is handed out, and otherwise stays out, so a batch never waits
/// for a second worker to start nor keeps one from another env. Lanes take
/// consecutive outputs from a shared cursor, a few at a time, so a slow
/// output holds up only its own lane; within a lane everything is as for a
/// single worker ([`render_batch`]: in order, a crash or a timeout fails
/// only the output being rendered).
async fn render_shared(
    exe: &std::path::Path,
    pool: &Pool,
    templates: &Templates,
    snapshot: &Snapshot,
    wire_snapshot: &[u8],
    indices: &[usize],
) -> Vec<Result<Rendered, RenderError>> {
    // Tells this call's snapshot from the one a worker holds from before.
    let call = fastrand::u64(1..);
    let lanes = pool.size.min(indices.len().div_ceil(MIN_SHARE)).max(1);
    let share = indices.len().div_ceil(lanes * 4).clamp(1, MAX_SHARE);
    let cursor = std::sync::atomic::AtomicUsize::new(0);
    let handed_out = CancellationToken::new();
    let lane = |first: bool| {
        let (cursor, handed_out) = (&cursor, &handed_out);
        async move {
            let (permit, mut slot) = if first {
                pool.take().await
            } else {
                tokio::select! {
                    biased;
                    () = handed_out.cancelled() => return Vec::new(),
                    taken = pool.take() => taken,
                }
            };
            let mut out = Vec::new();
            if first || slot.as_ref().is_some_and(|w| w.templates == templates.id) {
                loop {
                    let start = cursor.fetch_add(share, std::sync::atomic::Ordering::Relaxed);
                    if start >= indices.len() {
                        handed_out.cancel();
                        break;
                    }
                    let part = &indices[start..(start + share).min(indices.len())];
                    let mut results = Vec::with_capacity(part.len());
                    while results.len() < part.len() {
                        let rest = &part[results.len()..];
                        render_batch(exe, &mut slot, templates, snapshot, (call, wire_snapshot), rest, &mut results)
                            .await;
                    }
                    out.extend((start..).zip(results));
                }
            }
            pool.give_back(slot);
            drop(permit);
            out
        }
    };
    let mut results: Vec<_> = futures_util::future::join_all((0..lanes).map(|i| lane(i == 0))).await.concat();
    results.sort_unstable_by_key(|(position, _)| *position);
    results.into_iter().map(|(_, result)| result).collect()
}

/// Renders `indices` in the worker in `slot` (started if needed), pushing
/// one result per output answered onto `results`. Returns early, with a
/// failure for the output being rendered, when the worker dies or overruns
/// the hard time limit; the slot is then empty and the caller goes on with
/// the rest.
async fn render_batch(
    exe: &std::path::Path,
    slot: &mut Option<Worker>,
    templates: &Templates,
    snapshot: &Snapshot,
    (call, wire_snapshot): (u64, &[u8]),
    indices: &[usize],
    results: &mut Vec<Result<Rendered, RenderError>>,
) {
    if slot.as_ref().is_some_and(|w| w.templates != templates.id)
        && let Some(mut old) = slot.take()
    {
        let _ = old.child.start_kill();
        let _ = old.child.wait().await;
    }
    if slot.is_none() {
        match async { start(exe, &InitParts::of(templates).build()?, None).await }.await {
            Ok(w) => *slot = Some(w),
            Err(e) => {
                results.push(Err(worker_error(templates, indices[0], &snapshot.env, e)));
                return;
            }
        }
    }
    let worker = slot.as_mut().expect("started above");
    let frame = serde_json::to_vec(&ToWorker::Render { indices: indices.to_vec() }).unwrap_or_default();
    let hard_limit = templates.limits.timeout + Duration::from_millis(500);
    // Taking in the snapshot is not rendering: its own bound, then the clock.
    if worker.snapshot_of != call {
        let loaded = tokio::time::timeout(LOAD_TIMEOUT, async {
            write_frame(&mut worker.stdin, wire_snapshot).await.map_err(|e| e.to_string())?;
            expect_ready(&mut worker.stdout).await
        })
        .await
        .unwrap_or_else(|_| Err(format!("took more than {} s to take in the snapshot", LOAD_TIMEOUT.as_secs())));
        if let Err(cause) = loaded {
            if let Some(mut w) = slot.take() {
                let _ = w.child.start_kill();
                let _ = w.child.wait().await;
            }
            let cause = format!("the render worker {cause}");
            results.push(Err(worker_error(templates, indices[0], &snapshot.env, cause)));
            return;
        }
        worker.snapshot_of = call;
    }
    let worker = slot.as_mut().expect("still there");
    let sent = write_frame(&mut worker.stdin, &frame);
    let mut failed = tokio::time::timeout(hard_limit, sent).await.map_or(Some(true), |r| r.err().map(|_| false));
    if failed.is_none() {
        for &index in indices {
            let answer = tokio::time::timeout(hard_limit, read_answer(&mut worker.stdout)).await;
            let timed_out = answer.is_err();
            let reply = answer.ok().and_then(Result::ok).flatten();
            let output = templates.outputs[index].name.clone();
            let env = snapshot.env.clone();
            match reply {
                Some((FromWorker::Rendered { tainted, used, .. }, Some(entries))) => {
                    let entries: BTreeMap<String, Content> =
                        entries.into_iter().map(|(k, v)| (k, Content::new(v, tainted))).collect();
                    results.push(Ok(Rendered { output, env, entries, tainted, used }));
                }
                Some((FromWorker::Failed(e), _)) => results.push(Err(e)),
                Some((FromWorker::Ready | FromWorker::Rendered { .. }, _)) | None => {
                    failed = Some(timed_out);
                    break;
                }
            }
        }
    }
    if let Some(timed_out) = failed {
        let index = indices[results.len().min(indices.len() - 1)];
        let output = templates.outputs[index].name.clone();
        let env = snapshot.env.clone();
        let limit = if timed_out { LimitHit::Time } else { LimitHit::Worker };
        if let Some(mut w) = slot.take() {
            let _ = w.child.start_kill();
            let _ = w.child.wait().await;
        }
        tracing::warn!(output, env, %limit, "render worker stopped; a new one renders the next output");
        results.push(Err(RenderError::Limit { output, env, entry: None, limit }));
    }
}

/// Starts a worker and waits until it has compiled the templates; gives up
/// (killing and reaping it) after [`LOAD_TIMEOUT`] or once `stop` is
/// cancelled.
async fn start(exe: &std::path::Path, init: &Init, stop: Option<&CancellationToken>) -> Result<Worker, String> {
    let mut child = tokio::process::Command::new(exe)
        .arg(WORKER_COMMAND)
        .arg(std::process::id().to_string())
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the render worker {}: {e}", exe.display()))?;
    if let Some(pid) = child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
        let limit = rustix::process::Rlimit { current: Some(init.max_memory), maximum: Some(init.max_memory) };
        rustix::process::prlimit(Some(pid), rustix::process::Resource::As, limit)
            .map_err(|e| format!("cannot limit the render worker's memory: {e}"))?;
    }
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err("the render worker has no pipes".into());
    };
    // A rendered output is often larger than a pipe's default 64 KiB: the
    // worker would wait for the parent to read each one in pieces. A
    // larger pipe lets it go on rendering (best effort: the kernel's
    // `pipe-max-size` may refuse).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = rustix::pipe::fcntl_setpipe_size(&stdout, PIPE_BYTES);
    let mut stdout = stdout;
    let handshake = tokio::time::timeout(LOAD_TIMEOUT, async {
        write_frame(&mut stdin, &init.frame).await.map_err(|e| format!("cannot talk to the render worker: {e}"))?;
        expect_ready(&mut stdout).await.map_err(|e| format!("the render worker {e}"))
    });
    let stopped = async {
        match stop {
            Some(stop) => stop.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let ready = tokio::select! {
        ready = handshake => ready.unwrap_or_else(|_| {
            Err(format!("the render worker took more than {} s to compile the templates", LOAD_TIMEOUT.as_secs()))
        }),
        () = stopped => Err("the render worker was no longer needed".to_owned()),
    };
    if let Err(e) = ready {
        let _ = child.start_kill();
        let _ = child.wait().await;
        return Err(e);
    }
    Ok(Worker { child, stdin, stdout, templates: init.id, snapshot_of: 0 })
}

/// Reads the worker's [`FromWorker::Ready`].
async fn expect_ready(stdout: &mut ChildStdout) -> Result<(), String> {
    let frame = read_frame(stdout).await.map_err(|e| format!("stopped before it was ready: {e}"))?;
    match serde_json::from_slice::<FromWorker>(&frame) {
        Ok(FromWorker::Ready) => Ok(()),
        _ => Err("answered something else than ready".to_owned()),
    }
}

async fn write_frame(w: &mut ChildStdin, frame: &[u8]) -> std::io::Result<()> {
    w.write_all(&(frame.len() as u64).to_be_bytes()).await?;
    w.write_all(frame).await?;
    w.flush().await
}

async fn read_frame(r: &mut ChildStdout) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 8];
    r.read_exact(&mut len).await?;
    let len = u64::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other("frame too large"));
    }
    let mut buf = vec![0; len];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Reads one answer of the worker: `None` for a frame that is not one, or
/// a [`FromWorker::Rendered`] whose bytes do not add up to its entries'
/// lengths (a broken worker, treated as a dead one); the entries' bytes
/// come with a `Rendered`.
async fn read_answer(r: &mut ChildStdout) -> std::io::Result<Option<(FromWorker, Option<Vec<(String, Vec<u8>)>>)>> {
    let Ok(answer) = serde_json::from_slice::<FromWorker>(&read_frame(r).await?) else { return Ok(None) };
    let FromWorker::Rendered { entries, .. } = &answer else { return Ok(Some((answer, None))) };
    let mut body = read_frame(r).await?;
    if entries.iter().try_fold(0usize, |sum, (_, len)| sum.checked_add(*len)) != Some(body.len()) {
        return Ok(None);
    }
    // From the end, so the first entry (often the only one) keeps the
    // frame's buffer: no copy, no fresh pages.
    let mut bytes: Vec<(String, Vec<u8>)> = entries
        .iter()
        .rev()
        .map(|(name, len)| {
            let start = body.len() - len;
            (name.clone(), if start == 0 { std::mem::take(&mut body) } else { body.split_off(start) })
        })
        .collect();
    bytes.reverse();
    Ok(Some((answer, Some(bytes))))
}

/// The worker: `cfgsync __render-worker PARENT_PID`. Reads frames from
/// stdin, answers on stdout, until stdin closes. Returns the process exit
/// code.
pub fn worker_main() -> i32 {
    let parent: Option<i32> = std::env::args().nth(2).and_then(|p| p.parse().ok());
    if !die_with_parent(parent) {
        return 0;
    }
    let spawned = std::thread::Builder::new().name("render".into()).stack_size(super::STACK_BYTES).spawn(serve);
    match spawned.map(|t| t.join()) {
        Ok(Ok(code)) => code,
        _ => 70,
    }
}

/// Arranges for this worker to end when its parent (pid `parent`) does;
/// false when the parent is gone already.
fn die_with_parent(parent: Option<i32>) -> bool {
    let parent_is = |p: i32| rustix::process::getppid().map(|pid| pid.as_raw_nonzero().get()) == Some(p);
    // Linux: the kernel sends SIGKILL. If the parent died before this was
    // set, the worker has been adopted already: the pid check sees it.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)).is_err() {
        return false;
    }
    // Elsewhere: a watchdog looks four times a second.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    if let Some(p) = parent {
        let _ = std::thread::Builder::new().name("parent-watch".into()).spawn(move || {
            while parent_is(p) {
                std::thread::sleep(Duration::from_millis(250));
            }
            std::process::exit(0);
        });
    }
    parent.is_none_or(parent_is)
}

fn serve() -> i32 {
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let read = |stdin: &mut dyn Read| -> Option<Vec<u8>> {
        let mut len = [0u8; 8];
        stdin.read_exact(&mut len).ok()?;
        let len = u64::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return None;
        }
        let mut buf = vec![0; len];
        stdin.read_exact(&mut buf).ok()?;
        Some(buf)
    };
    let Some(Ok(ToWorker::Init { sources, outputs, limits })) = read(&mut stdin).map(|f| serde_json::from_slice(&f))
    else {
        return 64;
    };
    let limits = Limits {
        max_entry_bytes: limits.max_entry_bytes,
        max_output_bytes: limits.max_output_bytes,
        timeout: Duration::from_millis(limits.timeout_ms),
        max_range: limits.max_range,
        max_memory: limits.max_memory,
    };
    let Ok(templates) = Templates::from_sources(sources, outputs, limits) else { return 65 };
    let send = |stdout: &mut dyn Write, answer: &FromWorker| -> Option<()> {
        let bytes = serde_json::to_vec(answer).ok()?;
        stdout
            .write_all(&(bytes.len() as u64).to_be_bytes())
            .and_then(|_| stdout.write_all(&bytes))
            .and_then(|_| stdout.flush())
            .ok()
    };
    if send(&mut stdout, &FromWorker::Ready).is_none() {
        return 0;
    }
    let mut snapshot: Option<Arc<Snapshot>> = None;
    while let Some(frame) = read(&mut stdin) {
        let indices = match serde_json::from_slice::<ToWorker>(&frame) {
            Ok(ToWorker::Snapshot(s)) => {
                snapshot = Some(Arc::new(s.into_snapshot()));
                if send(&mut stdout, &FromWorker::Ready).is_none() {
                    return 0;
                }
                continue;
            }
            Ok(ToWorker::Render { indices }) if indices.iter().all(|i| *i < templates.outputs.len()) => indices,
            _ => return 66,
        };
        let Some(snapshot) = &snapshot else { return 67 };
        for index in indices {
            let (answer, rendered) = match templates.render(index, snapshot) {
                Ok(mut r) => {
                    let entries = r.entries.iter().map(|(k, v)| (k.clone(), v.expose().len())).collect();
                    let used = std::mem::take(&mut r.used);
                    (FromWorker::Rendered { entries, tainted: r.tainted, used }, Some(r))
                }
                Err(e) => (FromWorker::Failed(e), None),
            };
            let Ok(bytes) = serde_json::to_vec(&answer) else { return 68 };
            let mut sent = stdout.write_all(&(bytes.len() as u64).to_be_bytes()).and_then(|_| stdout.write_all(&bytes));
            if let Some(r) = &rendered {
                let len: usize = r.entries.values().map(|v| v.expose().len()).sum();
                sent = sent.and_then(|_| stdout.write_all(&(len as u64).to_be_bytes()));
                for v in r.entries.values() {
                    sent = sent.and_then(|_| stdout.write_all(v.expose()));
                }
            }
            if sent.and_then(|_| stdout.flush()).is_err() {
                return 0;
            }
        }
    }
    0
}
