//! `ktrack run` and `ktrack exec`: sweep specs → resolved runs with identities → a DAG
//! executed by claiming runs atomically in the index.
//!
//! Finished runs are skipped by identity; a run whose claimer died (stale heartbeat) is
//! reclaimed and resumes from its last checkpoint; an interrupted run is released and resumes
//! on the next `run`. `--jobs N` runs N claims at once; several processes may share a store.

pub mod exec;
pub mod holder;
pub mod plan;
pub mod resolved;
pub mod slurm;
pub mod spec;
pub mod status;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::context::Ktrack;
use crate::id::Hash;
use crate::index::{self, runs};
use crate::progress::{Reporter, RunSummary, Task};
use plan::{Plan, PlanOptions, PlannedRun};
use resolved::ResolvedRun;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Spec(#[from] spec::Error),
    #[error(transparent)]
    Plan(#[from] plan::Error),
    #[error(transparent)]
    Index(#[from] index::Error),
    #[error(transparent)]
    Exec(#[from] exec::Error),
    #[error("run {0} is not in the index")]
    UnknownRun(Hash),
    #[error("run {id} is held by `{by}` ({state})")]
    Held { id: Hash, by: String, state: String },
    #[error("run {id} needs run {needs}, which is {status}")]
    Blocked {
        id: Hash,
        needs: Hash,
        status: &'static str,
    },
    #[error("the stored spec of run {0} cannot be read: {1}")]
    BadSpec(Hash, String),
    #[error(transparent)]
    Slurm(#[from] slurm::Error),
    #[error("--stale-after {given}s is too short: a live holder refreshes its heartbeat every {}s, so the limit must be at least {}s", holder::HEARTBEAT_EVERY.as_secs(), holder::MIN_STALE_AFTER.as_secs())]
    StaleTooShort { given: u64 },
    #[error("the sweep stopped: the index cannot be written")]
    IndexFailed(#[source] index::Error),
    #[error("{section}: {reason}")]
    Precision {
        section: String,
        reason: crate::train::backend::Error,
    },
}

impl crate::hint::Hint for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::Spec(e) => e.hint(),
            Error::Exec(e) => e.hint(),
            Error::Index(e) | Error::IndexFailed(e) => e.hint(),
            Error::Plan(e) => e.hint(),
            Error::Precision { reason, .. } => reason.hint(),
            Error::Held { .. } => Some(
                "wait for it; a holder on this host whose process died is reclaimed at once, one elsewhere once its heartbeat is older than --stale-after".into(),
            ),
            Error::StaleTooShort { .. } => Some(format!(
                "pass --stale-after {} or more (the default is 120)",
                holder::MIN_STALE_AFTER.as_secs()
            )),
            Error::Blocked { .. } => Some(
                "run the dependency first (`ktrack exec` it, or `ktrack run` the sweep)".into(),
            ),
            _ => None,
        }
    }
}

/// Options of `ktrack run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub spec: PathBuf,
    pub plan: PlanOptions,
    pub jobs: usize,
    pub dry_run: bool,
    /// A running run whose heartbeat is older than this is reclaimed.
    pub stale_after: Duration,
    /// Rerun runs that failed before (default); otherwise leave them failed.
    pub retry_failed: bool,
}

/// Counts of a plan by status before execution.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Counts {
    pub total: usize,
    pub done: usize,
    pub new: usize,
    pub failed: usize,
    pub running: usize,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PlanRow {
    pub id: Hash,
    pub kind: &'static str,
    pub label: String,
    pub status: runs::Status,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SweepReport {
    pub sweep: String,
    pub before: Counts,
    pub rows: Vec<PlanRow>,
    pub skipped: Vec<plan::Skipped>,
    pub executed: Vec<(Hash, String, f64)>,
    pub failed: Vec<(Hash, String, String)>,
    pub interrupted: bool,
    pub seconds: f64,
    pub prepared: plan::Prepared,
}

/// The index's clock (ms), which heartbeats are written and aged by; this host's clock when
/// the index cannot be read.
fn now_ms(k: &Ktrack) -> i64 {
    k.index
        .read()
        .and_then(|mut c| c.runs().clock_ms())
        .unwrap_or_else(|_| crate::context::wall_ms())
}

pub use holder::worker_id;

/// Refuses a stale limit a live holder's heartbeat could miss.
pub fn check_stale_after(stale_after: Duration) -> Result<(), Error> {
    if stale_after < holder::MIN_STALE_AFTER {
        return Err(Error::StaleTooShort {
            given: stale_after.as_secs(),
        });
    }
    Ok(())
}

/// Loads and validates the spec, prepares data and plans (no execution).
pub fn plan_sweep(
    k: &Ktrack,
    opts: &RunOptions,
    ui: &dyn Reporter,
    interrupt: &AtomicBool,
) -> Result<(spec::LoadedSpec, Plan), Error> {
    let spec = spec::LoadedSpec::load(&opts.spec)?;
    // A precision the device cannot do fails the sweep before any data is prepared.
    let device = opts.plan.device.unwrap_or(spec.spec.run.device);
    let precisions = std::iter::once(("[train]".to_string(), spec.spec.train.precision)).chain(
        spec.spec
            .pretrain
            .iter()
            .map(|(name, p)| (format!("[pretrain.{name}]"), p.precision)),
    );
    for (section, precision) in precisions {
        precision
            .check(device)
            .map_err(|reason| Error::Precision { section, reason })?;
    }
    let status = |verb: &str, msg: String| ui.status(verb, msg);
    let prepared = plan::prepare(k, &spec, &opts.plan, &status, interrupt)?;
    let plan = plan::plan(&spec, &prepared, &opts.plan);
    Ok((spec, plan))
}

/// Records the plan in the index (idempotent) and returns each run's status.
pub fn record_plan(
    k: &Ktrack,
    spec: &spec::LoadedSpec,
    plan: &Plan,
) -> Result<HashMap<Hash, runs::Claim>, Error> {
    let new: Vec<runs::NewRun> = plan
        .runs
        .iter()
        .map(|r| runs::NewRun {
            id: r.id,
            kind: r.resolved.kind(),
            spec: r.resolved.to_json().to_string(),
            label: r.label.clone(),
            deps: r.deps.clone(),
            inputs: inputs_of(&r.resolved),
            axes: r.axes.clone(),
        })
        .collect();
    let mut ids: Vec<Hash> = plan.runs.iter().map(|r| r.id).collect();
    ids.sort();
    let now = k.clock.now();
    let name = spec.spec.name.clone();
    let path = spec.path.display().to_string();
    // The spec file and a sweep record (its runs) are objects too, so the index can be rebuilt.
    let spec_bytes = std::fs::read(&spec.path).map_err(|e| {
        Error::Spec(spec::Error::Read {
            path: spec.path.clone(),
            message: e.to_string(),
        })
    })?;
    let batch = k.store.batch();
    let spec_put = batch.put_bytes(&spec_bytes).map_err(plan::Error::from)?;
    let record = crate::record::Record::Sweep(crate::record::SweepRecord {
        format: crate::record::FORMAT,
        name: name.clone(),
        spec: spec_put.hash,
        spec_path: path.clone(),
        runs: ids.clone(),
        skipped: plan
            .skipped
            .iter()
            .map(|s| crate::record::SkippedInit {
                init: s.init.clone(),
                reason: s.reason.clone(),
                runs: s.runs,
            })
            .collect(),
    });
    let record_put = batch
        .put_bytes(&record.to_bytes())
        .map_err(plan::Error::from)?;
    batch.commit().map_err(plan::Error::from)?;
    let mut tx = k.index.write()?;
    tx.objects().insert_many(
        &[
            (spec_put.hash, spec_put.size, "spec"),
            (record_put.hash, record_put.size, "record"),
        ],
        &now,
    )?;
    tx.runs().insert_planned(&new, &now)?;
    tx.sweeps()
        .upsert(&name, &path, &spec.hash, &ids, Some(&record_put.hash), &now)?;
    let statuses = tx.runs().statuses(&ids)?;
    tx.commit()?;
    Ok(statuses)
}

/// The lineage edges of a run, by role.
pub fn inputs_of(r: &ResolvedRun) -> Vec<(String, String)> {
    match r {
        ResolvedRun::Downstream(d) => {
            let mut v = vec![
                ("cohort".to_string(), d.cohort.hex()),
                ("split".to_string(), d.split.hex()),
                ("fraction".to_string(), d.fraction.hex()),
            ];
            match &d.init {
                resolved::InitRef::Random => {}
                resolved::InitRef::Torchvision { weights, .. } => {
                    v.push(("weights".into(), weights.hex()))
                }
                resolved::InitRef::Pretrain { run, .. } => v.push(("pretrain".into(), run.hex())),
            }
            for e in &d.external {
                v.push((format!("external:{}", e.name), e.cohort.hex()));
            }
            v
        }
        ResolvedRun::Pretrain(p) => {
            let mut v = Vec::new();
            for (i, s) in p.sources.iter().enumerate() {
                v.push((format!("source:{i}"), s.cohort.hex()));
                if let Some(split) = &s.split {
                    v.push((format!("source:{i}:split"), split.hex()));
                }
            }
            if let Some(t) = &p.tokenizer {
                v.push(("tokenizer".into(), t.hex()));
            }
            for (file, h) in p.text_model.iter().flatten() {
                v.push((format!("text-model:{file}"), h.hex()));
            }
            v
        }
    }
}

/// Plans and executes a sweep.
pub fn run_sweep(
    k: &Arc<Ktrack>,
    opts: &RunOptions,
    ui: &dyn Reporter,
    interrupt: &AtomicBool,
) -> Result<SweepReport, Error> {
    let t0 = Instant::now();
    check_stale_after(opts.stale_after)?;
    let (spec, plan) = plan_sweep(k, opts, ui, interrupt)?;
    let statuses = record_plan(k, &spec, &plan)?;
    let mut before = Counts {
        total: plan.runs.len(),
        ..Counts::default()
    };
    let mut rows = Vec::with_capacity(plan.runs.len());
    for r in &plan.runs {
        let status = statuses
            .get(&r.id)
            .map_or(runs::Status::Planned, |s| s.status);
        match status {
            runs::Status::Done => before.done += 1,
            runs::Status::Failed => before.failed += 1,
            runs::Status::Running => before.running += 1,
            runs::Status::Planned => before.new += 1,
        }
        rows.push(PlanRow {
            id: r.id,
            kind: r.resolved.kind(),
            label: r.label.clone(),
            status,
        });
    }
    let mut report = SweepReport {
        sweep: spec.spec.name.clone(),
        before,
        rows,
        skipped: plan.skipped.clone(),
        executed: Vec::new(),
        failed: Vec::new(),
        interrupted: false,
        seconds: 0.0,
        prepared: plan.prepared.clone(),
    };
    if opts.dry_run {
        report.seconds = t0.elapsed().as_secs_f64();
        return Ok(report);
    }
    let pending: Vec<PlannedRun> = plan
        .runs
        .iter()
        .filter(|r| {
            let s = statuses
                .get(&r.id)
                .map_or(runs::Status::Planned, |s| s.status);
            s != runs::Status::Done && (opts.retry_failed || s != runs::Status::Failed)
        })
        .cloned()
        .collect();
    if pending.is_empty() {
        report.seconds = t0.elapsed().as_secs_f64();
        return Ok(report);
    }
    let worker = worker_id();
    let shared = Workers {
        k,
        worker: &worker,
        queue: Mutex::new(pending),
        stale_ms: opts.stale_after.as_millis() as i64,
        retry_failed: opts.retry_failed,
        ui,
        interrupt,
        executed: Mutex::new(Vec::new()),
        failed: Mutex::new(Vec::new()),
        fatal: Mutex::new(None),
        abort: AtomicBool::new(false),
        waits_told: Mutex::new(std::collections::HashSet::new()),
    };
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs.max(1) {
            scope.spawn(|| worker_loop(&shared));
        }
    });
    if let Some(e) = shared.fatal.into_inner().unwrap_or_default() {
        return Err(Error::IndexFailed(e));
    }
    report.executed = shared.executed.into_inner().unwrap_or_default();
    report.failed = shared.failed.into_inner().unwrap_or_default();
    report.interrupted = interrupt.load(Ordering::Relaxed);
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

enum Pick {
    Run(Box<PlannedRun>, runs::Fence),
    Wait,
    Empty,
}

/// What the worker threads of one `ktrack run` share.
struct Workers<'a> {
    k: &'a Ktrack,
    worker: &'a str,
    queue: Mutex<Vec<PlannedRun>>,
    stale_ms: i64,
    retry_failed: bool,
    ui: &'a dyn Reporter,
    interrupt: &'a AtomicBool,
    executed: Mutex<Vec<(Hash, String, f64)>>,
    failed: Mutex<Vec<(Hash, String, String)>>,
    /// The error that stopped the sweep (a full disk, an index that cannot be written).
    fatal: Mutex<Option<index::Error>>,
    abort: AtomicBool,
    /// (run, holder) pairs whose wait was already reported.
    waits_told: Mutex<std::collections::HashSet<(Hash, String)>>,
}

/// A run another process holds, as seen while waiting for it.
struct HeldRun {
    id: Hash,
    label: String,
    by: String,
    age: Duration,
}

/// Claims a run: planned or failed, held by a process on this host that is gone, or held by
/// anyone whose heartbeat is older than the stale limit. Call inside a write transaction.
fn claim_in(
    tx: &mut index::Session<'_>,
    id: &Hash,
    worker: &str,
    stale_ms: i64,
    now: &str,
) -> Result<(Option<runs::Fence>, Option<runs::RunRow>), index::Error> {
    let row = tx.runs().get(id)?;
    let dead_holder = row
        .as_ref()
        .filter(|r| r.status == runs::Status::Running)
        .and_then(|r| r.claimed_by.as_deref())
        .filter(|by| *by != worker && holder::is_dead_here(by));
    let claimed = match dead_holder {
        Some(by) => {
            let clock = tx.runs().clock_ms()?;
            tx.runs().claim_from(id, worker, by, clock, now)?
        }
        None => {
            let clock = tx.runs().clock_ms()?;
            tx.runs().claim(id, worker, clock, stale_ms, now)?
        }
    };
    Ok((claimed, row))
}

/// Finds a run whose dependencies are done and claims it; `held` gets the runs other
/// processes hold.
fn pick(w: &Workers<'_>, held: &mut Vec<HeldRun>) -> Result<Pick, index::Error> {
    let k = w.k;
    let mut q = w.queue.lock().expect("queue lock is not poisoned");
    if q.is_empty() {
        return Ok(Pick::Empty);
    }
    let now = k.clock.now();
    // The index's clock, read once, only if some run is held elsewhere.
    let mut clock = None;
    let mut i = 0;
    while i < q.len() {
        let r = &q[i];
        let (claimed, row, blocked) = {
            let mut tx = k.index.write()?;
            let deps = tx.runs().deps(&r.id)?;
            let blocked = deps
                .iter()
                .find(|(_, s)| *s == runs::Status::Failed)
                .map(|(h, _)| *h);
            let ready = deps.iter().all(|(_, s)| *s == runs::Status::Done);
            let mut claimed = None;
            let mut row = None;
            if ready {
                let current = tx.runs().get(&r.id)?.map(|row| row.status);
                if w.retry_failed || current != Some(runs::Status::Failed) {
                    claimed = claim_in(&mut tx, &r.id, w.worker, w.stale_ms, &now)?.0;
                }
            }
            if claimed.is_none() {
                row = tx.runs().get(&r.id)?;
            }
            tx.commit()?;
            (claimed, row, blocked)
        };
        if let Some(fence) = claimed {
            return Ok(Pick::Run(Box::new(q.remove(i)), fence));
        }
        let status = row.as_ref().map(|row| row.status);
        match (status, blocked) {
            (Some(runs::Status::Done), _) => {
                q.remove(i);
            }
            (_, Some(dep)) => {
                let r = q.remove(i);
                w.failed.lock().expect("lock is not poisoned").push((
                    r.id,
                    r.label.clone(),
                    format!("its dependency {dep} failed"),
                ));
            }
            (Some(runs::Status::Failed), _) if !w.retry_failed => {
                q.remove(i);
            }
            (Some(runs::Status::Running), _) => {
                let row = row.expect("a status comes from a row");
                if let Some(by) = row.claimed_by.filter(|by| by != w.worker) {
                    held.push(HeldRun {
                        id: r.id,
                        label: r.label.clone(),
                        by,
                        age: Duration::from_millis(
                            (*clock.get_or_insert_with(|| now_ms(k))
                                - row.heartbeat_ms.unwrap_or(0))
                            .max(0) as u64,
                        ),
                    });
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    Ok(if q.is_empty() {
        Pick::Empty
    } else {
        Pick::Wait
    })
}

/// Says once per (run, holder) that this process waits for a run another one holds.
fn tell_waits(w: &Workers<'_>, held: &[HeldRun]) {
    let mut told = w.waits_told.lock().expect("lock is not poisoned");
    for h in held {
        let liveness = holder::liveness(&h.by, h.age);
        let key = (h.id, format!("{}:{liveness:?}", h.by));
        if !told.insert(key) {
            continue;
        }
        let stale = Duration::from_millis(w.stale_ms.max(0) as u64);
        let state = match liveness {
            holder::Liveness::Alive => format!("heartbeat {}s ago", h.age.as_secs()),
            holder::Liveness::Dead | holder::Liveness::Silent => format!(
                "no heartbeat for {}s: its process looks dead; reclaimed once the heartbeat is {}s old",
                h.age.as_secs(),
                stale.as_secs()
            ),
        };
        w.ui.status(
            "Waiting",
            format!("for {} ({}), held by `{}` ({state})", h.label, h.id, h.by),
        );
    }
}

/// How many times in a row an index error is retried before the sweep stops.
const INDEX_RETRIES: u32 = 30;

fn worker_loop(w: &Workers<'_>) {
    let k = w.k;
    let mut errors = 0u32;
    loop {
        if w.interrupt.load(Ordering::Relaxed) || w.abort.load(Ordering::Relaxed) {
            return;
        }
        let mut held = Vec::new();
        let (run, fence) = match pick(w, &mut held) {
            Ok(Pick::Run(r, fence)) => {
                errors = 0;
                (r, fence)
            }
            Ok(Pick::Wait) => {
                errors = 0;
                // Dependencies are running here or in another process.
                tell_waits(w, &held);
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            Ok(Pick::Empty) => return,
            Err(e) => {
                errors += 1;
                if crate::fault::transient(&e) && errors < INDEX_RETRIES {
                    w.ui.status("Retrying", format!("index busy: {e}"));
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
                // A full disk or a damaged index: stop, never loop.
                w.abort.store(true, Ordering::Relaxed);
                w.fatal
                    .lock()
                    .expect("lock is not poisoned")
                    .get_or_insert(e);
                return;
            }
        };
        let observer = w.ui.run_started(&run.id, &run.label);
        let result = execute_watched(
            k,
            &run.id,
            &fence,
            &run.resolved,
            observer.as_ref(),
            w.interrupt,
        );
        drop(observer);
        let outcome = match result {
            Ok(o) => {
                w.executed.lock().expect("lock is not poisoned").push((
                    run.id,
                    run.label.clone(),
                    o.seconds,
                ));
                Ok(o)
            }
            Err(e) if e.is_interrupt() || crate::fault::out_of_space(&e) => {
                // Not the run's fault: give the claim back, it resumes from its checkpoint.
                let _ = k
                    .index
                    .read()
                    .and_then(|mut c| c.runs().release(&run.id, &fence));
                if !e.is_interrupt() {
                    w.abort.store(true, Ordering::Relaxed);
                    w.failed.lock().expect("lock is not poisoned").push((
                        run.id,
                        run.label.clone(),
                        format!("{e} ({})", crate::fault::out_of_space_hint(&k.home)),
                    ));
                }
                Err(e.to_string())
            }
            Err(e) => {
                let msg = e.to_string();
                let now = k.clock.now();
                let _ = k
                    .index
                    .read()
                    .and_then(|mut c| c.runs().fail(&run.id, &fence, &msg, &now));
                w.failed.lock().expect("lock is not poisoned").push((
                    run.id,
                    run.label.clone(),
                    msg.clone(),
                ));
                Err(msg)
            }
        };
        match &outcome {
            Ok(o) => w.ui.run_finished(
                &run.id,
                &run.label,
                Ok(RunSummary {
                    seconds: o.seconds,
                    images_per_second: o.images_per_second,
                    metrics: &o.metrics,
                }),
            ),
            Err(e) => w.ui.run_finished(&run.id, &run.label, Err(e)),
        }
    }
}

/// Executes a claimed run while a watcher beats its heartbeat. Once another worker has taken
/// the run over (this process was stopped or cut off past the stale limit), training stops
/// and nothing of this worker's is recorded: [`index::Error::ClaimLost`].
fn execute_watched(
    k: &Ktrack,
    id: &Hash,
    fence: &runs::Fence,
    resolved: &ResolvedRun,
    observer: &dyn Task,
    interrupt: &AtomicBool,
) -> Result<exec::Outcome, exec::Error> {
    let stop = AtomicBool::new(false);
    let lost = AtomicBool::new(false);
    let finished = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        s.spawn(|| watch_claim(k, id, fence, interrupt, &stop, &lost, &finished));
        let r = exec::execute(k, id, fence, resolved, &k.run_dir(id), observer, &stop);
        finished.store(true, Ordering::Relaxed);
        r
    });
    // A finish is fenced: one that went through held the claim when it committed (the watcher
    // may see the run done a moment before it is told to stop).
    if result.is_ok() || !lost.load(Ordering::Relaxed) {
        return result;
    }
    let lost = k.index.read()?.runs().lost(id, fence)?;
    if matches!(lost, index::Error::ClaimLost { status: "done", .. }) {
        // Finished by the worker that took it over: nothing here is needed any more.
        let _ = std::fs::remove_dir_all(k.run_dir(id));
    }
    Err(exec::Error::from(lost))
}

/// Beats the claim's heartbeat until `finished`; passes an interrupt on to `stop`, and sets
/// `lost` and `stop` when the claim is no longer this worker's.
fn watch_claim(
    k: &Ktrack,
    id: &Hash,
    fence: &runs::Fence,
    interrupt: &AtomicBool,
    stop: &AtomicBool,
    lost: &AtomicBool,
    finished: &AtomicBool,
) {
    let mut last = Instant::now();
    while !finished.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        if interrupt.load(Ordering::Relaxed) {
            stop.store(true, Ordering::Relaxed);
        }
        if last.elapsed() >= holder::HEARTBEAT_EVERY {
            last = Instant::now();
            if let Ok(false) = k.index.read().and_then(|mut c| {
                let clock = c.runs().clock_ms()?;
                c.runs().beat(id, fence, clock)
            }) {
                lost.store(true, Ordering::Relaxed);
                stop.store(true, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// `ktrack exec RUN`: executes exactly one run (what a cluster job calls).
pub fn exec_one(
    k: &Arc<Ktrack>,
    id: &Hash,
    stale_after: Duration,
    observer: &dyn Task,
    interrupt: &AtomicBool,
) -> Result<Option<exec::Outcome>, Error> {
    check_stale_after(stale_after)?;
    let row = k
        .index
        .read()?
        .runs()
        .get(id)?
        .ok_or(Error::UnknownRun(*id))?;
    if row.status == runs::Status::Done {
        return Ok(None);
    }
    let deps = k.index.read()?.runs().deps(id)?;
    if let Some((needs, status)) = deps.iter().find(|(_, s)| *s != runs::Status::Done) {
        return Err(Error::Blocked {
            id: *id,
            needs: *needs,
            status: status.name(),
        });
    }
    let resolved =
        ResolvedRun::from_json(&row.spec).map_err(|e| Error::BadSpec(*id, e.to_string()))?;
    let worker = worker_id();
    let now = k.clock.now();
    let claimed = {
        let mut tx = k.index.write()?;
        let (claimed, _) = claim_in(&mut tx, id, &worker, stale_after.as_millis() as i64, &now)?;
        tx.commit()?;
        claimed
    };
    let Some(fence) = claimed else {
        let row = k
            .index
            .read()?
            .runs()
            .get(id)?
            .ok_or(Error::UnknownRun(*id))?;
        if row.status == runs::Status::Done {
            return Ok(None);
        }
        let age = Duration::from_millis((now_ms(k) - row.heartbeat_ms.unwrap_or(0)).max(0) as u64);
        let by = row.claimed_by.unwrap_or_default();
        let state = match holder::liveness(&by, age) {
            holder::Liveness::Alive => format!("heartbeat {}s ago", age.as_secs()),
            _ => format!(
                "no heartbeat for {}s: its process looks dead; it can be taken once the heartbeat is {}s old",
                age.as_secs(),
                stale_after.as_secs()
            ),
        };
        return Err(Error::Held { id: *id, by, state });
    };
    let result = execute_watched(k, id, &fence, &resolved, observer, interrupt);
    match result {
        Ok(o) => Ok(Some(o)),
        Err(e) => {
            let _ = k.index.read().and_then(|mut c| {
                if e.is_interrupt() || crate::fault::out_of_space(&e) {
                    c.runs().release(id, &fence)
                } else {
                    c.runs().fail(id, &fence, &e.to_string(), &k.clock.now())
                }
            });
            Err(e.into())
        }
    }
}
