//! The simulated kubelet: static pods from `/etc/kubernetes/manifests` (with mirror Pods),
//! the node's kube-proxy pod, Node registration and status, and the node Lease, all through
//! the client its `kubelet.conf` describes (re-read on each start only, as the real one).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::client::{ApiClient, Kubeconfig, Resolver};
use super::manifest::StaticPod;
use super::process::{self, sleep_or_stop};
use super::runtime::{ContainerState, SandboxState, rand_suffix};
use super::{EtcdReport, PodReport, Running, Shared, controllers, lock, timefmt};
use crate::observed::ContainerRuntime;

pub const KUBELET_CONF: &str = "/etc/kubernetes/kubelet.conf";
pub const MANIFESTS: &str = "/etc/kubernetes/manifests";

#[derive(Clone, Debug)]
pub(crate) enum PodKind {
    Static(StaticPod),
    KubeProxy { image: String },
}

#[derive(Clone, Debug)]
struct Terminated {
    code: i32,
    message: String,
    started: SystemTime,
    finished: SystemTime,
    container_id: String,
}

/// One pod the kubelet runs, with its sandbox, container and restart bookkeeping.
pub(crate) struct PodSlot {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// `kubernetes.io/config.hash` of a static pod.
    hash: String,
    pub kind: PodKind,
    sandbox_id: Option<String>,
    sandbox_attempt: u32,
    container_id: Option<String>,
    container_attempt: u32,
    running: Option<Box<dyn Running>>,
    started: Option<SystemTime>,
    pub restarts: u32,
    last_terminated: Option<Terminated>,
    backoff: Duration,
    next_start: Option<Instant>,
    /// The status last written to the API, to write only changes.
    posted: Option<Value>,
    mirror_checked: Option<Instant>,
    created: SystemTime,
}

impl PodSlot {
    fn new(name: String, namespace: String, uid: String, hash: String, kind: PodKind) -> Self {
        PodSlot {
            name,
            namespace,
            uid,
            hash,
            kind,
            sandbox_id: None,
            sandbox_attempt: 0,
            container_id: None,
            container_attempt: 0,
            running: None,
            started: None,
            restarts: 0,
            last_terminated: None,
            backoff: Duration::ZERO,
            next_start: None,
            posted: None,
            mirror_checked: None,
            created: SystemTime::now(),
        }
    }

    fn container_name(&self) -> String {
        match &self.kind {
            PodKind::Static(p) => p.container.clone(),
            PodKind::KubeProxy { .. } => "kube-proxy".into(),
        }
    }

    fn image(&self) -> String {
        match &self.kind {
            PodKind::Static(p) => p.image.clone(),
            PodKind::KubeProxy { image } => image.clone(),
        }
    }

    fn state(&self) -> &'static str {
        if self.running.is_some() {
            "Running"
        } else if self.last_terminated.is_some() {
            "CrashLoopBackOff"
        } else {
            "ContainerCreating"
        }
    }

    pub fn report(&self) -> PodReport {
        PodReport {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            state: self.state().into(),
            restarts: self.restarts,
            last_error: self.last_terminated.as_ref().map(|t| t.message.clone()),
        }
    }

    /// Stops the container (by PID for processes) and nothing else.
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }

    /// The pod's `status` as the kubelet reports it.
    fn status(&self, shared: &Shared) -> Value {
        let ip = shared.cfg.node.address.to_string();
        let scheme = match shared.cfg.spec.runtime {
            ContainerRuntime::Docker => "docker",
            _ => "containerd",
        };
        let cid = |id: &str| format!("{scheme}://{id}");
        let running = self.running.is_some();
        let state = if running {
            json!({"running": {"startedAt": timefmt::rfc3339(timefmt::unix_secs(self.started.unwrap_or(self.created)))}})
        } else if self.last_terminated.is_some() {
            json!({"waiting": {
                "reason": "CrashLoopBackOff",
                "message": format!("back-off {}s restarting failed container={} pod={}_{}({})",
                    self.backoff.as_secs().max(1), self.container_name(), self.name, self.namespace, self.uid),
            }})
        } else {
            json!({"waiting": {"reason": "ContainerCreating"}})
        };
        let last_state = match &self.last_terminated {
            Some(t) => json!({"terminated": {
                "exitCode": t.code,
                "reason": "Error",
                "message": t.message,
                "startedAt": timefmt::rfc3339(timefmt::unix_secs(t.started)),
                "finishedAt": timefmt::rfc3339(timefmt::unix_secs(t.finished)),
                "containerID": cid(&t.container_id),
            }}),
            None => json!({}),
        };
        let ready = if running { "True" } else { "False" };
        let mut cs = json!({
            "name": self.container_name(),
            "image": self.image(),
            "imageID": "",
            "ready": running,
            "started": running,
            "restartCount": self.restarts,
            "state": state,
            "lastState": last_state,
        });
        if let Some(id) = &self.container_id {
            cs["containerID"] = json!(cid(id));
        }
        let created = timefmt::rfc3339(timefmt::unix_secs(self.created));
        json!({
            "phase": "Running",
            "conditions": [
                {"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": created},
                {"type": "Ready", "status": ready, "lastProbeTime": null, "lastTransitionTime": created},
                {"type": "ContainersReady", "status": ready, "lastProbeTime": null, "lastTransitionTime": created},
                {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": created},
            ],
            "hostIP": ip,
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": created,
            "qosClass": "Burstable",
            "containerStatuses": [cs],
        })
    }
}

/// What one running kubelet keeps between syncs.
struct Kubelet {
    shared: Arc<Shared>,
    client: Option<Arc<ApiClient>>,
    registered: bool,
    lease: Option<Value>,
    last_status_post: Option<Instant>,
    log: Option<std::fs::File>,
}

/// The kubelet service's main loop, until `stop`.
pub(crate) async fn run(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    {
        let mut st = lock(&shared.kubelet_status);
        st.active = true;
        st.server = None;
    }
    let log_path = shared
        .cfg
        .lab
        .log_dir()
        .join(format!("kubelet-{}.log", shared.cfg.node.name));
    let _ = std::fs::create_dir_all(shared.cfg.lab.log_dir());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .ok();
    let mut k = Kubelet {
        shared: shared.clone(),
        client: None,
        registered: false,
        lease: None,
        last_status_post: None,
        log,
    };
    k.load_client();
    // `slow-component`: a kubelet (re)started while the fault is active takes that much
    // longer before its first sync (node status, lease, static pods).
    if let Some(delay) = shared.cfg.faults.slow(&shared.cfg.node.name) {
        k.info(
            "kubelet.go:1600",
            &format!(
                "Starting kubelet; initialisation is slowed by {delay:?} (lab fault slow-component)"
            ),
        );
        if sleep_or_stop(&mut stop, delay).await {
            lock(&shared.kubelet_status).active = false;
            return;
        }
    }
    loop {
        if k.client.is_none() {
            // An unconfigured kubelet (a bare node) waits for kubeadm to write kubelet.conf.
            k.load_client();
        }
        k.sync_static_pods().await;
        if let Some(client) = k.client.clone() {
            k.sync_node(&client).await;
            k.sync_kube_proxy(&client).await;
            k.sync_mirror_pods(&client).await;
        }
        k.run_containers().await;
        if sleep_or_stop(&mut stop, shared.cfg.timings.heartbeat).await {
            break;
        }
    }
    lock(&shared.kubelet_status).active = false;
}

fn klog_line(level: char, file: &str, msg: &str) -> String {
    let now = SystemTime::now();
    let ts = timefmt::rfc3339_micro(now);
    // klog: Lmmdd hh:mm:ss.uuuuuu threadid file:line] msg
    format!(
        "{level}{}{} {} {:>7} {file}] {msg}\n",
        &ts[5..7],
        &ts[8..10],
        &ts[11..26],
        std::process::id()
    )
}

impl Kubelet {
    fn node(&self) -> &str {
        &self.shared.cfg.node.name
    }

    /// The kubelet's node-lease controller logs each failed renewal and retries next beat.
    fn lease_failed(&mut self, err: &str) {
        self.log(
            "controller.go:145",
            "Failed to ensure lease exists, will retry",
            err,
        );
    }

    fn info(&mut self, file: &str, msg: &str) {
        if let Some(f) = &mut self.log {
            let _ = f.write_all(klog_line('I', file, msg).as_bytes());
        }
    }

    fn log(&mut self, file: &str, msg: &str, err: &str) {
        if let Some(f) = &mut self.log {
            let _ = f.write_all(klog_line('E', file, &format!("{msg:?} err={err:?}")).as_bytes());
        }
        lock(&self.shared.kubelet_status).last_error = Some(err.to_string());
    }

    fn load_client(&mut self) {
        let cfg = &self.shared.cfg;
        let path = cfg.lab.node_path(&cfg.node.name, KUBELET_CONF);
        if !path.exists() {
            let err = "failed to run Kubelet: unable to load bootstrap kubeconfig: stat /etc/kubernetes/bootstrap-kubelet.conf: no such file or directory".to_string();
            lock(&self.shared.kubelet_status).last_error = Some(err);
            return;
        }
        match Kubeconfig::load(&cfg.lab, &cfg.node, KUBELET_CONF).and_then(|kc| {
            let server = kc.server.clone();
            ApiClient::new(
                &kc.server,
                &kc.ca_pem,
                kc.auth,
                Resolver::for_node(&cfg.lab, &cfg.node),
            )
            .map(|c| (c, server))
        }) {
            Ok((c, server)) => {
                self.client = Some(Arc::new(
                    c.with_timeout(cfg.timings.request_timeout)
                        .with_component("kubelet", cfg.spec.version),
                ));
                let mut st = lock(&self.shared.kubelet_status);
                st.server = Some(server);
                st.last_error = None;
            }
            Err(e) => {
                let err = format!("failed to run Kubelet: invalid kubeconfig: {e}");
                self.log("server.go:302", "Failed to run kubelet", &err);
            }
        }
    }

    async fn sync_static_pods(&mut self) {
        let cfg = &self.shared.cfg;
        let dir = cfg.lab.node_path(&cfg.node.name, MANIFESTS);
        let mut desired: BTreeMap<String, StaticPod> = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
            files.sort();
            for f in files {
                let fname = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if fname.starts_with('.')
                    || !(fname.ends_with(".yaml")
                        || fname.ends_with(".yml")
                        || fname.ends_with(".json"))
                {
                    continue;
                }
                let Ok(text) = std::fs::read_to_string(&f) else {
                    continue;
                };
                match StaticPod::parse(&text) {
                    Ok(p) => {
                        desired.insert(format!("{}-{}", p.name, cfg.node.name), p);
                    }
                    Err(e) => {
                        let msg = format!(
                            "could not process manifest file {:?}: {e}",
                            f.display().to_string()
                        );
                        if let Some(lf) = &mut self.log {
                            let _ = lf.write_all(klog_line('E', "file.go:187", &msg).as_bytes());
                        }
                    }
                }
            }
        }
        let mut pods = self.shared.pods.lock().await;
        // Static pods whose manifest went away or changed are stopped (a changed one is a new
        // pod: new UID, new mirror pod).
        let stale: Vec<String> = pods
            .iter()
            .filter(|(name, slot)| match &slot.kind {
                PodKind::Static(p) => desired.get(*name).is_none_or(|d| d.yaml != p.yaml),
                PodKind::KubeProxy { .. } => false,
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in stale {
            if let Some(mut slot) = pods.remove(&name) {
                if let Some(r) = slot.running.take() {
                    r.stop().await;
                }
                if let Some(sid) = &slot.sandbox_id {
                    let mut rt = lock(&self.shared.runtime);
                    rt.stop_sandbox(sid);
                    rt.remove_sandbox(sid);
                }
                if matches!(&slot.kind, PodKind::Static(p) if p.name == "etcd") {
                    *lock(&self.shared.etcd) = None;
                }
                if let Some(c) = &self.client
                    && !desired.contains_key(&name)
                {
                    let _ = c
                        .delete(&format!(
                            "/api/v1/namespaces/{}/pods/{}",
                            slot.namespace, slot.name
                        ))
                        .await;
                }
            }
        }
        for (name, p) in desired {
            if pods.contains_key(&name) {
                continue;
            }
            use sha2::Digest;
            let hash = hex::encode(sha2::Sha256::digest(format!("{}{}", p.yaml, cfg.node.name)))
                [..32]
                .to_string();
            let uid = hash.clone();
            let ns = p.namespace.clone();
            pods.insert(
                name.clone(),
                PodSlot::new(name, ns, uid, hash, PodKind::Static(p)),
            );
        }
    }

    /// Keeps every pod's sandbox and container as the runtime and the processes say.
    async fn run_containers(&mut self) {
        let shared = self.shared.clone();
        let mut pods = shared.pods.lock().await;
        let names: Vec<String> = pods.keys().cloned().collect();
        for name in names {
            let Some(slot) = pods.get_mut(&name) else {
                continue;
            };
            self.sync_slot(slot).await;
        }
        lock(&self.shared.runtime).gc();
    }

    async fn sync_slot(&mut self, slot: &mut PodSlot) {
        let now = Instant::now();
        let (sandbox_ready, container_exited) = {
            let rt = lock(&self.shared.runtime);
            let sb = slot
                .sandbox_id
                .as_ref()
                .and_then(|id| rt.sandbox(id))
                .is_some_and(|s| s.state == SandboxState::Ready);
            let ce = slot
                .container_id
                .as_ref()
                .and_then(|id| rt.container(id))
                .map(|c| matches!(c.state, ContainerState::Exited(_)))
                .unwrap_or(slot.container_id.is_some());
            (sb, ce)
        };
        // The process or task ended by itself: the container exited.
        let exited_msg = slot.running.as_ref().and_then(|r| r.exited());
        if slot.running.is_some() && (exited_msg.is_some() || container_exited || !sandbox_ready) {
            let r = slot.running.take();
            if let Some(r) = r {
                r.stop().await;
            }
            let code = if exited_msg.is_some() { 1 } else { 137 };
            if let Some(cid) = &slot.container_id {
                lock(&self.shared.runtime).container_exited(cid, code);
            }
            if let Some(msg) = exited_msg {
                slot.last_terminated = Some(Terminated {
                    code,
                    message: msg,
                    started: slot.started.unwrap_or(slot.created),
                    finished: SystemTime::now(),
                    container_id: slot.container_id.clone().unwrap_or_default(),
                });
                let t = &self.shared.cfg.timings;
                slot.backoff = if slot.backoff.is_zero() {
                    t.crash_backoff
                } else {
                    (slot.backoff * 2).min(t.max_backoff)
                };
                slot.next_start = Some(now + slot.backoff);
            } else {
                // Killed from outside (crictl stopp, docker kill): restarted at the next sync.
                slot.next_start = None;
            }
            if matches!(&slot.kind, PodKind::Static(p) if p.name == "etcd") {
                *lock(&self.shared.etcd) = Some(EtcdReport {
                    pid: None,
                    running: false,
                });
            }
        }
        if !sandbox_ready {
            // A new sandbox, as the kubelet makes when the old one is gone or stopped.
            let mut rt = lock(&self.shared.runtime);
            if let Some(old) = &slot.sandbox_id
                && rt.sandbox(old).is_some()
            {
                rt.stop_sandbox(old);
                slot.sandbox_attempt += 1;
            } else if slot.sandbox_id.is_some() {
                slot.sandbox_attempt += 1;
            }
            slot.sandbox_id =
                Some(rt.run_pod(&slot.name, &slot.namespace, &slot.uid, slot.sandbox_attempt));
            if slot.container_id.is_some() {
                slot.container_attempt += 1;
                slot.restarts += 1;
            }
            slot.container_id = None;
        }
        if slot.running.is_some() || slot.next_start.is_some_and(|t| now < t) {
            return;
        }
        // Start (or restart) the container.
        if slot.container_id.is_some() {
            slot.container_attempt += 1;
            slot.restarts += 1;
        }
        let command = match &slot.kind {
            PodKind::Static(p) => p.command.join(" "),
            PodKind::KubeProxy { .. } => "/usr/local/bin/kube-proxy --config=/var/lib/kube-proxy/config.conf --hostname-override=$(NODE_NAME)".into(),
        };
        let sandbox = slot.sandbox_id.clone().unwrap_or_default();
        let cid = lock(&self.shared.runtime).start_container(
            &sandbox,
            &slot.container_name(),
            &slot.image(),
            &command,
            slot.container_attempt,
        );
        slot.container_id = Some(cid.clone());
        slot.started = Some(SystemTime::now());
        match self.start_container(slot).await {
            Ok(r) => {
                slot.running = Some(r);
                slot.next_start = None;
            }
            Err(e) => {
                lock(&self.shared.runtime).container_exited(&cid, 1);
                let t = &self.shared.cfg.timings;
                slot.backoff = if slot.backoff.is_zero() {
                    t.crash_backoff
                } else {
                    (slot.backoff * 2).min(t.max_backoff)
                };
                slot.next_start = Some(now + slot.backoff);
                slot.last_terminated = Some(Terminated {
                    code: 1,
                    message: e,
                    started: SystemTime::now(),
                    finished: SystemTime::now(),
                    container_id: cid,
                });
            }
        }
    }

    async fn start_container(&mut self, slot: &PodSlot) -> Result<Box<dyn Running>, String> {
        let cfg = &self.shared.cfg;
        match &slot.kind {
            PodKind::Static(p) => match p.name.as_str() {
                "etcd" => {
                    let log = cfg
                        .lab
                        .log_dir()
                        .join(format!("etcd-{}.log", cfg.node.name));
                    let cmd = p.translated_command(cfg.node.address);
                    let proc = process::spawn_process(&cmd, cfg.ns_pid, &log)?;
                    *lock(&self.shared.etcd) = Some(EtcdReport {
                        pid: proc.pid(),
                        running: true,
                    });
                    Ok(Box::new(proc))
                }
                "kube-apiserver" => {
                    cfg.apiserver
                        .launch(cfg.lab.clone(), cfg.node.clone(), p.yaml.clone())
                        .await
                }
                "kube-controller-manager" | "kube-scheduler" => {
                    let which = if p.name == "kube-scheduler" {
                        controllers::Which::Scheduler
                    } else {
                        controllers::Which::ControllerManager
                    };
                    let ctx = controllers::ControllerCtx::new(&self.shared, which);
                    let start = move || -> Box<dyn Running> {
                        match which {
                            controllers::Which::Scheduler => {
                                Box::new(controllers::spawn_scheduler(ctx))
                            }
                            controllers::Which::ControllerManager => {
                                Box::new(controllers::spawn_controller_manager(ctx))
                            }
                        }
                    };
                    // `slow-component`: its first leader election comes that much later.
                    match cfg.faults.slow(&cfg.node.name) {
                        Some(delay) => Ok(Box::new(process::spawn_delayed(delay, start))),
                        None => Ok(start()),
                    }
                }
                _ => Ok(Box::new(process::spawn_task(|mut stop| async move {
                    // Any other static pod just runs.
                    while !sleep_or_stop(&mut stop, Duration::from_secs(3600)).await {}
                    Ok(())
                }))),
            },
            PodKind::KubeProxy { .. } => {
                let Some(client) = self.client.clone() else {
                    return Err("kubelet has no API client".into());
                };
                let shared = self.shared.clone();
                Ok(Box::new(process::spawn_task(move |stop| {
                    kube_proxy(shared, client, stop)
                })))
            }
        }
    }

    fn node_object(&self) -> Value {
        let cfg = &self.shared.cfg;
        let n = self.node();
        let v = cfg.spec.version;
        let mut labels = json!({
            "beta.kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/hostname": n,
            "kubernetes.io/os": "linux",
        });
        let mut taints = Vec::new();
        // The kubelet registers a bare Node: kubeadm's mark-control-plane phase labels and
        // taints it afterwards (init did so for the init node; a join does so after its etcd
        // member is in, so a join that fails earlier leaves an unmarked Node).
        if cfg.node.control_plane && cfg.spec.init_node().name == n {
            // kubeadm's marks: "master" until 1.24 (label) / 1.25 (taint).
            labels["node-role.kubernetes.io/control-plane"] = json!("");
            if v.minor < 24 {
                labels["node-role.kubernetes.io/master"] = json!("");
            }
            if v.minor < 25 {
                taints
                    .push(json!({"key": "node-role.kubernetes.io/master", "effect": "NoSchedule"}));
            }
            if v.minor >= 24 {
                taints.push(
                    json!({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}),
                );
            }
        }
        let socket = match cfg.spec.runtime {
            ContainerRuntime::Docker => "/var/run/dockershim.sock",
            _ => "unix:///var/run/containerd/containerd.sock",
        };
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": n,
                "labels": labels,
                "annotations": {
                    "kubeadm.alpha.kubernetes.io/cri-socket": socket,
                    "node.alpha.kubernetes.io/ttl": "0",
                    "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                },
            },
            "spec": if taints.is_empty() { json!({}) } else { json!({"taints": taints}) },
        })
    }

    fn node_status(&self, previous: Option<&Value>) -> Value {
        let cfg = &self.shared.cfg;
        let now = timefmt::now_rfc3339();
        let runtime_version = match cfg.spec.runtime {
            ContainerRuntime::Docker => "docker://20.10.24",
            _ => "containerd://1.7.24",
        };
        let prev_transition = |t: &str, status: &str| -> String {
            previous
                .and_then(|s| s["conditions"].as_array())
                .and_then(|cs| cs.iter().find(|c| c["type"] == t))
                .filter(|c| c["status"] == status)
                .and_then(|c| c["lastTransitionTime"].as_str())
                .map(String::from)
                .unwrap_or_else(|| now.clone())
        };
        let cond = |t: &str, status: &str, reason: &str, message: &str| {
            json!({"type": t, "status": status, "reason": reason, "message": message,
                   "lastHeartbeatTime": now, "lastTransitionTime": prev_transition(t, status)})
        };
        json!({
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": cfg.node.address.to_string()},
                {"type": "Hostname", "address": self.node()},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "capacity": {"cpu": "2", "memory": "4025424Ki", "pods": "110", "ephemeral-storage": "30787492Ki"},
            "allocatable": {"cpu": "2", "memory": "3923024Ki", "pods": "110", "ephemeral-storage": "28373752434"},
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": "",
                "containerRuntimeVersion": runtime_version,
                "kernelVersion": "6.1.0-lab",
                "kubeProxyVersion": cfg.spec.version.to_string(),
                "kubeletVersion": cfg.spec.version.to_string(),
                "machineID": "",
                "operatingSystem": "linux",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "systemUUID": "",
            },
        })
    }

    async fn sync_node(&mut self, client: &ApiClient) {
        let n = self.node().to_string();
        if !self.registered {
            match client.create("/api/v1/nodes", &self.node_object()).await {
                Ok(r) if r.is_success() || r.status == 409 => {
                    self.registered = true;
                }
                Ok(r) => {
                    let e = r.status_message();
                    self.log(
                        "kubelet_node_status.go:96",
                        "Unable to register node with API server",
                        &e,
                    );
                    return;
                }
                Err(e) => {
                    self.log(
                        "kubelet_node_status.go:96",
                        "Unable to register node with API server",
                        &e.to_string(),
                    );
                    return;
                }
            }
        }
        // Node status: re-posted when the API's view is not ours (for example the node
        // lifecycle controller marked it Unknown) or every 10 heartbeats.
        let path = format!("/api/v1/nodes/{n}");
        let node = match client.get(&path).await {
            Ok(r) if r.is_success() => r.json().ok(),
            Ok(r) if r.status == 404 => {
                self.registered = false;
                None
            }
            Ok(r) => {
                self.log(
                    "kubelet_node_status.go:535",
                    "Error updating node status, will retry",
                    &format!("error getting node {n:?}: {}", r.status_message()),
                );
                return;
            }
            Err(e) => {
                self.log(
                    "kubelet_node_status.go:535",
                    "Error updating node status, will retry",
                    &format!("error getting node {n:?}: {e}"),
                );
                return;
            }
        };
        if let Some(mut node) = node {
            let ready_true = node["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .is_some_and(|c| c["status"] == "True");
            let due = self
                .last_status_post
                .is_none_or(|t| t.elapsed() >= self.shared.cfg.timings.heartbeat * 10);
            if !ready_true || due {
                let status = self.node_status(Some(&node["status"]));
                node["status"] = status;
                match client.update(&format!("{path}/status"), &node).await {
                    Ok(r) if r.is_success() => self.last_status_post = Some(Instant::now()),
                    Ok(r) => {
                        self.log(
                            "kubelet_node_status.go:535",
                            "Error updating node status, will retry",
                            &r.status_message(),
                        );
                    }
                    Err(e) => {
                        self.log(
                            "kubelet_node_status.go:535",
                            "Error updating node status, will retry",
                            &e.to_string(),
                        );
                        return;
                    }
                }
            }
        }
        self.renew_lease(client).await;
    }

    async fn renew_lease(&mut self, client: &ApiClient) {
        let n = self.node().to_string();
        let base = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
        let now = timefmt::rfc3339_micro(SystemTime::now());
        let lease_secs = (self.shared.cfg.timings.node_grace.as_secs()).max(1);
        if self.lease.is_none() {
            match client.get(&format!("{base}/{n}")).await {
                Ok(r) if r.is_success() => self.lease = r.json().ok(),
                Ok(r) if r.status == 404 => {
                    let lease = json!({
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": n, "namespace": "kube-node-lease",
                            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": n, "uid": ""}]},
                        "spec": {"holderIdentity": n, "leaseDurationSeconds": lease_secs, "renewTime": now},
                    });
                    match client.create(base, &lease).await {
                        Ok(r) if r.is_success() => {
                            self.lease = r.json().ok();
                            self.lease_ok();
                            return;
                        }
                        Ok(r) => {
                            self.lease_failed(&r.status_message());
                            return;
                        }
                        Err(e) => {
                            self.lease_failed(&e.to_string());
                            return;
                        }
                    }
                }
                Ok(r) => {
                    self.lease_failed(&r.status_message());
                    return;
                }
                Err(e) => {
                    self.lease_failed(&e.to_string());
                    return;
                }
            }
        }
        let Some(mut lease) = self.lease.take() else {
            return;
        };
        lease["spec"]["renewTime"] = json!(now);
        lease["spec"]["holderIdentity"] = json!(n);
        lease["spec"]["leaseDurationSeconds"] = json!(lease_secs);
        match client.update(&format!("{base}/{n}"), &lease).await {
            Ok(r) if r.is_success() => {
                self.lease = r.json().ok();
                self.lease_ok();
            }
            Ok(r) => {
                // 409 or 404: re-read next time.
                self.log(
                    "controller.go:114",
                    "failed to update lease",
                    &r.status_message(),
                );
            }
            Err(e) => {
                self.lease = Some(lease);
                self.log(
                    "controller.go:114",
                    "failed to update lease",
                    &e.to_string(),
                );
            }
        }
    }

    fn lease_ok(&mut self) {
        let mut st = lock(&self.shared.kubelet_status);
        st.last_error = None;
        st.last_success = Some(timefmt::now_rfc3339());
    }

    /// The node's kube-proxy pod: found (or created, as the DaemonSet would) through the API,
    /// replaced when someone deletes it.
    async fn sync_kube_proxy(&mut self, client: &ApiClient) {
        let n = self.node().to_string();
        let mut pods = self.shared.pods.lock().await;
        let current = pods
            .iter()
            .find(|(_, s)| matches!(s.kind, PodKind::KubeProxy { .. }))
            .map(|(k, s)| (k.clone(), s.name.clone()));
        if let Some((key, name)) = current {
            match client
                .get(&format!("/api/v1/namespaces/kube-system/pods/{name}"))
                .await
            {
                Ok(r) if r.status == 404 => {
                    if let Some(mut slot) = pods.remove(&key) {
                        if let Some(r) = slot.running.take() {
                            r.stop().await;
                        }
                        if let Some(sid) = &slot.sandbox_id {
                            let mut rt = lock(&self.shared.runtime);
                            rt.stop_sandbox(sid);
                            rt.remove_sandbox(sid);
                        }
                    }
                }
                _ => return,
            }
        }
        // The DaemonSet: without it there is no kube-proxy.
        let ds = match client
            .get("/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy")
            .await
        {
            Ok(r) if r.is_success() => match r.json() {
                Ok(v) => v,
                Err(_) => return,
            },
            _ => return,
        };
        let image = ds["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| {
                format!(
                    "registry.k8s.io/kube-proxy:{}",
                    self.shared.cfg.spec.version
                )
            });
        // An existing pod for this node (after a kubelet restart), else a new one.
        let existing = match client
            .list("/api/v1/namespaces/kube-system/pods?labelSelector=k8s-app%3Dkube-proxy")
            .await
        {
            Ok(r) if r.is_success() => r.json().ok().and_then(|v| {
                v["items"]
                    .as_array()?
                    .iter()
                    .find(|p| {
                        p["spec"]["nodeName"] == n.as_str()
                            && p["metadata"]["deletionTimestamp"].is_null()
                    })
                    .cloned()
            }),
            _ => return,
        };
        let pod = match existing {
            Some(p) => p,
            None => {
                let name = format!("kube-proxy-{}", rand_suffix(5));
                let body = json!({
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": name,
                        "generateName": "kube-proxy-",
                        "namespace": "kube-system",
                        "labels": {"k8s-app": "kube-proxy", "pod-template-generation": "1"},
                        "ownerReferences": [{
                            "apiVersion": "apps/v1", "kind": "DaemonSet", "name": "kube-proxy",
                            "uid": ds["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
                        }],
                    },
                    "spec": {
                        "nodeName": n,
                        "hostNetwork": true,
                        "priorityClassName": "system-node-critical",
                        "serviceAccountName": "kube-proxy",
                        "containers": [{
                            "name": "kube-proxy",
                            "image": image,
                            "command": ["/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf", "--hostname-override=$(NODE_NAME)"],
                        }],
                    },
                });
                // The kubelet stands in for the DaemonSet controller here; the pod carries
                // the controller's manager, as a real one's managedFields do.
                match client
                    .create(
                        "/api/v1/namespaces/kube-system/pods?fieldManager=kube-controller-manager",
                        &body,
                    )
                    .await
                {
                    Ok(r) if r.is_success() => r.json().unwrap_or(body),
                    _ => return,
                }
            }
        };
        let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
        if name.is_empty() {
            return;
        }
        let uid = pod["metadata"]["uid"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(rand_uuid_like);
        let mut slot = PodSlot::new(
            name.clone(),
            "kube-system".into(),
            uid,
            String::new(),
            PodKind::KubeProxy { image },
        );
        slot.mirror_checked = Some(Instant::now());
        pods.insert(name, slot);
    }

    /// Mirror pods for static pods, and every pod's status, written when they change.
    async fn sync_mirror_pods(&mut self, client: &ApiClient) {
        let n = self.node().to_string();
        let recheck = self.shared.cfg.timings.heartbeat * 10;
        let mut pods = self.shared.pods.lock().await;
        for slot in pods.values_mut() {
            let path = format!("/api/v1/namespaces/{}/pods/{}", slot.namespace, slot.name);
            if let PodKind::Static(p) = &slot.kind
                && slot.mirror_checked.is_none_or(|t| t.elapsed() >= recheck)
            {
                let exists = match client.get(&path).await {
                    Ok(r) if r.is_success() => r.json().ok().map(|v| {
                        v["metadata"]["annotations"]["kubernetes.io/config.mirror"]
                            == slot.hash.as_str()
                    }),
                    Ok(r) if r.status == 404 => None,
                    _ => continue,
                };
                if exists == Some(false) {
                    let _ = client.delete(&path).await;
                }
                if exists != Some(true) {
                    let labels: serde_json::Map<String, Value> = p
                        .labels
                        .iter()
                        .map(|(k, v)| (k.clone(), json!(v)))
                        .collect();
                    let body = json!({
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {
                            "name": slot.name,
                            "namespace": slot.namespace,
                            "labels": labels,
                            "annotations": {
                                "kubernetes.io/config.hash": slot.hash,
                                "kubernetes.io/config.mirror": slot.hash,
                                "kubernetes.io/config.seen": timefmt::rfc3339(timefmt::unix_secs(slot.created)),
                                "kubernetes.io/config.source": "file",
                            },
                            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": n, "uid": "", "controller": true}],
                        },
                        "spec": {
                            "nodeName": n,
                            "hostNetwork": true,
                            "priorityClassName": "system-node-critical",
                            "containers": [{"name": p.container, "image": p.image, "command": p.command}],
                        },
                    });
                    match client
                        .create(
                            &format!("/api/v1/namespaces/{}/pods", slot.namespace),
                            &body,
                        )
                        .await
                    {
                        Ok(r) if r.is_success() || r.status == 409 => slot.posted = None,
                        _ => continue,
                    }
                }
                slot.mirror_checked = Some(Instant::now());
            }
            let status = slot.status(&self.shared);
            if slot.posted.as_ref() == Some(&status) {
                continue;
            }
            let Ok(r) = client.get(&path).await else {
                continue;
            };
            if !r.is_success() {
                continue;
            }
            let Ok(mut obj) = r.json() else { continue };
            obj["status"] = status.clone();
            if let Ok(r) = client.update(&format!("{path}/status"), &obj).await
                && r.is_success()
            {
                slot.posted = Some(status);
            }
        }
    }
}

fn rand_uuid_like() -> String {
    super::runtime::rand_uuid()
}

/// kube-proxy's start: its ConfigMap (mounted by the kubelet), a service-account token, the
/// node's CA; then its own Node from the `kubeconfig.conf` server. Failing exits the container.
async fn kube_proxy(
    shared: Arc<Shared>,
    kubelet: Arc<ApiClient>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let cfg = &shared.cfg;
    let cm = kubelet
        .get("/api/v1/namespaces/kube-system/configmaps/kube-proxy")
        .await
        .map_err(|e| format!("failed to mount configmap kube-proxy: {e}"))?;
    if !cm.is_success() {
        return Err(format!(
            "MountVolume.SetUp failed for volume \"kube-proxy\" : configmap \"kube-proxy\" not found: {}",
            cm.status_message()
        ));
    }
    let cm = cm.json()?;
    let kubeconfig = cm["data"]["kubeconfig.conf"]
        .as_str()
        .ok_or("configmap kube-proxy has no kubeconfig.conf")?
        .to_string();
    let tr = kubelet
        .create(
            "/api/v1/namespaces/kube-system/serviceaccounts/kube-proxy/token",
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                    "spec": {"audiences": [], "expirationSeconds": 3607}}),
        )
        .await
        .map_err(|e| format!("failed to fetch token: {e}"))?;
    if !tr.is_success() {
        return Err(format!("failed to fetch token: {}", tr.status_message()));
    }
    let token = tr.json()?["status"]["token"]
        .as_str()
        .ok_or("failed to fetch token: no token in the response")?
        .to_string();
    let ca = std::fs::read(
        cfg.lab
            .node_path(&cfg.node.name, "/etc/kubernetes/pki/ca.crt"),
    )
    .map_err(|e| format!("open /var/run/secrets/kubernetes.io/serviceaccount/ca.crt: {e}"))?;
    // kubeconfig.conf names the token and CA files the pod mounts; the server is what counts.
    let kc = Kubeconfig::parse(&kubeconfig, "/var/lib/kube-proxy/kubeconfig.conf", |_| {
        Ok(Vec::new())
    })
    .map_err(|e| e.to_string())?;
    let client = ApiClient::new(
        &kc.server,
        &ca,
        super::client::ClientAuth::Token(token),
        Resolver::for_node(&cfg.lab, &cfg.node),
    )
    .map_err(|e| e.to_string())?
    .with_timeout(cfg.timings.request_timeout)
    .with_component("kube-proxy", cfg.spec.version);
    let node = cfg.node.name.clone();
    match client.get(&format!("/api/v1/nodes/{node}")).await {
        Ok(r) if r.is_success() => {}
        Ok(r) => {
            return Err(format!(
                "failed to retrieve node info: {}",
                r.status_message()
            ));
        }
        Err(e) => return Err(e.to_string()),
    }
    while !sleep_or_stop(&mut stop, Duration::from_secs(3600)).await {}
    Ok(())
}
