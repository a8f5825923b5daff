//! What a node says about itself: tool versions, the container runtime kubeadm configured, the
//! kube-apiserver manifest's endpoint, and the sectioned output of observation's node script.

use std::collections::BTreeMap;

use base64::Engine;

use super::cert::{ca_pin, certificate};
use super::redact::redact_kubeconfig;
use crate::observed::{
    ApiserverEndpoint, ContainerRuntime, NodeObservation, Probe, SshFailure, SshProbe,
};
use crate::yaml::{self, Node};

/// The line that starts each section of the node script's output: `@@hactl NAME STATUS`.
pub const SECTION_MARK: &str = "@@hactl ";
/// The last section: its absence means the output was cut short.
pub const END_SECTION: &str = "end";

/// How a section ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SectionStatus {
    /// A file, read whole.
    Ok,
    /// A file that does not exist.
    Absent,
    /// A file that exists but could not be read; the body is the shell's words.
    Unreadable,
    /// A command and its exit code; the body is its stdout and stderr.
    Exit(i32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub status: SectionStatus,
    /// Decoded (the script base64-encodes every body).
    pub body: Vec<u8>,
}

impl Section {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body of a file that was read, or of a command that exited 0.
    pub fn ok_text(&self) -> Option<String> {
        matches!(self.status, SectionStatus::Ok | SectionStatus::Exit(0)).then(|| self.text())
    }
}

/// Why the script's output could not be split into sections.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SectionError {
    #[error("section {0:?}: unknown status {1:?}")]
    Status(String, String),
    #[error("section {0:?}: body is not base64: {1}")]
    Base64(String, String),
    #[error("the output ended before the last section (last seen: {0:?})")]
    Truncated(String),
}

/// Splits the node script's stdout into named sections (text before the first mark, such as a
/// login banner, is ignored).
pub fn sections(stdout: &str) -> Result<BTreeMap<String, Section>, SectionError> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, SectionStatus, String)> = None;
    let finish = |cur: Option<(String, SectionStatus, String)>,
                  out: &mut BTreeMap<String, Section>|
     -> Result<(), SectionError> {
        if let Some((name, status, b64)) = cur {
            let body = base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| SectionError::Base64(name.clone(), e.to_string()))?;
            out.insert(name, Section { status, body });
        }
        Ok(())
    };
    let mut last = String::new();
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix(SECTION_MARK) {
            finish(current.take(), &mut out)?;
            let (name, status) = rest.split_once(' ').unwrap_or((rest, ""));
            let status = match status.trim() {
                "ok" => SectionStatus::Ok,
                "absent" => SectionStatus::Absent,
                "unreadable" => SectionStatus::Unreadable,
                s => match s.strip_prefix("exit:").and_then(|c| c.parse().ok()) {
                    Some(code) => SectionStatus::Exit(code),
                    None => return Err(SectionError::Status(name.into(), s.into())),
                },
            };
            last = name.to_string();
            current = Some((name.to_string(), status, String::new()));
        } else if let Some((_, _, b64)) = current.as_mut() {
            b64.extend(line.chars().filter(|c| !c.is_whitespace()));
        }
    }
    finish(current.take(), &mut out)?;
    if !out.contains_key(END_SECTION) {
        return Err(SectionError::Truncated(last));
    }
    Ok(out)
}

/// `kubeadm version -o short` → `v1.31.2`.
pub fn kubeadm_version(output: &str) -> Option<String> {
    output
        .split_whitespace()
        .find(|w| is_version(w))
        .map(str::to_string)
}

/// `kubelet --version` (`Kubernetes v1.31.2`) → `v1.31.2`.
pub fn kubelet_version(output: &str) -> Option<String> {
    output
        .split_whitespace()
        .find(|w| is_version(w))
        .map(str::to_string)
}

fn is_version(w: &str) -> bool {
    w.strip_prefix('v').is_some_and(|rest| {
        let mut parts = rest.split('.');
        let major = parts.next().is_some_and(|p| p.parse::<u32>().is_ok());
        let minor = parts.next().is_some_and(|p| p.parse::<u32>().is_ok());
        major && minor
    })
}

/// What the node says about its container runtime.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeEvidence<'a> {
    /// `/var/lib/kubelet/kubeadm-flags.env`.
    pub kubeadm_flags: Option<&'a str>,
    /// `/var/lib/kubelet/config.yaml`.
    pub kubelet_config: Option<&'a str>,
    /// The CRI sockets that exist, of those kubeadm looks for.
    pub sockets: &'a [String],
}

/// The runtime kubeadm configured, or the one installed on a node kubeadm has not touched yet.
///
/// In order: kubeadm-flags.env's `--container-runtime-endpoint` (every kubeadm with a CRI
/// runtime); config.yaml's `containerRuntimeEndpoint` (where newer kubeadm moved it);
/// dockershim's flags (`--container-runtime=docker`, `--network-plugin`, `--docker-endpoint`:
/// kubeadm up to 1.23 wrote no endpoint for docker); then the CRI socket kubeadm itself would
/// detect on a bare node.
pub fn container_runtime(e: &RuntimeEvidence<'_>) -> Option<ContainerRuntime> {
    let flags = e.kubeadm_flags.map(kubeadm_flags).unwrap_or_default();
    let flag = |name: &str| {
        flags
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if let Some(rt) = flag("container-runtime-endpoint").and_then(runtime_of_endpoint) {
        return Some(rt);
    }
    let config_endpoint = e.kubelet_config.and_then(|t| {
        yaml::parse(t).ok().and_then(|root| {
            root.get("containerRuntimeEndpoint")
                .and_then(Node::as_str)
                .map(str::to_string)
        })
    });
    if let Some(rt) = config_endpoint.as_deref().and_then(runtime_of_endpoint) {
        return Some(rt);
    }
    let dockershim = flag("container-runtime") == Some("docker")
        || flag("network-plugin").is_some()
        || flag("docker-endpoint").is_some();
    if dockershim && flag("container-runtime") != Some("remote") {
        return Some(ContainerRuntime::Docker);
    }
    e.sockets.iter().find_map(|s| runtime_of_endpoint(s))
}

/// The runtime a CRI endpoint or socket path belongs to.
pub fn runtime_of_endpoint(endpoint: &str) -> Option<ContainerRuntime> {
    let path = endpoint.rsplit('/').next().unwrap_or(endpoint);
    match path {
        "containerd.sock" => Some(ContainerRuntime::Containerd),
        "crio.sock" => Some(ContainerRuntime::CriO),
        "dockershim.sock" | "cri-dockerd.sock" | "docker.sock" => Some(ContainerRuntime::Docker),
        _ => None,
    }
}

/// The CRI sockets kubeadm probes on a node with no configuration (`--cri-socket` unset), in
/// its order; docker's plain socket only counts below 1.24, when dockershim served it.
pub const CRI_SOCKETS: &[&str] = &[
    "/var/run/containerd/containerd.sock",
    "/run/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
    "/run/crio/crio.sock",
    "/var/run/cri-dockerd.sock",
    "/run/cri-dockerd.sock",
    "/var/run/dockershim.sock",
    "/var/run/docker.sock",
];

/// `KUBELET_KUBEADM_ARGS="--a=b --c=d"` → `[(a, b), (c, d)]`.
pub fn kubeadm_flags(env: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in env.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        if key.trim() != "KUBELET_KUBEADM_ARGS" {
            continue;
        }
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        for arg in value.split_whitespace() {
            if let Some(flag) = arg.strip_prefix("--") {
                let (k, v) = flag.split_once('=').unwrap_or((flag, ""));
                out.push((k.to_string(), v.to_string()));
            }
        }
    }
    out
}

/// `--advertise-address` and `--secure-port` (default 6443) of the kube-apiserver static pod
/// manifest; `None` when the manifest names no address (not one kubeadm wrote).
pub fn apiserver_endpoint(manifest: &str) -> Option<ApiserverEndpoint> {
    let root = yaml::parse(manifest).ok()?;
    let containers = root.get("spec")?.get("containers")?;
    let container = containers
        .items()
        .iter()
        .find(|c| c.get("name").and_then(Node::as_str) == Some("kube-apiserver"))?;
    let args: Vec<&str> = ["command", "args"]
        .iter()
        .flat_map(|k| container.get(k).map(Node::items).unwrap_or(&[]))
        .filter_map(Node::as_str)
        .collect();
    let flag = |name: &str| -> Option<&str> {
        let long = format!("--{name}");
        args.iter().enumerate().find_map(|(i, a)| {
            if let Some(v) = a.strip_prefix(&long) {
                match v.strip_prefix('=') {
                    Some(v) => Some(v),
                    None if v.is_empty() => args.get(i + 1).copied(),
                    None => None,
                }
            } else {
                None
            }
        })
    };
    let annotation = root
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get("kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint"))
        .and_then(Node::as_str)
        .and_then(|e| e.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']'])));
    let address = flag("advertise-address").or(annotation)?;
    let port = match flag("secure-port") {
        Some(p) => p.parse().ok()?,
        None => 6443,
    };
    Some(ApiserverEndpoint {
        advertise_address: address.to_string(),
        port,
    })
}

/// The shell functions every observation script starts with (POSIX sh; GNU or busybox
/// tools): `h NAME STATUS` starts a section, `c NAME CMD…` runs a command into one (its
/// stdout and stderr, base64, and its exit code), `f NAME PATH` reads a file into one (`ok`,
/// `absent`, or `unreadable` with the shell's words).
pub const SCRIPT_PRELUDE: &str = r#"export LC_ALL=C PATH="$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
h() { printf '\n@@hactl %s %s\n' "$1" "$2"; }
c() { n=$1; shift; o=$( { "$@"; } 2>&1 ); r=$?; h "$n" "exit:$r"; printf '%s' "$o" | base64; }
f() {
  if [ -e "$2" ]; then
    if o=$( { base64 < "$2"; } 2>&1 ); then h "$1" ok; printf '%s\n' "$o"
    else h "$1" unreadable; printf '%s' "$o" | base64; fi
  elif [ -e "${2%/*}" ] && [ ! -x "${2%/*}" ]; then
    h "$1" unreadable; printf 'cannot search %s: Permission denied' "${2%/*}" | base64
  else h "$1" absent; fi
}
"#;

/// The kubeconfig files kubeadm and the kubelet write in `/etc/kubernetes`.
pub const KUBECONFIGS: &[&str] = &[
    "admin.conf",
    "super-admin.conf",
    "kubelet.conf",
    "controller-manager.conf",
    "scheduler.conf",
];

/// The other files the node script reads: (section, path).
pub const NODE_FILES: &[(&str, &str)] = &[
    ("kubeadm-flags.env", "/var/lib/kubelet/kubeadm-flags.env"),
    ("kubelet-config.yaml", "/var/lib/kubelet/config.yaml"),
    ("apiserver.crt", "/etc/kubernetes/pki/apiserver.crt"),
    ("ca.crt", "/etc/kubernetes/pki/ca.crt"),
    (
        "kube-apiserver.yaml",
        "/etc/kubernetes/manifests/kube-apiserver.yaml",
    ),
];

/// The script that reads everything observation wants from a node in one round trip.
pub fn node_script() -> String {
    let mut s = String::from(SCRIPT_PRELUDE);
    s.push_str("socks() { for s in");
    for sock in CRI_SOCKETS {
        s.push(' ');
        s.push_str(sock);
    }
    s.push_str("; do [ -S \"$s\" ] && echo \"$s\"; done; return 0; }\n");
    s.push_str("mtimes() { for p in");
    for name in KUBECONFIGS {
        s.push_str(&format!(" /etc/kubernetes/{name}"));
    }
    s.push_str("; do [ -e \"$p\" ] && stat -c '%Y %n' \"$p\"; done; return 0; }\n");
    s.push_str("c user id -un\nc kubeadm kubeadm version -o short\nc kubelet kubelet --version\nc sockets socks\n");
    // TZ=UTC: systemd formats timestamps in the local zone.
    s.push_str("c kubelet-unit env TZ=UTC systemctl show kubelet -p ActiveState -p ActiveEnterTimestamp\nc mtimes mtimes\n");
    for name in KUBECONFIGS {
        s.push_str(&format!("f {name} /etc/kubernetes/{name}\n"));
    }
    for (name, path) in NODE_FILES {
        s.push_str(&format!("f {name} {path}\n"));
    }
    s.push_str(&format!("h {END_SECTION} exit:0\n"));
    s
}

/// The path the node script read for a section, for messages.
pub fn section_path(section: &str) -> String {
    NODE_FILES
        .iter()
        .find(|(n, _)| *n == section)
        .map(|(_, p)| (*p).to_string())
        .unwrap_or_else(|| format!("/etc/kubernetes/{section}"))
}

/// A node's observation from the node script's sections, and what stays in memory.
#[derive(Clone, Debug)]
pub struct NodeRead {
    pub observation: NodeObservation,
    /// admin.conf as is (keys included).
    pub admin_conf: Option<String>,
    pub ca_pem: Option<String>,
    /// What was found but could not be understood (a certificate that does not parse): the
    /// observation leaves it out, the caller says so.
    pub warnings: Vec<String>,
}

/// The observation of `node` at `address` from the node script's sections. A file that
/// exists but could not be read fails the node's `ssh` probe (a partial reading would look
/// like a node without that file) with the file, the cause and the fix.
pub fn node_read(node: &str, address: &str, sections: &BTreeMap<String, Section>) -> NodeRead {
    let mut obs = NodeObservation::new(address, SshProbe::Ok);
    let unreadable: Vec<String> = sections
        .iter()
        .filter(|(_, s)| s.status == SectionStatus::Unreadable)
        .map(|(name, s)| {
            let words = s.text();
            let cause = words.trim().rsplit(": ").next().unwrap_or("").trim();
            let cause = if cause.is_empty() {
                "unreadable"
            } else {
                cause
            };
            format!("{} ({cause})", section_path(name))
        })
        .collect();
    if !unreadable.is_empty() {
        let user = sections
            .get("user")
            .and_then(Section::ok_text)
            .map(|u| u.trim().to_string())
            .unwrap_or_default();
        let who = if user.is_empty() {
            String::new()
        } else {
            format!(" as user {user}")
        };
        // The plan says the fix: it knows whether hactl was meant to read as root.
        obs.ssh = SshProbe::failed(
            SshFailure::Unreadable,
            format!("{}{who}", unreadable.join(", ")),
        );
        return NodeRead {
            observation: obs,
            admin_conf: None,
            ca_pem: None,
            warnings: Vec::new(),
        };
    }
    let ok = |name: &str| sections.get(name).and_then(Section::ok_text);
    let mut warnings = Vec::new();
    obs.kubeadm_version = ok("kubeadm").as_deref().and_then(kubeadm_version);
    obs.kubelet_version = ok("kubelet").as_deref().and_then(kubelet_version);
    let flags = ok("kubeadm-flags.env");
    let config = ok("kubelet-config.yaml");
    let sockets: Vec<String> = ok("sockets")
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    obs.container_runtime = container_runtime(&RuntimeEvidence {
        kubeadm_flags: flags.as_deref(),
        kubelet_config: config.as_deref(),
        sockets: &sockets,
    });
    for name in KUBECONFIGS {
        if let Some(text) = ok(name) {
            obs.kubeconfigs
                .insert((*name).to_string(), redact_kubeconfig(&text));
            if let Some(s) = sections.get(*name) {
                obs.kubeconfigs_sha256
                    .insert((*name).to_string(), crate::plan::sha256(&s.body));
            }
        }
    }
    obs.kubelet_started_at = ok("kubelet-unit").as_deref().and_then(unit_started_at);
    obs.kubeconfigs_modified_at = modified_times(&ok("mtimes").unwrap_or_default())
        .into_iter()
        .filter(|(name, _)| obs.kubeconfigs.contains_key(name))
        .collect();
    let ca_pem = ok("ca.crt");
    if let Some(ca) = &ca_pem {
        match ca_pin(ca) {
            Ok(pin) => obs.ca_pin = Some(pin),
            Err(e) => warnings.push(format!("{node}: /etc/kubernetes/pki/ca.crt: {e}")),
        }
    }
    if let Some(crt) = ok("apiserver.crt") {
        match certificate(&crt, ca_pem.as_deref()) {
            Ok(c) => obs.apiserver_cert = Some(c),
            Err(e) => warnings.push(format!("{node}: /etc/kubernetes/pki/apiserver.crt: {e}")),
        }
    }
    if let Some(manifest) = ok("kube-apiserver.yaml") {
        obs.apiserver_endpoint = apiserver_endpoint(&manifest);
        if obs.apiserver_endpoint.is_none() {
            warnings.push(format!(
                "{node}: /etc/kubernetes/manifests/kube-apiserver.yaml names no --advertise-address"
            ));
        }
    }
    NodeRead {
        observation: obs,
        admin_conf: ok("admin.conf"),
        ca_pem,
        warnings,
    }
}

/// When an active unit became active, from `systemctl show -p ActiveState -p
/// ActiveEnterTimestamp` run with `TZ=UTC` (`ActiveEnterTimestamp=Tue 2026-11-24 08:15:17
/// UTC`), as RFC 3339; `None` when the unit is not active (systemd keeps the last start of a
/// stopped unit) or the time is not in that form.
pub fn unit_started_at(show: &str) -> Option<String> {
    let props: BTreeMap<&str, &str> = show
        .lines()
        .filter_map(|l| l.trim().split_once('='))
        .collect();
    if props.get("ActiveState") != Some(&"active") {
        return None;
    }
    let words: Vec<&str> = props
        .get("ActiveEnterTimestamp")?
        .split_whitespace()
        .collect();
    let [_weekday, date, clock, "UTC"] = words.as_slice() else {
        return None;
    };
    let text = format!("{date}T{clock}Z");
    time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(text)
}

/// File name → modification time (RFC 3339, whole seconds) from `stat -c '%Y %n'` lines.
pub fn modified_times(stat: &str) -> BTreeMap<String, String> {
    stat.lines()
        .filter_map(|l| {
            let (secs, path) = l.trim().split_once(' ')?;
            let t = time::OffsetDateTime::from_unix_timestamp(secs.parse().ok()?).ok()?;
            let text = t
                .format(&time::format_description::well_known::Rfc3339)
                .ok()?;
            let name = path.rsplit('/').next()?;
            Some((name.to_string(), text))
        })
        .collect()
}

/// `'text'` for sh.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `ADDRESS:PORT` (`[v6]:PORT`) split, when it is an IP address or host name and a port.
pub fn split_target(target: &str) -> Option<(String, u16)> {
    let (host, port) = target.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = port.parse().ok()?;
    let fine = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    fine.then(|| (host.to_string(), port))
}

/// The script testing TCP from a node to each target (in parallel, each within `timeout`
/// seconds), with bash's `/dev/tcp`; section `i` for `targets[i]`. Invalid targets get none.
pub fn reachability_script(targets: &[String], timeout_secs: f64) -> String {
    let mut s = String::from(SCRIPT_PRELUDE);
    // One printf per probe: background probes must not interleave their lines.
    s.push_str(&format!(
        "t() {{ o=$( {{ timeout {timeout_secs:.1} bash -c 'exec 3<>\"/dev/tcp/$0/$1\"' \"$2\" \"$3\"; }} 2>&1 ); r=$?; \
         printf '\\n@@hactl %s exit:%s\\n%s\\n' \"$1\" \"$r\" \"$(printf '%s' \"$o\" | base64 | tr -d '\\n')\"; }}\n"
    ));
    for (i, target) in targets.iter().enumerate() {
        if let Some((host, port)) = split_target(target) {
            s.push_str(&format!("t {i} {} {port} &\n", shell_quote(&host)));
        }
    }
    s.push_str(&format!("wait\nh {END_SECTION} exit:0\n"));
    s
}

/// The probes of [`reachability_script`]'s output, keyed by target.
pub fn reachability(
    node: &str,
    targets: &[String],
    timeout_secs: f64,
    sections: &BTreeMap<String, Section>,
) -> BTreeMap<String, Probe> {
    targets
        .iter()
        .enumerate()
        .map(|(i, target)| {
            let fail = |why: String| Probe::Failed {
                reason: format!("TCP from {node} to {target}: {why}"),
            };
            let probe = if split_target(target).is_none() {
                fail("not an ADDRESS:PORT".into())
            } else {
                match sections.get(&i.to_string()) {
                    None => fail("the test printed nothing".into()),
                    Some(s) => match s.status {
                        SectionStatus::Exit(0) => Probe::Ok,
                        SectionStatus::Exit(124) => fail(format!(
                            "no answer within {timeout_secs:.1}s (timed out: a firewall dropping packets, or the host is down)"
                        )),
                        SectionStatus::Exit(127) => fail(format!(
                            "could not run the test ({}); hactl needs bash and timeout on the node",
                            s.text().trim()
                        )),
                        _ => {
                            let text = s.text();
                            let last = text.trim().lines().last().unwrap_or("").trim();
                            let cause = last.rsplit(": ").next().unwrap_or(last);
                            fail(if cause.is_empty() {
                                "connection failed".into()
                            } else {
                                cause.to_string()
                            })
                        }
                    },
                }
            };
            (target.clone(), probe)
        })
        .collect()
}
