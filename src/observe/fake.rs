//! Observation's edge in memory, over a [`FakeCluster`]: its nodes answer the observation
//! scripts from its world (the files with their modification times, what each command prints,
//! which addresses accept TCP), its API is the cluster seam's fake, and its load balancer is
//! whichever API server the world's `apiservers` names at its address, serving that server's
//! certificate, verified as Go verifies it. A test drives a whole observation through it without a lab.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::reach::Reach;
use crate::observed::{EndpointObservation, Probe};
use crate::readings::etcd::etcd_script;
use crate::readings::node::{END_SECTION, KUBECONFIGS, NODE_FILES, SECTION_MARK, node_script};
use crate::seams::Clock;
use crate::seams::fake::{FakeCluster, World};
use crate::spec::Endpoint;
use crate::tls_verify::GoVerifier;
use crate::transport::{CommandOutput, NodeTransport, SshTarget, TransportError};

/// The node script's command sections, answered from [`World::commands`].
pub const NODE_COMMANDS: [&str; 5] = ["user", "kubeadm", "kubelet", "sockets", "kubelet-unit"];
/// The etcd script's sections, answered from [`World::commands`].
pub const ETCD_COMMANDS: [&str; 3] = ["endpoint", "members", "health"];

/// Observation through a [`FakeCluster`].
#[derive(Clone)]
pub struct FakeReach {
    cluster: Arc<FakeCluster>,
}

impl FakeReach {
    pub fn new(cluster: Arc<FakeCluster>) -> FakeReach {
        FakeReach { cluster }
    }
}

/// One node of the fake, as observation's transport.
pub struct FakeSession {
    cluster: Arc<FakeCluster>,
    node: String,
    address: String,
}

impl NodeTransport for FakeSession {
    fn node(&self) -> &str {
        &self.node
    }

    async fn run(&self, script: &str) -> Result<CommandOutput, TransportError> {
        if self.cluster.is_down(&self.node) {
            return Err(refused(&self.node, &self.address));
        }
        Ok(answer(&self.cluster.world(), &self.node, script))
    }

    async fn run_with_input(
        &self,
        _script: &str,
        _input: &[u8],
    ) -> Result<CommandOutput, TransportError> {
        // Observation sends nothing to a node; a call here is a bug the test should see.
        Err(TransportError::Other {
            node: self.node.clone(),
            detail: "the fake's observation transport takes no input".into(),
        })
    }
}

fn refused(node: &str, address: &str) -> TransportError {
    TransportError::Unreachable {
        node: node.to_string(),
        address: address.to_string(),
        detail: format!("ssh: connect to host {address} port 22: Connection refused"),
    }
}

impl Reach for FakeReach {
    type Session = FakeSession;
    type Api = FakeCluster;

    async fn connect(&self, target: SshTarget) -> Result<FakeSession, TransportError> {
        let address = target.address.to_string();
        if self.cluster.is_down(&target.node) {
            return Err(refused(&target.node, &address));
        }
        Ok(FakeSession {
            cluster: self.cluster.clone(),
            node: target.node,
            address,
        })
    }

    async fn close(_session: FakeSession) {}

    fn api(&self, _config: kube::Config, _timeout: Duration) -> Result<Arc<FakeCluster>, String> {
        Ok(self.cluster.clone())
    }

    async fn x509_words(&self, _config: &kube::Config, _timeout: Duration) -> Option<String> {
        None
    }

    async fn probe_endpoint(
        &self,
        endpoint: &Endpoint,
        ca_pem: Option<&str>,
        _timeout: Duration,
    ) -> EndpointObservation {
        let world = self.cluster.world();
        let mut addresses = BTreeMap::new();
        let mut first = None;
        for ip in &endpoint.addresses {
            let at = std::net::SocketAddr::new(*ip, endpoint.port).to_string();
            match world.apiservers.get(&at) {
                Some(backend) => {
                    addresses.insert(ip.to_string(), Probe::Ok);
                    first = first.or(Some(backend.clone()));
                }
                None => {
                    addresses.insert(
                        ip.to_string(),
                        Probe::Failed {
                            reason: format!("dial tcp {at}: connect: connection refused"),
                        },
                    );
                }
            }
        }
        let now = self.cluster.now().as_secs() as i64;
        let tls = match (ca_pem, first) {
            (Some(ca), Some(node)) => Some(served_tls(&world, &node, &endpoint.host, ca, now)),
            _ => None,
        };
        EndpointObservation { addresses, tls }
    }
}

/// The handshake through the LB to `node`'s API server: its served certificate verified for
/// `host` against `ca_pem` at `now`.
fn served_tls(world: &World, node: &str, host: &str, ca_pem: &str, now: i64) -> Probe {
    let failed = |reason: String| Probe::Failed { reason };
    let Some(served) = world.served.get(node) else {
        return failed("EOF".into());
    };
    let verifier = match GoVerifier::from_ca_pem(ca_pem.as_bytes()) {
        Ok(v) => v,
        Err(reason) => return failed(reason),
    };
    match verifier.verify_served_pem(served, host, now) {
        Ok(()) => Probe::Ok,
        Err(reason) => failed(reason),
    }
}

/// What `script` prints on `node`: the node script, the etcd script and the reachability
/// script are answered from the world; anything else is not found.
pub fn answer(world: &World, node: &str, script: &str) -> CommandOutput {
    let mut out = String::new();
    let commands = world.commands.get(node);
    let command = |out: &mut String, name: &str| {
        let (code, text) = commands
            .and_then(|c| c.get(name))
            .cloned()
            .unwrap_or_else(|| (127, format!("sh: 1: {name}: not found")));
        section(out, name, &format!("exit:{code}"), text.as_bytes());
    };
    if script == node_script() {
        for name in NODE_COMMANDS {
            command(&mut out, name);
        }
        let mut stat = String::new();
        for name in KUBECONFIGS {
            let path = format!("/etc/kubernetes/{name}");
            let key = (node.to_string(), path.clone());
            if world.files.contains_key(&key) {
                let mtime = world.mtimes.get(&key).copied().unwrap_or(0);
                stat.push_str(&format!("{mtime} {path}\n"));
            }
        }
        section(&mut out, "mtimes", "exit:0", stat.as_bytes());
        let files = KUBECONFIGS
            .iter()
            .map(|n| (n.to_string(), format!("/etc/kubernetes/{n}")))
            .chain(
                NODE_FILES
                    .iter()
                    .map(|(n, p)| (n.to_string(), p.to_string())),
            );
        for (name, path) in files {
            match world.files.get(&(node.to_string(), path)) {
                Some(f) => section(&mut out, &name, "ok", &f.content),
                None => section(&mut out, &name, "absent", b""),
            }
        }
    } else if script == etcd_script() {
        for name in ETCD_COMMANDS {
            command(&mut out, name);
        }
    } else if script.contains("/dev/tcp/") {
        // `t INDEX HOST PORT &`, one line per target (see `reachability_script`).
        for line in script.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let ["t", index, host, port, "&"] = words.as_slice() else {
                continue;
            };
            let host = host.trim_matches('\'');
            let target = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            if world.listening.contains(&target) {
                section(&mut out, index, "exit:0", b"");
            } else {
                let words = format!(
                    "bash: connect: Connection refused\nbash: line 1: /dev/tcp/{host}/{port}: Connection refused"
                );
                section(&mut out, index, "exit:1", words.as_bytes());
            }
        }
    } else {
        return CommandOutput {
            status: Some(127),
            stdout: Vec::new(),
            stderr: b"the fake answers only observation's scripts".to_vec(),
        };
    }
    section(&mut out, END_SECTION, "exit:0", b"");
    CommandOutput {
        status: Some(0),
        stdout: out.into_bytes(),
        stderr: Vec::new(),
    }
}

/// One section as the scripts print it: the mark, then the body in base64.
fn section(out: &mut String, name: &str, status: &str, body: &[u8]) {
    out.push_str(&format!(
        "\n{SECTION_MARK}{name} {status}\n{}\n",
        STANDARD.encode(body)
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readings::node::{SectionStatus, reachability_script, sections};
    use crate::seams::FileState;

    fn world() -> World {
        let mut w = World::default();
        let key = ("cp1".to_string(), "/etc/kubernetes/admin.conf".to_string());
        w.files.insert(
            key.clone(),
            FileState {
                content: b"apiVersion: v1\n".to_vec(),
                mode: 0o600,
                uid: 0,
                gid: 0,
            },
        );
        w.mtimes.insert(key, 1_790_000_000);
        w.commands.insert(
            "cp1".into(),
            [("user".to_string(), (0, "root".to_string()))].into(),
        );
        w.listening.insert("127.0.0.11:6443".into());
        w
    }

    #[test]
    fn the_node_script_is_answered_from_files_mtimes_and_commands() {
        let out = answer(&world(), "cp1", &node_script());
        let got = sections(&out.stdout_text()).expect("sections");
        assert_eq!(got["admin.conf"].status, SectionStatus::Ok);
        assert_eq!(got["admin.conf"].text(), "apiVersion: v1\n");
        assert_eq!(got["kubelet.conf"].status, SectionStatus::Absent);
        assert_eq!(
            got["mtimes"].text(),
            "1790000000 /etc/kubernetes/admin.conf\n"
        );
        assert_eq!(got["user"].text(), "root");
        // A command the world does not know is not found, as sh says it.
        assert_eq!(got["kubeadm"].status, SectionStatus::Exit(127));
    }

    #[test]
    fn reachability_is_answered_from_what_listens() {
        let targets = ["127.0.0.11:6443".to_string(), "127.0.0.11:2379".to_string()];
        let out = answer(&world(), "cp2", &reachability_script(&targets, 1.0));
        let got = sections(&out.stdout_text()).expect("sections");
        assert_eq!(got["0"].status, SectionStatus::Exit(0));
        assert_eq!(got["1"].status, SectionStatus::Exit(1));
        assert!(got["1"].text().ends_with("Connection refused"));
    }

    /// The `c NAME …` commands of `script` (each starting a line, a pipeline's side or a list's
    /// item: `{ c …; c …; } | { c …; }`): the commands whose output it prints as a section.
    fn command_sections(script: &str) -> Vec<&str> {
        script
            .lines()
            .flat_map(|l| l.split(['|', ';']))
            .filter_map(|l| {
                let l = l.trim_start().trim_start_matches('{').trim_start();
                l.strip_prefix("c ")?.split_whitespace().next()
            })
            .collect()
    }

    #[test]
    fn the_command_lists_are_the_scripts_commands() {
        // `mtimes` is answered from the world's files; `endpoint` is printed without `c`.
        let node = node_script();
        let mut commands = command_sections(&node);
        commands.retain(|c| *c != "mtimes");
        assert_eq!(commands, NODE_COMMANDS);
        // As sets: the script runs health beside members (its sections are read by name).
        let etcd = etcd_script();
        let mut run = command_sections(&etcd);
        run.sort_unstable();
        let mut answered = ETCD_COMMANDS[1..].to_vec();
        answered.sort_unstable();
        assert_eq!(run, answered);
        assert!(etcd.contains("\nh endpoint exit:0"));
    }

    #[test]
    fn any_other_script_is_refused() {
        let out = answer(&world(), "cp1", "rm -rf /");
        assert_eq!(out.status, Some(127));
    }
}
