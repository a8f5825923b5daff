//! Live `hactl plan` of labs converted partly by hand, as an operator following the blog post
//! would leave them: what was done is no-op, what is left is still planned, observation changes
//! nothing; and `half-1.31.json` checked against (or, with HACTL_WRITE_FIXTURES=1, rewritten
//! from) a lab whose cp1 certificate was reissued with the load balancer's SANs appended.
//! Labs on 127.0.29.x (1.33) and 127.0.30.x (1.31).

mod lab_support;

use std::collections::BTreeMap;
use std::path::Path;

use lab_support::Lab;
use lab_support::observing::{
    actions, check_fixture, configmap_versions, fixture_plan, hactl, handlers as handlers_of,
    lab_plan, node_files, observe, plan_json, text,
};
use serde_json::Value;

const LB_URL: &str = "https://k8s-api.lab.internal:6443";

/// `Plan: A to add, C to change, D to destroy.` of a text plan, as (A, C, D).
fn summary(plan_text: &str) -> (u32, u32, u32) {
    let re = regex::Regex::new(r"Plan: (\d+) to add, (\d+) to change, (\d+) to destroy\.").unwrap();
    let c = re
        .captures(plan_text)
        .unwrap_or_else(|| panic!("no summary line in the plan:\n{plan_text}"));
    let n = |i: usize| c[i].parse().unwrap();
    (n(1), n(2), n(3))
}

/// `hactl plan FILE --format json`, which must succeed: the plan, and its actions by address.
fn plan_actions(file: &str) -> (Value, BTreeMap<String, String>) {
    let (code, plan, err) = plan_json(Path::new(file));
    assert_eq!(code, Some(0), "{err}");
    let actions = actions(&plan);
    (plan, actions)
}

/// `kubectl edit`, done as a script would: get the ConfigMap, point its kubeconfig.conf at the
/// load balancer, `kubectl replace -f` it.
fn point_kube_proxy_at_lb(lab: &Lab) {
    lab.edit_configmap("kube-system", "kube-proxy", |cm| {
        let conf = cm["data"]["kubeconfig.conf"].as_str().unwrap().to_string();
        let server = regex::Regex::new(r"server: \S+").unwrap();
        assert_eq!(server.find_iter(&conf).count(), 1, "{conf}");
        cm["data"]["kubeconfig.conf"] = Value::String(
            server
                .replace(&conf, format!("server: {LB_URL}"))
                .into_owned(),
        );
    });
}

/// A 1.33 lab where the operator reissued cp1's certificate, edited the kube-proxy ConfigMap
/// and w1's kubelet.conf by hand without restarting anything: those three plan no-op, the
/// restarts are left (until the operator restarts kube-proxy too), the rest is still planned,
/// the plan has three changes fewer than a fresh lab's, and planning changed nothing.
#[test]
fn a_lab_converted_partly_by_hand_plans_only_what_is_left() {
    let net = 29;
    let lab = Lab::up(
        "partial29",
        &lab_plan(net),
        &["--kubernetes-version", "1.33"],
    );
    let file = lab.dir.join("hactl.toml");
    let file = file.to_str().unwrap();

    // Before: the three resources are planned, as on any fresh lab.
    let (_, fresh) = plan_actions(file);
    for address in [
        "apiserver_cert.cp1",
        "configmap.kube-system.kube-proxy",
        "kubeconfig.w1.kubelet",
    ] {
        assert_eq!(
            fresh[address], "update",
            "{address} on a fresh lab: {fresh:?}"
        );
    }

    // (a) cp1's certificate reissued with the LB's name and address (kubeadm's SAN order).
    lab.add_lb_san(net);
    // Times are whole seconds: the edits below come a second after every Pod's creation.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // (b) the kube-proxy ConfigMap pointed at the LB with the real kubectl.
    point_kube_proxy_at_lb(&lab);
    // (c) w1's kubelet.conf pointed at the LB over SSH.
    lab.ssh_ok(
        "w1",
        &format!("sed -i 's#^\\( *server:\\).*#\\1 {LB_URL}#' /etc/kubernetes/kubelet.conf"),
    );
    // The kubelet started seconds ago, and a kubelet.conf written within 5 minutes of a start
    // is taken for the kubelet's own TLS bootstrap: the edit's time is put 10 minutes on, as
    // if the operator had edited it then.
    lab.ssh_ok(
        "w1",
        "touch -m -d @$(( $(date +%s) + 600 )) /etc/kubernetes/kubelet.conf",
    );
    let kubelet_conf = lab.ssh_ok("w1", "cat /etc/kubernetes/kubelet.conf");
    assert!(
        kubelet_conf.contains(&format!("server: {LB_URL}\n")),
        "{kubelet_conf}"
    );

    let files_before = node_files(&lab);
    let configmaps_before = configmap_versions(&lab);

    // What observation sees: TLS through the LB verifies now, the hand edits are read.
    let snapshot = lab.dir.join("snapshot.json");
    let observed: Value =
        serde_json::from_str(&observe(lab.dir.join("hactl.toml").as_path(), &snapshot)).unwrap();
    assert_eq!(
        observed["endpoint"]["tls"]["status"], "ok",
        "{}",
        observed["endpoint"]
    );

    let (plan, actions) = plan_actions(file);
    let want = [
        // Done by hand.
        ("apiserver_cert.cp1", "no-op"),
        ("configmap.kube-system.kube-proxy", "no-op"),
        ("kubeconfig.w1.kubelet", "no-op"),
        // Left.
        ("endpoint", "read"),
        ("kubeconfig.cp1.admin", "update"),
        ("kubeconfig.cp1.super-admin", "update"),
        ("configmap.kube-system.kubeadm-config", "update"),
        ("configmap.kube-public.cluster-info", "update"),
        ("kubeconfig.w2.kubelet", "update"),
        ("control_plane.cp1", "no-op"),
        ("control_plane.cp2", "create"),
        ("control_plane.cp3", "create"),
    ];
    for (address, action) in want {
        assert_eq!(
            actions.get(address).map(String::as_str),
            Some(action),
            "{address}: {actions:#?}"
        );
    }
    // Nothing else changed its action from the fresh lab's plan.
    for (address, action) in &actions {
        if !want.iter().any(|(a, _)| a == address) {
            assert_eq!(Some(action), fresh.get(address), "{address}: {actions:#?}");
        }
    }
    // kube-apiserver rereads its serving certificate (the LB's TLS verifies), so no reload.
    // The restarts the operator left undone are what is left of (b) and (c): every kube-proxy
    // Pod is older than the ConfigMap's edit, w1's kubelet older than its file's.
    let handlers = handlers_of(&plan);
    assert!(
        !handlers.contains_key("handler.cp1.kube-apiserver"),
        "{handlers:?}"
    );
    for node in ["cp1", "w1", "w2"] {
        let by = &handlers[&format!("handler.{node}.kube-proxy")];
        assert!(
            by.contains(&"configmap.kube-system.kube-proxy".to_string()),
            "{handlers:?}"
        );
    }
    assert_eq!(
        handlers.get("handler.w1.kubelet"),
        Some(&vec!["kubeconfig.w1.kubelet".to_string()]),
        "{handlers:?}"
    );
    // w2's kubelet.conf is still to change: its restarts follow that change, as on a fresh lab.
    assert_eq!(
        handlers.get("handler.w2.kubelet"),
        Some(&vec!["kubeconfig.w2.kubelet".to_string()]),
        "{handlers:?}"
    );
    let endpoint = plan["resource_changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "endpoint")
        .unwrap();
    assert!(
        !endpoint["reason"]
            .as_str()
            .unwrap()
            .contains("does not verify"),
        "{endpoint}"
    );

    // The text plan counts three changes fewer than the fresh lab's fixture plan.
    let live = hactl(&["plan", "--no-color", file]);
    assert_eq!(live.status.code(), Some(0), "{}", text(&live.stderr));
    let (add, change, destroy) = summary(&text(&live.stdout));
    let (fresh_add, fresh_change, fresh_destroy) = summary(&fixture_plan("fresh-1.33.json"));
    assert_eq!(
        (add, change + 3, destroy),
        (fresh_add, fresh_change, fresh_destroy),
        "{}",
        text(&live.stdout)
    );

    let changes = hactl(&["plan", "--detailed-exitcode", file]);
    assert_eq!(changes.status.code(), Some(2), "{}", text(&changes.stderr));

    // Observing and planning changed nothing.
    assert_eq!(node_files(&lab), files_before, "planning changed files");
    assert_eq!(configmap_versions(&lab), configmaps_before);

    // (d) the operator restarts kube-proxy by hand: the DaemonSet's new Pods read the edited
    // ConfigMap; w1's kubelet restart is still left, and w2's restarts still follow its file.
    let deleted = lab.kubectl(&[
        "-n",
        "kube-system",
        "delete",
        "pod",
        "-l",
        "k8s-app=kube-proxy",
    ]);
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let pods = lab.kubectl_json(&[
            "-n",
            "kube-system",
            "get",
            "pods",
            "-l",
            "k8s-app=kube-proxy",
        ]);
        let ready = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .count();
        // One per Node: cp1, w1 and w2 (cp2 and cp3 have not joined).
        if ready == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kube-proxy Pods: {pods}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (plan, _) = plan_actions(file);
    let handlers = handlers_of(&plan);
    assert!(
        !handlers.contains_key("handler.cp1.kube-proxy"),
        "{handlers:?}"
    );
    assert!(
        !handlers.contains_key("handler.w1.kube-proxy"),
        "{handlers:?}"
    );
    assert_eq!(
        handlers.get("handler.w2.kube-proxy"),
        Some(&vec!["kubeconfig.w2.kubelet".to_string()]),
        "{handlers:?}"
    );
    assert_eq!(
        handlers.get("handler.w1.kubelet"),
        Some(&vec!["kubeconfig.w1.kubelet".to_string()]),
        "{handlers:?}"
    );

    // (e) cp1's scheduler.conf rewritten by hand (same content, a second after the scheduler's
    // container started): its restart is left, until the operator stops the pod and the
    // kubelet recreates it.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    lab.ssh_ok("cp1", "touch /etc/kubernetes/scheduler.conf");
    let handlers = handlers_of(&plan_actions(file).0);
    assert_eq!(
        handlers.get("handler.cp1.kube-scheduler"),
        Some(&vec!["kubeconfig.cp1.scheduler".to_string()]),
        "{handlers:?}"
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let id = lab.ssh_ok("cp1", "crictl pods --name kube-scheduler -q");
    lab.ssh_ok(
        "cp1",
        &format!("crictl stopp {0} && crictl rmp {0}", id.trim()),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let handlers = handlers_of(&plan_actions(file).0);
        if !handlers.contains_key("handler.cp1.kube-scheduler") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted scheduler still reads as older than its file: {handlers:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// cp1's apiserver certificate reissued the way hactl plans it: every existing SAN kept in its
/// order, then the LB's name and address; same key, subject, usages and validity, new serial.
/// (`hactl::lab::pki::issue` writes all DNS names before all IPs, kubeadm's order, so it
/// cannot make this one.)
fn reissue_with_lb_sans_appended(lab: &Lab, net: u8) {
    use hactl::observed::San;
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    };
    let pki = lab.dir.join("nodes/cp1/etc/kubernetes/pki");
    let read = |f: &str| std::fs::read_to_string(pki.join(f)).unwrap();
    let old = hactl::readings::certificate(&read("apiserver.crt"), Some(&read("ca.crt"))).unwrap();
    assert_eq!(old.subject, "CN=kube-apiserver");
    assert_eq!(old.sans.len(), 7, "kubeadm's SANs: {:?}", old.sans);
    let time = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    };

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "kube-apiserver");
    params.distinguished_name = dn;
    let mut serial = [0u8; 8];
    hactl::lab::pki::random_bytes(&mut serial).unwrap();
    serial[0] = serial[0] & 0x7f | 1;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.not_before = time(&old.not_before);
    params.not_after = time(&old.not_after);
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let lb = [
        San::Dns("k8s-api.lab.internal".into()),
        San::Ip(format!("127.0.{net}.100").parse().unwrap()),
    ];
    params.subject_alt_names = old
        .sans
        .iter()
        .chain(&lb)
        .map(|san| match san {
            San::Dns(d) => SanType::DnsName(d.as_str().try_into().unwrap()),
            San::Ip(ip) => SanType::IpAddress(*ip),
        })
        .collect();

    let ca_key = KeyPair::from_pem(&read("ca.key")).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&read("ca.crt"), ca_key).unwrap();
    let key = KeyPair::from_pem(&read("apiserver.key")).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(pki.join("apiserver.crt"), cert.pem()).unwrap();
}

/// `half-1.31.json` is `hactl observe` of a 1.31 lab whose cp1 certificate was reissued with
/// the LB's SANs appended (HACTL_WRITE_FIXTURES=1 rewrites it from the lab).
#[test]
fn the_half_converted_fixture_is_a_1_31_lab_with_cp1_reissued() {
    let net = 30;
    let lab = Lab::up("half30", &lab_plan(net), &[]);
    reissue_with_lb_sans_appended(&lab, net);
    let snapshot = lab.dir.join("snapshot.json");
    let json = observe(&lab.dir.join("hactl.toml"), &snapshot);
    for secret in ["PRIVATE KEY", "client-key-data: LS0", "token: "] {
        assert!(!json.contains(secret), "the snapshot holds {secret:?}");
    }
    let observed: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        observed["endpoint"]["tls"]["status"], "ok",
        "{}",
        observed["endpoint"]
    );
    let sans = &observed["nodes"]["cp1"]["apiserver_cert"]["sans"];
    assert_eq!(
        sans.as_array().and_then(|s| s.last()),
        Some(&Value::String(format!("IP:127.0.{net}.100"))),
        "{sans}"
    );
    check_fixture("half-1.31.json", &json, net);
}
