//! The command line: argument parsing, reading and writing files, printing, exit codes.
//!
//! This is the edge: the only module of the core pipeline that touches the file system. Errors
//! become miette reports that name the file and say how to fix it.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme};

use crate::graph::{ClusterFacts, ResourceGraph};
use crate::observed::{OBSERVED_FORMAT_VERSION, ObservedState};
use crate::plan::Plan;
use crate::{observe, planner, render, schema, spec};

mod apply;
mod lock;
mod log;

#[derive(Parser, Debug)]
#[command(
    name = "hactl",
    version,
    about = "Plan and apply the conversion of a single-control-plane kubeadm cluster into a highly available one"
)]
pub struct Cli {
    /// Never colour the output (colour is also off when NO_COLOR is set or output is piped).
    #[arg(long, global = true)]
    no_color: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a desired-state file and report every problem in it.
    Validate {
        /// The desired-state TOML file.
        file: PathBuf,
    },
    /// Observe the live cluster (read-only) and print or save what was seen, as the snapshot
    /// `plan --observed` reads. It holds no private key or token.
    Observe {
        /// The desired-state TOML file.
        file: PathBuf,
        /// Write the snapshot here instead of standard output.
        #[arg(short = 'o', long = "out", value_name = "SNAPSHOT.json")]
        out: Option<PathBuf>,
        #[command(flatten)]
        live: LiveArgs,
    },
    /// Show what apply would change, and why.
    Plan {
        /// The desired-state TOML file.
        file: PathBuf,
        /// Plan against an observed-state snapshot instead of the live cluster.
        #[arg(long, value_name = "SNAPSHOT.json")]
        observed: Option<PathBuf>,
        #[command(flatten)]
        live: LiveArgs,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Save the plan (JSON) for `hactl show` and `hactl apply`.
        #[arg(short = 'o', long = "out", value_name = "PLANFILE")]
        out: Option<PathBuf>,
        /// Exit 0 when nothing changes, 2 when something does, 1 on error (terraform's
        /// -detailed-exitcode).
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Observe, plan, ask, and carry the plan out, verifying every step and rolling back what
    /// was begun when a step fails. With a saved plan, apply exactly that plan, without asking,
    /// if what it was made from has not changed. Exit 0 applied, 1 failed and rolled back
    /// (or refused), 3 failed and the rollback is incomplete.
    Apply {
        /// The desired-state TOML file, or a plan saved with `hactl plan -o`.
        #[arg(value_name = "FILE|PLANFILE")]
        target: PathBuf,
        /// Apply without asking (a saved plan never asks).
        #[arg(long)]
        auto_approve: bool,
        /// Take over the cluster's lock from run RUN, whose hactl stopped renewing it (as
        /// Terraform's force-unlock).
        #[arg(long, value_name = "RUN")]
        force_unlock: Option<String>,
        /// Seconds each handler's check (a kubelet's Node Ready, a new kube-proxy Pod, a new
        /// leader) is waited for before the step counts as failed.
        #[arg(long, value_name = "SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u16).range(1..))]
        check_timeout: u16,
        #[command(flatten)]
        live: LiveArgs,
    },
    /// Undo a run from its journal: every step it began, last first, byte for byte.
    Rollback {
        /// The desired-state TOML file the run was applied from.
        file: PathBuf,
        /// The run's id (`.hactl/runs/` beside FILE); default: the latest run.
        run: Option<String>,
        /// Roll back without asking.
        #[arg(long)]
        auto_approve: bool,
        /// Take over the cluster's lock from another run RUN, whose hactl stopped renewing it
        /// (the lock of the run rolled back is waited for and taken without it).
        #[arg(long, value_name = "RUN")]
        force_unlock: Option<String>,
        /// Seconds each handler's check (a kubelet's Node Ready, a new kube-proxy Pod, a new
        /// leader) is waited for before the step counts as failed.
        #[arg(long, value_name = "SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u16).range(1..))]
        check_timeout: u16,
        #[command(flatten)]
        live: LiveArgs,
    },
    /// Render a saved plan.
    Show {
        plan_file: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print the resource graph in Graphviz DOT (`hactl graph FILE | dot -Tsvg > graph.svg`).
    Graph {
        file: PathBuf,
        /// Build the graph for an observed-state snapshot (version, running members) rather than
        /// assumed facts.
        #[arg(long, value_name = "SNAPSHOT.json")]
        observed: Option<PathBuf>,
    },
    /// Print the JSON Schema of the desired-state file (or, with --plan, of the plan file).
    Schema {
        #[arg(long)]
        plan: bool,
    },
    /// A local kubeadm-style cluster of real parts, to rehearse and test on (needs root).
    Lab {
        #[command(subcommand)]
        command: crate::lab::command::LabCommand,
    },
}

/// How the live cluster is observed.
#[derive(clap::Args, Debug)]
struct LiveArgs {
    /// Nodes observed at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    parallelism: u16,
    /// Seconds to wait for each node's SSH connection.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    connect_timeout: u16,
    /// Seconds each command on a node may run before hactl gives up on it (that node, or
    /// etcd, is then recorded as not observed).
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u16).range(1..))]
    command_timeout: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Markdown,
    Json,
}

/// An error at the edge, shown as a miette report. A cause the message already ends with is in
/// a field not named `source`: miette would print it again below.
#[derive(Debug, thiserror::Error, Diagnostic)]
enum CliError {
    #[error("cannot read {path}: {error}")]
    #[diagnostic(code(hactl::io), help("check the path and its permissions"))]
    Read { path: String, error: std::io::Error },
    #[error("cannot write {path}: {error}")]
    #[diagnostic(code(hactl::io), help("check that the folder exists and is writable"))]
    Write { path: String, error: std::io::Error },
    #[error("{path} is not an observed-state snapshot: {message}")]
    #[diagnostic(
        code(hactl::observed),
        help(
            "snapshots are written by `hactl observe FILE -o SNAPSHOT.json` of this hactl version (format_version {OBSERVED_FORMAT_VERSION})"
        )
    )]
    Snapshot { path: String, message: String },
    #[error("{path}: {error}")]
    #[diagnostic(
        code(hactl::plan_file),
        help("a plan file is what `hactl plan FILE -o PLANFILE` writes; make it again that way")
    )]
    PlanFile {
        path: String,
        error: render::PlanFileError,
    },
    #[error("cannot start the runtime that observes the cluster: {0}")]
    #[diagnostic(code(hactl::runtime))]
    Runtime(std::io::Error),
    #[error(transparent)]
    #[diagnostic(
        code(hactl::graph::cycle),
        help(
            "this is a bug in hactl's graph builder; please report it with the desired-state file"
        )
    )]
    Cycle(#[from] crate::graph::CycleError),
    #[error(transparent)]
    #[diagnostic(code(hactl::lab))]
    Lab(#[from] crate::lab::LabError),
}

/// Runs hactl with the process's arguments and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    log::init();
    // Colour only on a terminal, and never when asked not to.
    let may_color = !cli.no_color && std::env::var_os("NO_COLOR").is_none();
    match run(cli.command, may_color && std::io::stdout().is_terminal()) {
        Ok(code) => ExitCode::from(code),
        Err(report) => {
            let color = may_color && std::io::stderr().is_terminal();
            eprint!("{}", render_report(report.as_ref(), color));
            ExitCode::from(1)
        }
    }
}

/// A diagnostic as miette draws it; no colour unless asked for.
fn render_report(diagnostic: &dyn Diagnostic, color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let mut out = String::new();
    let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
    if handler.render_report(&mut out, diagnostic).is_err() {
        out = format!("{diagnostic}\n");
    }
    out
}

type Outcome = Result<u8, Box<dyn Diagnostic + Send + Sync>>;

fn run(command: Command, color: bool) -> Outcome {
    match command {
        Command::Validate { file } => {
            let desired = read_spec(&file)?;
            println!(
                "{}: valid ({} control-plane and {} worker nodes behind {})",
                file.display(),
                desired.control_plane_nodes().count(),
                desired.worker_nodes().count(),
                desired.control_plane_endpoint()
            );
            Ok(0)
        }
        Command::Observe { file, out, live } => {
            let desired = read_spec(&file)?;
            let observed = observe_live(&file, &desired, &live, |state| state)?;
            let mut json = serde_json::to_string_pretty(&observed)
                .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
            json.push('\n');
            match &out {
                Some(out) => {
                    write_file(out, &json)?;
                    eprintln!("Saved the snapshot to {}", out.display());
                }
                None => print!("{json}"),
            }
            Ok(0)
        }
        Command::Plan {
            file,
            observed,
            live,
            format,
            out,
            detailed_exitcode,
        } => {
            let desired = read_spec(&file)?;
            let live_cluster = observed.is_none();
            let decide =
                |observed: ObservedState| -> Result<u8, Box<dyn Diagnostic + Send + Sync>> {
                    let started = std::time::Instant::now();
                    let mut plan = planner::plan(&desired, &observed).map_err(CliError::from)?;
                    tracing::debug!(
                        took_ms = crate::transport::millis(started.elapsed()),
                        "planned"
                    );
                    if let Some(out) = &out {
                        plan.desired_state = Some(apply::desired_state_file(&file)?);
                        write_file(out, &render::json(&plan))?;
                    }
                    print_plan(&plan, format, color);
                    // As Terraform ends a plan: how to apply exactly it, or that this was not
                    // saved; only for a plan apply carries out (changes, no errors, no joins).
                    let applicable = matches!(
                        crate::apply::steps::steps(&plan),
                        Ok((steps, joins)) if !steps.is_empty() && joins.is_empty()
                    );
                    match &out {
                        Some(out) => {
                            eprintln!(
                                "Saved the plan to {}; show it with: hactl show {}",
                                out.display(),
                                out.display()
                            );
                            if applicable {
                                eprintln!(
                                    "To perform exactly these actions, run: hactl apply {}",
                                    out.display()
                                );
                            }
                        }
                        None if applicable && live_cluster => eprintln!(
                            "\nNote: you didn't use the -o option to save this plan, so hactl can't guarantee to take exactly these actions if you run `hactl apply {}` now.",
                            file.display()
                        ),
                        None => {}
                    }
                    Ok(plan_exit_code(&plan, detailed_exitcode))
                };
            match observed {
                Some(path) => decide(read_observed(&path)?),
                None => observe_live(&file, &desired, &live, decide)?,
            }
        }
        Command::Apply {
            target,
            auto_approve,
            force_unlock,
            check_timeout,
            live,
        } => apply::apply(
            &target,
            apply::Flags {
                auto_approve,
                force_unlock: force_unlock.as_deref(),
                check_timeout,
            },
            &live,
            color,
        ),
        Command::Rollback {
            file,
            run,
            auto_approve,
            force_unlock,
            check_timeout,
            live,
        } => apply::rollback(
            &file,
            run.as_deref(),
            apply::Flags {
                auto_approve,
                force_unlock: force_unlock.as_deref(),
                check_timeout,
            },
            &live,
        ),
        Command::Show { plan_file, format } => {
            let text = read_file(&plan_file)?;
            let plan = render::parse_plan(&text).map_err(|source| CliError::PlanFile {
                path: plan_file.display().to_string(),
                error: source,
            })?;
            print_plan(&plan, format, color);
            Ok(0)
        }
        Command::Graph { file, observed } => {
            let desired = read_spec(&file)?;
            let facts = match observed {
                Some(path) => ClusterFacts::observed(&desired, &read_observed(&path)?),
                None => ClusterFacts::assumed(&desired),
            };
            let graph = ResourceGraph::build(&desired, &facts).map_err(CliError::from)?;
            print!("{}", graph.to_dot(&facts));
            Ok(0)
        }
        Command::Lab { command } => {
            // The plan is read once: lab up validates it and copies its text into hactl.toml.
            let read_plan = |path: &Path| {
                let parsed = read_file(path).and_then(|text| {
                    spec::parse(&path.display().to_string(), &text)
                        .map(|desired| (desired, text))
                        .map_err(|e| Box::new(e) as Box<dyn Diagnostic + Send + Sync>)
                });
                parsed.map_err(|report| {
                    eprint!("{}", render_report(report.as_ref(), false));
                    1
                })
            };
            Ok(crate::lab::command::run(command, read_plan).map_err(CliError::from)?)
        }
        Command::Schema { plan } => {
            print!(
                "{}",
                if plan {
                    schema::plan_schema()
                } else {
                    schema::desired_state_schema()
                }
            );
            Ok(0)
        }
    }
}

/// Observes the cluster `desired` describes, then runs `then` on what was observed while the
/// connections close (nothing after observation needs them); says on stderr how long observing
/// took and which nodes could not be reached (the plan says what that leaves undecided).
fn observe_live<R>(
    file: &Path,
    desired: &spec::DesiredState,
    live: &LiveArgs,
    then: impl FnOnce(ObservedState) -> R,
) -> Result<R, Box<dyn Diagnostic + Send + Sync>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let (state, close) = observe_with(&runtime, file, desired, live, false).into_state();
    let closing = runtime.spawn(close);
    let result = then(state);
    // Every master is closed before hactl exits (a panic while closing is only reported).
    if let Err(e) = runtime.block_on(closing) {
        eprintln!("Warning: closing the ssh connections: {e}");
    }
    Ok(result)
}

/// Observes on `runtime` and keeps the connections (the workers' only with `keep_workers`)
/// and the API's kubeconfig, in memory, for what runs next; says on stderr what
/// `observe_live` says.
fn observe_with(
    runtime: &tokio::runtime::Runtime,
    file: &Path,
    desired: &spec::DesiredState,
    live: &LiveArgs,
    keep_workers: bool,
) -> observe::Observation {
    crate::transport::install_crypto_provider();
    let plan_dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut opts = observe::ObserveOptions::new(&plan_dir);
    opts.parallelism = usize::from(live.parallelism);
    opts.connect_timeout = std::time::Duration::from_secs(u64::from(live.connect_timeout));
    opts.command_timeout = std::time::Duration::from_secs(u64::from(live.command_timeout));
    opts.keep_workers = keep_workers;
    let started = std::time::Instant::now();
    let observation = runtime.block_on(observe::observe(desired, &opts));
    for warning in &observation.warnings {
        eprintln!("warning: {warning}");
    }
    eprintln!(
        "Observed {} nodes, the API, etcd and the load balancer in {:.1} s (read-only).",
        desired.nodes.len(),
        started.elapsed().as_secs_f64()
    );
    let unreachable = observe::unreachable_nodes(desired, &observation.state);
    if !unreachable.is_empty() {
        let names: Vec<&str> = unreachable.iter().map(|(n, _)| *n).collect();
        eprintln!("Could not observe: {}", names.join(", "));
    }
    observation
}

/// 1 when the plan has errors; with `--detailed-exitcode`, 2 when it changes something.
fn plan_exit_code(plan: &Plan, detailed: bool) -> u8 {
    if plan.has_errors() {
        1
    } else if detailed && plan.has_changes() {
        2
    } else {
        0
    }
}

fn print_plan(plan: &Plan, format: Format, color: bool) {
    let text = match format {
        Format::Text => render::text(plan, color),
        Format::Markdown => render::markdown(plan).join("\n"),
        Format::Json => render::json(plan),
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`hactl plan … | head`) is not an error worth a report.
    let _ = stdout.write_all(text.as_bytes());
}

fn read_file(path: &Path) -> Result<String, Box<dyn Diagnostic + Send + Sync>> {
    std::fs::read_to_string(path).map_err(|source| {
        Box::new(CliError::Read {
            path: path.display().to_string(),
            error: source,
        }) as _
    })
}

fn write_file(path: &Path, text: &str) -> Result<(), Box<dyn Diagnostic + Send + Sync>> {
    std::fs::write(path, text).map_err(|source| {
        Box::new(CliError::Write {
            path: path.display().to_string(),
            error: source,
        }) as _
    })
}

fn read_spec(path: &Path) -> Result<spec::DesiredState, Box<dyn Diagnostic + Send + Sync>> {
    let text = read_file(path)?;
    spec::parse(&path.display().to_string(), &text).map_err(|e| Box::new(e) as _)
}

fn read_observed(path: &Path) -> Result<ObservedState, Box<dyn Diagnostic + Send + Sync>> {
    let text = read_file(path)?;
    let snapshot = |message: String| {
        Box::new(CliError::Snapshot {
            path: path.display().to_string(),
            message,
        }) as Box<dyn Diagnostic + Send + Sync>
    };
    // Check the version first, so an old or new snapshot gets that message and not a field error.
    let version = serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| snapshot(e.to_string()))?
        .get("format_version")
        .and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(OBSERVED_FORMAT_VERSION)) {
        return Err(snapshot(format!(
            "its format_version is {}, this hactl reads {OBSERVED_FORMAT_VERSION}",
            version.map_or_else(|| "missing".to_string(), |v| v.to_string())
        )));
    }
    serde_json::from_str(&text).map_err(|e| snapshot(e.to_string()))
}
