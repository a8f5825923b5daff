//! kubeadm's etcd membership steps (`etcdutil`) against the cluster's real etcd: a client
//! from the etcd static pods, the health check, member add (as a learner from 1.29) with
//! kubeadm's retries, promotion once the learner has synced, the wait for the cluster, and
//! member remove for `kubeadm reset`, each retried as that version of kubeadm retries it
//! (`EtcdRetry`).

use std::time::Duration;

use crate::lab::components::client::ApiClient;
use crate::lab::etcd::{EtcdClient, Member};
use crate::lab::files::EtcdMember;
use crate::lab::{LabDir, LabNode};

/// The static pods' label kubeadm selects etcd by, and the annotation it reads.
const ETCD_PODS: &str =
    "/api/v1/namespaces/kube-system/pods?labelSelector=component%3Detcd%2Ctier%3Dcontrol-plane";
const ADVERTISE_ANNOTATION: &str = "kubeadm.kubernetes.io/etcd.advertise-client-urls";

/// The join's wait for the cluster (`etcdHealthyCheckRetries` and `etcdHealthyCheckInterval`
/// in kubeadm's `phases/etcd/local.go`): 8 tries, 5 s apart ("This can take up to 40s").
pub const AVAILABLE_TRIES: u32 = 8;
pub const AVAILABLE_INTERVAL: Duration = Duration::from_secs(5);

/// How kubeadm's etcd client (`cmd/kubeadm/app/util/etcd/etcd.go`) retries a member call
/// (add, promote, remove) that etcd refuses. Whatever the schedule, giving up returns the
/// last error etcd gave (`lastError`), not the wait's own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EtcdRetry {
    /// Up to 1.29: `wait.ExponentialBackoff(etcdBackoff)` with `Steps: 18, Duration: 100ms,
    /// Factor: 1.5, Jitter: 0.1` ("up to ~200 seconds"): 18 tries, 17 pauses. `deadline` is
    /// the lab's shortening (`lab up --kubeadm-etcd-timeout`): no pause that would end past
    /// it is taken.
    Backoff {
        steps: u32,
        first: Duration,
        factor: f64,
        jitter: f64,
        deadline: Option<Duration>,
    },
    /// From 1.30: `wait.PollUntilContextTimeout(EtcdAPICallRetryInterval (500ms), the
    /// EtcdAPICall timeout (2m; v1beta4's `timeouts.etcdAPICall`), immediate)`.
    Poll {
        interval: Duration,
        timeout: Duration,
    },
}

impl EtcdRetry {
    /// kubeadm's retry for `minor`, or the lab's shorter window when it was given one.
    pub fn for_version(minor: u32, lab_timeout: Option<Duration>) -> EtcdRetry {
        if minor <= 29 {
            EtcdRetry::Backoff {
                steps: 18,
                first: Duration::from_millis(100),
                factor: 1.5,
                jitter: 0.1,
                deadline: lab_timeout,
            }
        } else {
            EtcdRetry::Poll {
                interval: Duration::from_millis(500),
                timeout: lab_timeout.unwrap_or(Duration::from_secs(120)),
            }
        }
    }

    /// The pause after failed try `n` (from 0) before the next one, given how long the
    /// tries so far took and a jitter draw in [0, 1); `None` once kubeadm gives up.
    pub fn pause(&self, n: u32, elapsed: Duration, draw: f64) -> Option<Duration> {
        match *self {
            EtcdRetry::Backoff {
                steps,
                first,
                factor,
                jitter,
                deadline,
            } => {
                if n + 1 >= steps {
                    return None;
                }
                // wait.Backoff.Step: the current duration, jittered; the next is multiplied.
                let base = first.mul_f64(factor.powi(n as i32));
                let pause = base + base.mul_f64(jitter * draw);
                match deadline {
                    Some(d) if elapsed + pause > d => None,
                    _ => Some(pause),
                }
            }
            EtcdRetry::Poll { interval, timeout } => {
                (elapsed + interval <= timeout).then_some(interval)
            }
        }
    }

    /// How long kubeadm pauses between tries in all (no jitter, no time in the tries).
    pub fn total_pauses(&self) -> Duration {
        let mut total = Duration::ZERO;
        let mut n = 0;
        while let Some(p) = self.pause(n, total, 0.0) {
            total += p;
            n += 1;
        }
        total
    }

    /// Runs `attempt` until it succeeds or kubeadm would give up; the error is the last one.
    pub async fn run<T, F, Fut>(&self, mut attempt: F) -> Result<T, String>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let start = tokio::time::Instant::now();
        let mut n = 0;
        loop {
            let err = match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let Some(pause) = self.pause(n, start.elapsed(), jitter_draw()) else {
                return Err(err);
            };
            tokio::time::sleep(pause).await;
            n += 1;
        }
    }
}

/// A draw in [0, 1) for the backoff's jitter.
fn jitter_draw() -> f64 {
    let mut b = [0u8; 4];
    if crate::pki::random_bytes(&mut b).is_err() {
        return 0.0;
    }
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

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
/// join), every refusal retried as `retry` says; the members for `--initial-cluster`,
/// unnamed ones by their id.
pub async fn add_member(
    client: &EtcdClient,
    name: &str,
    peer: &str,
    learner: bool,
    retry: &EtcdRetry,
) -> Result<Vec<EtcdMember>, String> {
    let members = retry
        .run(|| async {
            let members = client.member_list().await.map_err(|e| e.to_string())?;
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
                .map_err(|e| e.to_string())
        })
        .await?;
    Ok(initial_cluster(&members, name, peer))
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
pub async fn promote(client: &EtcdClient, peer: &str, retry: &EtcdRetry) -> Result<(), String> {
    retry
        .run(|| async {
            let m = member_by_peer(client, peer).await?;
            if !m.is_learner {
                return Ok(());
            }
            client
                .member_promote(&m.id)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
}

/// kubeadm's `WaitForClusterAvailable`: every endpoint (the new member's included) answers,
/// tried `tries` times `interval` apart.
pub async fn wait_available(
    client: &EtcdClient,
    extra_endpoint: &str,
    tries: u32,
    interval: Duration,
) -> Result<(), String> {
    let mut endpoints = client.endpoints();
    if !endpoints.iter().any(|e| e == extra_endpoint) {
        endpoints.push(extra_endpoint.to_string());
    }
    let all = client
        .with_endpoints(endpoints.clone())
        .map_err(|e| e.to_string())?;
    for i in 0..tries {
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        let mut ok = true;
        for ep in &endpoints {
            ok &= all.status(ep).await.is_ok_and(|s| s.errors.is_empty());
        }
        if ok {
            return Ok(());
        }
    }
    Err("timeout waiting for etcd cluster to be available".into())
}

/// kubeadm's `RemoveStackedEtcdMemberFromCluster`: nothing when this is the last member,
/// else remove the member with this node's peer URL, retried as kubeadm's `RemoveMember`
/// (etcd refuses it, `etcdserver: unhealthy cluster`, until every member has been connected
/// for its 5 s health interval).
pub async fn remove_own_member(
    client: &EtcdClient,
    addr: &str,
    retry: &EtcdRetry,
) -> Result<(), String> {
    let members = client.member_list().await.map_err(|e| e.to_string())?;
    if members.len() == 1 && client.endpoints().iter().any(|e| *e == client_url(addr)) {
        return Ok(());
    }
    let m = member_by_peer(client, &peer_url(addr)).await?;
    retry
        .run(|| async {
            match client.member_remove(&m.id).await {
                Ok(_) => Ok(()),
                // Gone already (a retry that raced): what was wanted.
                Err(e) if e.to_string().contains("member not found") => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
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

    #[test]
    fn kubeadm_backs_off_about_200_seconds_until_1_29_and_polls_2_minutes_from_1_30() {
        for minor in 23..=29 {
            let r = EtcdRetry::for_version(minor, None);
            // 100 ms × (1.5^17 − 1) / 0.5: 17 pauses, the last 65.7 s.
            let total = r.total_pauses().as_secs_f64();
            assert!((196.0..197.5).contains(&total), "{minor}: {total}");
            let ms = |n, draw| r.pause(n, Duration::ZERO, draw).map(|d| d.as_millis());
            assert_eq!(ms(0, 0.0), Some(100));
            assert_eq!(ms(1, 0.0), Some(150));
            // The jitter adds up to 10 %.
            assert_eq!(ms(0, 0.999), Some(109));
            assert!(ms(16, 0.0).is_some());
            assert_eq!(ms(17, 0.0), None, "18 tries");
        }
        for minor in 30..=33 {
            let r = EtcdRetry::for_version(minor, None);
            let half = Some(Duration::from_millis(500));
            assert_eq!(r.pause(0, Duration::ZERO, 0.5), half);
            assert_eq!(r.pause(238, Duration::from_millis(119_500), 0.5), half);
            assert_eq!(r.pause(239, Duration::from_millis(119_600), 0.5), None);
            assert_eq!(r.total_pauses(), Duration::from_secs(120));
        }
    }

    #[test]
    fn the_labs_timeout_shortens_either_schedule() {
        let short = Some(Duration::from_secs(5));
        let backoff = EtcdRetry::for_version(28, short);
        let total = backoff.total_pauses();
        assert!(
            total <= Duration::from_secs(5) && total > Duration::from_secs(3),
            "{total:?}"
        );
        assert_eq!(backoff.pause(0, Duration::from_millis(4950), 0.0), None);
        let poll = EtcdRetry::for_version(31, short);
        assert_eq!(poll.total_pauses(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn giving_up_returns_the_last_error_etcd_gave() {
        let retry = EtcdRetry::for_version(31, Some(Duration::from_secs(2)));
        let start = tokio::time::Instant::now();
        let tries = std::cell::Cell::new(0);
        let out: Result<(), String> = retry
            .run(|| {
                tries.set(tries.get() + 1);
                let n = tries.get();
                async move { Err(format!("etcdserver: unhealthy cluster ({n})")) }
            })
            .await;
        assert_eq!(tries.get(), 5, "at 0, 0.5, 1, 1.5 and 2 s");
        assert_eq!(out.unwrap_err(), "etcdserver: unhealthy cluster (5)");
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        tries.set(0);
        let out = retry
            .run(|| {
                tries.set(tries.get() + 1);
                let n = tries.get();
                async move {
                    if n < 3 {
                        Err("refused".to_string())
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(out, Ok(3));
    }
}
