//! etcd as `etcdctl` (3.4/3.5, `ETCDCTL_API=3`) prints it: `member list -w json` and
//! `endpoint health --cluster -w json` (or its text form), into an [`EtcdObservation`].

use serde::Deserialize;

use crate::observed::{EtcdMember, EtcdObservation, Probe};

#[derive(Deserialize)]
struct MemberList {
    // Required: etcd's client logs JSON lines too, and they have no `members`.
    members: Vec<RawMember>,
}

#[derive(Deserialize)]
struct RawMember {
    /// A uint64 in JSON: serde_json reads it exactly.
    #[serde(rename = "ID")]
    id: u64,
    #[serde(default)]
    name: String,
    #[serde(rename = "peerURLs", default)]
    peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    client_urls: Vec<String>,
    #[serde(rename = "isLearner", default)]
    is_learner: bool,
}

/// The members of `etcdctl member list -w json` (stdout and stderr together), ordered by peer
/// URL (etcd lists them by member id, which is random, and output is deterministic); ids in
/// hexadecimal as etcdctl's table prints them.
pub fn member_list(output: &str) -> Result<Vec<EtcdMember>, String> {
    let list = output
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .find_map(|l| serde_json::from_str::<MemberList>(l).ok())
        .ok_or_else(|| {
            let words = etcdctl_words(output);
            if words.is_empty() {
                "etcdctl printed no member list".to_string()
            } else {
                words
            }
        })?;
    let mut members: Vec<EtcdMember> = list
        .members
        .into_iter()
        .map(|m| EtcdMember {
            id: format!("{:x}", m.id),
            name: m.name,
            peer_urls: m.peer_urls,
            client_urls: m.client_urls,
            is_learner: m.is_learner,
            healthy: None,
        })
        .collect();
    members.sort_by(|a, b| (&a.peer_urls, &a.name, &a.id).cmp(&(&b.peer_urls, &b.name, &b.id)));
    Ok(members)
}

/// One endpoint of `etcdctl endpoint health`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct EndpointHealth {
    #[serde(rename = "endpoint")]
    pub endpoint: String,
    #[serde(rename = "health")]
    pub healthy: bool,
    #[serde(default)]
    pub error: String,
}

/// The endpoints of `etcdctl endpoint health` output, `-w json` (`[{"endpoint", "health",
/// "took", "error"}]`) or text (`URL is healthy: …` / `URL is unhealthy: …`).
pub fn endpoint_health(output: &str) -> Vec<EndpointHealth> {
    if let Some(list) = output
        .lines()
        .filter(|l| l.trim_start().starts_with('['))
        .find_map(|l| serde_json::from_str::<Vec<EndpointHealth>>(l).ok())
    {
        return list;
    }
    output
        .lines()
        .filter_map(|l| {
            let (endpoint, rest) = l.trim().split_once(' ')?;
            if rest.starts_with("is healthy") {
                Some(EndpointHealth {
                    endpoint: endpoint.to_string(),
                    healthy: true,
                    error: String::new(),
                })
            } else {
                rest.strip_prefix("is unhealthy").map(|why| EndpointHealth {
                    endpoint: endpoint.to_string(),
                    healthy: false,
                    error: why.trim_start_matches(':').trim().to_string(),
                })
            }
        })
        .collect()
}

/// What etcdctl said, without its JSON: its own lines (`Error: …`), then the last distinct
/// `error` of the client's JSON log lines (the cause: refused, deadline, certificate).
pub fn etcdctl_words(output: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut cause: Option<String> = None;
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with('{') || line.starts_with('[') {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                && let Some(e) = v.get("error").and_then(|e| e.as_str())
            {
                cause = Some(e.to_string());
            }
        } else if !words.iter().any(|w| w == line) {
            words.push(line.to_string());
        }
    }
    if let Some(cause) = cause
        && !words.iter().any(|w| w.contains(&cause))
    {
        words.push(cause);
    }
    words.join("; ")
}

/// The etcd observation from `node`'s etcdctl: the member list (exit code and output) and
/// `endpoint health --cluster` (exit code and output). A member list that failed leaves etcd
/// unobserved (`observed_from: None`) with etcdctl's words as the health's reason.
pub fn etcd_observation(
    node: &str,
    endpoint: &str,
    members: (i32, &str),
    health: (i32, &str),
) -> EtcdObservation {
    let listed = if members.0 == 0 {
        member_list(members.1)
    } else {
        Err(etcdctl_words(members.1))
    };
    let mut members = match listed {
        Ok(m) => m,
        Err(words) => {
            return EtcdObservation {
                observed_from: None,
                members: Vec::new(),
                health: Probe::Failed {
                    reason: format!(
                        "etcdctl member list on {node} (--endpoints {endpoint}) failed: {words}"
                    ),
                },
            };
        }
    };
    let checks = endpoint_health(health.1);
    for m in members.iter_mut().filter(|m| m.started()) {
        let mine = checks.iter().find(|c| m.client_urls.contains(&c.endpoint));
        // A started member absent from the output was checked and did not answer.
        m.healthy = Some(mine.is_some_and(|c| c.healthy));
    }
    let unhealthy: Vec<String> = checks
        .iter()
        .filter(|c| !c.healthy)
        .map(|c| {
            if c.error.is_empty() {
                format!("{} is unhealthy", c.endpoint)
            } else {
                format!("{} is unhealthy: {}", c.endpoint, c.error)
            }
        })
        .collect();
    let all_ok = members.iter().all(|m| m.healthy != Some(false));
    let health = if health.0 == 0 && all_ok && unhealthy.is_empty() {
        Probe::Ok
    } else {
        let mut reason = unhealthy;
        let words = etcdctl_words(health.1);
        if !words.is_empty() && !reason.iter().any(|r| words.contains(r.as_str())) {
            reason.push(words);
        }
        if reason.is_empty() {
            reason.push(format!("etcdctl endpoint health exited {}", health.0));
        }
        Probe::Failed {
            reason: format!("etcd on {node}: {}", reason.join("; ")),
        }
    };
    EtcdObservation {
        observed_from: Some(node.to_string()),
        members,
        health,
    }
}

/// The client certificate pairs kubeadm writes that etcd accepts, in the order tried:
/// `etcd/healthcheck-client` (made for exactly this), then the API server's and the peer's.
pub const ETCD_CLIENT_CERTS: &[&str] = &[
    "/etc/kubernetes/pki/etcd/healthcheck-client",
    "/etc/kubernetes/pki/apiserver-etcd-client",
    "/etc/kubernetes/pki/etcd/peer",
];

/// The script that runs `etcdctl member list` and `endpoint health --cluster`, side by side,
/// on a control-plane node, against the node's own etcd: its advertised client URL from the etcd
/// manifest, else the API server's advertise address, else 127.0.0.1 (kubeadm's
/// `--etcd-servers`). Sections `endpoint`, `members`, `health`.
pub fn etcd_script() -> String {
    let mut s = String::from(super::node::SCRIPT_PRELUDE);
    s.push_str(
        r#"export ETCDCTL_API=3
m=/etc/kubernetes/manifests
ep=$(sed -n 's/^[[:space:]]*-[[:space:]]*--advertise-client-urls=\([^,[:space:]]*\).*/\1/p' $m/etcd.yaml 2>/dev/null | head -n 1)
if [ -z "$ep" ]; then
  a=$(sed -n 's/^[[:space:]]*-[[:space:]]*--advertise-address=\([^[:space:]]*\).*/\1/p' $m/kube-apiserver.yaml 2>/dev/null | head -n 1)
  case "$a" in "") ep=https://127.0.0.1:2379;; *:*) ep="https://[$a]:2379";; *) ep="https://$a:2379";; esac
fi
cert=
for p in"#,
    );
    for c in ETCD_CLIENT_CERTS {
        s.push(' ');
        s.push_str(c);
    }
    s.push_str(
        r#"; do if [ -r "$p.crt" ] && [ -r "$p.key" ]; then cert=$p; break; fi; done
h endpoint exit:0; printf '%s' "$ep" | base64
e() {
  if [ -z "$cert" ]; then echo "no etcd client certificate in /etc/kubernetes/pki (etcd/healthcheck-client, apiserver-etcd-client, etcd/peer)"; return 1; fi
  etcdctl --endpoints "$ep" --cacert /etc/kubernetes/pki/etcd/ca.crt --cert "$cert.crt" --key "$cert.key" --dial-timeout 3s --command-timeout 5s "$@"
}
# Both at once (a pipeline's two sides run side by side; the health section waits in the pipe
# and follows the members'): each etcdctl spends most of its time starting and connecting.
{ c health e endpoint health --cluster -w json; } | { c members e member list -w json </dev/null; cat; }
"#,
    );
    s.push_str(&format!("h {} exit:0\n", super::node::END_SECTION));
    s
}
