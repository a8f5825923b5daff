//! The lab's `kubeadm token`, `init phase upload-certs`, `init phase upload-config` and
//! `init phase certs apiserver`, run on the nodes over real `ssh` and checked with the real
//! `kubectl` and `openssl`.

mod lab_support;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lab_support::{Lab, plan};

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn secret(lab: &Lab, name: &str) -> Option<serde_json::Value> {
    let out = lab.kubectl(&["get", "secret", "-n", "kube-system", name, "-o", "json"]);
    if !out.status.success() {
        assert!(text(&out).contains("NotFound"), "{}", text(&out));
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

fn field(secret: &serde_json::Value, key: &str) -> String {
    let raw = STANDARD
        .decode(
            secret["data"][key]
                .as_str()
                .unwrap_or_else(|| panic!("no {key}: {secret:#}")),
        )
        .unwrap();
    String::from_utf8(raw).unwrap()
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "waited {timeout:?} for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn unix_of(rfc3339: &str) -> i64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[test]
fn tokens_are_bootstrap_secrets_that_sign_cluster_info_and_expire() {
    let lab = Lab::up("kubeadm-token", &plan(17, 1, 1), &[]);

    let token = lab.ssh_ok("cp1", "kubeadm token create --ttl 1h");
    let token = token.trim();
    let (id, token_secret) = token.split_once('.').expect("id.secret");
    assert!(id.len() == 6 && token_secret.len() == 16, "{token}");
    let s = secret(&lab, &format!("bootstrap-token-{id}")).expect("the token's Secret");
    assert_eq!(s["type"], "bootstrap.kubernetes.io/token");
    assert_eq!(field(&s, "token-secret"), token_secret);
    assert_eq!(field(&s, "usage-bootstrap-authentication"), "true");
    assert_eq!(field(&s, "usage-bootstrap-signing"), "true");
    assert_eq!(
        field(&s, "auth-extra-groups"),
        "system:bootstrappers:kubeadm:default-node-token"
    );
    let expires = unix_of(&field(&s, "expiration"));
    assert!((expires - now() - 3600).abs() < 30, "expires {expires}");

    // The bootstrapsigner signs cluster-info for it.
    wait_until(
        "the token's JWS in cluster-info",
        Duration::from_secs(10),
        || {
            let cm = lab.kubectl_json(&["get", "cm", "-n", "kube-public", "cluster-info"]);
            cm["data"][format!("jws-kubeconfig-{id}")].is_string()
        },
    );

    // The token authenticates as a bootstrapper, which may read kubeadm-config.
    let ca = lab.dir.join("nodes/cp1/etc/kubernetes/pki/ca.crt");
    let as_token = std::process::Command::new("kubectl")
        .args(["--server", "https://127.0.17.11:6443", "--token", token])
        .arg(format!("--certificate-authority={}", ca.display()))
        .args([
            "get",
            "cm",
            "-n",
            "kube-system",
            "kubeadm-config",
            "-o",
            "name",
        ])
        .output()
        .unwrap();
    assert!(as_token.status.success(), "{}", text(&as_token));

    let list = lab.ssh_ok("cp1", "kubeadm token list");
    let header = list.lines().next().unwrap();
    assert!(
        header.starts_with("TOKEN") && header.contains("EXTRA GROUPS"),
        "{list}"
    );
    let row = list.lines().find(|l| l.starts_with(token)).expect("listed");
    let ttl_col = header.find("TTL").unwrap();
    assert!(
        row[ttl_col..].starts_with("59m") || row[ttl_col..].starts_with("1h"),
        "{list}"
    );
    assert!(row.contains("authentication,signing"), "{row}");

    // --print-join-command: the kubeconfig's server and the CA pin, as openssl computes it.
    let join = lab.ssh_ok("cp1", "kubeadm token create --print-join-command");
    let pin = lab.ssh_ok(
        "cp1",
        "openssl x509 -pubkey -in /etc/kubernetes/pki/ca.crt | openssl pkey -pubin -outform der | sha256sum | cut -d' ' -f1",
    );
    let words: Vec<&str> = join.split_whitespace().collect();
    assert_eq!(
        &words[..3],
        &["kubeadm", "join", "127.0.17.11:6443"],
        "{join}"
    );
    assert_eq!(words[3], "--token");
    assert_eq!(words[5], "--discovery-token-ca-cert-hash");
    assert_eq!(words[6], format!("sha256:{}", pin.trim()));

    let deleted = lab.ssh_ok("cp1", &format!("kubeadm token delete {id}"));
    assert_eq!(deleted, format!("bootstrap token \"{id}\" deleted\n"));
    assert!(secret(&lab, &format!("bootstrap-token-{id}")).is_none());
    let again = lab.ssh("cp1", &format!("kubeadm token delete {id}"));
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("not found"), "{}", text(&again));

    // A token expires: the tokencleaner removes its Secret, as on a real cluster.
    let short = lab.ssh_ok("cp1", "kubeadm token create --ttl 2s");
    let short_id = short.trim().split('.').next().unwrap().to_string();
    assert!(secret(&lab, &format!("bootstrap-token-{short_id}")).is_some());
    wait_until(
        "the expired token to be cleaned up",
        Duration::from_secs(15),
        || secret(&lab, &format!("bootstrap-token-{short_id}")).is_none(),
    );

    // A node without admin.conf cannot create tokens, and says why.
    let worker = lab.ssh("w1", "kubeadm token create");
    assert_eq!(worker.status.code(), Some(1));
    assert!(
        text(&worker).contains(
            "failed to load admin kubeconfig: open /etc/kubernetes/admin.conf: no such file or directory"
        ),
        "{}",
        text(&worker)
    );
    let bad = lab.ssh("cp1", "kubeadm token create --ttl 3d");
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad).contains("unknown unit"), "{}", text(&bad));

    // upload-config: the ClusterConfiguration of --config lands in kubeadm-config; without
    // --config kubeadm uploads its defaults, dropping the hand-set endpoint.
    lab.ssh_ok(
        "cp1",
        "printf 'apiVersion: kubeadm.k8s.io/v1beta4\\nkind: ClusterConfiguration\\ncontrolPlaneEndpoint: k8s-api.lab.internal:6443\\nkubernetesVersion: v1.31.14\\n' > /etc/kubernetes/kubeadm-hactl.yaml",
    );
    let up = lab.ssh_ok(
        "cp1",
        "kubeadm init phase upload-config kubeadm --config /etc/kubernetes/kubeadm-hactl.yaml",
    );
    assert!(
        up.contains("Storing the configuration used in ConfigMap \"kubeadm-config\""),
        "{up}"
    );
    let stored = || {
        let out = lab.kubectl(&[
            "get",
            "cm",
            "-n",
            "kube-system",
            "kubeadm-config",
            "-o",
            "jsonpath={.data.ClusterConfiguration}",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        stored().contains("controlPlaneEndpoint: k8s-api.lab.internal:6443"),
        "{}",
        stored()
    );
    lab.ssh_ok("cp1", "kubeadm init phase upload-config kubeadm");
    assert!(!stored().contains("controlPlaneEndpoint"), "{}", stored());
    assert!(
        stored().contains("kind: ClusterConfiguration"),
        "{}",
        stored()
    );
    lab.ssh_ok(
        "cp1",
        "sed -i s/v1beta4/v1beta2/ /etc/kubernetes/kubeadm-hactl.yaml",
    );
    let old = lab.ssh(
        "cp1",
        "kubeadm init phase upload-config kubeadm --config /etc/kubernetes/kubeadm-hactl.yaml",
    );
    assert_eq!(old.status.code(), Some(1));
    assert!(text(&old).contains("old API spec"), "{}", text(&old));
}

#[test]
fn upload_certs_encrypts_the_shared_pki_for_two_hours() {
    let lab = Lab::up("kubeadm-certs", &plan(18, 1, 0), &[]);

    let skipped = lab.ssh_ok("cp1", "kubeadm init phase upload-certs");
    assert_eq!(
        skipped,
        "[upload-certs] Skipping phase. Please see --upload-certs\n"
    );
    assert!(secret(&lab, "kubeadm-certs").is_none());

    let out = lab.ssh_ok("cp1", "kubeadm init phase upload-certs --upload-certs");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "[upload-certs] Storing the certificates in Secret \"kubeadm-certs\" in the \"kube-system\" Namespace"
    );
    assert_eq!(lines[1], "[upload-certs] Using certificate key:");
    let key = lines[2];
    assert!(
        key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()),
        "{key}"
    );

    let certs = secret(&lab, "kubeadm-certs").expect("kubeadm-certs");
    let data = certs["data"].as_object().unwrap();
    let mut names: Vec<&str> = data.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ca.crt",
            "ca.key",
            "etcd-ca.crt",
            "etcd-ca.key",
            "front-proxy-ca.crt",
            "front-proxy-ca.key",
            "sa.key",
            "sa.pub"
        ]
    );
    // Encrypted with the key: decrypting gives the node's own file back; another key fails.
    let key_bytes = hactl::lab::kubeadm::certs::decode_key(key).unwrap();
    let sealed = STANDARD
        .decode(data["etcd-ca.key"].as_str().unwrap())
        .unwrap();
    let plain = hactl::lab::kubeadm::certs::decrypt(&key_bytes, &sealed).unwrap();
    let on_node = std::fs::read(lab.dir.join("nodes/cp1/etc/kubernetes/pki/etcd/ca.key")).unwrap();
    assert_eq!(plain, on_node);
    assert!(!String::from_utf8_lossy(&sealed).contains("PRIVATE KEY"));
    let mut wrong = key_bytes.clone();
    wrong[31] ^= 0x80;
    assert_eq!(
        hactl::lab::kubeadm::certs::decrypt(&wrong, &sealed).unwrap_err(),
        "cipher: message authentication failed"
    );

    // Owned by a proxy token that expires in 2 hours.
    let owner = &certs["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Secret");
    let proxy_name = owner["name"].as_str().unwrap().to_string();
    let proxy = secret(&lab, &proxy_name).expect("the proxy token");
    assert_eq!(owner["uid"], proxy["metadata"]["uid"]);
    assert_eq!(
        field(&proxy, "description"),
        "Proxy for managing TTL for the kubeadm-certs secret"
    );
    let expires = unix_of(&field(&proxy, "expiration"));
    assert!((expires - now() - 7200).abs() < 30, "expires {expires}");

    // A chosen key is used as given.
    let chosen = "0f".repeat(32);
    let again = lab.ssh_ok(
        "cp1",
        &format!("kubeadm init phase upload-certs --upload-certs --certificate-key {chosen}"),
    );
    assert_eq!(again.lines().last(), Some(chosen.as_str()));
    let certs = secret(&lab, "kubeadm-certs").unwrap();
    let sealed = STANDARD
        .decode(certs["data"]["ca.crt"].as_str().unwrap())
        .unwrap();
    let plain = hactl::lab::kubeadm::certs::decrypt(
        &hactl::lab::kubeadm::certs::decode_key(&chosen).unwrap(),
        &sealed,
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&plain).contains("BEGIN CERTIFICATE"));

    // Two hours pass for the proxy token (its expiration moved into the past): the
    // tokencleaner removes it and the garbage collector the Secret it owns.
    let proxy_name = certs["metadata"]["ownerReferences"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let past = STANDARD.encode("2020-01-01T00:00:00Z");
    let patched = lab.kubectl(&[
        "patch",
        "secret",
        "-n",
        "kube-system",
        &proxy_name,
        "--type",
        "merge",
        "-p",
        &format!(r#"{{"data":{{"expiration":"{past}"}}}}"#),
    ]);
    assert!(patched.status.success(), "{}", text(&patched));
    wait_until("kubeadm-certs to expire", Duration::from_secs(15), || {
        secret(&lab, "kubeadm-certs").is_none()
    });
    assert!(secret(&lab, &proxy_name).is_none());
}

fn openssl(args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The published procedure's SAN step: with the certificate on disk kubeadm keeps it (and
/// says so); moved away, kubeadm makes a new key and a certificate for the config's SANs.
#[test]
fn init_phase_certs_apiserver_keeps_a_valid_certificate_and_makes_one_from_the_config() {
    let net = 43;
    let lab = Lab::up("kubeadm-phase-certs", &plan(net, 1, 0), &[]);
    let pki = lab.dir.join("nodes/cp1/etc/kubernetes/pki");
    let read = |f: &str| std::fs::read(pki.join(f)).unwrap();
    let (crt, key) = (read("apiserver.crt"), read("apiserver.key"));
    // The operator's ~/kubeadm.yaml (the node's root home): the stored ClusterConfiguration
    // with the LB's names added.
    let cm = lab.kubectl_json(&["get", "configmap", "-n", "kube-system", "kubeadm-config"]);
    let cluster = cm["data"]["ClusterConfiguration"].as_str().unwrap();
    let config = hactl::cluster_config::converge(
        cluster,
        "k8s-api.lab.internal:6443",
        &["k8s-api.lab.internal".into(), format!("127.0.{net}.100")],
    )
    .unwrap();
    std::fs::write(lab.dir.join("nodes/cp1/root/kubeadm.yaml"), &config).unwrap();
    let phase = "kubeadm init phase certs apiserver --config ~/kubeadm.yaml";

    // A valid certificate on disk is kept, whatever its SANs: not a byte changes.
    let out = lab.ssh("cp1", phase);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "[certs] Using existing apiserver certificate and key on disk\n"
    );
    assert_eq!(
        (read("apiserver.crt"), read("apiserver.key")),
        (crt.clone(), key.clone())
    );

    // Moved away: a new key, and a certificate for the config's SANs, signed by the CA.
    lab.ssh_ok("cp1", "mkdir -p ~/old && mv /etc/kubernetes/pki/apiserver.crt /etc/kubernetes/pki/apiserver.key ~/old/");
    let out = lab.ssh("cp1", phase);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "[certs] Generating \"apiserver\" certificate and key\n\
             [certs] apiserver serving cert is signed for DNS names [cp1 k8s-api.lab.internal kubernetes kubernetes.default kubernetes.default.svc kubernetes.default.svc.cluster.local] and IPs [10.96.0.1 127.0.{net}.11 127.0.{net}.100]\n"
        )
    );
    assert_ne!(read("apiserver.key"), key, "a new key");
    let (crt_path, key_path, ca_path) = (
        pki.join("apiserver.crt"),
        pki.join("apiserver.key"),
        pki.join("ca.crt"),
    );
    let (crt_path, key_path, ca_path) = (
        crt_path.to_str().unwrap(),
        key_path.to_str().unwrap(),
        ca_path.to_str().unwrap(),
    );
    assert_eq!(
        openssl(&["verify", "-CAfile", ca_path, crt_path]),
        format!("{crt_path}: OK\n")
    );
    let x509 = openssl(&[
        "x509",
        "-in",
        crt_path,
        "-noout",
        "-subject",
        "-ext",
        "subjectAltName,keyUsage,extendedKeyUsage,basicConstraints",
    ]);
    for want in [
        "subject=CN = kube-apiserver",
        &format!(
            "DNS:cp1, DNS:k8s-api.lab.internal, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local, IP Address:10.96.0.1, IP Address:127.0.{net}.11, IP Address:127.0.{net}.100"
        ),
        "Digital Signature, Key Encipherment",
        "TLS Web Server Authentication",
        "CA:FALSE",
    ] {
        assert!(x509.contains(want), "no {want:?} in\n{x509}");
    }
    // PKCS#1, as kubeadm writes keys.
    let key_pem = pem::parse(read("apiserver.key")).unwrap();
    assert_eq!(key_pem.tag(), "RSA PRIVATE KEY");
    assert_eq!(
        openssl(&["rsa", "-in", key_path, "-check", "-noout"]),
        "RSA key ok\n"
    );
    assert_eq!(
        openssl(&["x509", "-in", crt_path, "-noout", "-modulus"]),
        openssl(&["rsa", "-in", key_path, "-noout", "-modulus"]),
        "the certificate is for the new key"
    );
    assert_eq!(
        lab.ssh_ok(
            "cp1",
            "stat -c %a /etc/kubernetes/pki/apiserver.key /etc/kubernetes/pki/apiserver.crt"
        ),
        "600\n644\n"
    );

    // A certificate another CA (of the same name) signed is refused, in Go's words.
    let other_ca = hactl::lab::pki::new_ca("kubernetes").unwrap();
    let mut spec = hactl::lab::pki::CertSpec::new("kube-apiserver", hactl::lab::pki::Usage::Server);
    spec.dns_names = vec!["cp1".into()];
    let foreign = hactl::lab::pki::issue(&other_ca, &spec).unwrap();
    std::fs::write(pki.join("apiserver.crt"), &foreign.cert_pem).unwrap();
    let out = lab.ssh("cp1", phase);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error execution phase certs/apiserver: [certs] certificate apiserver not signed by CA certificate ca: x509: certificate signed by unknown authority (possibly because of \"crypto/rsa: verification error\" while trying to verify candidate authority certificate \"kubernetes\")\n\
         To see the stack trace of this error execute with --v=5 or higher\n"
    );

    // A key left without its certificate: kubeadm will not write over it.
    lab.ssh_ok("cp1", "rm /etc/kubernetes/pki/apiserver.crt");
    let out = lab.ssh("cp1", phase);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("error execution phase certs/apiserver: failed to write or validate certificate \"apiserver\": failure loading apiserver certificate: couldn't load the certificate file /etc/kubernetes/pki/apiserver.crt: open /etc/kubernetes/pki/apiserver.crt: no such file or directory"),
        "{}",
        text(&out)
    );

    // What kubeadm refuses before any phase runs.
    let out = lab.ssh(
        "cp1",
        "kubeadm init phase certs apiserver --config ~/kubeadm.yaml --cert-dir /tmp",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).starts_with("can not mix '--config' with arguments [cert-dir]\n"),
        "{}",
        text(&out)
    );
    let out = lab.ssh(
        "cp1",
        "kubeadm init phase certs apiserver --config /etc/kubernetes/nope.yaml",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).starts_with("unable to read config from \"/etc/kubernetes/nope.yaml\" : open /etc/kubernetes/nope.yaml: no such file or directory\n"),
        "{}",
        text(&out)
    );

    // The original pair back: kubeadm keeps it again.
    lab.ssh_ok(
        "cp1",
        "mv ~/old/apiserver.crt ~/old/apiserver.key /etc/kubernetes/pki/",
    );
    assert_eq!((read("apiserver.crt"), read("apiserver.key")), (crt, key));
    assert!(
        lab.ssh_ok("cp1", phase)
            .contains("Using existing apiserver certificate")
    );
}
