//! kubeadm's etcd membership steps (`etcdutil`) against the cluster's real etcd: a client
//! from the etcd static pods, the health check, member add (as a learner from 1.29) with
//! kubeadm's retries, promotion once the learner has synced, the wait for the cluster, and
//! member remove for `kubeadm reset`. Retry windows are the lab's: seconds, not minutes.

use std::time::{Duration, Instant};

use crate::lab::components::client::ApiClient;
use crate::lab::etcd::{EtcdClient, Member};
use crate::lab::files::EtcdMember;
use crate::lab::{LabDir, LabNode};

/// The static pods' label kubeadm selects etcd by, and the annotation it reads.
const ETCD_PODS: &str =
    "/api/v1/namespaces/kube-system/pods?labelSelector=component%3Detcd%2Ctier%3Dcontrol-plane";
const ADVERTISE_ANNOTATION: &str = "kubeadm.kubernetes.io/etcd.advertise-client-urls";

/// How long member add retries (kubeadm: exponential backoff over about a minute).
pub const ADD_BUDGET: Duration = Duration::from_secs(2);
/// How long the lab waits for a new member to start, sync and be promoted (kubeadm: 40 s).
pub const JOIN_WAIT: Duration = Duration::from_secs(20);

/// `https://ADDR:2380`.
pub fn peer_url(addr: &str) -> String {
    format!("https://{}:2380", bracket(addr))
}

/// `https://ADDR:2379`.
pub fn client_url(addr: &str) -> String {
    format!("https://{}:2379", bracket(addr))
}

fn bracket(addr: &str) -> String {
    if addr.contains(':') && !addr.starts_with('[') {
        format!("[{addr}]")
    } else {
        addr.to_string()
    }
}

/// kubeadm's `etcdutil.NewFromCluster`: the etcd pods' advertised client URLs (through the
/// API), then the client URLs of the members etcd knows (`Sync`). The certificates are the
/// node's apiserver-etcd-client pair under `pki_dir`. `blocked`: the node cannot reach 2379.
pub async fn client_from_cluster(
    lab: &LabDir,
    node: &LabNode,
    api: &ApiClient,
    pki_dir: &str,
    blocked: bool,
) -> Result<EtcdClient, String> {
    let endpoints = pod_endpoints(api).await?;
    let read = |p: &str| {
        let path = format!("{pki_dir}/{p}");
        std::fs::read_to_string(lab.node_path(&node.name, &path)).map_err(|e| {
            format!(
                "error creating etcd client for {endpoints:?} endpoints: open {path}: {}",
                crate::lab::components::client::os_text(&e)
            )
        })
    };
    let (ca, cert, key) = (
        read("etcd/ca.crt")?,
        read("apiserver-etcd-client.crt")?,
        read("apiserver-etcd-client.key")?,
    );
    if blocked {
        return Err("error syncing endpoints with etcd: context deadline exceeded".into());
    }
    let client = EtcdClient::new(endpoints.clone(), &ca, &cert, &key)
        .map_err(|e| format!("error creating etcd client for {endpoints:?} endpoints: {e}"))?;
    let members = client
        .member_list()
        .await
        .map_err(|e| format!("error syncing endpoints with etcd: {e}"))?;
    let synced: Vec<String> = members
        .iter()
        .flat_map(|m| m.client_urls.iter().cloned())
        .collect();
    if synced.is_empty() {
        return Ok(client);
    }
    EtcdClient::new(synced.clone(), &ca, &cert, &key)
        .map_err(|e| format!("error creating etcd client for {synced:?} endpoints: {e}"))
}

/// The client URLs the etcd static pods advertise: their annotation, or their node's
/// InternalIP (the lab's mirror pods carry no annotations).
async fn pod_endpoints(api: &ApiClient) -> Result<Vec<String>, String> {
    let fail = |e: String| format!("could not retrieve the list of etcd endpoints: {e}");
    let r = api.list(ETCD_PODS).await.map_err(|e| fail(e.to_string()))?;
    if !r.is_success() {
        return Err(fail(r.status_message()));
    }
    let pods = r.json().map_err(fail)?;
    let mut out = Vec::new();
    for pod in pods["items"].as_array().cloned().unwrap_or_default() {
        if let Some(url) = pod["metadata"]["annotations"][ADVERTISE_ANNOTATION].as_str() {
            out.push(url.to_string());
            continue;
        }
        let Some(node) = pod["spec"]["nodeName"].as_str() else {
            continue;
        };
        let r = api
            .get(&format!("/api/v1/nodes/{node}"))
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !r.is_success() {
            continue;
        }
        let node = r.json().map_err(fail)?;
        if let Some(ip) = node["status"]["addresses"].as_array().and_then(|a| {
            a.iter()
                .find(|x| x["type"] == "InternalIP")
                .and_then(|x| x["address"].as_str())
        }) {
            out.push(client_url(ip));
        }
    }
    if out.is_empty() {
        return Err(fail(
            "no etcd Pods found in the \"kube-system\" Namespace".into(),
        ));
    }
    Ok(out)
}

/// kubeadm's `CheckClusterHealth`: every endpoint answers its status.
pub async fn check_health(client: &EtcdClient) -> Result<(), String> {
    for ep in client.endpoints() {
        if let Err(e) = client.status(&ep).await {
            return Err(format!(
                "etcd cluster is not healthy: failed to dial endpoint {ep} with maintenance client: {e}"
            ));
        }
    }
    Ok(())
}

/// kubeadm's `addMember`: skipped when a member with this peer URL exists already (a retried
/// join), retried on errors; the members for `--initial-cluster`, unnamed ones by their id.
pub async fn add_member(
    client: &EtcdClient,
    name: &str,
    peer: &str,
    learner: bool,
    budget: Duration,
) -> Result<Vec<EtcdMember>, String> {
    let deadline = Instant::now() + budget;
    let mut delay = Duration::from_millis(100);
    loop {
        let attempt = async {
            let members = client.member_list().await?;
            if members
                .iter()
                .any(|m| m.peer_urls.first().map(String::as_str) == Some(peer))
            {
                return Ok(members);
            }
            client
                .member_add(&[peer.to_string()], learner)
                .await
                .map(|(_, all)| all)
        };
        match attempt.await {
            Ok(members) => return Ok(initial_cluster(&members, name, peer)),
            Err(e) if Instant::now() + delay > deadline => return Err(e.to_string()),
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = delay.mul_f32(1.5);
            }
        }
    }
}

/// The `--initial-cluster` members: this node by its name, the others by theirs (or their
/// hex id when they never started, as kubeadm does).
pub fn initial_cluster(members: &[Member], name: &str, peer: &str) -> Vec<EtcdMember> {
    members
        .iter()
        .filter_map(|m| {
            let url = m.peer_urls.first()?.clone();
            let member_name = if url == peer {
                name.to_string()
            } else if m.name.is_empty() {
                m.id.clone()
            } else {
                m.name.clone()
            };
            Some(EtcdMember {
                name: member_name,
                peer_url: url,
            })
        })
        .collect()
}

/// The member with this peer URL (kubeadm's `GetMemberID`).
pub async fn member_by_peer(client: &EtcdClient, peer: &str) -> Result<Member, String> {
    let members = client.member_list().await.map_err(|e| e.to_string())?;
    members
        .into_iter()
        .find(|m| m.peer_urls.iter().any(|u| u == peer))
        .ok_or_else(|| "no member id found for peer URL".to_string())
}

/// kubeadm's `MemberPromote`, retried while etcd says the learner is not in sync yet.
pub async fn promote(client: &EtcdClient, peer: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let result = async {
            let m = member_by_peer(client, peer).await?;
            if !m.is_learner {
                return Ok(());
            }
            client
                .member_promote(&m.id)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        match result.await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// kubeadm's `WaitForClusterAvailable`: every endpoint (the new member's included) answers.
pub async fn wait_available(
    client: &EtcdClient,
    extra_endpoint: &str,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut endpoints = client.endpoints();
    if !endpoints.iter().any(|e| e == extra_endpoint) {
        endpoints.push(extra_endpoint.to_string());
    }
    let all = client
        .with_endpoints(endpoints.clone())
        .map_err(|e| e.to_string())?;
    loop {
        let mut ok = true;
        for ep in &endpoints {
            ok &= all.status(ep).await.is_ok_and(|s| s.errors.is_empty());
        }
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("timeout waiting for etcd cluster to be available".into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How long member remove retries: etcd refuses it (`etcdserver: unhealthy cluster`) until
/// every member has been connected for its 5 s health interval.
pub const REMOVE_BUDGET: Duration = Duration::from_secs(8);

/// kubeadm's `RemoveStackedEtcdMemberFromCluster`: nothing when this is the last member,
/// else remove the member with this node's peer URL, retried as kubeadm's `RemoveMember`.
pub async fn remove_own_member(
    client: &EtcdClient,
    addr: &str,
    budget: Duration,
) -> Result<(), String> {
    let members = client.member_list().await.map_err(|e| e.to_string())?;
    if members.len() == 1 && client.endpoints().iter().any(|e| *e == client_url(addr)) {
        return Ok(());
    }
    let m = member_by_peer(client, &peer_url(addr)).await?;
    let deadline = Instant::now() + budget;
    loop {
        match client.member_remove(&m.id).await {
            Ok(_) => return Ok(()),
            // Gone already (a retry that raced): what was wanted.
            Err(e) if e.to_string().contains("member not found") => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, name: &str, peer: &str) -> Member {
        Member {
            id: id.into(),
            name: name.into(),
            peer_urls: vec![peer.into()],
            client_urls: vec![],
            is_learner: false,
            started: !name.is_empty(),
        }
    }

    #[test]
    fn the_initial_cluster_names_the_new_member_and_unstarted_ones_by_id() {
        let members = [
            m("a1", "cp1", "https://127.0.9.11:2380"),
            m("b2", "", "https://127.0.9.12:2380"),
            m("c3", "", "https://127.0.9.13:2380"),
        ];
        let ic = initial_cluster(&members, "cp3", "https://127.0.9.13:2380");
        let text: Vec<String> = ic
            .iter()
            .map(|e| format!("{}={}", e.name, e.peer_url))
            .collect();
        assert_eq!(
            text,
            [
                "cp1=https://127.0.9.11:2380",
                "b2=https://127.0.9.12:2380",
                "cp3=https://127.0.9.13:2380"
            ]
        );
        assert_eq!(peer_url("fd00::1"), "https://[fd00::1]:2380");
        assert_eq!(client_url("127.0.9.12"), "https://127.0.9.12:2379");
    }
}
