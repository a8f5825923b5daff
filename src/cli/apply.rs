//! `hactl apply` and `hactl rollback`: apply's engine over the real seams, with Terraform's
//! habits: the plan, a question only `yes` answers, a line as each step starts and ends, a
//! summary, and exit codes that tell a failure rolled back (1) from one whose rollback is
//! incomplete (3).

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use miette::Diagnostic;

use super::lock::{self, Interrupt, Locked, Lost, OnInterrupt};
use super::{LiveArgs, read_file, read_spec};
use crate::apply::driver::{self, Options, Outcome, Seams, Sink};
use crate::apply::journal::Record;
use crate::apply::steps::{self, Step, StepAction, StepsError};
use crate::observe::{Credentials, Observation};
use crate::plan::{DesiredStateFile, Plan, StalePlan};
use crate::runs::{RunDir, RunError, new_run_id, runs_dir};
use crate::transport::clock::SystemClock;
use crate::transport::cluster::KubeCluster;
use crate::transport::files::NodeFiles;
use crate::transport::ssh::SshSession;
use crate::{planner, render, spec};

/// The exit code of a failure whose rollback left something changed (or a journal that could
/// not be written): the cluster needs a hand.
pub const EXIT_INCOMPLETE: u8 = 3;

/// How long each call to the API may take.
const API_TIMEOUT: Duration = Duration::from_secs(10);

type Report = Box<dyn Diagnostic + Send + Sync>;

/// Why apply or rollback would not start; each says what to do instead.
#[derive(Debug, thiserror::Error, Diagnostic)]
enum ApplyError {
    #[error("hactl {command} asks for approval, and standard input is not a terminal to ask on")]
    #[diagnostic(
        code(hactl::apply::no_terminal),
        help(
            "run it on a terminal, or pass --auto-approve, or save a plan with `hactl plan FILE -o PLANFILE` and apply that with `hactl apply PLANFILE`"
        )
    )]
    NoTerminal { command: &'static str },
    #[error("run {run} of {file} {state} (its journal: {journal})")]
    #[diagnostic(
        code(hactl::apply::unfinished),
        help(
            "roll it back first with `hactl rollback {file} {run}`; hactl changes nothing while a run is unfinished"
        )
    )]
    Unfinished {
        run: String,
        file: String,
        state: &'static str,
        journal: String,
    },
    #[error("{path} was saved without the desired-state file it was made from")]
    #[diagnostic(
        code(hactl::apply::plan_file),
        help("make the plan again with `hactl plan FILE -o PLANFILE` and apply that")
    )]
    NoDesiredState { path: String },
    #[error("{plan}: {stale}")]
    #[diagnostic(code(hactl::apply::stale_plan))]
    Stale { plan: String, stale: StalePlan },
    #[error(transparent)]
    #[diagnostic(code(hactl::apply::plan))]
    Steps(#[from] StepsError),
    #[error(
        "the plan joins {nodes} to the control plane ({addresses}), which this hactl does not do yet; nothing was changed"
    )]
    #[diagnostic(
        code(hactl::apply::joins),
        help(
            "convert the cluster first: take {nodes} out of {file} (or set policy.allow_even_control_plane = true if that leaves an even count) and run `hactl apply` on it. \
             Then join each node by hand, one at a time, with the join command `hactl plan` shows for it: \
             on a control-plane node, `kubeadm token create` prints a token and `kubeadm init phase upload-certs --upload-certs` a certificate key. \
             Put the node back in {file} once it is joined: `hactl plan` shows no change for it then"
        )
    )]
    Joins {
        nodes: String,
        addresses: String,
        file: String,
    },
    #[error("cannot reach the API to apply: {0}")]
    #[diagnostic(
        code(hactl::apply::api),
        help(
            "hactl needs the API to verify each step; fix what the message names (or set cluster.kubeconfig) and run the command again"
        )
    )]
    Api(String),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Run(#[from] RunError),
    #[error("cannot start the runtime that talks to the cluster: {0}")]
    #[diagnostic(code(hactl::runtime))]
    Runtime(std::io::Error),
}

fn boxed(e: impl Into<ApplyError>) -> Report {
    Box::new(e.into())
}

/// What `apply` and `rollback` are told on the command line besides the cluster's address.
pub(super) struct Flags<'a> {
    pub auto_approve: bool,
    pub force_unlock: Option<&'a str>,
    /// Seconds a handler's check is waited for.
    pub check_timeout: u16,
}

impl Flags<'_> {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.check_timeout.into())
    }
}

/// `hactl apply TARGET`: TARGET is a desired-state file (plan, ask, apply) or a saved plan
/// (observe again, check it still holds, apply it without asking).
pub(super) fn apply(
    target: &Path,
    flags: Flags,
    live: &LiveArgs,
    color: bool,
) -> Result<u8, Report> {
    let text = read_file(target)?;
    // A saved plan is JSON; a desired-state file is TOML, which never starts with `{`.
    let saved = if text.trim_start().starts_with('{') {
        let plan = render::parse_plan(&text).map_err(|source| super::CliError::PlanFile {
            path: target.display().to_string(),
            error: source,
        })?;
        Some(plan)
    } else {
        None
    };
    let file = match &saved {
        Some(plan) => match &plan.desired_state {
            Some(d) => PathBuf::from(&d.path),
            None => {
                return Err(boxed(ApplyError::NoDesiredState {
                    path: target.display().to_string(),
                }));
            }
        },
        None => target.to_path_buf(),
    };
    let (desired, desired_ref) = read_desired(&file)?;
    // The file edited since the plan was made: refused before anything is observed.
    if let Some(saved) = &saved
        && let Err(stale) = crate::plan::check_desired_state(saved, &desired_ref)
    {
        return Err(boxed(ApplyError::Stale {
            plan: target.display().to_string(),
            stale,
        }));
    }
    let runs = runs_dir(&file);
    refuse_unfinished(&runs, &file)?;
    // A saved plan was reviewed when it was made: it is applied without asking.
    let ask = saved.is_none() && !flags.auto_approve;
    if ask && !std::io::stdin().is_terminal() {
        return Err(boxed(ApplyError::NoTerminal { command: "apply" }));
    }

    let runtime = runtime()?;
    let observation = super::observe_with(&runtime, &file, &desired, live, true);
    let mut fresh = match planner::plan(&desired, &observation.state) {
        Ok(plan) => plan,
        Err(e) => {
            runtime.block_on(observation.close());
            return Err(Box::new(super::CliError::from(e)));
        }
    };
    fresh.desired_state = Some(desired_ref);
    let plan = match saved {
        Some(saved) => {
            if let Err(stale) = crate::plan::check_saved(&saved, &fresh) {
                runtime.block_on(observation.close());
                return Err(boxed(ApplyError::Stale {
                    plan: target.display().to_string(),
                    stale,
                }));
            }
            println!(
                "Applying the saved plan {} (made from {}).",
                target.display(),
                file.display()
            );
            saved
        }
        None => {
            super::print_plan(&fresh, super::Format::Text, color);
            fresh
        }
    };
    let refused = |observation: Observation, e: Report| {
        runtime.block_on(observation.close());
        Err(e)
    };
    if plan.has_errors() {
        return refused(
            observation,
            boxed(StepsError::Errors(error_subjects(&plan))),
        );
    }
    let (steps, joins) = match steps::steps(&plan) {
        Ok(s) => s,
        Err(e) => return refused(observation, boxed(e)),
    };
    if !joins.is_empty() {
        // Named by node too, as the operator edits the file by node.
        let nodes: Vec<&str> = joins.iter().filter_map(|c| c.node.as_deref()).collect();
        let addresses: Vec<&str> = joins.iter().map(|c| c.address.as_str()).collect();
        let e = ApplyError::Joins {
            nodes: nodes.join(", "),
            addresses: addresses.join(", "),
            file: file.display().to_string(),
        };
        return refused(observation, boxed(e));
    }
    if steps.is_empty() {
        runtime.block_on(observation.close());
        println!("\nNo changes. The cluster matches the desired state; nothing to apply.");
        return Ok(0);
    }
    let id = new_run_id();
    let file_s = file.display();
    let on_interrupt = OnInterrupt {
        asking: ask,
        first: format!(
            "Interrupt received: hactl starts no further step and undoes what run {id} began. Press Ctrl-C again to stop at once (the run is then left unfinished, for `hactl rollback {file_s} {id}`)."
        ),
        second: format!(
            "Two interrupts received: hactl stopped at once. Run {id} is unfinished and keeps the cluster locked; run `hactl rollback {file_s} {id}`."
        ),
    };
    let (connected, locked) = Connected::new(&runtime, observation)?.lock(
        &runtime,
        &id,
        (flags.force_unlock, None),
        on_interrupt,
    )?;
    if ask && !approved("Do you want to perform these actions?") {
        connected.end(&runtime, locked, false);
        println!("\nApply cancelled.");
        return Ok(1);
    }
    locked.interrupt.running();

    let opts = Options {
        workers: desired.worker_nodes().map(|n| n.name.clone()).collect(),
        worker_parallelism: desired.policy.worker_parallelism as usize,
        check_timeout: Some(flags.timeout()),
    };
    let started = RunDir::create(&runs, &id, &render::json(&plan)).and_then(|run| {
        let sink = run.sink()?;
        Ok((run, sink))
    });
    let (run, sink) = match started {
        Ok(started) => started,
        Err(e) => {
            connected.end(&runtime, locked, false);
            return Err(boxed(e));
        }
    };
    println!(
        "\nRun {id}; its journal: {}\n",
        run.journal_path().display()
    );
    let s = &plan.summary;
    let complete = format!(
        "Apply complete! Resources: {} added, {} changed, {} destroyed.",
        s.add, s.change, s.destroy
    );
    let mut sink = Console::new(sink, &steps, &locked);
    let result = connected.run(&runtime, locked, |seams| {
        Box::pin(async move { driver::apply(&plan, &steps, seams, &mut sink, &id, &opts).await })
    });
    Ok(report(result, &file, &run, Command::Apply(complete)))
}

/// `hactl rollback FILE [RUN]`: undoes a run from its journal (the latest by default).
pub(super) fn rollback(
    file: &Path,
    run: Option<&str>,
    flags: Flags,
    live: &LiveArgs,
) -> Result<u8, Report> {
    let (desired, _) = read_desired(file)?;
    let run = RunDir::open(&runs_dir(file), run).map_err(boxed)?;
    let journal = run.journal().map_err(boxed)?;
    if journal.records.is_empty() {
        println!(
            "Run {} changed nothing; there is nothing to roll back.",
            run.id
        );
        return Ok(0);
    }
    if journal.finished() == Some("rolled-back") {
        println!(
            "Run {} is rolled back already; there is nothing to do.",
            run.id
        );
        return Ok(0);
    }
    let plan_json = run.plan_json().map_err(boxed)?;
    let plan = render::parse_plan(&plan_json).map_err(|source| super::CliError::PlanFile {
        path: run.path.join("plan.json").display().to_string(),
        error: source,
    })?;
    let (steps, _) = steps::steps(&plan).map_err(boxed)?;
    let states = journal.steps();
    let order = journal
        .started()
        .map(|(_, s)| s.to_vec())
        .unwrap_or_default();
    let pending: Vec<&String> = order
        .iter()
        .rev()
        .filter(|s| states.get(*s).is_some_and(|st| st.started && !st.undone))
        .collect();
    println!(
        "Run {} ({}) began {} steps; hactl will undo them, last first:",
        run.id,
        journal.finished().unwrap_or("interrupted"),
        pending.len()
    );
    for step in &pending {
        println!("  - {step}");
    }
    if !flags.auto_approve {
        if !std::io::stdin().is_terminal() {
            return Err(boxed(ApplyError::NoTerminal {
                command: "rollback",
            }));
        }
        if !approved("Do you want to roll back these steps?") {
            println!("\nRollback cancelled.");
            return Ok(1);
        }
    }
    let runtime = runtime()?;
    let observation = super::observe_with(&runtime, file, &desired, live, true);
    println!();
    let on_interrupt = OnInterrupt {
        asking: false,
        first: format!(
            "Interrupt received: hactl finishes the rollback (stopping half way leaves the cluster half changed). Press Ctrl-C again to stop at once; `hactl rollback {} {}` goes on from the journal.",
            file.display(),
            run.id
        ),
        second: format!(
            "Two interrupts received: hactl stopped at once. Run `hactl rollback {} {}` to finish.",
            file.display(),
            run.id
        ),
    };
    let (connected, locked) = Connected::new(&runtime, observation)?.lock(
        &runtime,
        &run.id,
        (flags.force_unlock, Some(&run.id)),
        on_interrupt,
    )?;
    let sink = match run.sink() {
        Ok(sink) => sink,
        Err(e) => {
            connected.end(&runtime, locked, false);
            return Err(boxed(e));
        }
    };
    let opts = Options {
        check_timeout: Some(flags.timeout()),
        ..Options::default()
    };
    let mut sink = Console::new(sink, &steps, &locked);
    let result = connected.run(&runtime, locked, |seams| {
        Box::pin(async move { driver::rollback(&journal, &steps, seams, &mut sink, &opts).await })
    });
    Ok(report(result, file, &run, Command::Rollback))
}

/// What ran: apply (with the line it ends on), or rollback.
enum Command {
    Apply(String),
    Rollback,
}

fn runtime() -> Result<tokio::runtime::Runtime, Report> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| boxed(ApplyError::Runtime(e)))
}

/// The desired-state file, parsed, and what a saved plan records of it.
fn read_desired(file: &Path) -> Result<(spec::DesiredState, DesiredStateFile), Report> {
    Ok((read_spec(file)?, desired_state_file(file)?))
}

/// What a saved plan records of its desired-state file: its absolute path and its hash.
pub(super) fn desired_state_file(file: &Path) -> Result<DesiredStateFile, Report> {
    let bytes = read_file(file)?;
    let path = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    Ok(DesiredStateFile {
        path: path.display().to_string(),
        sha256: crate::plan::sha256(bytes.as_bytes()),
    })
}

/// Refuses while a run of this desired-state file has not finished, or finished with a
/// rollback that left something changed.
fn refuse_unfinished(runs: &Path, file: &Path) -> Result<(), Report> {
    for id in RunDir::list(runs).iter().rev() {
        let run = RunDir::open(runs, Some(id)).map_err(boxed)?;
        let journal = run.journal().map_err(boxed)?;
        if journal.records.is_empty() {
            continue;
        }
        let state = match journal.finished() {
            None => "did not finish (or is running now)",
            Some("rollback-incomplete") => "failed and was not rolled back completely",
            Some(_) => continue,
        };
        return Err(boxed(ApplyError::Unfinished {
            run: id.clone(),
            file: file.display().to_string(),
            state,
            journal: run.journal_path().display().to_string(),
        }));
    }
    Ok(())
}

fn error_subjects(plan: &Plan) -> String {
    plan.problems
        .iter()
        .filter(|p| p.severity == crate::plan::Severity::Error)
        .map(|p| p.subject.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Asks on the terminal; only `yes` approves.
fn approved(question: &str) -> bool {
    print!("\n{question} Only 'yes' will be accepted: ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    let read = std::io::stdin().lock().read_line(&mut answer);
    read.is_ok() && answer.trim() == "yes"
}

type Run<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = RunResult> + 'a>>;
type RunResult = Result<Outcome, driver::SinkError>;
type RealSeams<'a> =
    Seams<'a, NodeFiles<SshSession>, KubeCluster, SystemClock, crate::pki::KubeadmSigner>;

/// The real seams' parts: the observation's SSH sessions, and an API client from the
/// kubeconfig it read.
struct Connected {
    files: NodeFiles<SshSession>,
    api: KubeCluster,
}

impl Connected {
    fn new(runtime: &tokio::runtime::Runtime, observation: Observation) -> Result<Self, Report> {
        let Observation {
            sessions,
            credentials,
            state,
            ..
        } = observation;
        let files = NodeFiles::new(sessions.into_values());
        match runtime.block_on(connect_api(credentials, &state)) {
            Ok(api) => Ok(Connected { files, api }),
            Err(e) => {
                close(runtime, files);
                Err(e)
            }
        }
    }

    /// Takes the cluster's lock for `run` (see `lock::take`); refused, it closes the sessions.
    fn lock(
        self,
        runtime: &tokio::runtime::Runtime,
        run: &str,
        takeover: (Option<&str>, Option<&str>),
        on_interrupt: OnInterrupt,
    ) -> Result<(Self, Locked), Report> {
        match runtime.block_on(lock::take(&self.api, run, takeover, on_interrupt)) {
            Ok(locked) => Ok((self, locked)),
            Err(e) => {
                close(runtime, self.files);
                Err(Box::new(e))
            }
        }
    }

    /// Runs `body` with the seams, then ends the lock (released once the run finished, kept
    /// while it is unfinished or its rollback incomplete) and closes every session.
    fn run(
        self,
        runtime: &tokio::runtime::Runtime,
        locked: Locked,
        body: impl for<'a> FnOnce(RealSeams<'a>) -> Run<'a>,
    ) -> RunResult {
        let result = runtime.block_on(body(Seams {
            node: &self.files,
            api: &self.api,
            clock: &SystemClock,
            signer: &crate::pki::KubeadmSigner,
        }));
        self.end(
            runtime,
            locked,
            matches!(result, Err(_) | Ok(Outcome::Incomplete { .. })),
        );
        result
    }

    /// Releases the lock (or keeps it, for the run's rollback) and closes every session.
    fn end(self, runtime: &tokio::runtime::Runtime, locked: Locked, keep: bool) {
        if keep {
            locked.keep();
        } else {
            runtime.block_on(locked.release(&self.api));
        }
        close(runtime, self.files);
    }
}

fn close(runtime: &tokio::runtime::Runtime, files: NodeFiles<SshSession>) {
    let closing = files.into_transports().map(SshSession::close);
    let _ = runtime.block_on(futures_util::future::join_all(closing));
}

async fn connect_api(
    credentials: Option<Credentials>,
    state: &crate::observed::ObservedState,
) -> Result<KubeCluster, Report> {
    let Some(c) = credentials else {
        let why = state
            .api
            .reachable
            .failure()
            .unwrap_or("no kubeconfig to reach it with")
            .to_string();
        return Err(boxed(ApplyError::Api(why)));
    };
    KubeCluster::from_kubeconfig(&c.kubeconfig, API_TIMEOUT)
        .await
        .map_err(|e| boxed(ApplyError::Api(format!("{}: {e}", c.origin))))
}

/// Says how the run ended, on stdout when it succeeded and stderr when not; the exit code.
fn report(result: RunResult, file: &Path, run: &RunDir, command: Command) -> u8 {
    let file = file.display();
    let id = &run.id;
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "\nError: {e}\nThe run stopped where it was; its journal is {}. Unless the error above says another operator took it over, the cluster stays locked by run {id} until it is rolled back. Fix the cause, then run `hactl rollback {file} {id}`.",
                run.journal_path().display()
            );
            return EXIT_INCOMPLETE;
        }
    };
    match outcome {
        Outcome::Applied { .. } => {
            if let Command::Apply(complete) = &command {
                println!("\n{complete}");
            }
            0
        }
        Outcome::RolledBack {
            failed,
            error,
            undone,
        } => match command {
            Command::Rollback => {
                println!("\nRollback complete! {} steps undone.", undone.len());
                0
            }
            Command::Apply(_) => {
                // Handler ids start with `handler.`: they ran again, after every change was undone.
                let (handlers, changes): (Vec<String>, Vec<String>) =
                    undone.into_iter().partition(|s| s.starts_with("handler."));
                eprintln!(
                    "\nError: {failed}: {error}\n\nhactl undid every change it had begun, last first: {}.\nThen it ran their handlers again: {}.\nThe cluster is as it was before this apply. Fix the cause above and run `hactl apply` again.",
                    changes.join(", "),
                    if handlers.is_empty() {
                        "none".to_string()
                    } else {
                        handlers.join(", ")
                    }
                );
                1
            }
        },
        Outcome::Incomplete {
            failed,
            error,
            undone,
            not_undone,
        } => {
            if let Command::Apply(_) = command {
                eprintln!("\nError: {failed}: {error}");
            }
            eprintln!(
                "\nThe rollback is INCOMPLETE: {} steps were undone, these were not:",
                undone.len()
            );
            for (step, why) in &not_undone {
                eprintln!("  - {step}: {why}");
            }
            eprintln!(
                "The files hactl changed are backed up on their nodes under {}/{id}/. The cluster stays locked by run {id}. Fix what is named above, then run `hactl rollback {file} {id}` to finish; hactl apply refuses to start until then.",
                crate::seams::BACKUP_ROOT
            );
            EXIT_INCOMPLETE
        }
    }
}

/// The journal, and a line on stdout as each step starts and ends (after its record is
/// durable, so what is said has been recorded), and every 10 s while it runs.
struct Console<J> {
    journal: J,
    /// Set when another operator took the lock over: every record after is refused.
    lost: Lost,
    interrupt: Interrupt,
    handlers: BTreeMap<String, String>,
    began: Arc<Mutex<BTreeMap<String, Running>>>,
    ticker: Option<Ticker>,
}

/// A step under way: when it began, what it is doing, and the next mark to say it at.
struct Running {
    since: Instant,
    doing: &'static str,
    next: Duration,
}

/// How often a step still under way is said, as Terraform's `Still modifying... [10s elapsed]`.
const STILL_EVERY: Duration = Duration::from_secs(10);

/// The thread that says which steps are still under way; stopped before the outcome is said.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Ticker {
    fn start(began: Arc<Mutex<BTreeMap<String, Running>>>) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                std::thread::park_timeout(Duration::from_millis(200));
                // Said under the lock: a step's end, said after its removal, follows every
                // "still" line of it.
                // A closed stdout (`| head`) is not this thread's to report.
                let mut began = began.lock().unwrap_or_else(|e| e.into_inner());
                let mut out = std::io::stdout().lock();
                for (step, r) in began.iter_mut() {
                    if r.since.elapsed() >= r.next {
                        let (doing, at) = (r.doing, duration_text(r.next));
                        let _ = writeln!(out, "{step}: Still {doing}... [{at} elapsed]");
                        r.next += STILL_EVERY;
                    }
                }
                let _ = out.flush();
            }
        });
        Ticker { stop, thread }
    }
}

/// `42s`, `1m0s`: as Terraform writes elapsed times.
fn duration_text(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

impl<J: Sink> Console<J> {
    fn new(journal: J, steps: &[Step], locked: &Locked) -> Console<J> {
        let handlers = steps
            .iter()
            .filter_map(|s| match &s.action {
                StepAction::Handler(h) => Some((s.id.clone(), h.verify.clone())),
                StepAction::Change(_) => None,
            })
            .collect();
        let began = Arc::default();
        Console {
            journal,
            lost: locked.lost.clone(),
            interrupt: locked.interrupt.clone(),
            handlers,
            ticker: Some(Ticker::start(Arc::clone(&began))),
            began,
        }
    }

    fn begin(&mut self, step: &str, doing: &'static str) {
        let running = Running {
            since: Instant::now(),
            doing,
            next: STILL_EVERY,
        };
        self.running().insert(step.to_string(), running);
    }

    fn running(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        self.began.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn after(&mut self, step: &str) -> String {
        let took = self.running().remove(step).map(|r| r.since.elapsed());
        duration_text(took.unwrap_or_default())
    }

    /// Whether `step` is a handler run again after an undo (`ID.undo`).
    fn handler_again(&self, step: &str) -> bool {
        step.strip_suffix(".undo")
            .is_some_and(|id| self.handlers.contains_key(id))
    }

    fn line(&mut self, r: &Record) -> Option<String> {
        Some(match r {
            Record::StepStarted { step } => match self.handlers.get(step) {
                Some(_) => {
                    self.begin(step, "running");
                    format!("{step}: Running...")
                }
                None => {
                    self.begin(step, "modifying");
                    format!("{step}: Modifying...")
                }
            },
            Record::StepDone { step } => {
                let after = self.after(step);
                match self.handlers.get(step) {
                    Some(verify) => format!("{step}: Verified after {after}: {verify}"),
                    None => format!("{step}: Modifications complete after {after}"),
                }
            }
            Record::StepFailed { step, error } => {
                let after = self.after(step);
                format!("{step}: Failed after {after}: {error}")
            }
            // A handler run again after an undo is said as a handler.
            Record::UndoStarted { step } => {
                if self.handler_again(step) {
                    self.begin(step, "running");
                    format!("{step}: Running...")
                } else {
                    self.begin(step, "rolling back");
                    format!("{step}: Rolling back...")
                }
            }
            Record::Undone { step } => {
                let after = self.after(step);
                if self.handler_again(step) {
                    // Its check is the handler's, for what the undo put back.
                    format!("{step}: Verified after {after}")
                } else {
                    format!("{step}: Rolled back after {after}")
                }
            }
            Record::UndoFailed { step, error } => {
                self.running().remove(step);
                format!("{step}: Rollback failed: {error}")
            }
            _ => return None,
        })
    }
}

/// The run's future owns its console: dropped when the run ends, before the outcome is said,
/// so no "still" line comes after it.
impl<J> Drop for Console<J> {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.stop.store(true, Ordering::Relaxed);
            t.thread.thread().unpark();
            let _ = t.thread.join();
        }
    }
}

impl<J: Sink> Sink for Console<J> {
    fn append(&mut self, record: &Record) -> Result<(), String> {
        if let Some(by) = self.lost.get() {
            return Err(format!(
                "the lock (Lease kube-system/hactl) was taken over by {by}: hactl stopped before its next action"
            ));
        }
        self.journal.append(record)?;
        if let Some(line) = self.line(record) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        Ok(())
    }

    fn interrupted(&self) -> Option<String> {
        self.interrupt
            .pressed()
            .then(|| "interrupted by the operator (Ctrl-C) before it began".to_string())
    }
}
