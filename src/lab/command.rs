//! The `hactl lab` subcommands: argument shapes and what each one runs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Subcommand, ValueEnum};

use super::components::Pace;
use super::control::{self, Request, Response};
use super::daemon;
use super::faults::Fault;
use super::up::{self, UpOptions};
use super::{LabDir, LabError, LabSpec};
use crate::kubeadm::KubeVersion;
use crate::observed::ContainerRuntime;

#[derive(Subcommand, Debug)]
pub enum LabCommand {
    /// Build and start a kubeadm-style cluster on this machine's loopback addresses.
    Up {
        /// The desired-state file whose nodes and endpoint the lab is built for.
        #[arg(long, value_name = "PLAN.toml")]
        plan: PathBuf,
        /// The lab's directory (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Kubernetes minor version, 1.23 to 1.33.
        #[arg(long, default_value = "1.31", value_name = "VERSION")]
        kubernetes_version: String,
        /// The container runtime; docker only below 1.24 (dockershim).
        #[arg(long, value_enum, default_value_t = Runtime::Containerd)]
        runtime: Runtime,
        /// How long the nodes' kubeadm retries an etcd member call that etcd refuses before
        /// it gives up (default: kubeadm's own, about 200 s up to 1.29 and 2 min from 1.30);
        /// shorter, to see a join fail sooner.
        #[arg(long, value_name = "SECONDS")]
        kubeadm_etcd_timeout: Option<u64>,
        /// How fast the lab's components act.
        #[arg(long, value_enum, default_value_t = Pace::Test)]
        pace: Pace,
    },
    /// Report the lab's ground truth; exit 0 when healthy, 1 when not.
    Status {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
        format: StatusFormat,
    },
    /// Stop everything the lab started.
    Down {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Break something on a node on purpose: ssh-down, node-down, block-port PORT,
    /// kubeadm-join-fails, disk-full, api-conflicts N, slow-component [SECONDS].
    Fault {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The node, by its name in the plan.
        node: String,
        /// The fault and its argument, if it takes one.
        #[arg(value_name = "KIND [ARG]", num_args = 1..=2, required = true)]
        kind: Vec<String>,
    },
    /// Undo every fault of a node.
    Heal {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        node: String,
    },
    /// Run a node command through the lab's supervisor (what the node stand-ins call).
    #[command(hide = true)]
    Exec {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        node: String,
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// The lab's supervisor (started by `lab up`).
    #[command(hide = true)]
    Daemon {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Runtime {
    Containerd,
    Docker,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Text,
    Json,
}

/// An absolute lab directory: node namespaces, stand-ins and hactl.toml refer to it by path.
fn lab_dir(dir: &Path, create: bool) -> Result<LabDir, LabError> {
    if create {
        std::fs::create_dir_all(dir).map_err(|e| LabError::io(dir, "create", e))?;
    }
    let abs = dir.canonicalize().map_err(|e| {
        LabError::msg(format!(
            "{}: {e}; is this a lab directory (`hactl lab up --dir {}`)?",
            dir.display(),
            dir.display()
        ))
    })?;
    Ok(LabDir::new(abs))
}

fn runtime_for(version: KubeVersion, runtime: Runtime) -> Result<ContainerRuntime, LabError> {
    match runtime {
        Runtime::Containerd => Ok(ContainerRuntime::Containerd),
        Runtime::Docker if version.minor < 24 => Ok(ContainerRuntime::Docker),
        Runtime::Docker => Err(LabError::msg(format!(
            "--runtime docker needs Kubernetes 1.23 (dockershim was removed in 1.24), not {}; use --runtime containerd",
            version.minor_string()
        ))),
    }
}

/// Runs a lab command; returns the exit code. `read_plan` parses and validates the plan
/// (the CLI's, so that its errors are the same miette reports as `hactl validate`'s).
pub fn run(
    command: LabCommand,
    read_plan: impl FnOnce(&Path) -> Result<(crate::spec::DesiredState, String), u8>,
) -> Result<u8, LabError> {
    match command {
        LabCommand::Up {
            plan,
            dir,
            kubernetes_version,
            runtime,
            kubeadm_etcd_timeout,
            pace,
        } => {
            let version = super::lab_version(&kubernetes_version)
                .map_err(|e| LabError::msg(format!("--kubernetes-version: {e}")))?;
            let runtime = runtime_for(version, runtime)?;
            let (desired, plan_text) = match read_plan(&plan) {
                Ok(p) => p,
                Err(code) => return Ok(code),
            };
            super::node::check_host()?;
            let lab = lab_dir(&dir, true)?;
            let spec = LabSpec::from_plan(&desired, version, runtime);
            let opts = UpOptions {
                plan_path: plan.canonicalize().unwrap_or(plan),
                plan_text,
                spec,
                ssh_port: desired.ssh.port.unwrap_or(22),
                ready_timeout: Duration::from_secs(60),
                kubeadm_etcd_timeout: kubeadm_etcd_timeout.map(Duration::from_secs),
                pace,
            };
            let summary = runtime_block_on(up::up(&lab, opts))??;
            print!("{summary}");
            Ok(0)
        }
        LabCommand::Down { dir } => {
            let lab = lab_dir(&dir, false)?;
            print!("{}", up::down(&lab)?);
            Ok(0)
        }
        LabCommand::Status { dir, format } => {
            let lab = lab_dir(&dir, false)?;
            let status = runtime_block_on(super::status::gather(&lab))??;
            match format {
                StatusFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&status)
                        .map_err(|e| LabError::msg(e.to_string()))?
                ),
                StatusFormat::Text => print!("{}", super::status::render(&status)),
            }
            Ok(if status.healthy { 0 } else { 1 })
        }
        LabCommand::Fault { dir, node, kind } => {
            let lab = lab_dir(&dir, false)?;
            let fault = parse_fault(&kind)?;
            let shown = fault.to_string();
            expect_ok(control::call(
                &lab,
                &Request::Fault {
                    node: node.clone(),
                    fault,
                },
                Duration::from_secs(60),
            )?)?;
            println!("{node}: {shown}");
            Ok(0)
        }
        LabCommand::Heal { dir, node } => {
            let lab = lab_dir(&dir, false)?;
            expect_ok(control::call(
                &lab,
                &Request::Heal { node: node.clone() },
                Duration::from_secs(60),
            )?)?;
            println!("{node}: healed");
            Ok(0)
        }
        LabCommand::Exec { dir, node, argv } => {
            let lab = LabDir::new(dir);
            // Long enough for kubeadm's own windows (a join may retry etcd for ~200 s twice
            // and wait 40 s for it), which bound every command the supervisor runs.
            match control::call(
                &lab,
                &Request::Exec { node, argv },
                Duration::from_secs(900),
            )? {
                Response::Exec(out) => {
                    let _ = std::io::stdout().write_all(out.stdout.as_bytes());
                    let _ = std::io::stderr().write_all(out.stderr.as_bytes());
                    Ok(u8::try_from(out.code).unwrap_or(1))
                }
                Response::Error { message } => Err(LabError::msg(message)),
                other => Err(LabError::msg(format!("unexpected answer: {other:?}"))),
            }
        }
        LabCommand::Daemon { dir } => {
            let lab = LabDir::new(dir);
            runtime_block_on(daemon::run(lab))??;
            Ok(0)
        }
    }
}

fn expect_ok(response: Response) -> Result<(), LabError> {
    match response {
        Response::Ok => Ok(()),
        Response::Error { message } => Err(LabError::msg(message)),
        other => Err(LabError::msg(format!("unexpected answer: {other:?}"))),
    }
}

/// `KIND [ARG]` as `hactl lab fault` takes it.
pub fn parse_fault(words: &[String]) -> Result<Fault, LabError> {
    let kind = words.first().map(String::as_str).unwrap_or("");
    let arg = words.get(1).map(String::as_str);
    let number = |what: &str| -> Result<u64, LabError> {
        let Some(a) = arg else {
            return Err(LabError::msg(format!("{kind} needs {what}")));
        };
        a.parse::<u64>()
            .map_err(|_| LabError::msg(format!("{kind}: {a:?} is not {what}")))
    };
    let no_arg = |f: Fault| match arg {
        None => Ok(f),
        Some(a) => Err(LabError::msg(format!(
            "{kind} takes no argument (got {a:?})"
        ))),
    };
    match kind {
        "ssh-down" => no_arg(Fault::SshDown),
        "node-down" => no_arg(Fault::NodeDown),
        "kubeadm-join-fails" => no_arg(Fault::KubeadmJoinFails),
        "disk-full" => no_arg(Fault::DiskFull),
        "block-port" => {
            let port = number("a port number")?;
            let port = u16::try_from(port)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| LabError::msg(format!("block-port: {port} is not a port")))?;
            Ok(Fault::BlockPort { port })
        }
        "api-conflicts" => {
            let n = number("a number of writes")?;
            let remaining = u32::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| {
                LabError::msg(format!(
                    "api-conflicts: {n} is not a count of writes (1 or more)"
                ))
            })?;
            Ok(Fault::ApiConflicts { remaining })
        }
        "slow-component" => {
            let seconds = if arg.is_some() {
                number("a number of seconds")?
            } else {
                10
            };
            Ok(Fault::SlowComponent { seconds })
        }
        other => Err(LabError::msg(format!(
            "unknown fault {other:?}; the lab knows ssh-down, node-down, block-port PORT, kubeadm-join-fails, disk-full, api-conflicts N, slow-component [SECONDS]"
        ))),
    }
}

fn runtime_block_on<F: std::future::Future>(f: F) -> Result<F::Output, LabError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| LabError::msg(format!("cannot start the async runtime: {e}")))?;
    Ok(rt.block_on(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn faults_parse_as_the_issue_names_them() {
        assert_eq!(
            parse_fault(&words("block-port 2380")).unwrap(),
            Fault::BlockPort { port: 2380 }
        );
        assert_eq!(
            parse_fault(&words("api-conflicts 3")).unwrap(),
            Fault::ApiConflicts { remaining: 3 }
        );
        assert_eq!(
            parse_fault(&words("slow-component")).unwrap(),
            Fault::SlowComponent { seconds: 10 }
        );
        assert_eq!(parse_fault(&words("ssh-down")).unwrap(), Fault::SshDown);
        for bad in [
            "block-port",
            "block-port 70000",
            "api-conflicts 0",
            "ssh-down 3",
            "reboot",
        ] {
            assert!(parse_fault(&words(bad)).is_err(), "{bad} was accepted");
        }
    }
}
