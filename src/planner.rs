//! Diffs the desired state against the observed state into a [`Plan`].
//!
//! Pure: it takes two values and returns one. Every resource of the graph gets an action and a
//! reason; what cannot be decided (an unreachable node, a missing file) becomes `unknown` plus a
//! problem that names the node or object, the cause and the fix.

use std::collections::BTreeMap;

use crate::cluster_config::{self, ClusterConfig};
use crate::configmaps::KubeadmConfigMap;
use crate::graph::{ClusterFacts, CycleError, Resource, ResourceGraph};
use crate::kubeadm::{Component, KubeVersion, KubeconfigFile, Target};
use crate::observed::{
    ConfigMapObservation, ContainerRuntime, EtcdMember, NodeObservation, ObservedState, Probe, San,
    SshFailure, later, later_by, url_host,
};
use crate::plan::{
    Action, Handler, HandlerAction, HandlerCheck, Operation, PLAN_FORMAT_VERSION, Plan, Problem,
    ResourceChange, ResourceValue, Severity, Summary, sha256,
};
use crate::spec::{DesiredState, Node, Role};

mod certificate;
mod configmap;
mod control_plane;
mod endpoint;
mod fingerprint;
mod handlers;
mod kubeconfig;

use handlers::{await_bootstrap_signer, restart_kube_proxy};

const APISERVER_CERT: &str = "/etc/kubernetes/pki/apiserver.crt";
const APISERVER_KEY: &str = "/etc/kubernetes/pki/apiserver.key";
const CA_CERT: &str = "/etc/kubernetes/pki/ca.crt";
const CA_KEY: &str = "/etc/kubernetes/pki/ca.key";

/// A kubelet that joins writes its own kubelet.conf after it starts, when its TLS bootstrap
/// ends (kubeadm waits up to 5 minutes for that): a change within this window of the start
/// is the kubelet's own, not one it has yet to read.
pub const KUBELET_BOOTSTRAP_WINDOW_SECS: i64 = 300;

/// How long apply waits for kube-apiserver to serve a reissued certificate before it restarts
/// the static pod.
pub const CERT_RELOAD_TIMEOUT_SECS: u32 = 60;

/// Plans the conversion of the observed cluster into the desired one.
pub fn plan(desired: &DesiredState, observed: &ObservedState) -> Result<Plan, CycleError> {
    let facts = ClusterFacts::observed(desired, observed);
    let graph = ResourceGraph::build(desired, &facts)?;
    let mut planner = Planner {
        desired,
        observed,
        facts: &facts,
        cluster_config: observed
            .configmap(KubeadmConfigMap::KubeadmConfig)
            .and_then(|cm| cm.data.get(KubeadmConfigMap::KubeadmConfig.key()))
            .and_then(|text| cluster_config::read(text).ok()),
        problems: Vec::new(),
        triggered: Vec::new(),
    };
    planner.check_cluster();
    let mut changes: Vec<ResourceChange> = Vec::new();
    let mut handlers: Vec<Handler> = Vec::new();
    for (resource, depends_on) in graph.in_order() {
        let address = resource.address();
        let mut change = planner.resource(resource);
        change.depends_on = depends_on;
        // A handler runs once, right after the last change that triggers it.
        for handler in std::mem::take(&mut planner.triggered) {
            change.handlers.push(handler.id.clone());
            match handlers.iter().position(|h| h.id == handler.id) {
                Some(i) => {
                    let mut h = handlers.remove(i);
                    h.triggered_by.push(address.clone());
                    h.runs_after = address.clone();
                    handlers.push(h);
                }
                None => handlers.push(Handler {
                    triggered_by: vec![address.clone()],
                    runs_after: address.clone(),
                    ..handler
                }),
            }
        }
        changes.push(change);
    }
    let position = |address: &str| changes.iter().position(|c| c.address == address);
    // Stable: handlers after the same resource keep the order they were triggered in.
    handlers.sort_by_key(|h| position(&h.runs_after));
    let summary = summarize(&changes);
    let observed_fingerprint = fingerprint::observed(&changes);
    let mut problems = planner.problems;
    problems.sort_by_key(|p| std::cmp::Reverse(p.severity));
    Ok(Plan {
        format_version: PLAN_FORMAT_VERSION.to_string(),
        cluster: desired.cluster.name.clone(),
        endpoint: desired.endpoint_url(),
        kubernetes_version: (!facts.assumed).then(|| facts.conventions.version.to_string()),
        container_runtime: (!facts.assumed).then(|| facts.runtime.as_str().to_string()),
        resource_changes: changes,
        handlers,
        problems,
        summary,
        observed_fingerprint,
        desired_state: None,
    })
}

fn summarize(changes: &[ResourceChange]) -> Summary {
    let mut s = Summary::default();
    for c in changes {
        for a in &c.actions {
            match a {
                Action::Create => s.add += 1,
                Action::Update => s.change += 1,
                Action::Delete => s.destroy += 1,
                Action::Unknown => s.unknown += 1,
                Action::NoOp | Action::Read => {}
            }
        }
    }
    s
}

struct Planner<'a> {
    desired: &'a DesiredState,
    observed: &'a ObservedState,
    facts: &'a ClusterFacts,
    cluster_config: Option<ClusterConfig>,
    problems: Vec<Problem>,
    /// Handlers the resource being planned triggers.
    triggered: Vec<Handler>,
}

/// One resource's outcome before dependencies and handlers are filled in.
fn change(
    resource: &Resource,
    action: Action,
    reason: String,
    before: Option<ResourceValue>,
    after: Option<ResourceValue>,
    fingerprint: String,
) -> ResourceChange {
    let actions = match action {
        // A replace: Terraform's ["delete", "create"].
        Action::Delete => vec![Action::Delete, Action::Create],
        a => vec![a],
    };
    ResourceChange {
        address: resource.address(),
        node: resource.node().map(str::to_string),
        actions,
        reason,
        before,
        after,
        handlers: Vec::new(),
        depends_on: Vec::new(),
        fingerprint,
        operation: None,
    }
}

/// An update with the operation apply carries out.
fn update(
    resource: &Resource,
    reason: String,
    before: ResourceValue,
    after: ResourceValue,
    fingerprint: String,
    operation: Operation,
) -> ResourceChange {
    ResourceChange {
        operation: Some(operation),
        ..change(
            resource,
            Action::Update,
            reason,
            Some(before),
            Some(after),
            fingerprint,
        )
    }
}

/// How to fix what kept hactl from observing a node; `as_root` is whether the desired state
/// has hactl read as root there (root login or sudo), `None` when ssh_config's `User` decides.
fn ssh_fix(name: &str, address: &str, kind: Option<SshFailure>, as_root: Option<bool>) -> String {
    let permissions =
        format!("check the files' owners, modes and SELinux/AppArmor labels on {name} (ls -lZ)");
    let sudo = format!(
        "set ssh.sudo = true (or sudo = true under {name}'s [node.ssh]) so hactl reads them as root through sudo -n, or log in as root"
    );
    match kind {
        Some(SshFailure::Unreadable) => match as_root {
            Some(true) => format!("hactl reads as root there: {permissions}"),
            Some(false) => sudo,
            None => format!("{sudo}; if hactl already reads as root there, {permissions}"),
        },
        Some(SshFailure::HostKeyMismatch) => format!(
            "if {name} was reinstalled, verify its new host key out of band and remove the old one with `ssh-keygen -R {address}` (in the known_hosts file ssh uses), then plan again; otherwise treat this as an attack"
        ),
        Some(SshFailure::HostKeyUnknown) => format!(
            "add {name}'s host key to known_hosts (`ssh-keyscan {address}`, verified out of band), or set known_hosts = \"accept-new\" under [ssh] to learn it on first use"
        ),
        Some(SshFailure::PermissionDenied) => format!(
            "check user and identity_file under [ssh] (or {name}'s [node.ssh]), and that the key is in {name}'s authorized_keys"
        ),
        Some(SshFailure::Sudo) => format!(
            "allow the login user passwordless sudo on {name} (NOPASSWD in sudoers), or log in as root"
        ),
        Some(SshFailure::CommandTimeout) => format!(
            "raise --command-timeout if {name} is only slow, or log in to {name} and see what hangs there (a blocked mount, a stuck kubeadm or kubelet binary)"
        ),
        None => format!(
            "check that sshd runs on {address} and that the [ssh] settings (user, identity_file, config_file) reach it"
        ),
    }
}

/// A resource that could not be decided.
fn unknown(resource: &Resource, reason: impl Into<String>, fingerprint: String) -> ResourceChange {
    change(
        resource,
        Action::Unknown,
        reason.into(),
        None,
        None,
        fingerprint,
    )
}

/// A resource already as desired: its value before and after is the one observed.
fn unchanged(
    resource: &Resource,
    reason: String,
    value: ResourceValue,
    fingerprint: String,
) -> ResourceChange {
    change(
        resource,
        Action::NoOp,
        reason,
        Some(value.clone()),
        Some(value),
        fingerprint,
    )
}

impl<'a> Planner<'a> {
    fn problem(&mut self, severity: Severity, subject: &str, message: String, help: String) {
        let p = Problem {
            severity,
            subject: subject.to_string(),
            message,
            help,
        };
        if !self.problems.contains(&p) {
            self.problems.push(p);
        }
    }

    fn node(&self, name: &str) -> Option<&'a Node> {
        self.desired.nodes.iter().find(|n| n.name == name)
    }

    /// Whether hactl logs in to `name` as root or uses sudo there; `None` when neither is set
    /// and ssh_config's `User` decides.
    fn reads_as_root(&self, name: &str) -> Option<bool> {
        let over = self.node(name).and_then(|n| n.ssh.as_ref());
        let sudo = over.and_then(|o| o.sudo).unwrap_or(self.desired.ssh.sudo);
        let user = over
            .and_then(|o| o.user.as_ref())
            .or(self.desired.ssh.user.as_ref());
        match (sudo, user) {
            (true, _) => Some(true),
            (false, Some(user)) => Some(user == "root"),
            (false, None) => None,
        }
    }

    /// The node's observation, or a problem and the reason it is missing.
    fn reachable(&mut self, name: &str) -> Result<&'a NodeObservation, String> {
        let address = self
            .node(name)
            .map(|n| n.address.to_string())
            .unwrap_or_default();
        match self.observed.nodes.get(name) {
            // A snapshot of another cluster (or of this one before a node moved) must not stand
            // in for this node.
            Some(obs) if obs.address != address => {
                self.problem(
                    Severity::Error,
                    name,
                    format!(
                        "{name} was observed at {}, but the desired state puts it at {address}",
                        obs.address
                    ),
                    "observe the cluster again with this desired-state file (hactl observe FILE -o SNAPSHOT.json), or correct the node's address".into(),
                );
                Err(format!(
                    "{name} was observed at another address ({})",
                    obs.address
                ))
            }
            Some(obs) if obs.ssh.is_ok() => Ok(obs),
            Some(obs) => {
                let reason = obs.ssh.failure().unwrap_or_default();
                self.problem(
                    Severity::Error,
                    name,
                    match obs.ssh.kind() {
                        Some(SshFailure::CommandTimeout | SshFailure::Unreadable) => {
                            format!("{name} ({address}) could not be read over SSH: {reason}")
                        }
                        _ => format!("{name} ({address}) could not be reached over SSH: {reason}"),
                    },
                    format!(
                        "{}; nothing on {name} is decided until it is observed",
                        ssh_fix(name, &address, obs.ssh.kind(), self.reads_as_root(name))
                    ),
                );
                Err(format!("{name} could not be observed: {reason}"))
            }
            None => {
                self.problem(
                    Severity::Error,
                    name,
                    format!("{name} is in the desired state but not in the observed state"),
                    "observe the cluster again with this desired-state file (hactl observe FILE -o SNAPSHOT.json)".into(),
                );
                Err(format!("{name} was not observed"))
            }
        }
    }

    /// The node's observation, or the resource left undecided because the node was not observed.
    fn observe(
        &mut self,
        resource: &Resource,
        name: &str,
    ) -> Result<&'a NodeObservation, Box<ResourceChange>> {
        self.reachable(name).map_err(|reason| {
            Box::new(unknown(
                resource,
                reason,
                fingerprint::unobserved_node(self.observed.nodes.get(name)),
            ))
        })
    }

    /// The API observation, or a problem and the reason it is missing.
    fn api(&mut self) -> Result<(), String> {
        match &self.observed.api.reachable {
            Probe::Ok => Ok(()),
            Probe::Failed { reason } => {
                let at = self
                    .observed
                    .api
                    .server
                    .as_ref()
                    .map(|s| format!(" at {s}"))
                    .unwrap_or_default();
                self.problem(
                    Severity::Error,
                    "api",
                    format!("the Kubernetes API{at} could not be reached: {reason}"),
                    "check cluster.kubeconfig, or that the first control-plane node's admin.conf reaches a running API server".into(),
                );
                Err(format!("the Kubernetes API could not be reached: {reason}"))
            }
        }
    }

    fn trigger(&mut self, handler: Handler) {
        if !self.triggered.iter().any(|h| h.id == handler.id) {
            self.triggered.push(handler);
        }
    }

    /// Cluster-wide checks that belong to no single resource.
    fn check_cluster(&mut self) {
        let desired_names: Vec<&str> = self.desired.nodes.iter().map(|n| n.name.as_str()).collect();
        for name in self.observed.api.nodes.keys() {
            if !desired_names.contains(&name.as_str()) {
                self.problem(
                    Severity::Warning,
                    name,
                    format!("Node {name} is in the cluster but not in the desired state; hactl leaves it as it is"),
                    format!("add a [[node]] for {name} so its kubelet is pointed at the load balancer too"),
                );
            }
        }
        if self.facts.members.is_empty() {
            self.problem(
                Severity::Error,
                "control_plane",
                "no control-plane node of the desired state runs a control plane (none is a voting etcd member or a Node with the control-plane role)".into(),
                "list the node `kubeadm init` ran on with role = \"control-plane\", and check that it can be reached".into(),
            );
        }
        if let Probe::Failed { reason } = &self.observed.etcd.health {
            match &self.observed.etcd.observed_from {
                Some(from) => self.problem(
                    Severity::Error,
                    "etcd",
                    format!("etcd is not healthy (checked from {from}): {reason}"),
                    "hactl does not change a cluster whose etcd is unhealthy: restore quorum first (etcdctl endpoint health, member list)".into(),
                ),
                // Not checked is not unhealthy: with no node to ask, the fix is to reach one.
                None if self.observed.etcd.was_unasked() => self.problem(
                    Severity::Error,
                    "etcd",
                    format!("etcd could not be checked: {reason}"),
                    "hactl does not change a cluster whose etcd it cannot check: make the control-plane node that runs etcd reachable over SSH (see its error), then plan again".into(),
                ),
                None => self.problem(
                    Severity::Error,
                    "etcd",
                    format!("etcd could not be checked: {reason}"),
                    "hactl does not change a cluster whose etcd does not answer: restore quorum first (etcdctl endpoint health, member list on the node named above)".into(),
                ),
            }
        }
    }

    fn resource(&mut self, resource: &Resource) -> ResourceChange {
        match resource {
            Resource::Endpoint => self.endpoint(resource),
            Resource::ApiserverCert { node } => self.apiserver_cert(resource, node),
            Resource::Kubeconfig { node, role, file } => {
                self.kubeconfig(resource, node, *role, file)
            }
            Resource::ConfigMap(cm) => self.configmap(resource, *cm),
            Resource::ControlPlane { node } => self.control_plane(resource, node),
        }
    }
}

/// The lab's desired state planned against the lab-made observed fixtures, for the kinds' unit
/// tests (tests/plan_fixtures.rs snapshots whole plans of the same fixtures).
#[cfg(test)]
mod test_support {
    use super::*;
    use crate::plan::ResourceChange;

    const LAB: &str = include_str!("../plans/lab.toml");

    fn fixture(name: &str) -> &'static str {
        match name {
            "fresh-1.31" => include_str!("../tests/fixtures/observed/fresh-1.31.json"),
            "fresh-1.23-docker" => {
                include_str!("../tests/fixtures/observed/fresh-1.23-docker.json")
            }
            "converted-1.31" => include_str!("../tests/fixtures/observed/converted-1.31.json"),
            "half-1.31" => include_str!("../tests/fixtures/observed/half-1.31.json"),
            "stuck-learner-1.31" => {
                include_str!("../tests/fixtures/observed/stuck-learner-1.31.json")
            }
            other => panic!("no fixture {other}"),
        }
    }

    /// The lab's plan against fixture `name`, after `edit` changed what was observed.
    pub(super) fn plan_with(name: &str, edit: impl FnOnce(&mut ObservedState)) -> Plan {
        let desired = crate::spec::parse("plans/lab.toml", LAB).unwrap();
        let mut observed: ObservedState = serde_json::from_str(fixture(name)).unwrap();
        edit(&mut observed);
        plan(&desired, &observed).unwrap()
    }

    pub(super) fn lab_plan(name: &str) -> Plan {
        plan_with(name, |_| {})
    }

    pub(super) fn change<'p>(plan: &'p Plan, address: &str) -> &'p ResourceChange {
        plan.resource_changes
            .iter()
            .find(|c| c.address == address)
            .unwrap_or_else(|| panic!("no change for {address}"))
    }

    /// The problems about `subject`, as `message -- help`.
    pub(super) fn problems(plan: &Plan, subject: &str) -> Vec<String> {
        plan.problems
            .iter()
            .filter(|p| p.subject == subject)
            .map(|p| format!("{} -- {}", p.message, p.help))
            .collect()
    }
}
