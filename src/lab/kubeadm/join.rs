//! `kubeadm join`: discovery through cluster-info (JWS + CA pin), the kubeadm-config and
//! kubelet-config the cluster holds, kubeadm-certs download, this node's certificates,
//! kubeconfigs and static pods, the kubelet, the etcd member add (learner from 1.29, then
//! promoted) and the control-plane marks, in kubeadm's order, words and exit codes.
//!
//! Everything written comes from what the cluster says (ClusterConfiguration, cluster-info's
//! server, etcd's member list, the downloaded CAs), not from the lab plan. The kubelet's TLS
//! bootstrap is done here on the kubelet's behalf: its client certificate is signed with the
//! cluster CA as the controller-manager's csrsigner would.

pub mod cluster;
mod discovery;
pub mod etcd;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Flags, KubeadmCtx, certs, token};
use crate::lab::components::client::{ApiClient, ClientAuth, Resolver, os_text};
use crate::lab::files::{
    self, ClusterPki, Content, Facts, JoinCluster, NodeFile, apiserver_join_sans, etcd_sans,
};
use crate::lab::pki::CertAndKey;
use crate::lab::{ExecOutput, LabNode};

pub use discovery::Polling;

const KUBECONFIG_DIR: &str = "/etc/kubernetes";
const PKI_DIR: &str = "/etc/kubernetes/pki";
const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";
const BOOTSTRAP_CONF: &str = "/etc/kubernetes/bootstrap-kubelet.conf";

/// kubeadm's exit codes: preflight check failures and validation errors have their own.
const PREFLIGHT_EXIT: i32 = 2;
const VALIDATION_EXIT: i32 = 3;

/// A failed join: the error kubeadm prints and its exit code.
pub(crate) struct Failure {
    message: String,
    code: i32,
}

impl Failure {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: 1,
        }
    }
    pub(crate) fn phase(phase: &str, err: impl std::fmt::Display) -> Self {
        Failure::new(format!("error execution phase {phase}: {err}"))
    }
}

/// What the command printed so far: phase lines on stdout, klog warnings on stderr.
#[derive(Default)]
pub(crate) struct Out {
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn line(&mut self, s: impl AsRef<str>) {
        self.stdout.push_str(s.as_ref());
        self.stdout.push('\n');
    }

    /// A klog warning line (`W1124 04:16:36.123456  4242 file.go:42] msg`).
    pub fn warn(&mut self, file: &str, msg: &str) {
        let now = crate::lab::clock::rfc3339_micro(std::time::SystemTime::now());
        self.stderr.push_str(&format!(
            "W{}{} {} {:>7} {file}] {msg}\n",
            &now[5..7],
            &now[8..10],
            &now[11..26],
            std::process::id()
        ));
    }

    pub(crate) fn finish(self, result: Result<(), Failure>) -> ExecOutput {
        match result {
            Ok(()) => ExecOutput {
                stdout: self.stdout,
                stderr: self.stderr,
                code: 0,
            },
            Err(f) => ExecOutput {
                stdout: self.stdout,
                stderr: format!(
                    "{}{}\nTo see the stack trace of this error execute with --v=5 or higher\n",
                    self.stderr, f.message
                ),
                code: f.code,
            },
        }
    }
}

/// Every value of a repeatable string-slice flag (`--f a,b --f=c`).
fn slice_flag(args: &[&str], name: &str) -> Vec<String> {
    let long = format!("--{name}");
    let prefix = format!("--{name}=");
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = if *a == long {
            it.next().map(|v| v.to_string())
        } else {
            a.strip_prefix(&prefix).map(str::to_string)
        };
        if let Some(v) = value {
            out.extend(
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty()),
            );
        }
    }
    out
}

/// The parsed command line.
struct Options {
    endpoint: String,
    token: String,
    pins: Vec<String>,
    skip_ca: bool,
    control_plane: bool,
    certificate_key: Option<String>,
    /// This node with `--apiserver-advertise-address` as its address.
    node: LabNode,
    ignore: Vec<String>,
}

pub async fn run(ctx: &KubeadmCtx<'_>, args: &[&str]) -> ExecOutput {
    let mut out = Out::default();
    let result = join(ctx, args, &mut out).await;
    if result.is_err() {
        // kubeadm's deferred removal: the bootstrap token does not stay on disk after a
        // failed join.
        let _ = std::fs::remove_file(ctx.lab.node_path(&ctx.node.name, BOOTSTRAP_CONF));
    }
    out.finish(result)
}

fn parse_options(ctx: &KubeadmCtx<'_>, args: &[&str]) -> Result<Options, Failure> {
    let flags = Flags::parse(
        args,
        &[
            "token",
            "discovery-token",
            "tls-bootstrap-token",
            "discovery-token-ca-cert-hash",
            "certificate-key",
            "apiserver-advertise-address",
            "apiserver-bind-port",
            "node-name",
            "cri-socket",
            "discovery-file",
            "config",
            "patches",
        ],
        &[
            "control-plane",
            "discovery-token-unsafe-skip-ca-verification",
            "dry-run",
        ],
    )
    .map_err(Failure::new)?;
    for unsupported in ["config", "discovery-file", "patches", "dry-run"] {
        if flags.get(unsupported).is_some() {
            return Err(Failure::new(format!(
                "hactl lab: `kubeadm join --{unsupported}` is not simulated on lab nodes"
            )));
        }
    }
    if let Some(name) = flags.get("node-name")
        && name != ctx.node.name
    {
        return Err(Failure::new(format!(
            "hactl lab: --node-name must be the lab node's own name ({})",
            ctx.node.name
        )));
    }
    let invalid = |field: &str, value: &str, why: &str| Failure {
        message: format!("{field}: Invalid value: {value:?}: {why}"),
        code: VALIDATION_EXIT,
    };
    let Some(endpoint) = flags.positional.first().cloned() else {
        return Err(invalid(
            "discovery",
            "",
            "bootstrapToken or file must be set",
        ));
    };
    let token = flags
        .get("discovery-token")
        .or(flags.get("token"))
        .unwrap_or("")
        .to_string();
    if token::parse_token(&token).is_none() {
        // kubeadm echoes the token; a secret is never printed here.
        return Err(invalid(
            "discovery.bootstrapToken.token",
            "<redacted>",
            r#"the bootstrap token was not of the form "\A([a-z0-9]{6})\.([a-z0-9]{16})\z""#,
        ));
    }
    let skip_ca = flags.is_set("discovery-token-unsafe-skip-ca-verification");
    let raw_pins = slice_flag(args, "discovery-token-ca-cert-hash");
    if raw_pins.is_empty() && !skip_ca {
        return Err(invalid(
            "discovery.bootstrapToken.caCertHashes",
            "",
            "using token-based discovery without caCertHashes can be unsafe. Set unsafeSkipCAVerification as true in your kubeadm config file or pass --discovery-token-unsafe-skip-ca-verification flag to continue",
        ));
    }
    let pins = discovery::parse_pins(&raw_pins).map_err(|e| Failure {
        message: format!("discovery.bootstrapToken.caCertHashes: Invalid value: {raw_pins:?}: {e}"),
        code: VALIDATION_EXIT,
    })?;
    let control_plane = flags.is_set("control-plane");
    let mut node = ctx.node.clone();
    if control_plane && let Some(a) = flags.get("apiserver-advertise-address") {
        node.address = a.parse::<IpAddr>().map_err(|_| {
            Failure::new(format!(
                "failed to parse the given IP address or URL as an advertise address: {a}"
            ))
        })?;
    }
    Ok(Options {
        endpoint,
        token,
        pins,
        skip_ca,
        control_plane,
        certificate_key: flags.get("certificate-key").map(str::to_string),
        node,
        ignore: slice_flag(args, "ignore-preflight-errors")
            .into_iter()
            .map(|s| s.to_ascii_lowercase())
            .collect(),
    })
}

async fn join(ctx: &KubeadmCtx<'_>, args: &[&str], out: &mut Out) -> Result<(), Failure> {
    let opts = parse_options(ctx, args)?;
    let facts = Facts::new(ctx.spec).map_err(|e| Failure::new(e.to_string()))?;
    let minor = facts.version.minor;
    if !opts.control_plane && opts.certificate_key.is_some() {
        out.warn(
            "join.go:437",
            "[preflight] WARNING: --control-plane is also required when passing control-plane related flags such as [certificate-key, apiserver-advertise-address, apiserver-bind-port]",
        );
    }

    // preflight: the node's own checks, then discovery and the cluster's configuration.
    out.line("[preflight] Running pre-flight checks");
    let mut checks = vec![
        dir_available(ctx, "/etc/kubernetes/manifests"),
        file_available(ctx, "/etc/kubernetes/kubelet.conf"),
        file_available(ctx, BOOTSTRAP_CONF),
    ];
    if !opts.control_plane {
        checks.push(file_available(ctx, "/etc/kubernetes/pki/ca.crt"));
    }
    preflight(out, checks, &opts.ignore)?;

    let (token_id, token_secret) =
        token::parse_token(&opts.token).ok_or_else(|| Failure::new("invalid token"))?;
    let resolver = Resolver::for_node(ctx.lab, ctx.node);
    let found = discovery::discover(
        resolver.clone(),
        &opts.endpoint,
        token_id,
        token_secret,
        if opts.skip_ca { &[] } else { &opts.pins },
        Polling::default(),
        minor >= 30,
    )
    .await
    .map_err(|e| {
        Failure::phase(
            "preflight",
            format!("couldn't validate the identity of the API Server: {e}"),
        )
    })?;
    let bootstrap = ApiClient::new(
        &found.server,
        found.ca_pem.as_bytes(),
        ClientAuth::Token(opts.token.clone()),
        resolver,
    )
    .map_err(|e| Failure::phase("preflight", format!("unable to access the cluster: {e}")))?
    .with_timeout(Duration::from_secs(10))
    .with_component("kubeadm", ctx.spec.version);

    out.line("[preflight] Reading configuration from the cluster...");
    out.line("[preflight] FYI: You can look at this config file with 'kubectl -n kube-system get cm kubeadm-config -o yaml'");
    let (config, kubelet_config) = fetch_configuration(&bootstrap, minor)
        .await
        .map_err(|e| Failure::phase("preflight", e))?;

    let joining = Joining {
        ctx,
        opts: &opts,
        facts: &facts,
        found: &found,
        bootstrap: &bootstrap,
        kubelet_config: &kubelet_config,
    };
    if opts.control_plane {
        join_control_plane(&joining, out, &config).await
    } else {
        kubelet_start(&joining, out, None).await?;
        out.line("[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap...");
        let _ = std::fs::remove_file(ctx.lab.node_path(&ctx.node.name, BOOTSTRAP_CONF));
        out.stdout.push_str(
            "\nThis node has joined the cluster:\n* Certificate signing request was sent to apiserver and a response was received.\n* The Kubelet was informed of the new secure connection details.\n\nRun 'kubectl get nodes' on the control-plane to see this node join the cluster.\n\n",
        );
        Ok(())
    }
}

/// kube-system's kubeadm-config ClusterConfiguration and the kubelet's ConfigMap text.
async fn fetch_configuration(
    client: &ApiClient,
    minor: u32,
) -> Result<(cluster::ClusterConfig, Option<String>), String> {
    let get = |name: String| async move {
        let path = format!("/api/v1/namespaces/kube-system/configmaps/{name}");
        let r = client
            .get(&path)
            .await
            .map_err(|e| format!("failed to get config map: {e}"))?;
        if r.status == 404 {
            return Err(format!(
                "failed to get config map: configmaps \"{name}\" not found"
            ));
        }
        if !r.is_success() {
            return Err(format!("failed to get config map: {}", r.status_message()));
        }
        r.json()
    };
    let cm = get("kubeadm-config".into())
        .await
        .map_err(|e| format!("unable to fetch the kubeadm-config ConfigMap: {e}"))?;
    let text = cm["data"]["ClusterConfiguration"].as_str().ok_or(
        "unable to fetch the kubeadm-config ConfigMap: unexpected error when reading kubeadm-config ConfigMap: ClusterConfiguration key value pair missing",
    )?;
    let config = cluster::parse(text)
        .map_err(|e| format!("unable to fetch the kubeadm-config ConfigMap: {e}"))?;
    let kubelet_cm = if minor >= 24 {
        "kubelet-config".to_string()
    } else {
        format!("kubelet-config-1.{minor}")
    };
    let kubelet = get(kubelet_cm)
        .await
        .ok()
        .and_then(|cm: Value| cm["data"]["kubelet"].as_str().map(str::to_string));
    Ok((config, kubelet))
}

/// What discovery and the cluster's configuration gave the join, for its later phases.
struct Joining<'a> {
    ctx: &'a KubeadmCtx<'a>,
    opts: &'a Options,
    facts: &'a Facts,
    found: &'a discovery::Discovered,
    bootstrap: &'a ApiClient,
    kubelet_config: &'a Option<String>,
}

async fn join_control_plane(
    j: &Joining<'_>,
    out: &mut Out,
    config: &cluster::ClusterConfig,
) -> Result<(), Failure> {
    let Joining {
        ctx,
        opts,
        facts,
        found,
        bootstrap,
        ..
    } = *j;
    let minor = facts.version.minor;
    let node = &opts.node;
    if config.control_plane_endpoint.is_empty() {
        return Err(not_ready(
            "unable to add a new control plane instance to a cluster that doesn't have a stable controlPlaneEndpoint address",
        ));
    }
    if opts.certificate_key.is_none()
        && !ctx
            .lab
            .node_path(&ctx.node.name, "/etc/kubernetes/pki/ca.crt")
            .exists()
    {
        return Err(not_ready(
            "failure loading certificate authority: couldn't load the certificate file /etc/kubernetes/pki/ca.crt: open /etc/kubernetes/pki/ca.crt: no such file or directory",
        ));
    }
    out.line(
        "[preflight] Running pre-flight checks before initializing the new control plane instance",
    );
    let mut checks = Vec::new();
    for port in [6443u16, 10259, 10257] {
        checks.push(port_free(node.address, port).await);
    }
    for m in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "etcd",
    ] {
        checks.push(file_available(
            ctx,
            &format!("/etc/kubernetes/manifests/{m}.yaml"),
        ));
    }
    if let Some(dir) = &config.etcd_data_dir {
        for port in [2379u16, 2380] {
            checks.push(port_free(node.address, port).await);
        }
        checks.push(dir_available(ctx, dir));
    }
    preflight(out, checks, &opts.ignore)?;
    out.line("[preflight] Pulling images required for setting up a Kubernetes cluster");
    out.line(
        "[preflight] This might take a minute or two, depending on the speed of your internet connection",
    );
    out.line(
        "[preflight] You can also perform this action in beforehand using 'kubeadm config images pull'",
    );

    // control-plane-prepare: the shared certificates, then this node's.
    let pki = match &opts.certificate_key {
        Some(key) => download_certs(ctx, out, bootstrap, key, minor).await?,
        None => local_pki(ctx).map_err(|e| Failure::phase("control-plane-prepare/certs", e))?,
    };
    let service_ip = cluster::first_service_ip(&config.service_subnet)
        .map_err(|e| Failure::phase("control-plane-prepare/certs", e))?;
    let kubelet_server = if facts.control_plane_kubelet_local() {
        files::api_url(node.address, files::API_PORT)
    } else {
        found.server.clone()
    };
    let join_cluster = JoinCluster {
        control_plane_endpoint: config.control_plane_endpoint.clone(),
        cert_sans: config.cert_sans.clone(),
        dns_domain: config.dns_domain.clone(),
        service_ip,
        kubelet_server: kubelet_server.clone(),
    };
    let generated = {
        let (f, n, c, p) = (
            facts.clone(),
            node.clone(),
            join_cluster.clone(),
            pki.clone(),
        );
        tokio::task::spawn_blocking(move || files::control_plane_join_files(&f, &n, &c, &p))
            .await
            .map_err(|e| Failure::phase("control-plane-prepare/certs", e))?
            .map_err(|e| Failure::phase("control-plane-prepare/certs", e))?
    };
    out.line(format!("[certs] Using certificateDir folder \"{PKI_DIR}\""));
    let (api_dns, api_ips) = apiserver_join_sans(node, &join_cluster);
    let (etcd_dns, etcd_ips) = etcd_sans(node);
    for (name, sans) in [
        ("apiserver", Some((&api_dns, &api_ips))),
        ("apiserver-kubelet-client", None),
        ("front-proxy-client", None),
        ("etcd/server", Some((&etcd_dns, &etcd_ips))),
        ("etcd/peer", Some((&etcd_dns, &etcd_ips))),
        ("etcd/healthcheck-client", None),
        ("apiserver-etcd-client", None),
    ] {
        out.line(format!("[certs] Generating \"{name}\" certificate and key"));
        if let Some((dns, ips)) = sans {
            out.line(format!(
                "[certs] {name} serving cert is signed for DNS names [{}] and IPs [{}]",
                dns.join(" "),
                ips.iter()
                    .map(IpAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
    }
    write_files(ctx, &generated.certs).map_err(|e| {
        Failure::phase(
            "control-plane-prepare/certs",
            format!("failed to write or validate certificate \"apiserver\": {e}"),
        )
    })?;
    out.line(format!(
        "[certs] Valid certificates and keys now exist in \"{PKI_DIR}\""
    ));
    out.line("[certs] Using the existing \"sa\" key");
    out.line("[kubeconfig] Generating kubeconfig files");
    out.line(format!(
        "[kubeconfig] Using kubeconfig folder \"{KUBECONFIG_DIR}\""
    ));
    for f in &generated.kubeconfigs {
        let name = f.path.trim_start_matches("/etc/kubernetes/");
        out.line(format!("[kubeconfig] Writing \"{name}\" kubeconfig file"));
        write_files(ctx, std::slice::from_ref(f)).map_err(|e| {
            Failure::phase(
                "control-plane-prepare/kubeconfig",
                format!("failed to save kubeconfig file {:?} on disk: {e}", f.path),
            )
        })?;
    }
    out.line("[control-plane] Using manifest folder \"/etc/kubernetes/manifests\"");
    for f in &generated.manifests {
        let component = f
            .path
            .trim_start_matches("/etc/kubernetes/manifests/")
            .trim_end_matches(".yaml");
        out.line(format!(
            "[control-plane] Creating static Pod manifest for \"{component}\""
        ));
        write_files(ctx, std::slice::from_ref(f)).map_err(|e| {
            Failure::phase(
                "control-plane-prepare/control-plane",
                format!("failed to create static pod manifest file for {component:?}: {e}"),
            )
        })?;
    }

    // check-etcd: the cluster must be healthy before a member is added.
    let admin = ApiClient::from_kubeconfig(ctx.lab, ctx.node, ADMIN_CONF)
        .map_err(|e| Failure::phase("check-etcd", e))?
        .with_timeout(Duration::from_secs(10))
        .with_component("kubeadm", ctx.spec.version);
    let blocked = ctx.faults.blocks_port(&ctx.node.name, 2379);
    if config.etcd_data_dir.is_some() {
        out.line("[check-etcd] Checking that the etcd cluster is healthy");
        let client = etcd::client_from_cluster(ctx.lab, ctx.node, &admin, PKI_DIR, blocked)
            .await
            .map_err(|e| Failure::phase("check-etcd", e))?;
        etcd::check_health(&client)
            .await
            .map_err(|e| Failure::phase("check-etcd", e))?;
    }

    kubelet_start(j, out, Some((&pki.ca, &kubelet_server))).await?;
    let local_mode = facts.control_plane_kubelet_local();
    if !local_mode {
        out.line("[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap...");
        let _ = std::fs::remove_file(ctx.lab.node_path(&ctx.node.name, BOOTSTRAP_CONF));
    }

    // etcd: announce the member, then start it (with ControlPlaneKubeletLocalMode in its own
    // etcd-join phase, before the kubelet's bootstrap completes).
    let etcd_phase = if local_mode {
        "etcd-join"
    } else {
        "control-plane-join/etcd"
    };
    match &config.etcd_data_dir {
        None => {
            out.line("[control-plane-join] Using external etcd - no local stacked instance added")
        }
        Some(_) => join_etcd(ctx, out, facts, node, &admin, blocked, etcd_phase).await?,
    }
    if local_mode {
        out.line("[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap");
        let _ = std::fs::remove_file(ctx.lab.node_path(&ctx.node.name, BOOTSTRAP_CONF));
    }
    if (23..=27).contains(&minor) {
        out.line("The 'update-status' phase is deprecated and will be removed in a future release. Currently it performs no operation");
    }
    mark_control_plane(out, &admin, &ctx.node.name, minor)
        .await
        .map_err(|e| Failure::phase("control-plane-join/mark-control-plane", e))?;
    let etcd_message = if config.etcd_data_dir.is_some() {
        "* A new etcd member was added to the local/stacked etcd cluster.\n"
    } else {
        "\n"
    };
    out.stdout.push_str(&format!(
        "\nThis node has joined the cluster and a new control plane instance was created:\n\n* Certificate signing request was sent to apiserver and approval was received.\n* The Kubelet was informed of the new secure connection details.\n* Control plane label and taint were applied to the new node.\n* The Kubernetes control plane instances scaled up.\n{etcd_message}\nTo start administering your cluster from this node, you need to run the following as a regular user:\n\n\tmkdir -p $HOME/.kube\n\tsudo cp -i {ADMIN_CONF} $HOME/.kube/config\n\tsudo chown $(id -u):$(id -g) $HOME/.kube/config\n\nRun 'kubectl get nodes' to see this node join the cluster.\n\n"
    ));
    Ok(())
}

/// kubeadm's "not ready to join a control plane instance" message around `err`.
fn not_ready(err: &str) -> Failure {
    Failure::phase(
        "preflight",
        format!(
            "\nOne or more conditions for hosting a new control plane instance is not satisfied.\n\n{err}\n\nPlease ensure that:\n* The cluster has a stable controlPlaneEndpoint address.\n* The certificates that must be shared among control plane instances are provided.\n\n"
        ),
    )
}

/// The download-certs phase: kubeadm-certs decrypted with the key, written under pki/.
async fn download_certs(
    ctx: &KubeadmCtx<'_>,
    out: &mut Out,
    bootstrap: &ApiClient,
    key: &str,
    minor: u32,
) -> Result<ClusterPki, Failure> {
    let phase = "control-plane-prepare/download-certs";
    out.line(format!(
        "[download-certs] Downloading the certificates in Secret \"{}\" in the \"kube-system\" Namespace",
        certs::SECRET
    ));
    let shared = certs::download(bootstrap, key)
        .await
        .map_err(|e| Failure::phase(phase, format!("error downloading certs: {e}")))?;
    if minor >= 27 {
        out.line(format!(
            "[download-certs] Saving the certificates to the folder: \"{PKI_DIR}\""
        ));
    }
    let mut text = BTreeMap::new();
    for file in certs::SHARED_FILES {
        let data = shared.get(*file).ok_or_else(|| {
            Failure::phase(
                phase,
                format!(
                    "error downloading certs: the Secret does not include the required certificate or key - name: {file}, path: {PKI_DIR}/{file}"
                ),
            )
        })?;
        text.insert(*file, String::from_utf8_lossy(data).into_owned());
    }
    let files: Vec<NodeFile> = certs::SHARED_FILES
        .iter()
        .map(|f| NodeFile {
            path: format!("{PKI_DIR}/{f}"),
            mode: if f.ends_with(".crt") { 0o644 } else { 0o600 },
            content: Content::Data(text[f].clone().into_bytes()),
        })
        .collect();
    write_files(ctx, &files)
        .map_err(|e| Failure::phase(phase, format!("error downloading certs: {e}")))?;
    Ok(pki_from(&text))
}

fn pki_from(text: &BTreeMap<&str, String>) -> ClusterPki {
    let get = |k: &str| text.get(k).cloned().unwrap_or_default();
    let pair = |base: &str| CertAndKey {
        cert_pem: get(&format!("{base}.crt")),
        key_pem: get(&format!("{base}.key")),
    };
    ClusterPki {
        ca: pair("ca"),
        front_proxy_ca: pair("front-proxy-ca"),
        etcd_ca: pair("etcd/ca"),
        sa_key: get("sa.key"),
        sa_pub: get("sa.pub"),
    }
}

/// Without `--certificate-key` the shared certificates must already be on the node.
fn local_pki(ctx: &KubeadmCtx<'_>) -> Result<ClusterPki, String> {
    let mut text = BTreeMap::new();
    for file in certs::SHARED_FILES {
        let path = format!("{PKI_DIR}/{file}");
        let data = std::fs::read_to_string(ctx.lab.node_path(&ctx.node.name, &path))
            .map_err(|e| format!("open {path}: {}", os_text(&e)))?;
        text.insert(*file, data);
    }
    Ok(pki_from(&text))
}

/// The kubelet-start phase: bootstrap kubeconfig and CA, the existing-Node check, the
/// kubelet's config, its TLS bootstrap (done here on its behalf) and its restart.
/// `control_plane`: the CA that signs and the server the kubelet uses, for a control-plane
/// node; a worker's kubelet uses cluster-info's server and the csrsigner's CA.
async fn kubelet_start(
    j: &Joining<'_>,
    out: &mut Out,
    control_plane: Option<(&CertAndKey, &String)>,
) -> Result<(), Failure> {
    let Joining {
        ctx,
        opts,
        facts,
        found,
        bootstrap,
        kubelet_config,
    } = *j;
    let phase = "kubelet-start";
    let server = control_plane
        .map(|(_, s)| s.clone())
        .unwrap_or_else(|| found.server.clone());
    let bootstrap_conf = NodeFile {
        path: BOOTSTRAP_CONF.into(),
        mode: 0o600,
        content: Content::Data(
            bootstrap_kubeconfig(&found.ca_pem, &server, &opts.token).into_bytes(),
        ),
    };
    write_files(ctx, &[bootstrap_conf]).map_err(|e| {
        Failure::phase(
            phase,
            format!("couldn't save bootstrap-kubelet.conf to disk: {e}"),
        )
    })?;
    let ca_path = format!("{PKI_DIR}/ca.crt");
    if !ctx.lab.node_path(&ctx.node.name, &ca_path).exists() {
        let ca = NodeFile {
            path: ca_path,
            mode: 0o644,
            content: Content::Data(found.ca_pem.clone().into_bytes()),
        };
        write_files(ctx, &[ca]).map_err(|e| {
            Failure::phase(
                phase,
                format!("couldn't save the CA certificate to disk: {e}"),
            )
        })?;
    }
    let name = &ctx.node.name;
    let r = bootstrap
        .get(&format!("/api/v1/nodes/{name}"))
        .await
        .map_err(|e| Failure::phase(phase, format!("cannot get Node {name:?}: {e}")))?;
    if r.is_success() {
        let node = r.json().map_err(|e| Failure::phase(phase, e))?;
        let ready = node["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        if ready {
            return Err(Failure::phase(
                phase,
                format!(
                    "a Node with name {name:?} and status \"Ready\" already exists in the cluster. You must delete the existing Node or change the name of this new joining Node"
                ),
            ));
        }
    } else if r.status != 404 {
        return Err(Failure::phase(
            phase,
            format!("cannot get Node {name:?}: {}", r.status_message()),
        ));
    }
    let _ = ctx
        .agent
        .exec(vec!["systemctl".into(), "stop".into(), "kubelet".into()])
        .await;
    out.line(
        "[kubelet-start] Writing kubelet configuration to file \"/var/lib/kubelet/config.yaml\"",
    );
    out.line("[kubelet-start] Writing kubelet environment file with flags to file \"/var/lib/kubelet/kubeadm-flags.env\"");
    let signer = match control_plane {
        Some((ca, _)) => ca.clone(),
        None => csr_signer(ctx, &found.ca_pem).map_err(|e| Failure::phase(phase, e))?,
    };
    let mut kubelet_files = {
        let (f, n, s, ca, srv) = (
            facts.clone(),
            opts.node.clone(),
            signer,
            found.ca_pem.clone(),
            server.clone(),
        );
        tokio::task::spawn_blocking(move || files::kubelet_join_files(&f, &n, &s, &ca, &srv))
            .await
            .map_err(|e| Failure::phase(phase, e))?
            .map_err(|e| Failure::phase(phase, e))?
    };
    if let Some(text) = kubelet_config {
        // The kubelet's config is the cluster's, as kubeadm downloads it.
        for f in &mut kubelet_files {
            if f.path == "/var/lib/kubelet/config.yaml" {
                f.content = Content::Data(text.clone().into_bytes());
            }
        }
    }
    write_files(ctx, &kubelet_files).map_err(|e| Failure::phase(phase, e))?;
    out.line("[kubelet-start] Starting the kubelet");
    let _ = ctx
        .agent
        .exec(vec!["systemctl".into(), "restart".into(), "kubelet".into()])
        .await;
    Ok(())
}

/// The kubeconfig kubeadm writes for the kubelet's TLS bootstrap (token auth).
fn bootstrap_kubeconfig(ca_pem: &str, server: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: {cluster}\ncontexts:\n- context:\n    cluster: {cluster}\n    user: tls-bootstrap-token-user\n  name: tls-bootstrap-token-user@{cluster}\ncurrent-context: tls-bootstrap-token-user@{cluster}\nkind: Config\npreferences: {{}}\nusers:\n- name: tls-bootstrap-token-user\n  user:\n    token: {token}\n",
        cluster = files::CLUSTER_NAME
    )
}

/// The CA the controller-manager's csrsigner signs kubelet certificates with: the cluster
/// CA's key on a control-plane node that runs a controller-manager.
fn csr_signer(ctx: &KubeadmCtx<'_>, ca_pem: &str) -> Result<CertAndKey, String> {
    for n in ctx.spec.nodes.iter().filter(|n| n.control_plane) {
        let read = |p: &str| std::fs::read_to_string(ctx.lab.node_path(&n.name, p)).ok();
        let runs_cm = ctx
            .lab
            .node_path(
                &n.name,
                "/etc/kubernetes/manifests/kube-controller-manager.yaml",
            )
            .exists();
        if let (true, Some(cert), Some(key)) = (
            runs_cm,
            read("/etc/kubernetes/pki/ca.crt"),
            read("/etc/kubernetes/pki/ca.key"),
        ) && cert.trim() == ca_pem.trim()
        {
            return Ok(CertAndKey {
                cert_pem: cert,
                key_pem: key,
            });
        }
    }
    Err("error waiting for the kubelet to perform the TLS Bootstrap: no controller-manager signs certificates for this cluster's CA: timed out waiting for the condition".into())
}

/// The etcd member add, the static pod, promotion of the learner and the wait.
async fn join_etcd(
    ctx: &KubeadmCtx<'_>,
    out: &mut Out,
    facts: &Facts,
    node: &LabNode,
    admin: &ApiClient,
    blocked: bool,
    phase: &str,
) -> Result<(), Failure> {
    let wrap = |e: String| {
        Failure::phase(
            phase,
            format!("error creating local etcd static pod manifest file: {e}"),
        )
    };
    let client = etcd::client_from_cluster(ctx.lab, ctx.node, admin, PKI_DIR, blocked)
        .await
        .map_err(wrap)?;
    let addr = node.address.to_string();
    let peer = etcd::peer_url(&addr);
    let learner = facts.at_least(29);
    let members = etcd::add_member(&client, &node.name, &peer, learner, &ctx.etcd_retry())
        .await
        .map_err(wrap)?;
    out.line("[etcd] Announced new etcd member joining to the existing etcd cluster");
    if ctx.faults.take_join_failure(&ctx.node.name) {
        // Injected: the member never starts, as when etcd cannot come up on the node.
        return Err(wrap(if learner {
            "etcdserver: can only promote a learner member which is in sync with leader".into()
        } else {
            "timeout waiting for etcd cluster to be available".into()
        }));
    }
    out.line("[etcd] Creating static Pod manifest for \"etcd\"");
    let manifest = files::etcd_join_manifest(facts, node, &members);
    write_files(ctx, &[manifest]).map_err(wrap)?;
    if learner {
        etcd::promote(&client, &peer, &ctx.etcd_retry())
            .await
            .map_err(wrap)?;
    }
    out.line("[etcd] Waiting for the new etcd member to join the cluster. This can take up to 40s");
    etcd::wait_available(
        &client,
        &etcd::client_url(&addr),
        etcd::AVAILABLE_TRIES,
        etcd::AVAILABLE_INTERVAL,
    )
    .await
    .map_err(wrap)
}

/// kubeadm's control-plane labels and NoSchedule taint keys: "master" until 1.24 (label)
/// and 1.25 (taint), "control-plane" (taint) from 1.24.
fn control_plane_marks(minor: u32) -> (Vec<&'static str>, Vec<&'static str>) {
    let mut labels = Vec::new();
    if minor < 24 {
        labels.push("node-role.kubernetes.io/master");
    }
    labels.push("node-role.kubernetes.io/control-plane");
    labels.push("node.kubernetes.io/exclude-from-external-load-balancers");
    let mut taints = Vec::new();
    if minor < 25 {
        taints.push("node-role.kubernetes.io/master");
    }
    if minor >= 24 {
        taints.push("node-role.kubernetes.io/control-plane");
    }
    (labels, taints)
}

/// The mark-control-plane phase: the role label(s) and taint(s) of the version, on the Node
/// once it has registered.
async fn mark_control_plane(
    out: &mut Out,
    admin: &ApiClient,
    name: &str,
    minor: u32,
) -> Result<(), String> {
    let (labels, taints) = control_plane_marks(minor);
    let shown: Vec<String> = labels
        .iter()
        .map(|l| {
            if l.ends_with("/master") {
                format!("{l}(deprecated)")
            } else {
                l.to_string()
            }
        })
        .collect();
    out.line(format!(
        "[mark-control-plane] Marking the node {name} as control-plane by adding the labels: [{}]",
        shown.join(" ")
    ));
    out.line(format!(
        "[mark-control-plane] Marking the node {name} as control-plane by adding the taints [{}]",
        taints
            .iter()
            .map(|t| format!("{t}:NoSchedule"))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    let path = format!("/api/v1/nodes/{name}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::from("timed out waiting for the condition");
    while Instant::now() < deadline {
        match admin.get(&path).await {
            Ok(r) if r.is_success() => {
                let mut node = r.json()?;
                for l in &labels {
                    node["metadata"]["labels"][*l] = json!("");
                }
                let mut list = node["spec"]["taints"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                for t in &taints {
                    if !list
                        .iter()
                        .any(|x| x["key"] == *t && x["effect"] == "NoSchedule")
                    {
                        list.push(json!({"key": t, "effect": "NoSchedule"}));
                    }
                }
                node["spec"]["taints"] = json!(list);
                match admin.update(&path, &node).await {
                    Ok(r) if r.is_success() => return Ok(()),
                    Ok(r) => last = r.status_message(),
                    Err(e) => last = e.to_string(),
                }
            }
            Ok(r) => last = r.status_message(),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!(
        "error patching node {name:?} through apiserver: {last}"
    ))
}

/// One preflight check's result: `Some((name, error))` when it fails.
type Check = Option<(String, String)>;

fn file_available(ctx: &KubeadmCtx<'_>, path: &str) -> Check {
    ctx.lab.node_path(&ctx.node.name, path).exists().then(|| {
        (
            format!("FileAvailable-{}", path.replace('/', "-")),
            format!("{path} already exists"),
        )
    })
}

fn dir_available(ctx: &KubeadmCtx<'_>, path: &str) -> Check {
    let host = ctx.lab.node_path(&ctx.node.name, path);
    let non_empty = std::fs::read_dir(&host).is_ok_and(|mut d| d.next().is_some());
    non_empty.then(|| {
        (
            format!("DirAvailable-{}", path.replace('/', "-")),
            format!("{path} is not empty"),
        )
    })
}

async fn port_free(addr: IpAddr, port: u16) -> Check {
    let connect = tokio::net::TcpStream::connect((addr, port));
    let in_use = matches!(
        tokio::time::timeout(Duration::from_millis(300), connect).await,
        Ok(Ok(_))
    );
    in_use.then(|| (format!("Port-{port}"), format!("Port {port} is in use")))
}

/// kubeadm's preflight verdict: ignored errors become warnings, the rest fail (exit 2).
fn preflight(out: &mut Out, checks: Vec<Check>, ignore: &[String]) -> Result<(), Failure> {
    let mut errors = String::new();
    for (name, err) in checks.into_iter().flatten() {
        if ignore
            .iter()
            .any(|i| i == "all" || *i == name.to_ascii_lowercase())
        {
            out.stderr.push_str(&format!("\t[WARNING {name}]: {err}\n"));
        } else {
            errors.push_str(&format!("\t[ERROR {name}]: {err}\n"));
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    Err(Failure {
        message: format!(
            "error execution phase preflight: [preflight] Some fatal errors occurred:\n{errors}[preflight] If you know what you are doing, you can make a check non-fatal with `--ignore-preflight-errors=...`"
        ),
        code: PREFLIGHT_EXIT,
    })
}

/// Writes node files as kubeadm does, failing like Go when the node's `/etc/kubernetes` is
/// full (`disk-full` fault): the first missing directory's mkdir, else the file's open.
pub(crate) fn write_files(ctx: &KubeadmCtx<'_>, list: &[NodeFile]) -> Result<(), String> {
    for f in list {
        if ctx.faults.disk_full(&ctx.node.name)
            && (f.path == KUBECONFIG_DIR || f.path.starts_with("/etc/kubernetes/"))
        {
            return Err(enospc(ctx, &f.path));
        }
        files::write_node_files(ctx.lab, &ctx.node.name, std::slice::from_ref(f))
            .map_err(|e| format!("open {}: {}", f.path, os_text(&e)))?;
    }
    Ok(())
}

fn enospc(ctx: &KubeadmCtx<'_>, path: &str) -> String {
    enospc_error(path, |p| ctx.lab.node_path(&ctx.node.name, p).exists())
}

/// Go's error for writing `path` on a full disk: MkdirAll fails on the first missing
/// directory, else creating the file fails.
fn enospc_error(path: &str, exists: impl Fn(&str) -> bool) -> String {
    let mut dir = String::new();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        dir.push('/');
        dir.push_str(part);
        if !exists(&dir) {
            return format!("mkdir {dir}: no space left on device");
        }
    }
    format!("open {path}: no space left on device")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_flags_collect_every_value() {
        let args = [
            "--discovery-token-ca-cert-hash",
            "sha256:a,sha256:b",
            "--x",
            "--discovery-token-ca-cert-hash=sha256:c",
        ];
        assert_eq!(
            slice_flag(&args, "discovery-token-ca-cert-hash"),
            ["sha256:a", "sha256:b", "sha256:c"]
        );
        assert!(slice_flag(&args, "ignore-preflight-errors").is_empty());
    }

    #[test]
    fn preflight_errors_exit_2_and_ignored_ones_warn() {
        let mut out = Out::default();
        let checks = vec![
            Some((
                "FileAvailable--etc-kubernetes-kubelet.conf".into(),
                "/etc/kubernetes/kubelet.conf already exists".into(),
            )),
            None,
            Some(("Port-6443".into(), "Port 6443 is in use".into())),
        ];
        let f = preflight(&mut out, checks.clone(), &[]).unwrap_err();
        assert_eq!(f.code, PREFLIGHT_EXIT);
        assert!(
            f.message
                .contains("\t[ERROR Port-6443]: Port 6443 is in use\n"),
            "{}",
            f.message
        );
        assert!(preflight(&mut out, checks, &["all".into()]).is_ok());
        assert!(out.stderr.contains("[WARNING Port-6443]"));
    }

    #[test]
    fn a_full_disk_fails_as_go_does() {
        let exists = |p: &str| p == "/etc" || p == "/etc/kubernetes";
        assert_eq!(
            enospc_error("/etc/kubernetes/pki/ca.crt", exists),
            "mkdir /etc/kubernetes/pki: no space left on device"
        );
        assert_eq!(
            enospc_error("/etc/kubernetes/bootstrap-kubelet.conf", exists),
            "open /etc/kubernetes/bootstrap-kubelet.conf: no space left on device"
        );
    }

    #[test]
    fn control_plane_marks_follow_the_version() {
        let (l, t) = control_plane_marks(23);
        assert!(l.contains(&"node-role.kubernetes.io/master"));
        assert_eq!(t, ["node-role.kubernetes.io/master"]);
        let (l, t) = control_plane_marks(24);
        assert!(!l.contains(&"node-role.kubernetes.io/master"));
        assert_eq!(
            t,
            [
                "node-role.kubernetes.io/master",
                "node-role.kubernetes.io/control-plane"
            ]
        );
        assert_eq!(
            control_plane_marks(25).1,
            ["node-role.kubernetes.io/control-plane"]
        );
    }

    #[test]
    fn the_bootstrap_kubeconfig_uses_the_token() {
        let text = bootstrap_kubeconfig("CA", "https://lb:6443", "abcdef.0123456789abcdef");
        let kc =
            crate::lab::components::client::Kubeconfig::parse(&text, "x", |_| Err("no".into()))
                .unwrap();
        assert_eq!(kc.server, "https://lb:6443");
        assert!(matches!(kc.auth, ClientAuth::Token(ref t) if t == "abcdef.0123456789abcdef"));
    }
}
