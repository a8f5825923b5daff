//! A whole cluster in memory behind every seam: files per node with mode and owner,
//! ConfigMaps with resourceVersions, Pods, Nodes, Leases, a clock that moves only when slept
//! on, and a signer. It can be told to fail the Nth call of a kind (timeout, connection lost
//! before or after the change, ENOSPC, 409), and keeps the list of calls made, so that apply's
//! steps and rollback are tested at every failure without a lab.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{
    Backup, BootstrapToken, CertRequest, Clock, ClusterApi, CommandResult, ConfigMap, FileState,
    Lease, NodeOps, NodeStatus, Pod, SeamError, Signer, backup_path,
};
use crate::configmaps::KubeadmConfigMap;
use crate::plan::sha256;

/// The kinds of seam calls, as failures are injected and calls counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Call {
    ReadFile,
    WriteFile,
    Backup,
    Restore,
    Run,
    GetConfigMap,
    ReplaceConfigMap,
    ListPods,
    DeletePod,
    GetNode,
    ListNodes,
    GetLease,
    CreateLease,
    RenewLease,
    DeleteLease,
    VerifyServed,
    BootstrapTokens,
}

impl Call {
    pub const ALL: [Call; 17] = [
        Call::ReadFile,
        Call::WriteFile,
        Call::Backup,
        Call::Restore,
        Call::Run,
        Call::GetConfigMap,
        Call::ReplaceConfigMap,
        Call::ListPods,
        Call::DeletePod,
        Call::GetNode,
        Call::ListNodes,
        Call::GetLease,
        Call::CreateLease,
        Call::RenewLease,
        Call::DeleteLease,
        Call::VerifyServed,
        Call::BootstrapTokens,
    ];
}

/// What an injected failure does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Injected {
    /// The call times out; nothing changed.
    Timeout,
    /// The connection drops before the call reaches the other side; nothing changed.
    LostBefore,
    /// The change is made, then the connection drops before the answer: the caller cannot
    /// tell it happened.
    LostAfter,
    /// A write fails with `No space left on device`; nothing changed.
    NoSpace,
    /// A replace or renew answers 409; nothing changed.
    Conflict,
}

impl Injected {
    pub const ALL: [Injected; 5] = [
        Injected::Timeout,
        Injected::LostBefore,
        Injected::LostAfter,
        Injected::NoSpace,
        Injected::Conflict,
    ];

    /// Whether this failure means something for `call` (ENOSPC only on node writes, 409 only
    /// on API writes).
    pub fn applies_to(self, call: Call) -> bool {
        match self {
            Injected::NoSpace => matches!(call, Call::WriteFile | Call::Backup | Call::Restore),
            Injected::Conflict => matches!(call, Call::ReplaceConfigMap | Call::RenewLease),
            _ => true,
        }
    }
}

/// Everything the fake cluster holds; compared whole to check a rollback.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct World {
    /// (node, path) → file.
    pub files: BTreeMap<(String, String), FileState>,
    /// (namespace, name) → ConfigMap.
    pub configmaps: BTreeMap<(String, String), ConfigMap>,
    pub pods: Vec<Pod>,
    pub nodes: BTreeMap<String, NodeStatus>,
    /// (namespace, name) → Lease.
    pub leases: BTreeMap<(String, String), Lease>,
    /// `ADDRESS:PORT` → the node whose API server answers there: its own address, or a load
    /// balancer's that forwards to it.
    pub apiservers: BTreeMap<String, String>,
    /// node → the certificate its API server serves (it rereads `apiserver.crt` when the
    /// file changes, unless told not to; a restart always does).
    pub served: BTreeMap<String, Vec<u8>>,
    /// Bootstrap token id → secret: what the bootstrapsigner signs cluster-info with.
    pub tokens: BTreeMap<String, String>,
    /// node → what each command of observation's scripts prints there: section → (exit
    /// code, its stdout and stderr). The node script's `user`, `kubeadm`, `kubelet`,
    /// `sockets`, `kubelet-unit`; the etcd script's `endpoint`, `members`, `health`.
    pub commands: BTreeMap<String, BTreeMap<String, (i32, String)>>,
    /// (node, path) → modification time (Unix seconds); a write or a restore makes it now.
    pub mtimes: BTreeMap<(String, String), i64>,
    /// The `ADDRESS:PORT`s that accept TCP from the nodes (API servers, etcd).
    pub listening: BTreeSet<String>,
}

/// `never_renews(BOOTSTRAPSIGNER)`: cluster-info is never re-signed.
pub const BOOTSTRAPSIGNER: &str = "bootstrapsigner";

/// Where the API server's certificate is on a node.
pub const APISERVER_CRT: &str = "/etc/kubernetes/pki/apiserver.crt";

#[derive(Default)]
struct State {
    world: World,
    revision: u64,
    now: Duration,
    counts: BTreeMap<Call, u32>,
    /// (call, nth) → failure.
    faults: BTreeMap<(Call, u32), Injected>,
    /// Every call, in order: `write_file cp1 /etc/kubernetes/admin.conf`.
    log: Vec<String>,
    /// Nodes whose files cannot be reached at all (every node call fails).
    down: BTreeSet<String>,
    /// Components (a node's kubelet by node name, a static pod by its component name) whose
    /// restart never takes: their Lease is not renewed.
    stuck: BTreeSet<String>,
    /// Every call gives way once before it acts, as a real one waits on the network: calls
    /// made side by side interleave.
    yielding: bool,
    /// Leases (namespace, name, holder) a restarted component renews a moment later: at the
    /// clock's next step.
    pending: Vec<(String, String, String)>,
}

/// A future that is pending once (and asks to be polled again), then ready.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// The fake cluster. Every seam trait is implemented on it.
#[derive(Default)]
pub struct FakeCluster {
    state: Mutex<State>,
}

/// A failed call's error, for `what` on `node`.
fn injected(f: Injected, call: Call, what: &str, node: Option<&str>) -> SeamError {
    match f {
        Injected::Timeout => SeamError::Timeout {
            what: what.to_string(),
            after: Duration::from_secs(60),
        },
        Injected::LostBefore | Injected::LostAfter => SeamError::Transport(format!(
            "{}: connection lost during {call:?}",
            node.unwrap_or("the API")
        )),
        Injected::NoSpace => SeamError::File {
            node: node.unwrap_or_default().to_string(),
            path: what.to_string(),
            detail: "No space left on device".into(),
        },
        Injected::Conflict => SeamError::Conflict {
            what: what.to_string(),
        },
    }
}

impl FakeCluster {
    pub fn new(world: World) -> FakeCluster {
        let revision = world
            .configmaps
            .values()
            .filter_map(|c| c.resource_version.parse::<u64>().ok())
            .chain(
                world
                    .leases
                    .values()
                    .filter_map(|l| l.resource_version.parse::<u64>().ok()),
            )
            .max()
            .unwrap_or(0);
        FakeCluster {
            state: Mutex::new(State {
                world,
                revision,
                now: Duration::from_secs(1_790_000_000),
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The Nth call (from 1) of `call` fails with `what`.
    pub fn fail(&self, call: Call, nth: u32, what: Injected) {
        self.lock().faults.insert((call, nth), what);
    }

    /// Every call to `node` fails as an unreachable node's would.
    pub fn take_down(&self, node: &str) {
        self.lock().down.insert(node.to_string());
    }

    /// Whether `node` was taken down.
    pub fn is_down(&self, node: &str) -> bool {
        self.lock().down.contains(node)
    }

    /// A file was written: its mtime is now, and an API server rereads its certificate.
    fn changed(st: &mut State, node: &str, path: &str) {
        let now = st.now.as_secs() as i64;
        st.world
            .mtimes
            .insert((node.to_string(), path.to_string()), now);
        FakeCluster::reload(st, node, path);
    }

    /// Calls give way once before they act (see `State::yielding`).
    pub fn interleave(&self) {
        self.lock().yielding = true;
    }

    async fn pause(&self) {
        let yielding = self.lock().yielding;
        if yielding {
            YieldOnce(false).await;
        }
    }

    /// An API server that rereads its certificate when the file changes, as kube-apiserver
    /// does since 1.17 (unless `never_renews("kube-apiserver")`).
    fn reload(st: &mut State, node: &str, path: &str) {
        if path == APISERVER_CRT
            && !st.stuck.contains("kube-apiserver")
            && let Some(f) = st.world.files.get(&(node.to_string(), path.to_string()))
        {
            let content = f.content.clone();
            st.world.served.insert(node.to_string(), content);
        }
    }

    /// The kubelet of this node, or this static pod's component, restarts but never renews
    /// its Lease: a postcondition that never holds.
    pub fn never_renews(&self, who: &str) {
        self.lock().stuck.insert(who.to_string());
    }

    /// Renews a Lease as its holder would (a new resourceVersion and renewTime), unless stuck.
    fn renew(st: &mut State, namespace: &str, name: &str, who: &str) {
        if st.stuck.contains(who) {
            return;
        }
        let rv = FakeCluster::next_revision(st);
        let now = FakeCluster::rfc3339(st.now);
        if let Some(l) = st
            .world
            .leases
            .get_mut(&(namespace.to_string(), name.to_string()))
        {
            // A restarted leader comes back as a new holder; a kubelet keeps its node name.
            if namespace == "kube-system" {
                l.holder = Some(format!("{name}_{rv}"));
            }
            l.resource_version = rv;
            l.renew_time = Some(now);
        }
    }

    /// How many calls of each kind were made.
    pub fn counts(&self) -> BTreeMap<Call, u32> {
        self.lock().counts.clone()
    }

    /// Every call made, in order.
    pub fn log(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    /// What the cluster holds now.
    pub fn world(&self) -> World {
        self.lock().world.clone()
    }

    /// Mutates what the cluster holds (a change by someone else, between calls).
    pub fn edit(&self, f: impl FnOnce(&mut World)) {
        f(&mut self.lock().world);
    }

    /// Counts the call and says whether it fails: `Err` before the change, or `Ok(true)` when
    /// the change is made and then the answer is lost.
    fn enter(
        &self,
        call: Call,
        what: &str,
        node: Option<&str>,
    ) -> Result<Option<SeamError>, SeamError> {
        let mut st = self.lock();
        let n = {
            let c = st.counts.entry(call).or_insert(0);
            *c += 1;
            *c
        };
        st.log.push(format!("{call:?} {what}"));
        if let Some(node) = node
            && st.down.contains(node)
        {
            return Err(SeamError::Transport(format!(
                "ssh: connect to host {node} port 22: Connection refused"
            )));
        }
        match st.faults.get(&(call, n)).copied() {
            None => Ok(None),
            Some(Injected::LostAfter) => Ok(Some(injected(Injected::LostAfter, call, what, node))),
            Some(f) => Err(injected(f, call, what, node)),
        }
    }

    fn next_revision(st: &mut State) -> String {
        st.revision += 1;
        st.revision.to_string()
    }

    fn rfc3339(now: Duration) -> String {
        time::OffsetDateTime::from_unix_timestamp(now.as_secs() as i64)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    }
}

/// The answer of a call whose change was made: the error when the answer was lost.
fn answer<T>(lost: Option<SeamError>, value: T) -> Result<T, SeamError> {
    match lost {
        Some(e) => Err(e),
        None => Ok(value),
    }
}

impl NodeOps for FakeCluster {
    async fn read_file(&self, node: &str, path: &str) -> Result<Option<FileState>, SeamError> {
        self.pause().await;
        let lost = self.enter(Call::ReadFile, &format!("{node} {path}"), Some(node))?;
        let file = self
            .lock()
            .world
            .files
            .get(&(node.to_string(), path.to_string()))
            .cloned();
        answer(lost, file)
    }

    async fn write_file(&self, node: &str, path: &str, file: &FileState) -> Result<(), SeamError> {
        self.pause().await;
        let lost = self.enter(Call::WriteFile, &format!("{node} {path}"), Some(node))?;
        let mut st = self.lock();
        st.world
            .files
            .insert((node.to_string(), path.to_string()), file.clone());
        FakeCluster::changed(&mut st, node, path);
        drop(st);
        answer(lost, ())
    }

    async fn backup(&self, node: &str, run: &str, path: &str) -> Result<Backup, SeamError> {
        self.pause().await;
        let lost = self.enter(Call::Backup, &format!("{node} {path}"), Some(node))?;
        let mut st = self.lock();
        let key = (node.to_string(), path.to_string());
        let Some(file) = st.world.files.get(&key).cloned() else {
            return Err(SeamError::File {
                node: node.into(),
                path: path.into(),
                detail: "No such file or directory".into(),
            });
        };
        let to = backup_path(run, path);
        st.world
            .files
            .insert((node.to_string(), to.clone()), file.clone());
        answer(
            lost,
            Backup {
                node: node.into(),
                path: path.into(),
                backup_path: to,
                sha256: file.sha256(),
                mode: file.mode,
                uid: file.uid,
                gid: file.gid,
            },
        )
    }

    async fn restore(&self, backup: &Backup) -> Result<(), SeamError> {
        self.pause().await;
        let node = backup.node.as_str();
        let lost = self.enter(
            Call::Restore,
            &format!("{node} {}", backup.path),
            Some(node),
        )?;
        let mut st = self.lock();
        let copy = st
            .world
            .files
            .get(&(node.to_string(), backup.backup_path.clone()))
            .cloned();
        let Some(copy) = copy else {
            return Err(SeamError::File {
                node: node.into(),
                path: backup.backup_path.clone(),
                detail: "No such file or directory".into(),
            });
        };
        if copy.sha256() != backup.sha256 {
            return Err(SeamError::BackupChanged {
                node: node.into(),
                backup_path: backup.backup_path.clone(),
                expected: backup.sha256.clone(),
                found: copy.sha256(),
            });
        }
        st.world.files.insert(
            (node.to_string(), backup.path.clone()),
            FileState {
                content: copy.content,
                mode: backup.mode,
                uid: backup.uid,
                gid: backup.gid,
            },
        );
        FakeCluster::changed(&mut st, node, &backup.path);
        answer(lost, ())
    }

    /// The node's tools as apply uses them: `systemctl restart kubelet` renews the node's
    /// Lease; `crictl pods --name X -q` names X's sandbox, `crictl stopp` of it (or `docker
    /// kill` of `k8s_X_`'s container) renews X's leader Lease; anything else just succeeds.
    async fn run(&self, node: &str, argv: &[String]) -> Result<CommandResult, SeamError> {
        self.pause().await;
        let lost = self.enter(Call::Run, &format!("{node} {}", argv.join(" ")), Some(node))?;
        let words: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut out = CommandResult {
            status: Some(0),
            ..CommandResult::default()
        };
        let mut st = self.lock();
        match words.as_slice() {
            // The old kubelet may renew once more as it stops; the new one renews a moment
            // after it starts (unless its restart never takes).
            ["systemctl", "restart", "kubelet"] => {
                let stuck = st.stuck.remove(node);
                FakeCluster::renew(&mut st, "kube-node-lease", node, node);
                if stuck {
                    st.stuck.insert(node.to_string());
                } else {
                    let lease = ("kube-node-lease".into(), node.into(), node.into());
                    st.pending.push(lease);
                }
            }
            ["crictl", "pods", "--name", name, "-q"] => out.stdout = format!("sandbox-{name}\n"),
            ["docker", "ps", "-q", "--filter", filter] => {
                let name = filter.trim_start_matches("name=k8s_").trim_end_matches('_');
                out.stdout = format!("sandbox-{name}\n");
            }
            ["crictl", "stopp", id] | ["docker", "kill", id] => {
                let name = id.trim_start_matches("sandbox-").to_string();
                if name == "kube-apiserver" {
                    // A restarted API server reads its certificate whatever happens.
                    if let Some(f) = st
                        .world
                        .files
                        .get(&(node.to_string(), APISERVER_CRT.to_string()))
                    {
                        let content = f.content.clone();
                        st.world.served.insert(node.to_string(), content);
                    }
                } else {
                    FakeCluster::renew(&mut st, "kube-system", &name, &name);
                }
            }
            _ => {}
        }
        drop(st);
        answer(lost, out)
    }
}

impl ClusterApi for FakeCluster {
    async fn get_configmap(&self, namespace: &str, name: &str) -> Result<ConfigMap, SeamError> {
        self.pause().await;
        let what = format!("configmaps {namespace}/{name}");
        let lost = self.enter(Call::GetConfigMap, &what, None)?;
        let cm = self
            .lock()
            .world
            .configmaps
            .get(&(namespace.to_string(), name.to_string()))
            .cloned();
        match cm {
            Some(cm) => answer(lost, cm),
            None => Err(SeamError::NotFound { what }),
        }
    }

    async fn replace_configmap(&self, cm: &ConfigMap) -> Result<ConfigMap, SeamError> {
        self.pause().await;
        let what = format!("configmaps {}/{}", cm.namespace, cm.name);
        let lost = self.enter(Call::ReplaceConfigMap, &what, None)?;
        let mut st = self.lock();
        let key = (cm.namespace.clone(), cm.name.clone());
        let Some(current) = st.world.configmaps.get(&key).cloned() else {
            return Err(SeamError::NotFound { what });
        };
        if current.resource_version != cm.resource_version {
            return Err(SeamError::Conflict { what });
        }
        // As kube-apiserver: an update that changes nothing is not written.
        let stored = if current.data == cm.data {
            current
        } else {
            let rv = FakeCluster::next_revision(&mut st);
            let mut stored = ConfigMap {
                resource_version: rv,
                changed_at: Some(FakeCluster::rfc3339(st.now)),
                ..cm.clone()
            };
            // The bootstrapsigner re-signs cluster-info for every token (unless stuck).
            let info = KubeadmConfigMap::ClusterInfo;
            if cm.namespace == info.namespace()
                && cm.name == info.name()
                && !st.stuck.contains(BOOTSTRAPSIGNER)
            {
                let kubeconfig = stored.data.get("kubeconfig").cloned().unwrap_or_default();
                for (id, secret) in &st.world.tokens {
                    let sig = crate::jws::compute_detached_signature(&kubeconfig, id, secret);
                    stored
                        .data
                        .insert(format!("{}{id}", crate::jws::SIGNATURE_PREFIX), sig);
                }
            }
            st.world.configmaps.insert(key, stored.clone());
            stored
        };
        answer(lost, stored)
    }

    async fn list_pods(
        &self,
        namespace: &str,
        selector: &str,
        node: Option<&str>,
    ) -> Result<Vec<Pod>, SeamError> {
        self.pause().await;
        let what = format!("pods -n {namespace} -l {selector}");
        let lost = self.enter(Call::ListPods, &what, None)?;
        let pods = self
            .lock()
            .world
            .pods
            .iter()
            .filter(|p| p.namespace == namespace && node.is_none_or(|n| p.node == n))
            .filter(|p| selected(p, selector))
            .cloned()
            .collect();
        answer(lost, pods)
    }

    async fn delete_pod(&self, namespace: &str, name: &str) -> Result<(), SeamError> {
        self.pause().await;
        let what = format!("pods {namespace}/{name}");
        let lost = self.enter(Call::DeletePod, &what, None)?;
        let mut st = self.lock();
        let Some(i) = st
            .world
            .pods
            .iter()
            .position(|p| p.namespace == namespace && p.name == name)
        else {
            return Err(SeamError::NotFound { what });
        };
        // The DaemonSet makes a new Pod on the node at once, ready.
        let old = st.world.pods.remove(i);
        let rv = FakeCluster::next_revision(&mut st);
        let now = st.now;
        st.world.pods.push(Pod {
            name: format!("{}-r{rv}", old.name),
            uid: format!("uid-{rv}"),
            created_at: FakeCluster::rfc3339(now),
            restarts: 0,
            started_at: Some(FakeCluster::rfc3339(now)),
            ..old
        });
        answer(lost, ())
    }

    async fn get_node(&self, name: &str) -> Result<NodeStatus, SeamError> {
        self.pause().await;
        let what = format!("nodes {name}");
        let lost = self.enter(Call::GetNode, &what, None)?;
        let node = self.lock().world.nodes.get(name).cloned();
        match node {
            Some(n) => answer(lost, n),
            None => Err(SeamError::NotFound { what }),
        }
    }

    async fn list_nodes(&self) -> Result<Vec<NodeStatus>, SeamError> {
        self.pause().await;
        let lost = self.enter(Call::ListNodes, "nodes", None)?;
        let nodes = self.lock().world.nodes.values().cloned().collect();
        answer(lost, nodes)
    }

    async fn get_lease(&self, namespace: &str, name: &str) -> Result<Lease, SeamError> {
        self.pause().await;
        let what = format!("leases {namespace}/{name}");
        let lost = self.enter(Call::GetLease, &what, None)?;
        let lease = self
            .lock()
            .world
            .leases
            .get(&(namespace.to_string(), name.to_string()))
            .cloned();
        match lease {
            Some(l) => answer(lost, l),
            None => Err(SeamError::NotFound { what }),
        }
    }

    async fn create_lease(&self, lease: &Lease) -> Result<Lease, SeamError> {
        self.pause().await;
        let what = format!("leases {}/{}", lease.namespace, lease.name);
        let lost = self.enter(Call::CreateLease, &what, None)?;
        let mut st = self.lock();
        let key = (lease.namespace.clone(), lease.name.clone());
        if st.world.leases.contains_key(&key) {
            return Err(SeamError::Conflict { what });
        }
        let stored = Lease {
            resource_version: FakeCluster::next_revision(&mut st),
            ..lease.clone()
        };
        st.world.leases.insert(key, stored.clone());
        answer(lost, stored)
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<Lease, SeamError> {
        self.pause().await;
        let what = format!("leases {}/{}", lease.namespace, lease.name);
        let lost = self.enter(Call::RenewLease, &what, None)?;
        let mut st = self.lock();
        let key = (lease.namespace.clone(), lease.name.clone());
        match st.world.leases.get(&key) {
            None => return Err(SeamError::NotFound { what }),
            Some(l) if l.resource_version != lease.resource_version => {
                return Err(SeamError::Conflict { what });
            }
            Some(_) => {}
        }
        let stored = Lease {
            resource_version: FakeCluster::next_revision(&mut st),
            ..lease.clone()
        };
        st.world.leases.insert(key, stored.clone());
        answer(lost, stored)
    }

    async fn delete_lease(&self, namespace: &str, name: &str) -> Result<(), SeamError> {
        self.pause().await;
        let what = format!("leases {namespace}/{name}");
        let lost = self.enter(Call::DeleteLease, &what, None)?;
        let removed = self
            .lock()
            .world
            .leases
            .remove(&(namespace.to_string(), name.to_string()));
        match removed {
            Some(_) => answer(lost, ()),
            None => Err(SeamError::NotFound { what }),
        }
    }

    async fn bootstrap_tokens(&self) -> Result<Vec<BootstrapToken>, SeamError> {
        self.pause().await;
        let lost = self.enter(Call::BootstrapTokens, "secrets kube-system", None)?;
        let tokens = self
            .lock()
            .world
            .tokens
            .iter()
            .map(|(id, secret)| BootstrapToken {
                id: id.clone(),
                secret: secret.clone(),
            })
            .collect();
        answer(lost, tokens)
    }

    async fn verify_served(
        &self,
        address: &str,
        server_name: &str,
        _ca_pem: &str,
    ) -> Result<(), SeamError> {
        self.pause().await;
        let what = format!("the certificate {address} serves");
        let lost = self.enter(Call::VerifyServed, &what, None)?;
        let st = self.lock();
        let served = st
            .world
            .apiservers
            .get(address)
            .and_then(|node| st.world.served.get(node));
        let result = match served {
            None => Err(SeamError::Unreachable {
                what,
                detail: format!("dial tcp {address}: connect: connection refused"),
            }),
            Some(cert) if FakeCluster::names(cert, server_name) => Ok(()),
            Some(_) => Err(SeamError::Api {
                what,
                detail: format!("x509: certificate is not valid for {server_name}"),
            }),
        };
        drop(st);
        result.and_then(|()| answer(lost, ()))
    }
}

/// Whether the pod's labels hold every `KEY=VALUE` of the selector.
fn selected(pod: &Pod, selector: &str) -> bool {
    selector
        .split(',')
        .filter(|term| !term.is_empty())
        .all(|term| match term.split_once('=') {
            Some((k, v)) => pod.labels.get(k.trim()).is_some_and(|l| l == v.trim()),
            None => false,
        })
}

impl FakeCluster {
    /// Whether the served certificate names `server_name`: the fake certificates (see the
    /// signer, and the tests' worlds) list their SANs as `DNS:…`/`IP:…` in their text.
    fn names(cert: &[u8], server_name: &str) -> bool {
        let text = String::from_utf8_lossy(cert);
        let kind = if server_name.parse::<std::net::IpAddr>().is_ok() {
            "IP"
        } else {
            "DNS"
        };
        text.split([',', ' ', '\n'])
            .any(|w| w == format!("{kind}:{server_name}"))
    }
}

impl Clock for FakeCluster {
    fn now(&self) -> Duration {
        self.lock().now
    }

    /// Moves the clock on at once: a wait of an hour takes no time; what restarted renews.
    async fn sleep(&self, d: Duration) {
        let mut st = self.lock();
        st.now += d;
        for (namespace, name, who) in std::mem::take(&mut st.pending) {
            FakeCluster::renew(&mut st, &namespace, &name, &who);
        }
    }
}

impl Signer for FakeCluster {
    /// A stand-in certificate naming its SANs and the public key it keeps (the hash of the
    /// old certificate's text); good enough to tell one issue from another.
    fn issue(
        &self,
        ca_cert_pem: &str,
        ca_key_pem: &str,
        req: &CertRequest,
    ) -> Result<String, SeamError> {
        if ca_key_pem.is_empty() {
            return Err(SeamError::Sign("the CA key is empty".into()));
        }
        let sans: Vec<String> = req.sans.iter().map(ToString::to_string).collect();
        Ok(format!(
            "-----BEGIN CERTIFICATE-----\nfake for {} signed by {} sans {}\n-----END CERTIFICATE-----\n",
            sha256(req.cert_pem.as_bytes()),
            sha256(ca_cert_pem.as_bytes()),
            sans.join(",")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        // The fake's futures never wait: one poll finishes them.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("a fake call waited"),
        }
    }

    fn file(text: &str, mode: u32) -> FileState {
        FileState {
            content: text.as_bytes().to_vec(),
            mode,
            uid: 0,
            gid: 0,
        }
    }

    fn world() -> World {
        let mut w = World::default();
        w.files.insert(
            ("cp1".into(), "/etc/kubernetes/admin.conf".into()),
            file("server: a\n", 0o600),
        );
        w.configmaps.insert(
            ("kube-system".into(), "kube-proxy".into()),
            ConfigMap {
                namespace: "kube-system".into(),
                name: "kube-proxy".into(),
                resource_version: "7".into(),
                data: [("kubeconfig.conf".to_string(), "server: a\n".to_string())].into(),
                changed_at: None,
            },
        );
        w
    }

    #[test]
    fn the_nth_call_of_a_kind_fails_as_told_and_the_others_go_through() {
        let fake = FakeCluster::new(world());
        let path = "/etc/kubernetes/admin.conf";
        fake.fail(Call::WriteFile, 2, Injected::NoSpace);
        let new = file("server: b\n", 0o600);
        block_on(fake.write_file("cp1", path, &new)).unwrap();
        let err = block_on(fake.write_file("cp1", path, &file("server: c\n", 0o600))).unwrap_err();
        assert!(err.to_string().contains("No space left on device"), "{err}");
        assert_eq!(
            block_on(fake.read_file("cp1", path)).unwrap(),
            Some(new.clone()),
            "the failed write changed nothing"
        );
        block_on(fake.write_file("cp1", path, &file("server: d\n", 0o600))).unwrap();
        assert_eq!(fake.counts()[&Call::WriteFile], 3);
        assert_eq!(fake.counts()[&Call::ReadFile], 1);
    }

    #[test]
    fn a_lost_answer_happens_after_the_change() {
        let fake = FakeCluster::new(world());
        fake.fail(Call::ReplaceConfigMap, 1, Injected::LostAfter);
        let mut cm = block_on(fake.get_configmap("kube-system", "kube-proxy")).unwrap();
        cm.data
            .insert("kubeconfig.conf".into(), "server: b\n".into());
        let err = block_on(fake.replace_configmap(&cm)).unwrap_err();
        assert!(matches!(err, SeamError::Transport(_)), "{err}");
        let now = block_on(fake.get_configmap("kube-system", "kube-proxy")).unwrap();
        assert_eq!(now.data["kubeconfig.conf"], "server: b\n");
        assert_eq!(now.resource_version, "8");
        // The same replace again is a conflict: the resourceVersion moved.
        assert!(matches!(
            block_on(fake.replace_configmap(&cm)),
            Err(SeamError::Conflict { .. })
        ));
    }

    #[test]
    fn conflicts_timeouts_and_down_nodes() {
        let fake = FakeCluster::new(world());
        fake.fail(Call::ReplaceConfigMap, 1, Injected::Conflict);
        fake.fail(Call::ReadFile, 1, Injected::Timeout);
        let cm = block_on(fake.get_configmap("kube-system", "kube-proxy")).unwrap();
        assert!(matches!(
            block_on(fake.replace_configmap(&cm)),
            Err(SeamError::Conflict { .. })
        ));
        assert!(
            block_on(fake.replace_configmap(&cm)).is_ok(),
            "the second goes through"
        );
        assert!(matches!(
            block_on(fake.read_file("cp1", "/x")),
            Err(SeamError::Timeout { .. })
        ));
        fake.take_down("cp1");
        let err = block_on(fake.read_file("cp1", "/etc/kubernetes/admin.conf")).unwrap_err();
        assert!(err.to_string().contains("Connection refused"), "{err}");
    }

    #[test]
    fn a_backup_restores_bytes_mode_and_owner_and_a_changed_backup_is_refused() {
        let fake = FakeCluster::new(world());
        let path = "/etc/kubernetes/admin.conf";
        let before = fake.world();
        let b = block_on(fake.backup("cp1", "run1", path)).unwrap();
        assert_eq!(
            b.backup_path,
            "/var/lib/hactl/runs/run1/etc/kubernetes/admin.conf"
        );
        block_on(fake.write_file(
            "cp1",
            path,
            &FileState {
                uid: 5,
                ..file("x", 0o644)
            },
        ))
        .unwrap();
        block_on(fake.restore(&b)).unwrap();
        let mut after = fake.world();
        after
            .files
            .remove(&("cp1".to_string(), b.backup_path.clone()));
        // A restore is a write, as on a node: the file's mtime moves; all else is as before.
        assert!(
            after
                .mtimes
                .remove(&("cp1".to_string(), path.to_string()))
                .is_some()
        );
        assert_eq!(after, before);
        fake.edit(|w| {
            w.files.insert(
                ("cp1".into(), b.backup_path.clone()),
                file("tampered", 0o600),
            );
        });
        assert!(matches!(
            block_on(fake.restore(&b)),
            Err(SeamError::BackupChanged { .. })
        ));
    }

    #[test]
    fn the_clock_moves_only_when_slept_on_and_deleted_pods_come_back_new() {
        let fake = FakeCluster::new(world());
        let t0 = fake.now();
        block_on(fake.sleep(Duration::from_secs(3600)));
        assert_eq!(fake.now() - t0, Duration::from_secs(3600));
        fake.edit(|w| {
            w.pods.push(Pod {
                namespace: "kube-system".into(),
                name: "kube-proxy-abcde".into(),
                node: "w1".into(),
                uid: "u1".into(),
                ready: true,
                created_at: "2026-01-01T00:00:00Z".into(),
                labels: [("k8s-app".to_string(), "kube-proxy".to_string())].into(),
                ..Pod::default()
            })
        });
        block_on(fake.delete_pod("kube-system", "kube-proxy-abcde")).unwrap();
        let pods =
            block_on(fake.list_pods("kube-system", "k8s-app=kube-proxy", Some("w1"))).unwrap();
        assert_eq!(pods.len(), 1);
        assert_ne!(pods[0].uid, "u1");
        assert!(
            block_on(fake.list_pods("kube-system", "k8s-app=kube-proxy", Some("w2")))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn which_failures_apply_to_which_calls() {
        assert!(Injected::NoSpace.applies_to(Call::WriteFile));
        assert!(!Injected::NoSpace.applies_to(Call::GetConfigMap));
        assert!(Injected::Conflict.applies_to(Call::ReplaceConfigMap));
        assert!(!Injected::Conflict.applies_to(Call::Run));
        let pairs = Call::ALL
            .iter()
            .flat_map(|c| Injected::ALL.iter().filter(move |f| f.applies_to(*c)))
            .count();
        assert_eq!(pairs, 17 * 3 + 3 + 2);
    }
}
