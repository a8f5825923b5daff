//! kube-controller-manager (leader Lease, bootstrapsigner, node lifecycle) and kube-scheduler
//! (leader Lease), each a static pod's in-process container using its own kubeconfig.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use serde_json::{Value, json};

use super::client::{ApiClient, Kubeconfig, Resolver};
use super::process::{TaskRunning, sleep_or_stop, spawn_task};
use super::runtime::rand_uuid;
use super::{ComponentReport, LabTimings, Shared, jws, lock, timefmt};
use crate::lab::{LabDir, LabNode};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    ControllerManager,
    Scheduler,
}

impl Which {
    fn lease(self) -> &'static str {
        match self {
            Which::ControllerManager => "kube-controller-manager",
            Which::Scheduler => "kube-scheduler",
        }
    }
    fn kubeconfig(self) -> &'static str {
        match self {
            Which::ControllerManager => "/etc/kubernetes/controller-manager.conf",
            Which::Scheduler => "/etc/kubernetes/scheduler.conf",
        }
    }
}

/// What a controller container needs from its node.
pub struct ControllerCtx {
    pub lab: LabDir,
    pub node: LabNode,
    pub timings: LabTimings,
    pub which: Which,
    pub status: Arc<Mutex<Option<ComponentReport>>>,
    /// In the User-Agent, hence in the managedFields entries of what it writes.
    pub version: crate::kubeadm::KubeVersion,
}

impl ControllerCtx {
    pub(crate) fn new(shared: &Shared, which: Which) -> Self {
        ControllerCtx {
            lab: shared.cfg.lab.clone(),
            node: shared.cfg.node.clone(),
            timings: shared.cfg.timings.clone(),
            which,
            version: shared.cfg.spec.version,
            status: match which {
                Which::ControllerManager => shared.controller_manager.clone(),
                Which::Scheduler => shared.scheduler.clone(),
            },
        }
    }
}

pub fn spawn_controller_manager(ctx: ControllerCtx) -> TaskRunning {
    spawn_task(move |stop| run(ctx, stop))
}

pub fn spawn_scheduler(ctx: ControllerCtx) -> TaskRunning {
    spawn_task(move |stop| run(ctx, stop))
}

async fn run(
    ctx: ControllerCtx,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    // The kubeconfig is read once, at start; a bad one ends the container, as it does the
    // real binary.
    let kc = Kubeconfig::load(&ctx.lab, &ctx.node, ctx.which.kubeconfig()).map_err(|e| {
        let msg = format!("invalid configuration: {e}");
        set_status(&ctx, None, Some(msg.clone()), false, None);
        msg
    })?;
    let client = ApiClient::new(
        &kc.server,
        &kc.ca_pem,
        kc.auth,
        Resolver::for_node(&ctx.lab, &ctx.node),
    )
    .map_err(|e| e.to_string())?
    .with_timeout(ctx.timings.request_timeout)
    .with_component(ctx.which.lease(), ctx.version);
    let server = Some(kc.server.clone());
    set_status(&ctx, server.clone(), None, false, None);
    let identity = format!("{}_{}", ctx.node.name, rand_uuid());
    let mut leader_since_renew: Option<Instant> = None;
    let mut last_renew: Option<String> = None;
    loop {
        match elect(&client, &ctx, &identity).await {
            Ok(true) => {
                leader_since_renew = Some(Instant::now());
                last_renew = Some(timefmt::now_rfc3339());
                let mut err = None;
                if ctx.which == Which::ControllerManager {
                    if let Err(e) = bootstrapsigner(&client).await {
                        err = Some(e);
                    }
                    if let Err(e) = tokencleaner(&client).await {
                        err = Some(e);
                    }
                    if let Err(e) = node_lifecycle(&client, ctx.timings.node_grace).await {
                        err = Some(e);
                    }
                }
                set_status(&ctx, server.clone(), err, true, last_renew.clone());
            }
            Ok(false) => {
                leader_since_renew = None;
                set_status(&ctx, server.clone(), None, false, last_renew.clone());
            }
            Err(e) => {
                let msg = format!(
                    "error retrieving resource lock kube-system/{}: {e}",
                    ctx.which.lease()
                );
                set_status(
                    &ctx,
                    server.clone(),
                    Some(msg),
                    leader_since_renew.is_some(),
                    last_renew.clone(),
                );
                // A leader that cannot renew within the lease gives up and exits, as
                // client-go's leaderelection does ("leaderelection lost").
                if leader_since_renew.is_some_and(|t| t.elapsed() > ctx.timings.lease_duration) {
                    set_status(
                        &ctx,
                        server.clone(),
                        Some("leaderelection lost".into()),
                        false,
                        last_renew.clone(),
                    );
                    return Err("leaderelection lost".into());
                }
            }
        }
        if sleep_or_stop(&mut stop, ctx.timings.heartbeat).await {
            set_status(&ctx, server.clone(), None, false, last_renew.clone());
            return Ok(());
        }
    }
}

fn set_status(
    ctx: &ControllerCtx,
    server: Option<String>,
    last_error: Option<String>,
    is_leader: bool,
    last_renew: Option<String>,
) {
    let mut st = lock(&ctx.status);
    let prev_err = st.as_ref().and_then(|s| s.last_error.clone());
    *st = Some(ComponentReport {
        server: server.or_else(|| st.as_ref().and_then(|s| s.server.clone())),
        // The last error stays visible until a renewal succeeds.
        last_error: last_error.or(if is_leader { None } else { prev_err }),
        is_leader,
        last_renew,
    });
}

/// One leader-election round: true when this identity holds the Lease after it.
async fn elect(client: &ApiClient, ctx: &ControllerCtx, identity: &str) -> Result<bool, String> {
    let base = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";
    let name = ctx.which.lease();
    let path = format!("{base}/{name}");
    let now = SystemTime::now();
    let now_s = timefmt::rfc3339_micro(now);
    let secs = ctx.timings.lease_duration.as_secs().max(1);
    let r = client.get(&path).await.map_err(|e| e.to_string())?;
    if r.status == 404 {
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-system"},
            "spec": {"holderIdentity": identity, "leaseDurationSeconds": secs,
                     "acquireTime": now_s, "renewTime": now_s, "leaseTransitions": 0},
        });
        let r = client
            .create(base, &lease)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(r.is_success());
    }
    if !r.is_success() {
        return Err(r.status_message());
    }
    let mut lease = r.json()?;
    let holder = lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if holder != identity {
        let renew = lease["spec"]["renewTime"]
            .as_str()
            .and_then(timefmt::parse_rfc3339);
        let dur = lease["spec"]["leaseDurationSeconds"]
            .as_u64()
            .unwrap_or(secs);
        let expired = renew.is_none_or(|t| t + Duration::from_secs(dur) < now);
        if !holder.is_empty() && !expired {
            return Ok(false);
        }
        let transitions = lease["spec"]["leaseTransitions"].as_u64().unwrap_or(0);
        lease["spec"]["holderIdentity"] = json!(identity);
        lease["spec"]["acquireTime"] = json!(now_s);
        lease["spec"]["leaseTransitions"] = json!(transitions + 1);
    }
    lease["spec"]["renewTime"] = json!(now_s);
    lease["spec"]["leaseDurationSeconds"] = json!(secs);
    let r = client
        .update(&path, &lease)
        .await
        .map_err(|e| e.to_string())?;
    match r.status {
        200..=299 => Ok(true),
        409 => Ok(false),
        _ => Err(r.status_message()),
    }
}

fn b64_field(secret: &Value, key: &str) -> Option<String> {
    let v = secret["data"][key].as_str()?;
    let raw = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
    String::from_utf8(raw).ok()
}

/// The `jws-kubeconfig-<tokenid>` keys `cluster-info` should have for these Secrets.
pub fn expected_signatures(
    kubeconfig: &str,
    secrets: &[Value],
    now: SystemTime,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for s in secrets {
        if s["type"] != "bootstrap.kubernetes.io/token" {
            continue;
        }
        if b64_field(s, "usage-bootstrap-signing").as_deref() != Some("true") {
            continue;
        }
        let (Some(id), Some(secret)) = (b64_field(s, "token-id"), b64_field(s, "token-secret"))
        else {
            continue;
        };
        if let Some(exp) = b64_field(s, "expiration")
            && timefmt::parse_rfc3339(&exp).is_none_or(|t| t < now)
        {
            continue;
        }
        out.insert(
            format!("jws-kubeconfig-{id}"),
            jws::compute_detached_signature(kubeconfig, &id, &secret),
        );
    }
    out
}

/// The bootstrapsigner: re-signs `kube-public/cluster-info` for every signing token.
async fn bootstrapsigner(client: &ApiClient) -> Result<(), String> {
    let path = "/api/v1/namespaces/kube-public/configmaps/cluster-info";
    let r = client.get(path).await.map_err(|e| e.to_string())?;
    if r.status == 404 {
        return Ok(());
    }
    if !r.is_success() {
        return Err(r.status_message());
    }
    let mut cm = r.json()?;
    let Some(kubeconfig) = cm["data"]["kubeconfig"].as_str().map(String::from) else {
        return Ok(());
    };
    let r = client
        .list("/api/v1/namespaces/kube-system/secrets")
        .await
        .map_err(|e| e.to_string())?;
    if !r.is_success() {
        return Err(r.status_message());
    }
    let list = r.json()?;
    let secrets = list["items"].as_array().cloned().unwrap_or_default();
    let want = expected_signatures(&kubeconfig, &secrets, SystemTime::now());
    let data = cm["data"].as_object().cloned().unwrap_or_default();
    let mut new_data: serde_json::Map<String, Value> = data
        .iter()
        .filter(|(k, _)| !k.starts_with("jws-kubeconfig-"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in want {
        new_data.insert(k, json!(v));
    }
    if new_data == data {
        return Ok(());
    }
    cm["data"] = Value::Object(new_data);
    let r = client.update(path, &cm).await.map_err(|e| e.to_string())?;
    if r.is_success() || r.status == 409 {
        Ok(())
    } else {
        Err(r.status_message())
    }
}

/// What the tokencleaner and the garbage collector delete from kube-system's Secrets:
/// expired bootstrap tokens, then Secrets owned by a Secret that is gone (kubeadm-certs,
/// owned by its 2-hour proxy token).
pub fn secrets_to_delete(secrets: &[Value], now: SystemTime) -> Vec<String> {
    let expired = |s: &Value| {
        s["type"] == "bootstrap.kubernetes.io/token"
            && b64_field(s, "expiration")
                .is_some_and(|exp| timefmt::parse_rfc3339(&exp).is_none_or(|t| t < now))
    };
    let name = |s: &Value| {
        s["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let mut gone: Vec<String> = secrets.iter().filter(|s| expired(s)).map(name).collect();
    let alive: std::collections::BTreeSet<&str> = secrets
        .iter()
        .filter(|s| !expired(s))
        .filter_map(|s| s["metadata"]["uid"].as_str())
        .collect();
    for s in secrets.iter().filter(|s| !expired(s)) {
        let orphaned = s["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|refs| {
                refs.iter().any(|r| {
                    r["kind"] == "Secret"
                        && r["uid"].as_str().is_some_and(|uid| !alive.contains(uid))
                })
            });
        if orphaned {
            gone.push(name(s));
        }
    }
    gone
}

/// The tokencleaner and the part of the garbage collector that kubeadm-certs relies on.
async fn tokencleaner(client: &ApiClient) -> Result<(), String> {
    let collection = "/api/v1/namespaces/kube-system/secrets";
    let r = client.list(collection).await.map_err(|e| e.to_string())?;
    if !r.is_success() {
        return Err(r.status_message());
    }
    let secrets = r.json()?["items"].as_array().cloned().unwrap_or_default();
    for name in secrets_to_delete(&secrets, SystemTime::now()) {
        let r = client
            .delete(&format!("{collection}/{name}"))
            .await
            .map_err(|e| e.to_string())?;
        if !r.is_success() && r.status != 404 {
            return Err(r.status_message());
        }
    }
    Ok(())
}

/// Nodes whose Lease is older than `grace` become Ready=Unknown, as the node lifecycle
/// controller marks them.
async fn node_lifecycle(client: &ApiClient, grace: Duration) -> Result<(), String> {
    let r = client
        .list("/api/v1/nodes")
        .await
        .map_err(|e| e.to_string())?;
    if !r.is_success() {
        return Err(r.status_message());
    }
    let nodes = r.json()?;
    let r = client
        .list("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases")
        .await
        .map_err(|e| e.to_string())?;
    let leases = if r.is_success() {
        r.json()?
    } else {
        json!({"items": []})
    };
    let now = SystemTime::now();
    for node in nodes["items"].as_array().cloned().unwrap_or_default() {
        let name = node["metadata"]["name"].as_str().unwrap_or("").to_string();
        let renew = leases["items"]
            .as_array()
            .and_then(|ls| ls.iter().find(|l| l["metadata"]["name"] == name.as_str()))
            .and_then(|l| l["spec"]["renewTime"].as_str())
            .and_then(timefmt::parse_rfc3339);
        let heartbeat = node["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .and_then(|c| c["lastHeartbeatTime"].as_str())
            .and_then(timefmt::parse_rfc3339);
        let Some(last) = renew.or(heartbeat) else {
            continue;
        };
        if now.duration_since(last).unwrap_or_default() <= grace {
            continue;
        }
        if let Some(updated) = mark_unknown(&node, now) {
            let path = format!("/api/v1/nodes/{name}/status");
            let r = client
                .update(&path, &updated)
                .await
                .map_err(|e| e.to_string())?;
            if !r.is_success() && r.status != 409 {
                return Err(r.status_message());
            }
        }
    }
    Ok(())
}

/// The node with its conditions set to Unknown; `None` when they already are.
pub fn mark_unknown(node: &Value, now: SystemTime) -> Option<Value> {
    let conds = node["status"]["conditions"].as_array()?;
    if conds
        .iter()
        .find(|c| c["type"] == "Ready")
        .is_some_and(|c| c["status"] == "Unknown")
    {
        return None;
    }
    let now_s = timefmt::rfc3339(timefmt::unix_secs(now));
    let mut node = node.clone();
    let updated: Vec<Value> = conds
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"]
                .contains(&c["type"].as_str().unwrap_or(""))
            {
                c["status"] = json!("Unknown");
                c["reason"] = json!("NodeStatusUnknown");
                c["message"] = json!("Kubelet stopped posting node status.");
                c["lastTransitionTime"] = json!(now_s);
            }
            c
        })
        .collect();
    node["status"]["conditions"] = json!(updated);
    Some(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: &str, secret: &str, signing: bool, expiration: Option<&str>) -> Value {
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut data = json!({
            "token-id": b(id),
            "token-secret": b(secret),
            "usage-bootstrap-signing": b(if signing { "true" } else { "false" }),
        });
        if let Some(e) = expiration {
            data["expiration"] = json!(b(e));
        }
        json!({"type": "bootstrap.kubernetes.io/token", "data": data,
            "metadata": {"name": format!("bootstrap-token-{id}")}})
    }

    #[test]
    fn signs_for_signing_unexpired_tokens_only() {
        let now = SystemTime::now();
        let secrets = vec![
            token(
                "abcdef",
                "0123456789abcdef",
                true,
                Some("2999-01-01T00:00:00Z"),
            ),
            token(
                "expird",
                "0123456789abcdef",
                true,
                Some("2001-01-01T00:00:00Z"),
            ),
            token("nosign", "0123456789abcdef", false, None),
            json!({"type": "Opaque", "data": {}}),
        ];
        let sigs = expected_signatures("KUBECONFIG", &secrets, now);
        assert_eq!(sigs.len(), 1);
        assert_eq!(
            sigs.get("jws-kubeconfig-abcdef"),
            Some(&jws::compute_detached_signature(
                "KUBECONFIG",
                "abcdef",
                "0123456789abcdef"
            ))
        );
    }

    #[test]
    fn expired_tokens_and_what_they_own_are_collected() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let mut proxy = token(
            "prxy01",
            "0123456789abcdef",
            false,
            Some("2020-01-01T00:00:00Z"),
        );
        proxy["metadata"]["uid"] = json!("u-proxy");
        let mut live = token("live01", "0123456789abcdef", true, None);
        live["metadata"]["uid"] = json!("u-live");
        let owned = |name: &str, uid: &str| {
            json!({"metadata": {"name": name, "uid": format!("u-{name}"),
                "ownerReferences": [{"kind": "Secret", "uid": uid}]}, "type": "Opaque"})
        };
        let secrets = vec![
            proxy,
            live,
            owned("kubeadm-certs", "u-proxy"),
            owned("kept", "u-live"),
        ];
        assert_eq!(
            secrets_to_delete(&secrets, now),
            vec![
                "bootstrap-token-prxy01".to_string(),
                "kubeadm-certs".to_string()
            ]
        );
    }

    #[test]
    fn stale_nodes_become_unknown_once() {
        let node = json!({"metadata": {"name": "w1"}, "status": {"conditions": [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": "True", "reason": "KubeletReady"},
        ]}});
        let marked = mark_unknown(&node, SystemTime::now()).expect("marks");
        let ready = &marked["status"]["conditions"][1];
        assert_eq!(ready["status"], "Unknown");
        assert_eq!(ready["reason"], "NodeStatusUnknown");
        assert_eq!(ready["message"], "Kubelet stopped posting node status.");
        assert!(mark_unknown(&marked, SystemTime::now()).is_none());
    }
}
