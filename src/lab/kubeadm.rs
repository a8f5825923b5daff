//! The lab's `kubeadm` (issue 4): the subcommands hactl and operators run on a node, with
//! kubeadm's command-line shapes, output and exit codes. It runs inside the supervisor on
//! behalf of one node, reading and writing that node's files and talking to the cluster
//! through the same clients the node's components use.

pub mod certs;
pub mod config;
pub mod init_certs;
pub mod join;
pub mod reset;
pub mod token;

use super::components::NodeAgent;
use super::faults::FaultSet;
use super::{ExecOutput, LabDir, LabNode, LabSpec};

/// What a `kubeadm` invocation runs against: the lab, its node, the node's agent (to start
/// and stop its kubelet and pods) and the active faults.
pub struct KubeadmCtx<'a> {
    pub lab: &'a LabDir,
    pub spec: &'a LabSpec,
    pub node: &'a LabNode,
    pub agent: &'a NodeAgent,
    pub faults: &'a FaultSet,
    /// `lab up --kubeadm-etcd-timeout`: shortens kubeadm's etcd retries.
    pub etcd_timeout: Option<std::time::Duration>,
}

impl KubeadmCtx<'_> {
    /// How this version of kubeadm retries etcd member calls, as the lab was told.
    pub fn etcd_retry(&self) -> join::etcd::EtcdRetry {
        join::etcd::EtcdRetry::for_version(self.spec.version.minor, self.etcd_timeout)
    }
}

/// Runs `kubeadm ARGS` on the context's node.
pub async fn run(ctx: &KubeadmCtx<'_>, args: &[String]) -> ExecOutput {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["version", rest @ ..] => version(ctx.spec, rest),
        ["token", rest @ ..] => token::run(ctx, rest).await,
        ["init", "phase", "upload-certs", rest @ ..] => certs::upload_certs(ctx, rest).await,
        ["init", "phase", "certs", "apiserver", rest @ ..] => init_certs::apiserver(ctx, rest),
        ["init", "phase", "upload-config", "kubeadm", rest @ ..] => {
            config::upload_config(ctx, rest).await
        }
        ["join", rest @ ..] => join::run(ctx, rest).await,
        ["reset", rest @ ..] => reset::run(ctx, rest).await,
        _ => failure(format!(
            "hactl lab: `kubeadm {}` is not simulated on lab nodes (version, token, init phase upload-certs|upload-config|certs apiserver, join and reset are)\n",
            words.join(" ")
        )),
    }
}

/// A failed command: `stderr` and exit code 1.
pub fn failure(stderr: impl Into<String>) -> ExecOutput {
    ExecOutput {
        stdout: String::new(),
        stderr: stderr.into(),
        code: 1,
    }
}

/// kubeadm's way of failing a command: the error, then the hint about `--v=5`.
pub fn error_exit(stdout: String, message: &str) -> ExecOutput {
    ExecOutput {
        stdout,
        stderr: format!(
            "{message}\nTo see the stack trace of this error execute with --v=5 or higher\n"
        ),
        code: 1,
    }
}

/// A command's flags as cobra parses them: `--name value`, `--name=value`, booleans.
#[derive(Debug, Default)]
pub struct Flags {
    pub values: std::collections::BTreeMap<String, String>,
    pub positional: Vec<String>,
}

impl Flags {
    /// Parses `args`; `valued` flags take a value, `switches` do not. Errors are cobra's.
    pub fn parse(args: &[&str], valued: &[&str], switches: &[&str]) -> Result<Flags, String> {
        let mut flags = Flags::default();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let Some(flag) = arg
                .strip_prefix("--")
                .or_else(|| arg.strip_prefix('-').filter(|_| arg.len() > 1))
            else {
                flags.positional.push(arg.to_string());
                continue;
            };
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            if name == "v" || name == "skip-phases" || name == "ignore-preflight-errors" {
                // Accepted and ignored by the lab, as they change nothing it simulates.
                if inline.is_none() {
                    it.next();
                }
                continue;
            }
            if valued.contains(&name) {
                let value = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .map(|v| v.to_string())
                        .ok_or_else(|| format!("flag needs an argument: --{name}"))?,
                };
                flags.values.insert(name.to_string(), value);
            } else if switches.contains(&name) {
                flags
                    .values
                    .insert(name.to_string(), inline.unwrap_or_else(|| "true".into()));
            } else if arg.starts_with("--") {
                return Err(format!("unknown flag: --{name}"));
            } else {
                return Err(format!("unknown shorthand flag: '{}' in {arg}", &flag[..1]));
            }
        }
        Ok(flags)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn is_set(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v != "false")
    }
}

/// `kubeadm version [-o short|json|yaml]`.
fn version(spec: &LabSpec, args: &[&str]) -> ExecOutput {
    let v = spec.version;
    let flags = match Flags::parse(args, &["output", "o"], &[]) {
        Ok(f) => f,
        Err(e) => return failure(format!("Error: {e}\n")),
    };
    let output = flags.get("output").or(flags.get("o")).unwrap_or("");
    let stdout = match output {
        "short" => format!("{v}\n"),
        "" => format!(
            "kubeadm version: &version.Info{{Major:\"{}\", Minor:\"{}\", GitVersion:\"{v}\", GitCommit:\"lab\", GitTreeState:\"clean\", BuildDate:\"2026-01-01T00:00:00Z\", GoVersion:\"go1.22.0\", Compiler:\"gc\", Platform:\"linux/amd64\"}}\n",
            v.major, v.minor
        ),
        "json" => format!(
            "{{\n  \"clientVersion\": {{\n    \"major\": \"{}\",\n    \"minor\": \"{}\",\n    \"gitVersion\": \"{v}\",\n    \"gitCommit\": \"lab\",\n    \"gitTreeState\": \"clean\",\n    \"buildDate\": \"2026-01-01T00:00:00Z\",\n    \"goVersion\": \"go1.22.0\",\n    \"compiler\": \"gc\",\n    \"platform\": \"linux/amd64\"\n  }}\n}}\n",
            v.major, v.minor
        ),
        other => {
            return failure(format!(
                "error: invalid output format: {other}\nTo see the stack trace of this error execute with --v=5 or higher\n"
            ));
        }
    };
    ExecOutput {
        stdout,
        ..Default::default()
    }
}
