//! The supervisor's control socket: the requests, the answers, and the client `up`, `status`,
//! `fault` and `exec` call it with (the supervisor, `daemon`, answers them).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::components::NodeReport;
use super::faults::Fault;
use super::{ExecOutput, LabDir, LabError};

/// One request on the control socket: a JSON line.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    Ping,
    /// A command run on a node through one of its stand-ins.
    Exec {
        node: String,
        argv: Vec<String>,
    },
    /// Every node agent's own view (kubelet errors, pods, component leases) and the active
    /// faults.
    Report,
    /// Injects a fault on a node (`hactl lab fault`).
    Fault {
        node: String,
        fault: Fault,
    },
    /// Removes every fault of a node (`hactl lab heal`).
    Heal {
        node: String,
    },
    Shutdown,
}

/// The answer: a JSON line.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    Ok,
    Exec(ExecOutput),
    Report {
        nodes: BTreeMap<String, NodeReport>,
        #[serde(default)]
        faults: BTreeMap<String, Vec<Fault>>,
    },
    Error {
        message: String,
    },
}

/// Sends one request to the lab's supervisor and waits for its answer.
pub fn call(lab: &LabDir, request: &Request, timeout: Duration) -> Result<Response, LabError> {
    let sock = lab.control_socket();
    let mut stream = UnixStream::connect(&sock).map_err(|e| {
        LabError::msg(format!(
            "the lab's supervisor does not answer on {}: {e}; is the lab up (`hactl lab status --dir {}`)?",
            sock.display(),
            lab.root().display()
        ))
    })?;
    let io = |e: std::io::Error| LabError::io(&sock, "talk to the supervisor on", e);
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_string(request).map_err(|e| LabError::msg(e.to_string()))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    serde_json::from_str(&answer).map_err(|e| {
        LabError::msg(format!(
            "the lab's supervisor answered something unreadable ({e}); see {}",
            lab.log_dir().join("daemon.log").display()
        ))
    })
}
