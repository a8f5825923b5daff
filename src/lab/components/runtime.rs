//! The simulated container runtime of one node (containerd or docker): pod sandboxes and
//! containers with real-looking ids, and the `crictl` / `docker` commands that show and
//! stop them, with the real tools' output shapes and exit codes.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::lab::ExecOutput;
use crate::observed::ContainerRuntime;

/// `n` random lower-case hex digits (container ids, uids).
pub fn rand_hex(n: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::with_capacity(n + 16);
    while out.len() < n {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(n);
    out
}

/// `n` random characters from Kubernetes' generateName alphabet (`bcdfghjklmnpqrstvwxz2456789`).
pub fn rand_suffix(n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    rand_hex(n * 2)
        .as_bytes()
        .chunks(2)
        .map(|c| {
            let v = u8::from_str_radix(std::str::from_utf8(c).unwrap_or("0"), 16).unwrap_or(0);
            ALPHABET[v as usize % ALPHABET.len()] as char
        })
        .collect()
}

/// A random RFC 4122 version-4 UUID.
pub fn rand_uuid() -> String {
    let h = rand_hex(32);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxState {
    Ready,
    NotReady,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerState {
    Running,
    Exited(i32),
}

#[derive(Clone, Debug)]
pub struct Sandbox {
    pub id: String,
    pub pod: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    pub state: SandboxState,
    pub created: SystemTime,
}

#[derive(Clone, Debug)]
pub struct Container {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub command: String,
    pub attempt: u32,
    pub state: ContainerState,
    pub created: SystemTime,
    pub finished: Option<SystemTime>,
}

/// One node's runtime. The kubelet creates and restarts; node commands stop and remove.
#[derive(Debug)]
pub struct Runtime {
    pub kind: ContainerRuntime,
    pub sandboxes: Vec<Sandbox>,
    pub containers: Vec<Container>,
}

impl Runtime {
    pub fn new(kind: ContainerRuntime) -> Self {
        Runtime {
            kind,
            sandboxes: Vec::new(),
            containers: Vec::new(),
        }
    }

    /// `crictl runp`: a new Ready sandbox; its id.
    pub fn run_pod(&mut self, pod: &str, namespace: &str, uid: &str, attempt: u32) -> String {
        let id = rand_hex(64);
        self.sandboxes.push(Sandbox {
            id: id.clone(),
            pod: pod.into(),
            namespace: namespace.into(),
            uid: uid.into(),
            attempt,
            state: SandboxState::Ready,
            created: SystemTime::now(),
        });
        id
    }

    /// `crictl create` + `start`: a running container in the sandbox; its id.
    pub fn start_container(
        &mut self,
        sandbox_id: &str,
        name: &str,
        image: &str,
        command: &str,
        attempt: u32,
    ) -> String {
        let id = rand_hex(64);
        self.containers.push(Container {
            id: id.clone(),
            sandbox_id: sandbox_id.into(),
            name: name.into(),
            image: image.into(),
            image_id: image_id(image),
            command: command.into(),
            attempt,
            state: ContainerState::Running,
            created: SystemTime::now(),
            finished: None,
        });
        id
    }

    pub fn sandbox(&self, id: &str) -> Option<&Sandbox> {
        self.sandboxes.iter().find(|s| s.id == id)
    }

    pub fn container(&self, id: &str) -> Option<&Container> {
        self.containers.iter().find(|c| c.id == id)
    }

    /// The container ended on its own (its process exited).
    pub fn container_exited(&mut self, id: &str, code: i32) {
        if let Some(c) = self.containers.iter_mut().find(|c| c.id == id)
            && c.state == ContainerState::Running
        {
            c.state = ContainerState::Exited(code);
            c.finished = Some(SystemTime::now());
        }
    }

    /// Stops a sandbox and its containers (SIGKILL: 137).
    pub fn stop_sandbox(&mut self, id: &str) {
        if let Some(s) = self.sandboxes.iter_mut().find(|s| s.id == id) {
            s.state = SandboxState::NotReady;
        }
        for c in self.containers.iter_mut().filter(|c| c.sandbox_id == id) {
            if c.state == ContainerState::Running {
                c.state = ContainerState::Exited(137);
                c.finished = Some(SystemTime::now());
            }
        }
    }

    pub fn remove_sandbox(&mut self, id: &str) {
        self.sandboxes.retain(|s| s.id != id);
        self.containers.retain(|c| c.sandbox_id != id);
    }

    /// Forgets exited containers of a sandbox but the newest per name (as the kubelet's GC).
    pub fn gc(&mut self) {
        let live: Vec<String> = self.sandboxes.iter().map(|s| s.id.clone()).collect();
        self.containers.retain(|c| live.contains(&c.sandbox_id));
        // Keep only the last NotReady sandbox per pod.
        let mut seen = std::collections::HashSet::new();
        let mut keep = Vec::new();
        for s in self.sandboxes.iter().rev() {
            if s.state == SandboxState::Ready || seen.insert((s.pod.clone(), s.namespace.clone())) {
                keep.push(s.id.clone());
            }
        }
        self.sandboxes.retain(|s| keep.contains(&s.id));
        self.containers.retain(|c| keep.contains(&c.sandbox_id));
    }

    /// Full id of the unique sandbox whose id starts with `prefix` (containerd resolves prefixes).
    fn find_sandbox(&self, prefix: &str) -> Option<String> {
        let m: Vec<&Sandbox> = self
            .sandboxes
            .iter()
            .filter(|s| !prefix.is_empty() && s.id.starts_with(prefix))
            .collect();
        (m.len() == 1).then(|| m[0].id.clone())
    }

    fn find_container(&self, prefix: &str) -> Option<String> {
        let m: Vec<&Container> = self
            .containers
            .iter()
            .filter(|c| !prefix.is_empty() && c.id.starts_with(prefix))
            .collect();
        (m.len() == 1).then(|| m[0].id.clone())
    }

    /// The pod sandbox (`k8s_POD_…`) or app container `docker kill` names; `None` if no such.
    fn find_docker(&self, name_or_id: &str) -> Option<DockerTarget> {
        if let Some(id) = self.find_sandbox(name_or_id) {
            return Some(DockerTarget::Sandbox(id));
        }
        if let Some(id) = self.find_container(name_or_id) {
            return Some(DockerTarget::Container(id));
        }
        for s in &self.sandboxes {
            if docker_sandbox_name(s) == name_or_id {
                return Some(DockerTarget::Sandbox(s.id.clone()));
            }
        }
        for c in &self.containers {
            if let Some(s) = self.sandbox(&c.sandbox_id)
                && docker_container_name(c, s) == name_or_id
            {
                return Some(DockerTarget::Container(c.id.clone()));
            }
        }
        None
    }
}

enum DockerTarget {
    Sandbox(String),
    Container(String),
}

fn image_id(image: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(image.as_bytes()))
}

fn docker_sandbox_name(s: &Sandbox) -> String {
    format!("k8s_POD_{}_{}_{}_{}", s.pod, s.namespace, s.uid, s.attempt)
}

fn docker_container_name(c: &Container, s: &Sandbox) -> String {
    format!(
        "k8s_{}_{}_{}_{}_{}",
        c.name, s.pod, s.namespace, s.uid, c.attempt
    )
}

/// Go's `units.HumanDuration`, as crictl and docker print ages.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let minutes = secs / 60;
    let hours = (d.as_secs_f64() / 3600.0 + 0.5) as u64;
    if d < Duration::from_secs(1) {
        "Less than a second".into()
    } else if secs == 1 {
        "1 second".into()
    } else if secs < 60 {
        format!("{secs} seconds")
    } else if minutes == 1 {
        "About a minute".into()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", hours / 24 / 365)
    }
}

fn ago(t: SystemTime) -> String {
    format!(
        "{} ago",
        human_duration(SystemTime::now().duration_since(t).unwrap_or_default())
    )
}

/// Go's text/tabwriter with `minwidth`, padding 3, space padding: every tab-terminated cell
/// is padded to its column's width; the last cell of a line is not.
pub fn tabwrite(rows: &[Vec<String>], minwidth: usize, padding: usize) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            if i + 1 < r.len() {
                widths[i] = widths[i].max((cell.chars().count() + padding).max(minwidth));
            }
        }
    }
    let mut out = String::new();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < r.len() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    }
    out
}

fn fatal(msg: &str) -> ExecOutput {
    // crictl reports errors through logrus at fatal level, exit 1.
    ExecOutput {
        stdout: String::new(),
        stderr: format!(
            "time=\"{}\" level=fatal msg={:?}\n",
            super::timefmt::now_rfc3339(),
            msg
        ),
        code: 1,
    }
}

fn ok(stdout: String) -> ExecOutput {
    ExecOutput {
        stdout,
        stderr: String::new(),
        code: 0,
    }
}

/// Parsed `--flag value`, `--flag=value` and boolean flags, as urfave/cli and cobra accept.
struct Flags {
    values: Vec<(String, String)>,
    bools: Vec<String>,
    args: Vec<String>,
}

fn parse_flags(argv: &[String], with_value: &[&str], boolean: &[&str]) -> Result<Flags, String> {
    let mut f = Flags {
        values: Vec::new(),
        bools: Vec::new(),
        args: Vec::new(),
    };
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        if a.starts_with('-') && a.len() > 1 {
            let (name, inline) = match a.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (a.clone(), None),
            };
            if with_value.contains(&name.as_str()) {
                let v = match inline {
                    Some(v) => v,
                    None => {
                        i += 1;
                        argv.get(i)
                            .cloned()
                            .ok_or_else(|| format!("flag needs an argument: {name}"))?
                    }
                };
                f.values.push((name, v));
            } else if boolean.contains(&name.as_str()) {
                f.bools.push(name);
            } else {
                return Err(format!("flag provided but not defined: {name}"));
            }
        } else {
            f.args.push(a.clone());
        }
        i += 1;
    }
    Ok(f)
}

impl Flags {
    fn value(&self, names: &[&str]) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| names.contains(&n.as_str()))
            .map(|(_, v)| v.as_str())
    }
    fn all(&self, names: &[&str]) -> Vec<&str> {
        self.values
            .iter()
            .filter(|(n, _)| names.contains(&n.as_str()))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    fn has(&self, names: &[&str]) -> bool {
        self.bools.iter().any(|b| names.contains(&b.as_str()))
    }
}

/// crictl's `--name` is a regular expression; the lab supports the usual forms: plain
/// substrings, `^` and `$` anchors.
fn name_matches(pattern: &str, name: &str) -> bool {
    let (start, p) = match pattern.strip_prefix('^') {
        Some(p) => (true, p),
        None => (false, pattern),
    };
    let (end, p) = match p.strip_suffix('$') {
        Some(p) => (true, p),
        None => (false, p),
    };
    match (start, end) {
        (true, true) => name == p,
        (true, false) => name.starts_with(p),
        (false, true) => name.ends_with(p),
        (false, false) => name.contains(p),
    }
}

const CRICTL_USAGE: &str = "NAME:\n   crictl - client for CRI\n\nUSAGE:\n   crictl [global options] command [command options] [arguments...]\n\nCOMMANDS:\n   pods    List pods\n   ps      List containers\n   rmp     Remove one or more pods\n   stopp   Stop one or more running pods\n";

/// `crictl …` (argv without `crictl`).
pub fn crictl(rt: &mut Runtime, argv: &[String]) -> ExecOutput {
    let Some(cmd) = argv.first() else {
        return ok(CRICTL_USAGE.to_string());
    };
    let rest = &argv[1..];
    match cmd.as_str() {
        "pods" => {
            let f = match parse_flags(
                rest,
                &["--name", "--namespace", "--state", "--label", "--id"],
                &[
                    "-q",
                    "--quiet",
                    "-v",
                    "--verbose",
                    "--no-trunc",
                    "--latest",
                    "-l",
                ],
            ) {
                Ok(f) => f,
                Err(e) => return fatal(&e),
            };
            let state = f.value(&["--state"]).map(str::to_ascii_lowercase);
            if let Some(s) = &state
                && s != "ready"
                && s != "notready"
            {
                return fatal("listing pod sandboxes: state should be ready or notready");
            }
            let mut pods: Vec<&Sandbox> = rt
                .sandboxes
                .iter()
                .filter(|s| f.value(&["--name"]).is_none_or(|n| name_matches(n, &s.pod)))
                .filter(|s| {
                    f.value(&["--namespace"])
                        .is_none_or(|n| name_matches(n, &s.namespace))
                })
                .filter(|s| f.value(&["--id"]).is_none_or(|id| s.id.starts_with(id)))
                .filter(|s| match state.as_deref() {
                    Some("ready") => s.state == SandboxState::Ready,
                    Some("notready") => s.state == SandboxState::NotReady,
                    _ => true,
                })
                .collect();
            pods.sort_by_key(|x| std::cmp::Reverse(x.created));
            if f.has(&["--latest", "-l"]) {
                pods.truncate(1);
            }
            if f.has(&["-q", "--quiet"]) {
                return ok(pods.iter().map(|s| format!("{}\n", s.id)).collect());
            }
            let trunc = !f.has(&["--no-trunc"]);
            let mut rows = vec![
                [
                    "POD ID",
                    "CREATED",
                    "STATE",
                    "NAME",
                    "NAMESPACE",
                    "ATTEMPT",
                    "RUNTIME",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for s in pods {
                rows.push(vec![
                    if trunc {
                        s.id[..13].to_string()
                    } else {
                        s.id.clone()
                    },
                    ago(s.created),
                    match s.state {
                        SandboxState::Ready => "Ready".into(),
                        SandboxState::NotReady => "NotReady".into(),
                    },
                    s.pod.clone(),
                    s.namespace.clone(),
                    s.attempt.to_string(),
                    "(default)".into(),
                ]);
            }
            ok(tabwrite(&rows, 20, 3))
        }
        "ps" => {
            let f = match parse_flags(
                rest,
                &[
                    "--name", "--pod", "-p", "--state", "--label", "--id", "--image",
                ],
                &[
                    "-a",
                    "--all",
                    "-q",
                    "--quiet",
                    "-v",
                    "--verbose",
                    "--no-trunc",
                    "--latest",
                    "-l",
                ],
            ) {
                Ok(f) => f,
                Err(e) => return fatal(&e),
            };
            let all = f.has(&["-a", "--all"]);
            let mut cs: Vec<&Container> = rt
                .containers
                .iter()
                .filter(|c| all || c.state == ContainerState::Running)
                .filter(|c| {
                    f.value(&["--name"])
                        .is_none_or(|n| name_matches(n, &c.name))
                })
                .filter(|c| {
                    f.value(&["--pod", "-p"])
                        .is_none_or(|p| c.sandbox_id.starts_with(p))
                })
                .filter(|c| f.value(&["--id"]).is_none_or(|id| c.id.starts_with(id)))
                .filter(|c| {
                    match f
                        .value(&["--state"])
                        .map(str::to_ascii_lowercase)
                        .as_deref()
                    {
                        Some("running") => c.state == ContainerState::Running,
                        Some("exited") => matches!(c.state, ContainerState::Exited(_)),
                        _ => true,
                    }
                })
                .collect();
            cs.sort_by_key(|x| std::cmp::Reverse(x.created));
            if f.has(&["-q", "--quiet"]) {
                return ok(cs.iter().map(|c| format!("{}\n", c.id)).collect());
            }
            let trunc = !f.has(&["--no-trunc"]);
            let mut rows = vec![
                [
                    "CONTAINER",
                    "IMAGE",
                    "CREATED",
                    "STATE",
                    "NAME",
                    "ATTEMPT",
                    "POD ID",
                    "POD",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for c in cs {
                let pod = rt
                    .sandbox(&c.sandbox_id)
                    .map(|s| s.pod.clone())
                    .unwrap_or_default();
                rows.push(vec![
                    if trunc {
                        c.id[..13].to_string()
                    } else {
                        c.id.clone()
                    },
                    if trunc {
                        c.image_id[..13].to_string()
                    } else {
                        format!("sha256:{}", c.image_id)
                    },
                    ago(c.created),
                    match c.state {
                        ContainerState::Running => "Running".into(),
                        ContainerState::Exited(_) => "Exited".into(),
                    },
                    c.name.clone(),
                    c.attempt.to_string(),
                    if trunc {
                        c.sandbox_id[..13].to_string()
                    } else {
                        c.sandbox_id.clone()
                    },
                    pod,
                ]);
            }
            ok(tabwrite(&rows, 20, 3))
        }
        "stopp" | "rmp" => {
            let stop = cmd == "stopp";
            let f = match parse_flags(rest, &[], &["-f", "--force", "-a", "--all"]) {
                Ok(f) => f,
                Err(e) => return fatal(&e),
            };
            let mut ids = f.args.clone();
            if f.has(&["-a", "--all"]) {
                ids = rt.sandboxes.iter().map(|s| s.id.clone()).collect();
            }
            if ids.is_empty() {
                return fatal("ID cannot be empty");
            }
            let mut out = String::new();
            for id in ids {
                let Some(full) = rt.find_sandbox(&id) else {
                    let what = if stop { "stopping" } else { "removing" };
                    let mut o = fatal(&format!(
                        "{what} the pod sandbox \"{id}\": rpc error: code = NotFound desc = an error occurred when try to find sandbox \"{id}\": not found"
                    ));
                    o.stdout = out;
                    return o;
                };
                if stop {
                    rt.stop_sandbox(&full);
                    out.push_str(&format!("Stopped sandbox {id}\n"));
                } else {
                    let ready = rt
                        .sandbox(&full)
                        .is_some_and(|s| s.state == SandboxState::Ready);
                    if ready && !f.has(&["-f", "--force"]) {
                        let mut o = fatal(&format!(
                            "pod sandbox \"{id}\" is running, please stop it first"
                        ));
                        o.stdout = out;
                        return o;
                    }
                    rt.stop_sandbox(&full);
                    rt.remove_sandbox(&full);
                    out.push_str(&format!("Removed sandbox {id}\n"));
                }
            }
            ok(out)
        }
        "-h" | "--help" | "help" => ok(CRICTL_USAGE.to_string()),
        other => ExecOutput {
            stdout: String::new(),
            stderr: format!("No help topic for '{other}'\n"),
            code: 3,
        },
    }
}

const DOCKER_USAGE: &str = "\nUsage:  docker [OPTIONS] COMMAND\n\nA self-sufficient runtime for containers\n\nRun 'docker COMMAND --help' for more information on a command.\n";

/// `docker …` (argv without `docker`), as Docker 20.10 with dockershim's container names.
pub fn docker(rt: &mut Runtime, argv: &[String]) -> ExecOutput {
    let Some(cmd) = argv.first() else {
        return ok(DOCKER_USAGE.to_string());
    };
    let rest = &argv[1..];
    let usage_err = |cmd: &str, e: &str| ExecOutput {
        stdout: String::new(),
        stderr: format!("unknown {e}\nSee 'docker {cmd} --help'.\n"),
        code: 125,
    };
    match cmd.as_str() {
        "ps" => {
            let f = match parse_flags(
                rest,
                &["--filter", "-f", "--format", "-n", "--last"],
                &[
                    "-a",
                    "--all",
                    "-q",
                    "--quiet",
                    "--no-trunc",
                    "-l",
                    "--latest",
                    "-s",
                    "--size",
                ],
            ) {
                Ok(f) => f,
                Err(e) => {
                    let flag = e.rsplit(": ").next().unwrap_or("").to_string();
                    return usage_err("ps", &format!("flag: {flag}"));
                }
            };
            let all = f.has(&["-a", "--all"]);
            let mut filters = Vec::new();
            for flt in f.all(&["--filter", "-f"]) {
                match flt.split_once('=') {
                    Some((k, v)) if ["name", "id", "status"].contains(&k) => {
                        filters.push((k.to_string(), v.to_string()))
                    }
                    _ => {
                        return ExecOutput {
                            stdout: String::new(),
                            stderr: format!(
                                "Error response from daemon: invalid filter '{}'\n",
                                flt.split('=').next().unwrap_or(flt)
                            ),
                            code: 1,
                        };
                    }
                }
            }
            // Sandboxes are pause containers in docker's view.
            struct Row {
                id: String,
                image: String,
                command: String,
                created: SystemTime,
                running: bool,
                exit: i32,
                finished: Option<SystemTime>,
                name: String,
            }
            let mut rows: Vec<Row> = Vec::new();
            for s in &rt.sandboxes {
                let running = s.state == SandboxState::Ready;
                rows.push(Row {
                    id: s.id.clone(),
                    image: "registry.k8s.io/pause:3.6".into(),
                    command: "/pause".into(),
                    created: s.created,
                    running,
                    exit: 0,
                    finished: None,
                    name: docker_sandbox_name(s),
                });
            }
            for c in &rt.containers {
                let Some(s) = rt.sandbox(&c.sandbox_id) else {
                    continue;
                };
                let (running, exit) = match c.state {
                    ContainerState::Running => (true, 0),
                    ContainerState::Exited(code) => (false, code),
                };
                rows.push(Row {
                    id: c.id.clone(),
                    image: format!("sha256:{}", c.image_id),
                    command: c.command.clone(),
                    created: c.created,
                    running,
                    exit,
                    finished: c.finished,
                    name: docker_container_name(c, s),
                });
            }
            rows.retain(|r| all || r.running);
            rows.retain(|r| {
                filters.iter().all(|(k, v)| match k.as_str() {
                    "name" => name_matches(v, &r.name),
                    "id" => r.id.starts_with(v.as_str()),
                    "status" => (v == "running") == r.running,
                    _ => true,
                })
            });
            rows.sort_by_key(|x| std::cmp::Reverse(x.created));
            if f.has(&["-q", "--quiet"]) {
                return ok(rows.iter().map(|r| format!("{}\n", &r.id[..12])).collect());
            }
            let mut table = vec![
                [
                    "CONTAINER ID",
                    "IMAGE",
                    "COMMAND",
                    "CREATED",
                    "STATUS",
                    "PORTS",
                    "NAMES",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for r in rows {
                let cmd = if r.command.chars().count() > 19 {
                    format!("\"{}…\"", r.command.chars().take(19).collect::<String>())
                } else {
                    format!("\"{}\"", r.command)
                };
                let image = if r.image.starts_with("sha256:") {
                    r.image[7..19].to_string()
                } else {
                    r.image.clone()
                };
                let status = if r.running {
                    format!(
                        "Up {}",
                        human_duration(
                            SystemTime::now()
                                .duration_since(r.created)
                                .unwrap_or_default()
                        )
                    )
                } else {
                    format!(
                        "Exited ({}) {}",
                        r.exit,
                        ago(r.finished.unwrap_or(r.created))
                    )
                };
                table.push(vec![
                    r.id[..12].to_string(),
                    image,
                    cmd,
                    ago(r.created),
                    status,
                    String::new(),
                    r.name,
                ]);
            }
            ok(tabwrite(&table, 10, 3))
        }
        "kill" => {
            let f = match parse_flags(rest, &["-s", "--signal"], &[]) {
                Ok(f) => f,
                Err(e) => {
                    let flag = e.rsplit(": ").next().unwrap_or("").to_string();
                    return usage_err("kill", &format!("flag: {flag}"));
                }
            };
            if f.args.is_empty() {
                return ExecOutput {
                    stdout: String::new(),
                    stderr: "\"docker kill\" requires at least 1 argument.\nSee 'docker kill --help'.\n\nUsage:  docker kill [OPTIONS] CONTAINER [CONTAINER...]\n\nKill one or more running containers\n".into(),
                    code: 1,
                };
            }
            let mut out = ExecOutput::default();
            for name in &f.args {
                match rt.find_docker(name) {
                    Some(DockerTarget::Sandbox(id)) => {
                        rt.stop_sandbox(&id);
                        out.stdout.push_str(&format!("{name}\n"));
                    }
                    Some(DockerTarget::Container(id)) => {
                        rt.container_exited(&id, 137);
                        out.stdout.push_str(&format!("{name}\n"));
                    }
                    None => {
                        out.stderr.push_str(&format!(
                            "Error response from daemon: Cannot kill container: {name}: No such container: {name}\n"
                        ));
                        out.code = 1;
                    }
                }
            }
            out
        }
        "--help" | "-h" | "help" => ok(DOCKER_USAGE.to_string()),
        other => ExecOutput {
            stdout: String::new(),
            stderr: format!("docker: '{other}' is not a docker command.\nSee 'docker --help'\n"),
            code: 1,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn ids_look_real() {
        let a = rand_hex(64);
        assert_eq!(a.len(), 64);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, rand_hex(64));
        let s = rand_suffix(5);
        assert_eq!(s.len(), 5);
        assert!(s.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        let u = rand_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }

    #[test]
    fn human_durations_follow_go_units() {
        assert_eq!(
            human_duration(Duration::from_millis(300)),
            "Less than a second"
        );
        assert_eq!(human_duration(Duration::from_secs(1)), "1 second");
        assert_eq!(human_duration(Duration::from_secs(45)), "45 seconds");
        assert_eq!(human_duration(Duration::from_secs(90)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(600)), "10 minutes");
        assert_eq!(human_duration(Duration::from_secs(3600)), "About an hour");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600)), "3 hours");
    }

    #[test]
    fn crictl_pods_name_quiet_stopp_and_rmp() {
        let mut rt = Runtime::new(ContainerRuntime::Containerd);
        let etcd = rt.run_pod("etcd-cp1", "kube-system", "u1", 0);
        rt.start_container(&etcd, "etcd", "registry.k8s.io/etcd:3.5.15-0", "etcd", 0);
        let api = rt.run_pod("kube-apiserver-cp1", "kube-system", "u2", 0);
        let out = crictl(&mut rt, &argv("pods --name kube-apiserver -q"));
        assert_eq!(out.code, 0);
        assert_eq!(out.stdout, format!("{api}\n"));

        let out = crictl(&mut rt, &argv("pods"));
        let lines: Vec<&str> = out.stdout.lines().collect();
        // Column widths follow the widest cell (the CREATED ages vary), as tabwriter does.
        assert!(
            lines[0].starts_with("POD ID              CREATED "),
            "{}",
            lines[0]
        );
        let header: Vec<&str> = lines[0]
            .split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            header,
            [
                "POD ID",
                "CREATED",
                "STATE",
                "NAME",
                "NAMESPACE",
                "ATTEMPT",
                "RUNTIME"
            ]
        );
        let state_col = lines[0].find("STATE").expect("STATE column");
        assert_eq!(&lines[2][state_col..state_col + 5], "Ready");
        assert_eq!(lines.len(), 3);
        assert!(lines[2].starts_with(&etcd[..13]));
        assert!(lines[2].contains("Ready"));

        let out = crictl(&mut rt, &argv(&format!("stopp {}", &etcd[..13])));
        assert_eq!(out.stdout, format!("Stopped sandbox {}\n", &etcd[..13]));
        assert_eq!(
            rt.sandbox(&etcd).map(|s| s.state),
            Some(SandboxState::NotReady)
        );
        let out = crictl(&mut rt, &argv("pods --state notready -q"));
        assert_eq!(out.stdout, format!("{etcd}\n"));

        let out = crictl(&mut rt, &argv(&format!("rmp {api}")));
        assert_eq!(out.code, 1, "a ready sandbox needs -f");
        let out = crictl(&mut rt, &argv(&format!("rmp -f {api}")));
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (0, format!("Removed sandbox {api}\n").as_str())
        );
        assert!(rt.sandbox(&api).is_none());

        let out = crictl(&mut rt, &argv("stopp deadbeef"));
        assert_eq!(out.code, 1);
        assert!(out.stderr.contains("level=fatal"), "{}", out.stderr);
        let out = crictl(&mut rt, &argv("pods --bogus"));
        assert_eq!(out.code, 1);
        assert!(
            out.stderr
                .contains("flag provided but not defined: --bogus")
        );
    }

    #[test]
    fn crictl_ps_shows_running_unless_all() {
        let mut rt = Runtime::new(ContainerRuntime::Containerd);
        let s = rt.run_pod("kube-proxy-abcde", "kube-system", "u", 0);
        let c1 = rt.start_container(
            &s,
            "kube-proxy",
            "registry.k8s.io/kube-proxy:v1.31.14",
            "/usr/local/bin/kube-proxy",
            0,
        );
        rt.container_exited(&c1, 1);
        let c2 = rt.start_container(
            &s,
            "kube-proxy",
            "registry.k8s.io/kube-proxy:v1.31.14",
            "/usr/local/bin/kube-proxy",
            1,
        );
        let out = crictl(&mut rt, &argv("ps -q"));
        assert_eq!(out.stdout, format!("{c2}\n"));
        let out = crictl(&mut rt, &argv("ps -a --name kube-proxy"));
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert!(lines[0].starts_with("CONTAINER           IMAGE               CREATED"));
        assert_eq!(lines.len(), 3);
        assert!(out.stdout.contains("Exited"));
    }

    #[test]
    fn docker_ps_names_and_kill() {
        let mut rt = Runtime::new(ContainerRuntime::Docker);
        let s = rt.run_pod("etcd-cp1", "kube-system", "0123abcd", 0);
        let c = rt.start_container(
            &s,
            "etcd",
            "k8s.gcr.io/etcd:3.5.6-0",
            "etcd --advertise-client-urls=https://127.0.0.11:2379",
            0,
        );
        let out = docker(&mut rt, &argv("ps --filter name=k8s_etcd"));
        assert_eq!(out.code, 0);
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert!(lines[0].starts_with("CONTAINER ID   IMAGE"), "{}", lines[0]);
        assert_eq!(lines.len(), 2);
        assert!(
            lines[1].ends_with("k8s_etcd_etcd-cp1_kube-system_0123abcd_0"),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].contains("\"etcd --advertise-cl…\""),
            "{}",
            lines[1]
        );
        let out = docker(&mut rt, &argv("ps -q --filter name=k8s_POD_etcd"));
        assert_eq!(out.stdout, format!("{}\n", &s[..12]));
        let out = docker(&mut rt, &argv(&format!("kill {}", &c[..12])));
        assert_eq!(
            (out.code, out.stdout.clone()),
            (0, format!("{}\n", &c[..12]))
        );
        assert_eq!(
            rt.container(&c).map(|c| c.state),
            Some(ContainerState::Exited(137))
        );
        let out = docker(&mut rt, &argv("kill nope"));
        assert_eq!(out.code, 1);
        assert_eq!(
            out.stderr,
            "Error response from daemon: Cannot kill container: nope: No such container: nope\n"
        );
        let out = docker(&mut rt, &argv("ps -a -q"));
        assert_eq!(out.stdout.lines().count(), 2);
    }
}
