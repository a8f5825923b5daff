//! For the tests that join nodes: the cluster as hactl leaves it before a join
//! (controlPlaneEndpoint and certSANs in kubeadm-config, cluster-info at the LB and re-signed,
//! cp1's certificate with the LB's names) and the credentials a join needs, made with the lab's
//! own kubeadm on cp1.

use std::process::Output;
use std::time::Duration;

use super::Lab;

pub const LB: &str = "k8s-api.lab.internal:6443";

fn both(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What a join needs, made with the lab's own kubeadm on cp1.
pub struct Creds {
    pub token: String,
    pub pin: String,
    pub key: String,
}

impl Creds {
    pub fn new(lab: &Lab) -> Creds {
        let line = lab.ssh_ok("cp1", "kubeadm token create --print-join-command");
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |flag: &str| {
            let i = words.iter().position(|w| *w == flag).unwrap();
            words[i + 1].to_string()
        };
        let certs = lab.ssh_ok("cp1", "kubeadm init phase upload-certs --upload-certs");
        Creds {
            token: after("--token"),
            pin: after("--discovery-token-ca-cert-hash"),
            key: certs.lines().last().unwrap().trim().to_string(),
        }
    }

    pub fn join(&self, endpoint: &str) -> String {
        format!(
            "kubeadm join {endpoint} --token {} --discovery-token-ca-cert-hash {}",
            self.token, self.pin
        )
    }

    pub fn join_control_plane(&self, endpoint: &str) -> String {
        format!(
            "{} --control-plane --certificate-key {}",
            self.join(endpoint),
            self.key
        )
    }
}

/// The cluster made ready to join, then cp2's control-plane join with the `kubeadm-join-fails`
/// fault (it fails right after its etcd member was added): the join's credentials (for the
/// next join) and kubeadm's output, which exited 1.
pub fn join_failing_after_member_add(lab: &Lab, net: u8) -> (Creds, Output) {
    let creds = ready_to_join(lab, net);
    lab.fault("cp2", &["kubeadm-join-fails"]);
    let out = lab.ssh("cp2", &creds.join_control_plane(LB));
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    (creds, out)
}

/// kubeadm-config gets controlPlaneEndpoint and the LB's certSANs, with hactl's own editor
/// (its ConfigMap step).
pub fn set_control_plane_endpoint(lab: &Lab, net: u8) {
    lab.edit_configmap("kube-system", "kubeadm-config", |cm| {
        let text = cm["data"]["ClusterConfiguration"].as_str().unwrap();
        let sans = [
            "k8s-api.lab.internal".to_string(),
            format!("127.0.{net}.100"),
        ];
        let text = hactl::cluster_config::converge(text, LB, &sans).unwrap();
        cm["data"]["ClusterConfiguration"] = text.into();
    });
}

/// cluster-info's server becomes the LB; then, as hactl does, wait for the bootstrapsigner
/// to re-sign it (every signature changes).
pub fn point_cluster_info_at_lb(lab: &Lab, net: u8) {
    let signatures = || {
        let cm = lab.kubectl_json(&["get", "configmap", "-n", "kube-public", "cluster-info"]);
        cm["data"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("jws-kubeconfig-"))
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect::<Vec<_>>()
    };
    let before = signatures();
    assert!(!before.is_empty());
    lab.edit_configmap("kube-public", "cluster-info", |cm| {
        let kc = cm["data"]["kubeconfig"].as_str().unwrap().replace(
            &format!("https://127.0.{net}.11:6443"),
            &format!("https://{LB}"),
        );
        cm["data"]["kubeconfig"] = kc.into();
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while signatures().iter().any(|s| before.contains(s)) {
        assert!(
            std::time::Instant::now() < deadline,
            "cluster-info was not re-signed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The cluster as hactl leaves it before a join: controlPlaneEndpoint, cluster-info and
/// cp1's certificate at the LB; a token, the CA pin and a certificate key.
pub fn ready_to_join(lab: &Lab, net: u8) -> Creds {
    set_control_plane_endpoint(lab, net);
    point_cluster_info_at_lb(lab, net);
    lab.add_lb_san(net);
    Creds::new(lab)
}
