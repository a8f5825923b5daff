//! Observation through the fakes is observation of the real thing. A fresh lab is observed
//! over SSH and `kube`; then it is copied into a `FakeCluster`'s world through the seams apply
//! uses (each node's files through `NodeOps`, the API's objects through `ClusterApi`), with what
//! each node's commands print (run one by one, not through observation's script), and which
//! addresses accept TCP; and it is observed again through the fake. The two observed states
//! are the same, field for field, but for the Leases' renewTime, which the lab's leaders move
//! every two seconds.

mod lab_support;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use hactl::configmaps::KubeadmConfigMap;
use hactl::observe::fake::{ETCD_COMMANDS, FakeReach};
use hactl::observe::{ObserveOptions, observe, observe_with};
use hactl::observed::ObservedState;
use hactl::readings::etcd::etcd_script;
use hactl::readings::node::{CRI_SOCKETS, KUBECONFIGS, NODE_FILES, SectionStatus, sections};
use hactl::seams::fake::{FakeCluster, World};
use hactl::seams::{Clock, ClusterApi, NodeOps, SeamError};
use hactl::spec::{DesiredState, Role};
use hactl::transport::NodeTransport;
use hactl::transport::cluster::KubeCluster;
use hactl::transport::files::NodeFiles;
use hactl::transport::ssh::SshSession;
use lab_support::Lab;
use lab_support::observing::lab_plan;

const NET: u8 = 38;

fn desired(lab: &Lab) -> DesiredState {
    let file = lab.dir.join("hactl.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    hactl::spec::parse(&file.to_string_lossy(), &text).unwrap()
}

/// What a command prints as observation's scripts keep it: stdout then stderr, trailing
/// newlines cut (`$(…)` cuts them).
fn printed(out: &hactl::seams::CommandResult) -> (i32, String) {
    let text = format!("{}{}", out.stdout, out.stderr);
    (
        out.status.unwrap_or(-1),
        text.trim_end_matches('\n').to_string(),
    )
}

/// The lab copied into a fake world through the real seams.
async fn world_of(lab: &Lab, desired: &DesiredState) -> World {
    let mut w = World::default();
    let mut sessions = Vec::new();
    for target in lab.ssh_targets() {
        sessions.push(SshSession::connect(target).await.expect("connects"));
    }
    let nodes = NodeFiles::new(sessions);
    let mut paths: Vec<String> = KUBECONFIGS
        .iter()
        .map(|n| format!("/etc/kubernetes/{n}"))
        .collect();
    paths.extend(NODE_FILES.iter().map(|(_, p)| p.to_string()));
    let argv = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
    let sockets = format!(
        "for s in {}; do [ -S \"$s\" ] && echo \"$s\"; done; true",
        CRI_SOCKETS.join(" ")
    );
    let commands: [(&str, Vec<String>); 5] = [
        ("user", argv(&["id", "-un"])),
        ("kubeadm", argv(&["kubeadm", "version", "-o", "short"])),
        ("kubelet", argv(&["kubelet", "--version"])),
        ("sockets", argv(&["sh", "-c", &sockets])),
        (
            "kubelet-unit",
            argv(&[
                "env",
                "TZ=UTC",
                "systemctl",
                "show",
                "kubelet",
                "-p",
                "ActiveState",
                "-p",
                "ActiveEnterTimestamp",
            ]),
        ),
    ];
    for node in &desired.nodes {
        let name = node.name.clone();
        for path in &paths {
            if let Some(file) = nodes.read_file(&name, path).await.expect("reads") {
                w.files.insert((name.clone(), path.clone()), file);
                let stat = nodes
                    .run(&name, &argv(&["stat", "-c", "%Y", path]))
                    .await
                    .expect("stat");
                let mtime: i64 = stat.stdout.trim().parse().expect("mtime");
                w.mtimes.insert((name.clone(), path.clone()), mtime);
            }
        }
        let mut printed_here = BTreeMap::new();
        for (section, argv) in &commands {
            let out = nodes.run(&name, argv).await.expect("runs");
            printed_here.insert(section.to_string(), printed(&out));
        }
        w.commands.insert(name.clone(), printed_here);
    }
    let transports: BTreeMap<String, SshSession> = nodes
        .into_transports()
        .map(|t| (t.node().to_string(), t))
        .collect();
    // etcdctl's answers on the control-plane nodes, kept as the etcd script prints them (it
    // finds the endpoint and client certificate the way kubeadm lays them out).
    for node in desired
        .nodes
        .iter()
        .filter(|n| n.role == Role::ControlPlane)
    {
        let out = transports[&node.name].run(&etcd_script()).await.unwrap();
        let got = sections(&out.stdout_text()).expect("etcd sections");
        let entry = w.commands.entry(node.name.clone()).or_default();
        for name in ETCD_COMMANDS {
            let s = &got[name];
            let SectionStatus::Exit(code) = s.status else {
                panic!("{name}: {:?}", s.status)
            };
            entry.insert(name.to_string(), (code, s.text()));
        }
    }
    // Who listens: the API servers', etcd's and the LB's ports, tried from here (the lab is
    // on loopback: what a node reaches, this machine reaches).
    let open = |addr: SocketAddr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok();
    for node in &desired.nodes {
        for port in [6443, 2379, 2380] {
            let addr = SocketAddr::new(node.address, port);
            if open(addr) {
                w.listening.insert(addr.to_string());
            }
        }
    }
    let apiserver_nodes: Vec<String> = desired
        .nodes
        .iter()
        .filter(|n| {
            w.files.contains_key(&(
                n.name.clone(),
                "/etc/kubernetes/manifests/kube-apiserver.yaml".into(),
            ))
        })
        .map(|n| n.name.clone())
        .collect();
    assert_eq!(apiserver_nodes, ["cp1"], "a fresh lab runs one API server");
    let served = w.files[&(
        "cp1".to_string(),
        "/etc/kubernetes/pki/apiserver.crt".to_string(),
    )]
        .content
        .clone();
    w.served.insert("cp1".into(), served);
    for ip in &desired.endpoint.addresses {
        let addr = SocketAddr::new(*ip, desired.endpoint.port);
        if open(addr) {
            w.apiservers.insert(addr.to_string(), "cp1".into());
        }
    }
    for (_, t) in transports {
        let _ = t.close().await;
    }

    // The API's objects through the cluster seam, as cp1's admin.conf reaches them.
    let admin = &w.files[&("cp1".to_string(), "/etc/kubernetes/admin.conf".to_string())];
    let api = KubeCluster::from_kubeconfig(
        &String::from_utf8(admin.content.clone()).unwrap(),
        Duration::from_secs(10),
    )
    .await
    .expect("client");
    for cm in KubeadmConfigMap::ALL {
        match api.get_configmap(cm.namespace(), cm.name()).await {
            Ok(got) => {
                w.configmaps
                    .insert((cm.namespace().into(), cm.name().into()), got);
            }
            Err(SeamError::NotFound { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    for node in api.list_nodes().await.expect("nodes") {
        w.nodes.insert(node.name.clone(), node);
    }
    for selector in ["k8s-app=kube-proxy", "tier=control-plane"] {
        let pods = api
            .list_pods("kube-system", selector, None)
            .await
            .expect("pods");
        w.pods.extend(pods);
    }
    for name in hactl::observe::api::LEASES {
        match api.get_lease("kube-system", name).await {
            Ok(l) => {
                w.leases.insert(("kube-system".into(), name.into()), l);
            }
            Err(SeamError::NotFound { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    w
}

/// The observed state as JSON, with the Leases' renewTime taken out (after checking each
/// has one).
fn comparable(state: &ObservedState) -> String {
    let mut state = state.clone();
    for (name, lease) in state.api.leases.iter_mut() {
        assert!(lease.renew_time.is_some(), "lease {name} was never renewed");
        lease.renew_time = None;
    }
    serde_json::to_string_pretty(&state).unwrap()
}

#[test]
fn an_observation_through_the_fake_of_a_lab_is_the_labs_observation() {
    let lab = Lab::up(&format!("observe{NET}"), &lab_plan(NET), &[]);
    let desired = desired(&lab);
    let opts = ObserveOptions::new(&lab.dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let real = rt.block_on(async {
        let observation = observe(&desired, &opts).await;
        let (state, closing) = observation.into_state();
        closing.await;
        state
    });
    // What is compared is a whole observation: every node, etcd, the API, the LB's TLS.
    assert_eq!(real.nodes.len(), 5);
    assert!(real.nodes.values().all(|n| n.ssh.failure().is_none()));
    assert!(
        real.api.reachable.failure().is_none(),
        "{:?}",
        real.api.reachable
    );
    assert_eq!(real.etcd.observed_from.as_deref(), Some("cp1"));
    // A fresh lab's API server certificate lacks the LB's name: the words are Go's, from the
    // served certificate, which the fake must find the same way.
    match &real.endpoint.tls {
        Some(hactl::observed::Probe::Failed { reason }) => {
            assert!(reason.contains("not k8s-api.lab.internal"), "{reason}")
        }
        other => panic!("the LB's TLS: {other:?}"),
    }
    assert!(real.nodes["cp2"].control_plane_reachability.len() == 3);

    // As plan observes (keep_workers off): the same observation, but only the control-plane
    // nodes' connections come back; the workers' closed as each was read, and once closing is
    // done no master to any node of the lab is left.
    let mut plan_opts = opts.clone();
    plan_opts.keep_workers = false;
    let (planned, kept) = rt.block_on(async {
        let observation = observe(&desired, &plan_opts).await;
        let kept: Vec<String> = observation.sessions.keys().cloned().collect();
        let (state, closing) = observation.into_state();
        closing.await;
        (state, kept)
    });
    let (want, got) = (comparable(&real), comparable(&planned));
    assert!(want == got, "{}", lab_support::observing::diff(&want, &got));
    let mut control_planes: Vec<String> = desired
        .nodes
        .iter()
        .filter(|n| n.role == Role::ControlPlane)
        .map(|n| n.name.clone())
        .collect();
    control_planes.sort();
    assert!(
        desired.nodes.len() > control_planes.len(),
        "the lab has workers"
    );
    assert_eq!(kept, control_planes);
    lab_support::wait_no_ssh_master(&format!("127.0.{NET}."));
    let world = rt.block_on(world_of(&lab, &desired));
    let fake = Arc::new(FakeCluster::new(world));
    // The fake's clock at this machine's: the lab's certificates are checked at now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    rt.block_on(fake.sleep(now.saturating_sub(fake.now())));
    let reach = Arc::new(FakeReach::new(fake.clone()));
    let (through_fake, warnings) = rt.block_on(async {
        let observation = observe_with(reach.clone(), &desired, &opts).await;
        let warnings = observation.warnings.clone();
        (observation.into_state().0, warnings)
    });
    let (want, got) = (comparable(&real), comparable(&through_fake));
    assert!(
        want == got,
        "the observation through the fake differs from the lab's:\n{}",
        lab_support::observing::diff(&want, &got)
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    // The fake reads only: its world is as it was copied.
    let calls = fake.counts();
    assert!(
        calls
            .keys()
            .all(|c| format!("{c:?}").starts_with("Get") || format!("{c:?}").starts_with("List")),
        "{calls:?}"
    );

    // A node down in the fake is unreachable with ssh's words, and nothing else changes.
    fake.take_down("w2");
    let down = rt.block_on(async { observe_with(reach, &desired, &opts).await.into_state().0 });
    let reason = down.nodes["w2"].ssh.failure().expect("w2 failed");
    assert!(reason.contains("port 22: Connection refused"), "{reason}");
    let mut expected = through_fake.clone();
    expected.nodes.insert("w2".into(), down.nodes["w2"].clone());
    assert_eq!(comparable(&down), comparable(&expected));
}
