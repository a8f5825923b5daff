//! Diffs the desired state against the observed state into a [`Plan`].
//!
//! Pure: it takes two values and returns one. Every resource of the graph gets an action and a
//! reason; what cannot be decided (an unreachable node, a missing file) becomes `unknown` plus a
//! problem that names the node or object, the cause and the fix.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cluster_config::{self, ClusterConfig};
use crate::graph::{ClusterFacts, CycleError, Resource, ResourceGraph};
use crate::kubeadm::{Component, KubeVersion, KubeconfigFile, Target};
use crate::kubeconfig;
use crate::observed::{
    ConfigMapObservation, ContainerRuntime, EtcdMember, NodeObservation, ObservedState, Probe, San,
    SshFailure, later, later_by, url_host,
};
use crate::plan::{
    Action, Handler, HandlerAction, HandlerCheck, Operation, PLAN_FORMAT_VERSION, Plan, Problem,
    ResourceChange, ResourceValue, Severity, Summary, sha256,
};
use crate::spec::{DesiredState, Node, Role};

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
            .configmap("kube-system", "kubeadm-config")
            .and_then(|cm| cm.data.get("ClusterConfiguration"))
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
    let observed_fingerprint = sha256(
        changes
            .iter()
            .map(|c| format!("{}={}\n", c.address, c.fingerprint))
            .collect::<String>()
            .as_bytes(),
    );
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

/// The fingerprint of what was observed for one resource.
fn fingerprint(value: &impl Serialize) -> String {
    // Serialising typed values (structs, BTreeMaps) is deterministic.
    sha256(&serde_json::to_vec(value).unwrap_or_default())
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
fn ssh_fix(name: &str, address: &str, reason: &str, as_root: Option<bool>) -> String {
    let permissions =
        format!("check the files' owners, modes and SELinux/AppArmor labels on {name} (ls -lZ)");
    let sudo = format!(
        "set ssh.sudo = true (or sudo = true under {name}'s [node.ssh]) so hactl reads them as root through sudo -n, or log in as root"
    );
    match SshFailure::of(reason) {
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
                let reason = obs.ssh.failure().unwrap_or("unknown").to_string();
                self.problem(
                    Severity::Error,
                    name,
                    match SshFailure::of(&reason) {
                        Some(SshFailure::CommandTimeout | SshFailure::Unreadable) => {
                            format!("{name} ({address}) could not be read over SSH: {reason}")
                        }
                        _ => format!("{name} ({address}) could not be reached over SSH: {reason}"),
                    },
                    format!(
                        "{}; nothing on {name} is decided until it is observed",
                        ssh_fix(name, &address, &reason, self.reads_as_root(name))
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
                fingerprint(&self.observed.nodes.get(name)),
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
            Resource::ConfigMap {
                namespace,
                name,
                key,
            } => self.configmap(resource, namespace, name, key),
            Resource::ControlPlane { node } => self.control_plane(resource, node),
        }
    }

    fn endpoint(&mut self, resource: &Resource) -> ResourceChange {
        let ep = &self.desired.endpoint;
        let obs = &self.observed.endpoint;
        let mut refused = Vec::new();
        for address in &ep.addresses {
            match obs.addresses.get(&address.to_string()) {
                Some(Probe::Ok) => {}
                Some(Probe::Failed { reason }) => {
                    refused.push(format!("{address}:{}: {reason}", ep.port))
                }
                None => refused.push(format!("{address}:{}: not probed", ep.port)),
            }
        }
        let reason = if !refused.is_empty() {
            for r in &refused {
                self.problem(
                    Severity::Error,
                    "endpoint",
                    format!("the load balancer does not accept TCP on {r}"),
                    format!(
                        "hactl does not create load balancers: set up a layer-4 (TCP) load balancer on {} with every control-plane node's :6443 as a backend, then plan again",
                        ep.addresses.iter().map(|a| format!("{a}:{}", ep.port)).collect::<Vec<_>>().join(", ")
                    ),
                );
            }
            "the load balancer must accept TCP on every address before anything points at it"
                .to_string()
        } else {
            match &obs.tls {
                Some(Probe::Ok) => format!(
                    "the load balancer accepts TCP on every address and serves a certificate valid for {}",
                    ep.host
                ),
                Some(Probe::Failed { reason }) => format!(
                    "the load balancer accepts TCP on every address; TLS for {} does not verify yet ({reason}) and is checked again once every API server certificate carries the name",
                    ep.host
                ),
                None => {
                    "the load balancer accepts TCP on every address; TLS is checked during apply"
                        .to_string()
                }
            }
        };
        let value = ResourceValue::Endpoint {
            host: ep.host.clone(),
            port: ep.port,
            addresses: ep.addresses.iter().map(ToString::to_string).collect(),
        };
        change(
            resource,
            Action::Read,
            reason,
            None,
            Some(value),
            fingerprint(obs),
        )
    }

    /// The SANs kubeadm puts on this node's API server certificate, then the endpoint's.
    fn wanted_sans(&self, node: &Node, advertise: &str) -> Vec<San> {
        let mut sans = Vec::new();
        // kubeadm's own set needs the cluster's networking; without it only the LB's are added.
        if let Some(cfg) = &self.cluster_config {
            sans.push(San::Dns(node.name.clone()));
            for name in ["kubernetes", "kubernetes.default", "kubernetes.default.svc"] {
                sans.push(San::Dns(name.into()));
            }
            sans.push(San::Dns(format!(
                "kubernetes.default.svc.{}",
                cfg.dns_domain
            )));
            if let Some(ip) = cfg.first_service_ip() {
                sans.push(San::Ip(ip));
            }
            if let Ok(ip) = advertise.parse() {
                sans.push(San::Ip(ip));
            }
        }
        sans.push(San::Dns(self.desired.endpoint.host.clone()));
        sans.extend(self.desired.endpoint.addresses.iter().map(|a| San::Ip(*a)));
        sans
    }

    fn apiserver_cert(&mut self, resource: &Resource, name: &str) -> ResourceChange {
        let obs = match self.observe(resource, name) {
            Ok(obs) => obs,
            Err(undecided) => return *undecided,
        };
        let fp = fingerprint(&(&obs.ssh, &obs.apiserver_cert));
        let Some(cert) = &obs.apiserver_cert else {
            self.problem(
                Severity::Error,
                &resource.address(),
                format!("{name} runs a control plane but has no {APISERVER_CERT}"),
                format!("restore it (kubeadm init phase certs apiserver on {name}) and plan again"),
            );
            return unknown(
                resource,
                format!("{APISERVER_CERT} is missing on {name}"),
                fp,
            );
        };
        if !cert.issuer_matches_ca {
            self.problem(
                Severity::Error,
                &resource.address(),
                format!("{APISERVER_CERT} on {name} is not signed by the cluster CA (issuer {})", cert.issuer),
                "hactl reissues the certificate with pki/ca.key and would change who signs it; find out who issued it first".into(),
            );
        }
        let Some(node) = self.node(name) else {
            return unknown(resource, format!("{name} is not in the desired state"), fp);
        };
        let advertise = obs
            .apiserver_endpoint
            .as_ref()
            .map_or_else(|| node.address.to_string(), |e| e.advertise_address.clone());
        let missing: Vec<San> = self
            .wanted_sans(node, &advertise)
            .into_iter()
            .filter(|s| !cert.sans.contains(s))
            .collect();
        let before = ResourceValue::Certificate {
            path: APISERVER_CERT.into(),
            subject: cert.subject.clone(),
            sans: cert.sans.clone(),
            key_type: cert.key_type,
            not_after: Some(cert.not_after.clone()),
        };
        if missing.is_empty() {
            let reason = format!(
                "the certificate's SANs already include {}",
                self.endpoint_names()
            );
            return unchanged(resource, reason, before, fp);
        }
        let (Some(observed_sha256), Some(public_key_sha256)) =
            (cert.sha256.clone(), cert.public_key_sha256.clone())
        else {
            return self.unhashed(resource, name, APISERVER_CERT, fp);
        };
        let mut sans = cert.sans.clone();
        sans.extend(missing.iter().cloned());
        let operation = Operation::ReissueApiserverCertificate {
            node: name.to_string(),
            cert_path: APISERVER_CERT.into(),
            key_path: APISERVER_KEY.into(),
            ca_cert_path: CA_CERT.into(),
            ca_key_path: CA_KEY.into(),
            public_key_sha256,
            key_type: cert.key_type,
            sans: sans.clone(),
            observed_sha256,
        };
        let after = ResourceValue::Certificate {
            path: APISERVER_CERT.into(),
            subject: cert.subject.clone(),
            sans,
            key_type: cert.key_type,
            not_after: None,
        };
        let runtime = self.facts.runtime;
        self.trigger(Handler {
            id: format!("handler.{name}.kube-apiserver"),
            node: Some(name.to_string()),
            action: HandlerAction::ReloadServingCertificate { runtime: runtime.as_str().into() },
            description: format!(
                "reload kube-apiserver's serving certificate on {name} (it rereads the file; its static pod is restarted with {} only if the new certificate is not served within {CERT_RELOAD_TIMEOUT_SECS}s)",
                runtime_tool(runtime)
            ),
            verify: format!(
                "{}:6443 serves a certificate that verifies as {} against the cluster CA",
                advertise, self.desired.endpoint.host
            ),
            check: Some(HandlerCheck::ServedCertificate {
                address: format!("{advertise}:6443"),
                server_name: self.desired.endpoint.host.clone(),
            }),
            triggered_by: Vec::new(),
            runs_after: String::new(),
        });
        let reason = format!(
            "the certificate lacks {}: clients that reach the API through the load balancer would fail x509 verification; it is reissued with every existing SAN kept, signed by the cluster CA",
            missing
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        update(resource, reason, before, after, fp, operation)
    }

    /// A change that cannot be planned as an operation: the observation has no hash of the
    /// file (a snapshot from an older hactl), so apply could not tell whether it changed since.
    fn unhashed(
        &mut self,
        resource: &Resource,
        name: &str,
        path: &str,
        fp: String,
    ) -> ResourceChange {
        let message = format!("the observation of {path} on {name} has no hash of the file");
        self.problem(
            Severity::Error,
            &resource.address(),
            message.clone(),
            "observe the cluster again with this hactl (hactl plan without --observed, or hactl observe)".into(),
        );
        unknown(resource, message, fp)
    }

    /// `k8s-api.lab.internal and 127.0.0.100`, for reasons.
    fn endpoint_names(&self) -> String {
        let ep = &self.desired.endpoint;
        let mut names = vec![ep.host.clone()];
        names.extend(ep.addresses.iter().map(ToString::to_string));
        names.join(" and ")
    }

    fn local_url(&self, node: &Node, obs: &NodeObservation) -> String {
        obs.apiserver_endpoint.as_ref().map_or_else(
            || match node.address {
                std::net::IpAddr::V6(a) => format!("https://[{a}]:6443"),
                std::net::IpAddr::V4(a) => format!("https://{a}:6443"),
            },
            |e| e.url(),
        )
    }

    fn kubeconfig(
        &mut self,
        resource: &Resource,
        name: &str,
        role: Role,
        file: &KubeconfigFile,
    ) -> ResourceChange {
        let obs = match self.observe(resource, name) {
            Ok(obs) => obs,
            Err(undecided) => return *undecided,
        };
        let text = obs.kubeconfigs.get(file.file);
        // Whether the reader still runs with an older file decides a restart: it is observed.
        let reader_started = self.reader_started(name, obs, file.reader);
        let modified = obs.kubeconfigs_modified_at.get(file.file);
        let stale = match (&reader_started, modified) {
            (Some(r), Some(m)) => later_by(m, r.at, r.margin_secs),
            _ => None,
        };
        // The file's hash counts too: a change in what redaction hides is a change.
        let sha = obs.kubeconfigs_sha256.get(file.file);
        let fp = match stale {
            Some(stale) => fingerprint(&(&obs.ssh, text, stale, sha)),
            None => fingerprint(&(&obs.ssh, text, sha)),
        };
        let path = file.path();
        let Some(text) = text else {
            if file.short == "super-admin" {
                return change(
                    resource,
                    Action::NoOp,
                    format!(
                        "{path} does not exist on {name}: kubeadm writes it only on the node where kubeadm init ran"
                    ),
                    None,
                    None,
                    fp,
                );
            }
            let help = if role == Role::Worker {
                format!(
                    "{name} does not look like a joined node: join it with kubeadm join first, or remove it from the desired state"
                )
            } else {
                format!(
                    "restore it (kubeadm init phase kubeconfig {} on {name}) and plan again",
                    file.short
                )
            };
            self.problem(
                Severity::Error,
                &resource.address(),
                format!("{path} is missing on {name}"),
                help,
            );
            return unknown(resource, format!("{path} is missing on {name}"), fp);
        };
        let Some(node) = self.node(name) else {
            return unknown(resource, format!("{name} is not in the desired state"), fp);
        };
        let wanted = match file.target {
            Target::LoadBalancer => self.desired.endpoint_url(),
            Target::Local => self.local_url(node, obs),
        };
        let current = match kubeconfig::current_server(text) {
            Ok(current) => current,
            Err(e) => {
                self.problem(
                    Severity::Error,
                    &resource.address(),
                    format!("{path} on {name}: {e}"),
                    format!("fix {path} on {name} so that its current context names a cluster with a one-line server, then plan again"),
                );
                return unknown(resource, format!("{path} could not be read: {e}"), fp);
            }
        };
        let before = ResourceValue::File {
            path: path.clone(),
            server: Some(current.server.clone()),
            content: text.clone(),
        };
        if current.server == wanted {
            let mut reason = format!("server is already {wanted}: {}", file.why);
            if let (Some(true), Some(r), Some(m), Some(component)) =
                (stale, &reader_started, modified, file.reader)
            {
                // Changed by hand without the restart: the restart is what is left.
                let before = match r.margin_secs {
                    0 => "before".to_string(),
                    secs => format!("more than {} minutes before", secs / 60),
                };
                reason.push_str(&format!(
                    "; but {} on {name} started at {}, {before} {path} changed at {m}, so it still uses the old server: it is restarted",
                    r.who, r.at
                ));
                self.trigger(self.restart(name, component));
            }
            return unchanged(resource, reason, before, fp);
        }
        let new_text = match kubeconfig::set_server(text, &wanted) {
            Ok(t) => t,
            Err(e) => {
                self.problem(
                    Severity::Error,
                    &resource.address(),
                    format!("{path} on {name}: the server line cannot be rewritten safely: {e}"),
                    format!("edit {path} on {name} so its server is a one-line value"),
                );
                return change(
                    resource,
                    Action::Unknown,
                    e.to_string(),
                    Some(before),
                    None,
                    fp,
                );
            }
        };
        let Some(observed_sha256) = obs.kubeconfigs_sha256.get(file.file).cloned() else {
            return self.unhashed(resource, name, &path, fp);
        };
        let operation = Operation::SetKubeconfigServer {
            node: name.to_string(),
            path: path.clone(),
            cluster: current.cluster.clone(),
            from: current.server.clone(),
            to: wanted.clone(),
            observed_sha256,
        };
        let after = ResourceValue::File {
            path: path.clone(),
            server: Some(wanted.clone()),
            content: new_text,
        };
        if let Some(component) = file.reader {
            self.trigger(self.restart(name, component));
            if component == Component::Kubelet && role == Role::Worker {
                // Rolling, node by node: the worker's kube-proxy restarts with its kubelet.
                self.trigger(restart_kube_proxy(name));
            }
        }
        let reason = format!("server is {}; {}", current.server, file.why);
        update(resource, reason, before, after, fp, operation)
    }

    fn configmap(
        &mut self,
        resource: &Resource,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> ResourceChange {
        let address = resource.address();
        if let Err(reason) = self.api() {
            return unknown(resource, reason, fingerprint(&self.observed.api.reachable));
        }
        let obs = self.observed.configmap(namespace, name);
        let fp = fingerprint(&obs);
        let Some(obs) = obs else {
            self.problem(
                Severity::Error,
                &address,
                format!("ConfigMap {namespace}/{name} does not exist"),
                "hactl converts clusters built by kubeadm, which creates it; recreate it (kubeadm init phase upload-config / addon) and plan again".into(),
            );
            return unknown(
                resource,
                format!("ConfigMap {namespace}/{name} does not exist"),
                fp,
            );
        };
        // kube-proxy Pods older than the ConfigMap decide restarts: they are observed too.
        let stale = match name {
            "kube-proxy" => self.kube_proxy_pods_older_than(obs),
            _ => Vec::new(),
        };
        let fp = match stale.is_empty() {
            true => fp,
            false => fingerprint(&(&fp, &stale)),
        };
        let Some(text) = obs.data.get(key) else {
            self.problem(
                Severity::Error,
                &address,
                format!("ConfigMap {namespace}/{name} has no key {key}"),
                format!("restore the {key} key as kubeadm writes it, then plan again"),
            );
            return unknown(
                resource,
                format!("ConfigMap {namespace}/{name} has no key {key}"),
                fp,
            );
        };
        let outcome = if name == "kubeadm-config" {
            self.converge_cluster_configuration(text)
        } else {
            self.converge_server(text, name)
        };
        let before = configmap_value(namespace, name, obs, None);
        let (new_text, reason) = match outcome {
            Ok(Some(done)) => done,
            Ok(None) => {
                let mut reason = match name {
                    "kubeadm-config" => format!(
                        "controlPlaneEndpoint is {} and certSANs include {}",
                        self.desired.control_plane_endpoint(),
                        self.endpoint_names()
                    ),
                    _ => format!("server is already {}", self.desired.endpoint_url()),
                };
                if !stale.is_empty() {
                    // Edited by hand without the restart: the restarts are what is left.
                    reason.push_str(&format!(
                        "; but the ConfigMap changed at {} and the kube-proxy Pods on {} are older, so they still use the old server: they are restarted",
                        obs.changed_at.as_deref().unwrap_or_default(),
                        stale.join(", ")
                    ));
                    for node in stale {
                        self.trigger(restart_kube_proxy(&node));
                    }
                }
                return unchanged(resource, reason, before, fp);
            }
            Err(message) => {
                self.problem(
                    Severity::Error,
                    &address,
                    format!("ConfigMap {namespace}/{name}, key {key}: {message}"),
                    format!(
                        "fix it with kubectl edit -n {namespace} configmap {name}, then plan again"
                    ),
                );
                return change(resource, Action::Unknown, message, Some(before), None, fp);
            }
        };
        let operation = Operation::ReplaceConfigMapKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
            key: key.to_string(),
            resource_version: obs.resource_version.clone(),
            observed_sha256: sha256(text.as_bytes()),
            content: new_text.clone(),
        };
        let after = configmap_value(namespace, name, obs, Some((key, new_text)));
        match name {
            "kube-proxy" => {
                for node in self.kube_proxy_nodes() {
                    self.trigger(restart_kube_proxy(&node));
                }
            }
            "cluster-info" => self.trigger(Handler {
                id: "handler.cluster-info.jws".into(),
                node: None,
                action: HandlerAction::AwaitBootstrapSigner,
                description: "wait for kube-controller-manager's bootstrapsigner to re-sign cluster-info for every bootstrap token".into(),
                verify: "every jws-kubeconfig-<token-id> key of cluster-info verifies against the new kubeconfig".into(),
                check: Some(HandlerCheck::ClusterInfoSigned),
                triggered_by: Vec::new(),
                runs_after: String::new(),
            }),
            _ => {}
        }
        update(resource, reason, before, after, fp, operation)
    }

    /// kube-proxy's and cluster-info's kubeconfig text, pointed at the LB; `None` when it is.
    fn converge_server(&self, text: &str, name: &str) -> Result<Option<(String, String)>, String> {
        let wanted = self.desired.endpoint_url();
        let current = kubeconfig::current_server(text).map_err(|e| e.to_string())?;
        if current.server == wanted {
            return Ok(None);
        }
        let new_text = kubeconfig::set_server(text, &wanted).map_err(|e| e.to_string())?;
        let reason = match name {
            "cluster-info" => format!(
                "joining nodes take their kubelet's server from cluster-info, which is {}; they must get the load balancer",
                current.server
            ),
            _ => format!(
                "kube-proxy reaches the API at {}; it must use the load balancer, then every kube-proxy Pod restarts to read it",
                current.server
            ),
        };
        Ok(Some((new_text, reason)))
    }

    fn converge_cluster_configuration(
        &self,
        text: &str,
    ) -> Result<Option<(String, String)>, String> {
        let ep = &self.desired.endpoint;
        let mut sans = vec![ep.host.clone()];
        sans.extend(ep.addresses.iter().map(ToString::to_string));
        let endpoint = self.desired.control_plane_endpoint();
        let current = cluster_config::read(text).map_err(|e| e.to_string())?;
        let new_text =
            cluster_config::converge(text, &endpoint, &sans).map_err(|e| e.to_string())?;
        if new_text == text {
            return Ok(None);
        }
        let mut why = Vec::new();
        match &current.control_plane_endpoint {
            None => why.push(format!(
                "controlPlaneEndpoint is not set (kubeadm join --control-plane refuses such a cluster); it becomes {endpoint}"
            )),
            Some(old) if *old != endpoint => why.push(format!("controlPlaneEndpoint is {old}; it becomes {endpoint}")),
            Some(_) => {}
        }
        let missing: Vec<&String> = sans
            .iter()
            .filter(|s| !current.cert_sans.contains(s))
            .collect();
        if !missing.is_empty() {
            why.push(format!(
                "apiServer.certSANs lacks {} (joining nodes issue their certificates from it)",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(Some((new_text, why.join("; "))))
    }

    /// The restart of `component` on `name`, after a change of a file it reads.
    fn restart(&self, name: &str, component: Component) -> Handler {
        if component == Component::Kubelet {
            return restart_kubelet(name);
        }
        let runtime = self.facts.runtime;
        Handler {
            id: format!("handler.{name}.{}", component.as_str()),
            node: Some(name.to_string()),
            action: HandlerAction::RestartStaticPod {
                component,
                runtime: runtime.as_str().into(),
            },
            description: format!(
                "restart {} on {name} ({}; the kubelet recreates it)",
                component.as_str(),
                match runtime {
                    ContainerRuntime::Docker => "docker kill of its container",
                    _ => "crictl stopp and rmp of its pod",
                }
            ),
            verify: format!("{}'s leader Lease is renewed", component.as_str()),
            check: Some(HandlerCheck::LeaderLeaseRenewed {
                lease: component.as_str().to_string(),
            }),
            triggered_by: Vec::new(),
            runs_after: String::new(),
        }
    }

    /// When the reader of a kubeconfig on `name` started, on the node's clock as the file's
    /// modification time: the kubelet's service, or the static pod's running container.
    fn reader_started(
        &self,
        name: &str,
        obs: &'a NodeObservation,
        reader: Option<Component>,
    ) -> Option<ReaderStart<'a>> {
        match reader? {
            Component::Kubelet => Some(ReaderStart {
                who: "the kubelet",
                at: obs.kubelet_started_at.as_deref()?,
                margin_secs: KUBELET_BOOTSTRAP_WINDOW_SECS,
            }),
            // kubeadm writes their kubeconfigs before their manifests: no window.
            c @ (Component::KubeControllerManager | Component::KubeScheduler) => {
                Some(ReaderStart {
                    who: c.as_str(),
                    at: self.observed.api.static_pod_started(c.as_str(), name)?,
                    margin_secs: 0,
                })
            }
            Component::KubeApiserver | Component::KubeProxy => None,
        }
    }

    /// The nodes of [`Self::kube_proxy_nodes`] whose kube-proxy Pod was created before the
    /// ConfigMap last changed; none when either time is unknown.
    fn kube_proxy_pods_older_than(&self, cm: &ConfigMapObservation) -> Vec<String> {
        let Some(changed) = cm.changed_at.as_deref() else {
            return Vec::new();
        };
        self.kube_proxy_nodes()
            .into_iter()
            .filter(|node| {
                self.observed
                    .api
                    .kube_proxy_pods
                    .get(node)
                    .and_then(|p| p.created_at.as_deref())
                    .and_then(|created| later(changed, created))
                    == Some(true)
            })
            .collect()
    }

    /// Nodes whose kube-proxy restarts after its ConfigMap changes: every node already in the
    /// cluster, in file order (joining nodes start theirs with the new ConfigMap).
    fn kube_proxy_nodes(&self) -> Vec<String> {
        self.desired
            .nodes
            .iter()
            .filter(|n| n.role == Role::Worker || self.facts.members.contains(&n.name))
            .map(|n| n.name.clone())
            .collect()
    }

    fn etcd_member(&self, node: &Node) -> Option<&'a EtcdMember> {
        self.observed
            .etcd_member(&node.name, &node.address.to_string())
    }

    fn control_plane(&mut self, resource: &Resource, name: &str) -> ResourceChange {
        let Some(node) = self.node(name) else {
            return unknown(
                resource,
                format!("{name} is not in the desired state"),
                String::new(),
            );
        };
        let member = self.etcd_member(node);
        let kube_node = self.observed.api.nodes.get(name);
        let obs = self.observed.nodes.get(name);
        let fp = fingerprint(&(obs, member, kube_node, &self.observed.etcd.health));
        let member_state = member.map(|m| {
            if !m.started() && m.is_learner {
                "unstarted learner"
            } else if !m.started() {
                "unstarted"
            } else if m.is_learner {
                "learner"
            } else {
                "voting"
            }
        });
        let has_role = kube_node.is_some_and(|k| k.roles.iter().any(|r| r == "control-plane"));
        let before = ResourceValue::ControlPlane {
            etcd_member: member_state.map(str::to_string),
            node_ready: kube_node.map(|k| k.ready),
            control_plane_role: has_role,
            join_command: None,
        };
        if self.facts.members.contains(name) {
            let healthy =
                member_state == Some("voting") && kube_node.is_some_and(|k| k.ready) && has_role;
            let reason = if healthy {
                format!(
                    "{name} is a control-plane member: a voting etcd member, its Node Ready with the control-plane role"
                )
            } else {
                let state = format!(
                    "etcd member: {}, Node: {}",
                    member_state.unwrap_or("none"),
                    match kube_node {
                        Some(k) if k.ready => "Ready",
                        Some(_) => "NotReady",
                        None => "absent",
                    }
                );
                if self.observed.etcd.observed_from.is_some() {
                    self.problem(
                        Severity::Warning,
                        &resource.address(),
                        format!("{name} runs a control plane but is not healthy ({state})"),
                        format!("check {name}'s kubelet and etcd before joining more members"),
                    );
                }
                format!("{name} runs a control plane ({state})")
            };
            return unchanged(resource, reason, before, fp);
        }
        let obs = match self.reachable(name) {
            Ok(obs) => obs,
            Err(reason) => {
                return change(resource, Action::Unknown, reason, Some(before), None, fp);
            }
        };
        self.join_gates(node, obs);
        let after = ResourceValue::ControlPlane {
            etcd_member: Some("voting".into()),
            node_ready: Some(true),
            control_plane_role: true,
            join_command: Some(self.join_command(node)),
        };
        let leftovers: Vec<&str> = obs.kubeconfigs.keys().map(String::as_str).collect();
        if member.is_some() || kube_node.is_some() || !leftovers.is_empty() {
            let mut what = Vec::new();
            if let Some(m) = member {
                what.push(format!(
                    "etcd still lists it: {} member {}",
                    member_state.unwrap_or("a"),
                    m.id
                ));
            }
            if kube_node.is_some() {
                what.push("a Node object exists".to_string());
            }
            if !leftovers.is_empty() {
                what.push(format!("/etc/kubernetes holds {}", leftovers.join(", ")));
            }
            let reason = format!(
                "an earlier join of {name} stopped halfway ({}); it is reset (kubeadm reset -f{}) and joined again",
                what.join("; "),
                member
                    .map(|m| format!(", etcdctl member remove {}", m.id))
                    .unwrap_or_default()
            );
            return change(
                resource,
                Action::Delete,
                reason,
                Some(before),
                Some(after),
                fp,
            );
        }
        let how = if self.facts.conventions.etcd_learner_join() {
            "its etcd member joins as a learner and is promoted once in sync"
        } else {
            "its etcd member joins as a voter at once: while it starts, the cluster needs both members for quorum (kubeadm#2275)"
        };
        let reason = format!(
            "{name} is not a control-plane member; it joins through the load balancer, one node at a time; {how}"
        );
        change(
            resource,
            Action::Create,
            reason,
            Some(before),
            Some(after),
            fp,
        )
    }

    /// Problems that would make a join fail, found before anything changes.
    fn join_gates(&mut self, node: &Node, obs: &NodeObservation) {
        let name = node.name.as_str();
        let address = format!("control_plane.{name}");
        let cluster = self.facts.conventions.version;
        for (what, version) in [
            ("kubeadm", &obs.kubeadm_version),
            ("kubelet", &obs.kubelet_version),
        ] {
            match version.as_deref().map(str::parse::<KubeVersion>) {
                None => self.problem(
                    Severity::Error,
                    &address,
                    format!("{what} is not installed on {name}"),
                    format!("install {what} {} on {name}", cluster.minor_string()),
                ),
                Some(Err(e)) => self.problem(
                    Severity::Error,
                    &address,
                    format!("{name}'s {what} version cannot be read: {e}"),
                    format!("check `{what} --version` on {name}"),
                ),
                Some(Ok(v))
                    if (v.major, v.minor) != (cluster.major, cluster.minor)
                        && !self.facts.assumed =>
                {
                    self.problem(
                        Severity::Error,
                        &address,
                        format!("{name} has {what} {v} but the cluster runs {cluster}"),
                        format!(
                            "install {what} {} on {name} before it joins",
                            cluster.minor_string()
                        ),
                    )
                }
                Some(Ok(_)) => {}
            }
        }
        for (target, probe) in &obs.control_plane_reachability {
            if let Probe::Failed { reason } = probe {
                self.problem(
                    Severity::Error,
                    &address,
                    format!("{name} cannot reach {target}: {reason}"),
                    format!(
                        "allow TCP from {name} to the control-plane nodes on 6443, 2379 and 2380"
                    ),
                );
            }
        }
        // A half-joined member of a node this plan joins is removed by that node's own replace;
        // any other odd member blocks the join.
        let joining: Vec<&Node> = self
            .desired
            .control_plane_nodes()
            .filter(|n| !self.facts.members.contains(&n.name))
            .collect();
        let observed = self.observed;
        let blocking: Vec<&EtcdMember> = observed
            .etcd
            .members
            .iter()
            .filter(|m| !joining.iter().any(|n| self.etcd_member(n) == Some(*m)))
            .collect();
        for m in blocking {
            let loopback_peer = m
                .peer_urls
                .iter()
                .any(|u| matches!(url_host(u), "127.0.0.1" | "localhost" | "::1"));
            let what = if !m.started() {
                "an unstarted member"
            } else if m.is_learner {
                "a learner"
            } else if loopback_peer {
                "a member with a loopback peer URL"
            } else if m.healthy == Some(false) {
                "an unhealthy member"
            } else {
                continue;
            };
            self.problem(
                Severity::Error,
                &address,
                format!(
                    "etcd has {what} ({}{}, peers {}): joining {name} now could cost quorum",
                    m.id,
                    // An unstarted member has no name yet.
                    if m.name.is_empty() {
                        String::new()
                    } else {
                        format!(" {}", m.name)
                    },
                    m.peer_urls.join(" ")
                ),
                format!(
                    "remove or repair it first (etcdctl member remove {}), then plan again",
                    m.id
                ),
            );
        }
    }

    /// The join command with its secrets as placeholders; the CA pin is public.
    fn join_command(&self, node: &Node) -> String {
        let pin = self
            .facts
            .members
            .iter()
            .filter_map(|m| self.observed.nodes.get(m)?.ca_pin.clone())
            .next()
            .unwrap_or_else(|| "sha256:<ca-pin>".into());
        let (control_plane, certificate_key) = self.facts.conventions.join_flags();
        format!(
            "kubeadm join {} --token <bootstrap-token> --discovery-token-ca-cert-hash {pin} {control_plane} {certificate_key} <certificate-key> --apiserver-advertise-address {}",
            self.desired.control_plane_endpoint(),
            node.address
        )
    }
}

fn runtime_tool(runtime: ContainerRuntime) -> &'static str {
    match runtime {
        ContainerRuntime::Docker => "docker",
        _ => "crictl",
    }
}

/// When a file's reader started: a file changed more than `margin_secs` later is not what it
/// runs with.
struct ReaderStart<'a> {
    who: &'static str,
    at: &'a str,
    margin_secs: i64,
}

fn restart_kubelet(node: &str) -> Handler {
    Handler {
        id: format!("handler.{node}.kubelet"),
        node: Some(node.to_string()),
        action: HandlerAction::RestartKubelet,
        description: format!("restart kubelet on {node} (systemctl restart kubelet)"),
        verify: format!("Node {node} stays Ready and its Lease is renewed"),
        check: Some(HandlerCheck::NodeReady {
            node: node.to_string(),
        }),
        triggered_by: Vec::new(),
        runs_after: String::new(),
    }
}

fn restart_kube_proxy(node: &str) -> Handler {
    Handler {
        id: format!("handler.{node}.kube-proxy"),
        node: Some(node.to_string()),
        action: HandlerAction::RestartKubeProxy,
        description: format!(
            "restart kube-proxy on {node} (delete its Pod; the DaemonSet recreates it)"
        ),
        verify: format!("the new kube-proxy Pod on {node} becomes Ready"),
        check: Some(HandlerCheck::KubeProxyReady {
            node: node.to_string(),
        }),
        triggered_by: Vec::new(),
        runs_after: String::new(),
    }
}

fn configmap_value(
    namespace: &str,
    name: &str,
    obs: &ConfigMapObservation,
    replace: Option<(&str, String)>,
) -> ResourceValue {
    let mut data: BTreeMap<String, String> = obs.data.clone();
    let replaced = replace.is_some();
    if let Some((key, text)) = replace {
        data.insert(key.to_string(), text);
    }
    ResourceValue::ConfigMap {
        namespace: namespace.to_string(),
        name: name.to_string(),
        // The API server assigns a new resourceVersion on write.
        resource_version: (!replaced).then(|| obs.resource_version.clone()),
        data,
    }
}
