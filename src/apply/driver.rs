//! Runs the steps through the seams, one at a time in plan order, journaling before each
//! action; on a failed step it starts nothing new and undoes every step it began, in reverse
//! (files and ConfigMap keys first, then the handlers of the undone changes again, so the
//! components re-read what they had). `rollback` does the same from a journal alone.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::StreamExt;

use super::journal::{Journal, Record, StepState};
use super::steps::{Step, StepAction};
use crate::plan::{Handler, Operation, Plan};
use crate::seams::{Clock, ClusterApi, NodeOps, SeamError, Signer};

/// Where apply writes its journal, each record durable before `append` returns.
pub trait Sink {
    fn append(&mut self, record: &Record) -> Result<(), String>;

    /// Why the run must start no further step (the operator pressed Ctrl-C), if it must: apply
    /// then undoes what it began, as after a failure. Asked before each step starts.
    fn interrupted(&self) -> Option<String> {
        None
    }
}

impl<T: Sink + ?Sized> Sink for &mut T {
    fn append(&mut self, record: &Record) -> Result<(), String> {
        (**self).append(record)
    }

    fn interrupted(&self) -> Option<String> {
        (**self).interrupted()
    }
}

/// How apply runs steps side by side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// The worker nodes: each one's steps (its kubelet.conf, the kubelet's restart, its
    /// kube-proxy's) depend on no other node's, so they run as a chain beside the others'.
    pub workers: BTreeSet<String>,
    /// How many worker chains run at once (`policy.worker_parallelism`); 0 counts as 1.
    pub worker_parallelism: usize,
    /// How long a handler's check is waited for; None: [`CHECK_TIMEOUT`].
    pub check_timeout: Option<Duration>,
}

impl Options {
    pub fn check_timeout(&self) -> Duration {
        self.check_timeout.unwrap_or(CHECK_TIMEOUT)
    }
}

/// The steps as segments run one after another; a segment is chains run side by side (at
/// most `worker_parallelism` at once), a chain's steps one after another. A step that is not
/// a worker's is a segment of its own.
pub fn segments<'s>(steps: &'s [Step], opts: &Options) -> Vec<Vec<Vec<&'s Step>>> {
    let node = |s: &Step| match &s.action {
        StepAction::Change(op) => op.node().map(str::to_string),
        StepAction::Handler(h) => h.node.clone(),
    };
    let mut out: Vec<Vec<Vec<&Step>>> = Vec::new();
    let mut workers: Vec<(String, Vec<&Step>)> = Vec::new();
    let flush = |workers: &mut Vec<(String, Vec<&'s Step>)>, out: &mut Vec<Vec<Vec<&'s Step>>>| {
        if !workers.is_empty() {
            out.push(
                std::mem::take(workers)
                    .into_iter()
                    .map(|(_, c)| c)
                    .collect(),
            );
        }
    };
    for step in steps {
        match node(step).filter(|n| opts.workers.contains(n)) {
            Some(n) => match workers.iter_mut().find(|(w, _)| *w == n) {
                Some((_, chain)) => chain.push(step),
                None => workers.push((n, vec![step])),
            },
            None => {
                flush(&mut workers, &mut out);
                out.push(vec![vec![step]]);
            }
        }
    }
    flush(&mut workers, &mut out);
    out
}

/// A journal in memory (tests; the real one is a file at the edge).
#[derive(Default)]
pub struct MemorySink {
    pub records: Vec<Record>,
    /// `Some(n)`: the machine dies after n records (every later append fails).
    pub crash_after: Option<usize>,
    /// `Some(n)`: the operator presses Ctrl-C once n steps have started.
    pub interrupt_after: Option<usize>,
}

impl Sink for MemorySink {
    fn append(&mut self, record: &Record) -> Result<(), String> {
        if self.crash_after.is_some_and(|n| self.records.len() >= n) {
            return Err("crashed".into());
        }
        self.records.push(record.clone());
        Ok(())
    }

    fn interrupted(&self) -> Option<String> {
        let started = || {
            self.records
                .iter()
                .filter(|r| matches!(r, Record::StepStarted { .. }))
                .count()
        };
        self.interrupt_after
            .is_some_and(|n| started() >= n)
            .then(|| "interrupted".to_string())
    }
}

/// The seams a run acts through.
pub struct Seams<'a, N, C, K, S> {
    pub node: &'a N,
    pub api: &'a C,
    pub clock: &'a K,
    pub signer: &'a S,
}

impl<N, C, K, S> Clone for Seams<'_, N, C, K, S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<N, C, K, S> Copy for Seams<'_, N, C, K, S> {}

/// How long a handler's check may take before the step fails.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(120);
/// How many times a ConfigMap replace that conflicts is tried again.
pub const CONFLICT_RETRIES: u32 = 5;

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied {
        steps: usize,
    },
    /// A step failed; every step begun was undone.
    RolledBack {
        failed: String,
        error: String,
        undone: Vec<String>,
    },
    /// A step failed and some steps could not be undone: what and why.
    Incomplete {
        failed: String,
        error: String,
        undone: Vec<String>,
        not_undone: Vec<(String, String)>,
    },
}

impl Outcome {
    fn word(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "applied",
            Outcome::RolledBack { .. } => "rolled-back",
            Outcome::Incomplete { .. } => "rollback-incomplete",
        }
    }
}

/// The journal stopped taking records: the run must stop where it is (as after a crash).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the journal could not be written ({0}); the run stopped: roll it back with `hactl rollback`"
)]
pub struct SinkError(pub String);

pub(super) struct Ctx<'a, N, C, K, S, J> {
    pub seams: Seams<'a, N, C, K, S>,
    /// Shared by the chains running side by side; borrowed only while a record is written.
    pub sink: &'a RefCell<J>,
    /// Set when a step fails: no chain starts another step.
    pub stop: &'a Cell<bool>,
    pub run: String,
    /// How long a handler's check is waited for.
    pub check_timeout: Duration,
    /// What this run journaled, for its own undo.
    pub log: Vec<Record>,
}

impl<'a, N, C, K, S, J> Ctx<'a, N, C, K, S, J>
where
    N: NodeOps,
    C: ClusterApi,
    K: Clock,
    S: Signer,
    J: Sink,
{
    pub fn record(&mut self, r: Record) -> Result<(), SinkError> {
        self.sink.borrow_mut().append(&r).map_err(SinkError)?;
        self.log.push(r);
        Ok(())
    }

    fn new(
        seams: Seams<'a, N, C, K, S>,
        sink: &'a RefCell<J>,
        stop: &'a Cell<bool>,
        run: &str,
    ) -> Self {
        Ctx {
            seams,
            sink,
            stop,
            run: run.to_string(),
            check_timeout: CHECK_TIMEOUT,
            log: Vec::new(),
        }
    }

    /// A context for a chain of this run: its own log, the same sink and stop flag.
    fn chain(&self) -> Self {
        Ctx {
            check_timeout: self.check_timeout,
            ..Ctx::new(self.seams, self.sink, self.stop, &self.run)
        }
    }

    /// Undoes what the run began (per `from`, or its own records) after `failed` (the step
    /// and its error), and says how far it got.
    async fn roll_back(
        &mut self,
        steps: &[Step],
        from: Option<&Journal>,
        (failed, error): (String, String),
    ) -> Result<Outcome, SinkError> {
        let (undone, not_undone) = self.undo_all(steps, from).await?;
        Ok(if not_undone.is_empty() {
            Outcome::RolledBack {
                failed,
                error,
                undone,
            }
        } else {
            Outcome::Incomplete {
                failed,
                error,
                undone,
                not_undone,
            }
        })
    }

    /// Runs a chain's steps one after another until one fails (its id and error) or
    /// another chain's failure stops it.
    async fn run_chain(&mut self, chain: &[&Step]) -> Result<Option<(String, String)>, SinkError> {
        for step in chain {
            if self.stop.get() {
                return Ok(None);
            }
            if let Some(why) = self.sink.borrow().interrupted() {
                self.stop.set(true);
                return Ok(Some((step.id.clone(), why)));
            }
            self.record(Record::StepStarted {
                step: step.id.clone(),
            })?;
            let result = match &step.action {
                StepAction::Change(op) => self.change(&step.id, op).await,
                StepAction::Handler(h) => self.handler_step(h, false).await,
            };
            match result {
                Ok(()) => self.record(Record::StepDone {
                    step: step.id.clone(),
                })?,
                Err(StepError::Sink(e)) => return Err(e),
                Err(StepError::Failed(error)) => {
                    self.stop.set(true);
                    self.record(Record::StepFailed {
                        step: step.id.clone(),
                        error: error.clone(),
                    })?;
                    return Ok(Some((step.id.clone(), error)));
                }
            }
        }
        Ok(None)
    }
}

/// A step's failure: the seam's error, or what apply found (drift, a check that never held).
pub(super) enum StepError {
    Failed(String),
    Sink(SinkError),
}

impl From<SeamError> for StepError {
    fn from(e: SeamError) -> Self {
        StepError::Failed(e.to_string())
    }
}

impl From<SinkError> for StepError {
    fn from(e: SinkError) -> Self {
        StepError::Sink(e)
    }
}

/// Applies `steps` of `plan` as run `run`, worker chains side by side as `opts` says.
pub async fn apply<N, C, K, S, J>(
    plan: &Plan,
    steps: &[Step],
    seams: Seams<'_, N, C, K, S>,
    sink: &mut J,
    run: &str,
    opts: &Options,
) -> Result<Outcome, SinkError>
where
    N: NodeOps,
    C: ClusterApi,
    K: Clock,
    S: Signer,
    J: Sink,
{
    let sink = RefCell::new(sink);
    let stop = Cell::new(false);
    let mut ctx = Ctx::new(seams, &sink, &stop, run);
    ctx.check_timeout = opts.check_timeout();
    ctx.record(Record::Started {
        run: run.to_string(),
        cluster: plan.cluster.clone(),
        plan_fingerprint: plan.observed_fingerprint.clone(),
        steps: steps.iter().map(|s| s.id.clone()).collect(),
    })?;
    let mut failed = None;
    for segment in segments(steps, opts) {
        if let [chain] = segment.as_slice() {
            failed = ctx.run_chain(chain).await?;
        } else {
            let at_once = opts.worker_parallelism.max(1);
            let base = &ctx;
            let results: Vec<_> = futures_util::stream::iter(segment.iter())
                .map(|chain| async move {
                    let mut c = base.chain();
                    let r = c.run_chain(chain).await;
                    (c.log, r)
                })
                .buffer_unordered(at_once)
                .collect()
                .await;
            for (log, r) in results {
                ctx.log.extend(log);
                if let Some(f) = r? {
                    failed.get_or_insert(f);
                }
            }
        }
        if failed.is_some() {
            break;
        }
    }
    let outcome = match failed {
        None => Outcome::Applied { steps: steps.len() },
        Some(failed) => ctx.roll_back(steps, None, failed).await?,
    };
    ctx.record(Record::Finished {
        outcome: outcome.word().into(),
    })?;
    Ok(outcome)
}

/// Rolls back the run a journal records: every step it began, in reverse, from the journal
/// alone; `steps` gives the handlers to run again (from the plan beside the journal).
pub async fn rollback<N, C, K, S, J>(
    journal: &Journal,
    steps: &[Step],
    seams: Seams<'_, N, C, K, S>,
    sink: &mut J,
    opts: &Options,
) -> Result<Outcome, SinkError>
where
    N: NodeOps,
    C: ClusterApi,
    K: Clock,
    S: Signer,
    J: Sink,
{
    let run = journal
        .started()
        .map(|(r, _)| r.to_string())
        .unwrap_or_default();
    let failed = journal
        .records
        .iter()
        .find_map(|r| match r {
            Record::StepFailed { step, error } => Some((step.clone(), error.clone())),
            _ => None,
        })
        .unwrap_or_else(|| match journal.finished() {
            Some(outcome) => (
                "(none)".into(),
                format!("the run had ended ({outcome}); rolled back on request"),
            ),
            None => (
                "(interrupted)".into(),
                "the run stopped before it ended".into(),
            ),
        });
    let sink = RefCell::new(sink);
    let stop = Cell::new(false);
    let mut ctx = Ctx::new(seams, &sink, &stop, &run);
    ctx.check_timeout = opts.check_timeout();
    let outcome = ctx.roll_back(steps, Some(journal), failed).await?;
    ctx.record(Record::Finished {
        outcome: outcome.word().into(),
    })?;
    Ok(outcome)
}

impl<N: NodeOps, C: ClusterApi, K: Clock, S: Signer, J: Sink> Ctx<'_, N, C, K, S, J> {
    async fn change(&mut self, step: &str, op: &Operation) -> Result<(), StepError> {
        let ctx = self;
        match op {
            Operation::SetKubeconfigServer { .. } => ctx.kubeconfig_step(step, op).await,
            Operation::ReissueApiserverCertificate { .. } => ctx.certificate_step(step, op).await,
            Operation::ReplaceConfigMapKey { .. } => ctx.configmap_step(step, op).await,
        }
    }

    /// Undoes every change step begun (per the journal: `from`, or the run's own records), in
    /// reverse, then runs again the handlers that had begun, in order; returns what was undone
    /// and what could not be.
    async fn undo_all(
        &mut self,
        steps: &[Step],
        from: Option<&Journal>,
    ) -> Result<(Vec<String>, Vec<(String, String)>), SinkError> {
        let ctx = self;
        let states: BTreeMap<String, StepState> = match from {
            Some(j) => j.steps(),
            None => Journal {
                records: ctx.log.clone(),
                truncated: false,
            }
            .steps(),
        };
        let mut undone = Vec::new();
        let mut not_undone = Vec::new();
        let mut rerun: Vec<&Handler> = Vec::new();
        let mut handled = BTreeSet::new();
        for step in steps.iter().rev() {
            let Some(state) = states.get(&step.id).filter(|s| s.started) else {
                continue;
            };
            if state.undone {
                undone.push(step.id.clone());
                continue;
            }
            match &step.action {
                StepAction::Handler(h) => {
                    handled.insert(h.id.clone());
                }
                StepAction::Change(op) => {
                    ctx.record(Record::UndoStarted {
                        step: step.id.clone(),
                    })?;
                    // An undo looks before it acts, so trying it twice is safe: once more after a
                    // failure the node or the API may have had only for a moment.
                    let mut result = ctx.undo_change(op, state).await;
                    if matches!(result, Err(StepError::Failed(_))) {
                        result = ctx.undo_change(op, state).await;
                    }
                    match result {
                        Ok(()) => {
                            ctx.record(Record::Undone {
                                step: step.id.clone(),
                            })?;
                            undone.push(step.id.clone());
                        }
                        Err(StepError::Sink(e)) => return Err(e),
                        Err(StepError::Failed(error)) => {
                            ctx.record(Record::UndoFailed {
                                step: step.id.clone(),
                                error: error.clone(),
                            })?;
                            not_undone.push((step.id.clone(), error));
                        }
                    }
                }
            }
        }
        // The handlers of what was undone run again: their components re-read the old files.
        for step in steps {
            if let StepAction::Handler(h) = &step.action
                && handled.contains(&h.id)
            {
                rerun.push(h);
            }
        }
        for h in rerun {
            let id = format!("{}.undo", h.id);
            ctx.record(Record::UndoStarted { step: id.clone() })?;
            let mut result = ctx.handler_step(h, true).await;
            if matches!(result, Err(StepError::Failed(_))) {
                result = ctx.handler_step(h, true).await;
            }
            match result {
                Ok(()) => {
                    ctx.record(Record::Undone { step: id.clone() })?;
                    undone.push(h.id.clone());
                }
                Err(StepError::Sink(e)) => return Err(e),
                Err(StepError::Failed(error)) => {
                    ctx.record(Record::UndoFailed {
                        step: id,
                        error: error.clone(),
                    })?;
                    not_undone.push((h.id.clone(), error));
                }
            }
        }
        Ok((undone, not_undone))
    }

    async fn undo_change(&mut self, op: &Operation, state: &StepState) -> Result<(), StepError> {
        let ctx = self;
        match op {
            Operation::ReplaceConfigMapKey { .. } => ctx.configmap_undo(state).await,
            _ => ctx.file_undo(state).await,
        }
    }
}
