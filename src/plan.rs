//! The plan: what will change, why, exactly how, and what runs after it.
//!
//! A plain value, serialised as the versioned JSON that `plan --format json` prints and that
//! `plan -o PLANFILE` saves (`schemas/plan.schema.json`). It never holds a secret: join
//! commands carry placeholders for the token and certificate key, kubeconfig text is redacted.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::kubeadm::Component;
use crate::observed::{KeyType, San};

/// `sha256:<hex>`: how plans, observations and journals write every hash.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// The version of the plan format; a minor bump adds fields, a major bump breaks readers.
pub const PLAN_FORMAT_VERSION: &str = "1.2";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub format_version: String,
    /// `cluster.name` of the desired state.
    pub cluster: String,
    /// `https://HOST:PORT` of the load balancer.
    pub endpoint: String,
    /// The cluster's kubeadm version, when observation found it.
    pub kubernetes_version: Option<String>,
    pub container_runtime: Option<String>,
    /// Every resource, in the order apply carries them out (topological, deterministic).
    pub resource_changes: Vec<ResourceChange>,
    /// Restarts and checks triggered by changes, in the order they run.
    pub handlers: Vec<Handler>,
    /// What the plan could not decide, or what stops apply; errors make `plan` exit 1.
    pub problems: Vec<Problem>,
    pub summary: Summary,
    /// A digest of every resource's fingerprint: apply refuses the plan when it differs.
    pub observed_fingerprint: String,
    /// The desired-state file a saved plan was made from (`plan -o` records it; 1.2): what
    /// `apply PLANFILE` observes again, refused if the file changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_state: Option<DesiredStateFile>,
}

/// A desired-state file as a saved plan names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DesiredStateFile {
    /// Its absolute path when the plan was made.
    pub path: String,
    /// `sha256:` of its bytes.
    pub sha256: String,
}

/// What happens to a resource; Terraform's vocabulary, plus `unknown` for a resource whose
/// node or API could not be observed.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    NoOp,
    /// A check that changes nothing (the endpoint).
    Read,
    Create,
    Update,
    Delete,
    Unknown,
}

impl Action {
    /// Terraform's symbols: `+` create, `~` update, `-` delete, `<=` read.
    pub fn symbol(self) -> &'static str {
        match self {
            Action::NoOp => " ",
            Action::Read => "<=",
            Action::Create => "+",
            Action::Update => "~",
            Action::Delete => "-",
            Action::Unknown => "?",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceChange {
    /// Stable address: `endpoint`, `apiserver_cert.cp1`, `kubeconfig.cp1.admin`,
    /// `configmap.kube-system.kube-proxy`, `control_plane.cp2`.
    pub address: String,
    /// The node the resource lives on, for node resources.
    pub node: Option<String>,
    /// `["no-op"]`, `["read"]`, `["create"]`, `["update"]`, `["delete", "create"]` (replace),
    /// `["unknown"]`.
    pub actions: Vec<Action>,
    /// One sentence: why this action.
    pub reason: String,
    pub before: Option<ResourceValue>,
    pub after: Option<ResourceValue>,
    /// Ids of the handlers this change triggers.
    pub handlers: Vec<String>,
    /// Addresses this resource waits for.
    pub depends_on: Vec<String>,
    /// `sha256:<hex>` of what was observed for this resource.
    pub fingerprint: String,
    /// What apply does, for a change: complete, so that apply executes it as it is, without
    /// working the edit out again from the address or the diff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

impl ResourceChange {
    /// True when the resource changes something (not a no-op, read or unknown).
    pub fn is_change(&self) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a, Action::Create | Action::Update | Action::Delete))
    }
}

/// The typed operation of a change. Free of secrets: hashes, names and public values only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Operation {
    /// Set the `server:` of one cluster entry of a kubeconfig file; every other byte stays.
    SetKubeconfigServer {
        node: String,
        path: String,
        /// The `clusters[].name` whose `cluster.server` changes (the current context's).
        cluster: String,
        from: String,
        to: String,
        /// `sha256:<hex>` of the file as observed: apply refuses a file that changed since.
        observed_sha256: String,
    },
    /// Reissue the API server certificate for the key it has (the key file is never read or
    /// written), with `sans` (every existing SAN kept), signed by the cluster CA.
    ReissueApiserverCertificate {
        node: String,
        cert_path: String,
        key_path: String,
        ca_cert_path: String,
        ca_key_path: String,
        /// `sha256:<hex>` of the observed certificate's SubjectPublicKeyInfo (DER).
        public_key_sha256: String,
        key_type: KeyType,
        sans: Vec<San>,
        /// `sha256:<hex>` of the certificate file as observed.
        observed_sha256: String,
    },
    /// Replace one key of a ConfigMap, with the resourceVersion observed (on a conflict apply
    /// re-reads and goes on only if the key still holds what was planned from).
    #[serde(rename = "replace-configmap-key")]
    ReplaceConfigMapKey {
        namespace: String,
        name: String,
        key: String,
        resource_version: String,
        /// `sha256:<hex>` of the key's content as observed.
        observed_sha256: String,
        /// The key's new content.
        content: String,
    },
}

impl Operation {
    /// The node an operation acts on, for node operations.
    pub fn node(&self) -> Option<&str> {
        match self {
            Operation::SetKubeconfigServer { node, .. }
            | Operation::ReissueApiserverCertificate { node, .. } => Some(node),
            Operation::ReplaceConfigMapKey { .. } => None,
        }
    }
}

/// The observed (`before`) or desired (`after`) value of a resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ResourceValue {
    /// The load balancer.
    Endpoint {
        host: String,
        port: u16,
        addresses: Vec<String>,
    },
    /// An X.509 certificate on a node.
    Certificate {
        path: String,
        subject: String,
        sans: Vec<San>,
        key_type: KeyType,
        /// RFC 3339; `None` in `after`: known after apply.
        not_after: Option<String>,
    },
    /// A kubeconfig file on a node; `content` is the whole file, secrets redacted.
    File {
        path: String,
        server: Option<String>,
        content: String,
    },
    /// A ConfigMap's data, every key.
    ConfigMap {
        namespace: String,
        name: String,
        resource_version: Option<String>,
        data: BTreeMap<String, String>,
    },
    /// A node's control-plane membership.
    ControlPlane {
        /// `voting`, `learner`, `unstarted`, `unstarted learner`, or `None` when not an etcd member.
        etcd_member: Option<String>,
        /// The Node object's Ready condition, `None` when there is no Node.
        node_ready: Option<bool>,
        /// The Node carries the control-plane role.
        control_plane_role: bool,
        /// The join that makes it so, secrets as placeholders.
        join_command: Option<String>,
    },
}

/// A restart or check, run once per component per node after the last change that triggers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Handler {
    /// `handler.<node>.<component>` or `handler.cluster-info.jws`.
    pub id: String,
    pub node: Option<String>,
    pub action: HandlerAction,
    /// What it does, for people: `restart kubelet on cp1 (systemctl restart kubelet)`.
    pub description: String,
    /// How apply verifies it worked, for people.
    pub verify: String,
    /// How apply verifies it worked, checked against the cluster (format 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<HandlerCheck>,
    /// The addresses whose changes trigger it.
    pub triggered_by: Vec<String>,
    /// It runs right after this resource.
    pub runs_after: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum HandlerAction {
    /// `systemctl restart kubelet`.
    RestartKubelet,
    /// Stop the static pod's sandbox; the kubelet recreates it.
    RestartStaticPod {
        component: Component,
        runtime: String,
    },
    /// Wait for kube-apiserver to serve the new certificate; restart its static pod if it
    /// does not within the timeout.
    ReloadServingCertificate { runtime: String },
    /// Delete the node's kube-proxy Pod; the DaemonSet recreates it.
    RestartKubeProxy,
    /// Wait until the bootstrapsigner has re-signed cluster-info.
    AwaitBootstrapSigner,
}

/// What apply checks after a handler, against the cluster (never against what it wrote).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum HandlerCheck {
    /// The Node is Ready and its Lease in kube-node-lease is renewed after the restart.
    NodeReady { node: String },
    /// The component's leader Lease in kube-system is renewed after the restart.
    LeaderLeaseRenewed { lease: String },
    /// A new kube-proxy Pod on the node (created after the old one was deleted) is Ready.
    KubeProxyReady { node: String },
    /// `address` serves a certificate that verifies as `server_name` against the cluster CA.
    ServedCertificate {
        address: String,
        server_name: String,
    },
    /// Every `jws-kubeconfig-<token-id>` key of kube-public/cluster-info verifies against its
    /// new `kubeconfig`.
    ClusterInfoSigned,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Warning,
    Error,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Problem {
    pub severity: Severity,
    /// A node name or a resource address.
    pub subject: String,
    pub message: String,
    /// How to fix it.
    pub help: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
    /// Resources that could not be decided.
    pub unknown: usize,
}

impl Plan {
    /// True when apply would change something: a resource, or a component it restarts (a
    /// restart left undone after a change by hand is all that some plans hold).
    pub fn has_changes(&self) -> bool {
        self.resource_changes.iter().any(ResourceChange::is_change) || !self.handlers.is_empty()
    }

    /// True when a problem of severity error stops apply.
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| p.severity == Severity::Error)
    }

    /// True when the plan joins a control-plane node or destroys anything: reviewers are warned.
    pub fn is_dangerous(&self) -> bool {
        self.resource_changes.iter().any(|r| {
            r.actions.contains(&Action::Delete)
                || (r.address.starts_with("control_plane.") && r.actions.contains(&Action::Create))
        })
    }

    /// The handler with this id.
    pub fn handler(&self, id: &str) -> Option<&Handler> {
        self.handlers.iter().find(|h| h.id == id)
    }
}

/// One resource whose observation is not what a saved plan was made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    pub address: String,
    /// What differs, for people.
    pub what: String,
}

/// Why a saved plan cannot be applied as it is (Terraform refuses a stale saved plan too).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StalePlan {
    #[error(
        "the plan was made for cluster {saved:?} at {saved_endpoint}, not {now:?} at {now_endpoint}; make a plan for this cluster with `hactl plan`"
    )]
    OtherCluster {
        saved: String,
        saved_endpoint: String,
        now: String,
        now_endpoint: String,
    },
    #[error(
        "the plan was made from the desired-state file {path} as it was then ({saved}); it is {now} now: run `hactl plan` again and review the new plan"
    )]
    OtherDesiredState {
        path: String,
        saved: String,
        now: String,
    },
    #[error("the saved plan is stale: what it was made from has changed:\n{}\nrun `hactl plan` again and review the new plan", drift_lines(.0))]
    Drifted(Vec<Drift>),
    /// Same file, same cluster, yet another plan: the file was edited after it was saved.
    #[error(
        "the saved plan is not what hactl plans from the same desired-state file and cluster now: it differs in {}; it was edited after it was saved. Run `hactl plan` again and review the new plan",
        .0.join(", ")
    )]
    Edited(Vec<String>),
}

fn drift_lines(d: &[Drift]) -> String {
    d.iter()
        .map(|d| format!("  - {}: {}", d.address, d.what))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `saved` was made from the desired-state file as it is `now` (a plan that records
/// none passes: the cluster's fingerprints still guard it).
pub fn check_desired_state(saved: &Plan, now: &DesiredStateFile) -> Result<(), StalePlan> {
    match &saved.desired_state {
        Some(s) if s != now => Err(StalePlan::OtherDesiredState {
            path: s.path.clone(),
            saved: s.sha256.clone(),
            now: if s.path == now.path {
                now.sha256.clone()
            } else {
                format!("{} ({})", now.path, now.sha256)
            },
        }),
        _ => Ok(()),
    }
}

/// Whether `saved` may be applied, given `fresh`: the plan made now, from a new observation,
/// for the same desired state. Every resource's fingerprint must be what it was.
pub fn check_saved(saved: &Plan, fresh: &Plan) -> Result<(), StalePlan> {
    if let Some(now) = &fresh.desired_state {
        check_desired_state(saved, now)?;
    }
    if saved.cluster != fresh.cluster || saved.endpoint != fresh.endpoint {
        return Err(StalePlan::OtherCluster {
            saved: saved.cluster.clone(),
            saved_endpoint: saved.endpoint.clone(),
            now: fresh.cluster.clone(),
            now_endpoint: fresh.endpoint.clone(),
        });
    }
    let now: BTreeMap<&str, &ResourceChange> = fresh
        .resource_changes
        .iter()
        .map(|c| (c.address.as_str(), c))
        .collect();
    let mut drift = Vec::new();
    for c in &saved.resource_changes {
        match now.get(c.address.as_str()) {
            None => drift.push(Drift {
                address: c.address.clone(),
                what: "no longer in the desired state".into(),
            }),
            Some(n) if n.fingerprint != c.fingerprint => drift.push(Drift {
                address: c.address.clone(),
                what: format!(
                    "changed since the plan was made (observed {}, now {}); now: {}",
                    c.fingerprint, n.fingerprint, n.reason
                ),
            }),
            Some(_) => {}
        }
    }
    for c in &fresh.resource_changes {
        if !saved
            .resource_changes
            .iter()
            .any(|s| s.address == c.address)
        {
            drift.push(Drift {
                address: c.address.clone(),
                what: "new in the desired state".into(),
            });
        }
    }
    if !drift.is_empty() {
        return Err(StalePlan::Drifted(drift));
    }
    // Nothing drifted, so planning again gives the very plan that was saved (planning is
    // deterministic): any difference was made by hand, and hactl applies only what it planned.
    let mut edited: Vec<String> = saved
        .resource_changes
        .iter()
        .filter(|c| now.get(c.address.as_str()).is_some_and(|n| *n != *c))
        .map(|c| c.address.clone())
        .collect();
    let parts = [
        ("handlers", saved.handlers == fresh.handlers),
        ("problems", saved.problems == fresh.problems),
        ("summary", saved.summary == fresh.summary),
        (
            "the cluster's version",
            saved.kubernetes_version == fresh.kubernetes_version
                && saved.container_runtime == fresh.container_runtime,
        ),
        (
            "observed_fingerprint",
            saved.observed_fingerprint == fresh.observed_fingerprint,
        ),
    ];
    edited.extend(
        parts
            .iter()
            .filter(|(_, same)| !same)
            .map(|(p, _)| p.to_string()),
    );
    if edited.is_empty() {
        Ok(())
    } else {
        Err(StalePlan::Edited(edited))
    }
}
