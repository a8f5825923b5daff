//! The cluster-API seam (`KubeCluster`) against a lab's API server, checked with the real
//! `kubectl`: a ConfigMap replaced at its resourceVersion (and refused at a stale one) as the
//! `hactl` field manager, kube-proxy Pods listed by label and node, deleted and made again,
//! a Node's readiness, a Lease created, renewed, refused when stale and deleted, and the
//! certificate the API server serves checked as Go checks it.

mod lab_support;

use std::time::{Duration, Instant};

use hactl::seams::{ClusterApi, Lease, SeamError};
use hactl::transport::cluster::KubeCluster;
use lab_support::{Lab, plan};

const NET: u8 = 45;

#[test]
fn the_cluster_api_seam_against_a_lab() {
    let lab = Lab::up("seams-cluster", &plan(NET, 1, 1), &[]);
    let admin = std::fs::read_to_string(lab.dir.join("admin.conf")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let api = KubeCluster::from_kubeconfig(&admin, Duration::from_secs(10))
            .await
            .unwrap();

        // A ConfigMap: read, replaced at its resourceVersion, refused at the old one.
        let cm = api
            .get_configmap("kube-system", "kube-proxy")
            .await
            .unwrap();
        let before = cm.data["kubeconfig.conf"].clone();
        let mut edited = cm.clone();
        let after = before.replace(&format!("127.0.{NET}.11"), "k8s-api.lab.internal");
        assert_ne!(after, before);
        edited.data.insert("kubeconfig.conf".into(), after.clone());
        let stored = api.replace_configmap(&edited).await.unwrap();
        assert_ne!(stored.resource_version, cm.resource_version);
        assert_eq!(stored.data, edited.data, "every other key kept");
        let err = api.replace_configmap(&edited).await.unwrap_err();
        assert!(matches!(err, SeamError::Conflict { .. }), "{err}");
        let seen = lab.kubectl_json(&[
            "get",
            "configmap",
            "-n",
            "kube-system",
            "kube-proxy",
            "--show-managed-fields",
        ]);
        assert_eq!(seen["data"]["kubeconfig.conf"], after.as_str());
        let managers: Vec<&str> = seen["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["manager"].as_str())
            .collect();
        assert!(managers.contains(&"hactl"), "{managers:?}");
        let err = api.get_configmap("kube-system", "nope").await.unwrap_err();
        assert!(matches!(err, SeamError::NotFound { .. }), "{err}");

        // kube-proxy Pods by label and node; a deleted one is made again by the node.
        let all = api
            .list_pods("kube-system", "k8s-app=kube-proxy", None)
            .await
            .unwrap();
        assert_eq!(all.len(), 2, "{all:?}");
        let w1 = api
            .list_pods("kube-system", "k8s-app=kube-proxy", Some("w1"))
            .await
            .unwrap();
        assert_eq!(w1.len(), 1);
        assert!(w1[0].ready && w1[0].created_at.ends_with('Z'), "{w1:?}");
        api.delete_pod("kube-system", &w1[0].name).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = api
                .list_pods("kube-system", "k8s-app=kube-proxy", Some("w1"))
                .await
                .unwrap();
            if now.len() == 1 && now[0].uid != w1[0].uid && now[0].ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no new kube-proxy Pod on w1: {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }

        // A Node.
        assert!(api.get_node("w1").await.unwrap().ready);
        assert!(matches!(
            api.get_node("w9").await,
            Err(SeamError::NotFound { .. })
        ));

        // A Lease: created once, renewed at its resourceVersion, deleted.
        let lease = Lease {
            namespace: "kube-system".into(),
            name: "hactl".into(),
            holder: Some("operator@host run-1".into()),
            acquire_time: Some("2026-12-04T10:00:00.000000Z".into()),
            renew_time: Some("2026-12-04T10:00:00.000000Z".into()),
            duration_secs: Some(60),
            resource_version: String::new(),
        };
        let created = api.create_lease(&lease).await.unwrap();
        assert_eq!(created.holder, lease.holder);
        assert_eq!(created.acquire_time, lease.acquire_time);
        let err = api.create_lease(&lease).await.unwrap_err();
        assert!(matches!(err, SeamError::Conflict { .. }), "{err}");
        let renewed = api
            .renew_lease(&Lease {
                renew_time: Some("2026-12-04T10:00:10.000000Z".into()),
                ..created.clone()
            })
            .await
            .unwrap();
        assert_eq!(
            api.get_lease("kube-system", "hactl").await.unwrap(),
            renewed
        );
        assert_eq!(
            renewed.renew_time.as_deref(),
            Some("2026-12-04T10:00:10.000000Z")
        );
        let err = api.renew_lease(&created).await.unwrap_err();
        assert!(
            matches!(err, SeamError::Conflict { .. }),
            "a stale renew: {err}"
        );
        let holder = lab.kubectl(&[
            "get",
            "lease",
            "-n",
            "kube-system",
            "hactl",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ]);
        assert_eq!(
            String::from_utf8_lossy(&holder.stdout),
            "operator@host run-1"
        );
        api.delete_lease("kube-system", "hactl").await.unwrap();

        // The certificate cp1's API server serves: valid for its address, not (yet) for the
        // load balancer's name, in Go's words.
        let ca =
            std::fs::read_to_string(lab.dir.join("nodes/cp1/etc/kubernetes/pki/ca.crt")).unwrap();
        let cp1 = format!("127.0.{NET}.11");
        api.verify_served(&format!("{cp1}:6443"), &cp1, &ca)
            .await
            .unwrap();
        let err = api
            .verify_served(&format!("{cp1}:6443"), "k8s-api.lab.internal", &ca)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x509: certificate is valid for")
                && err.ends_with("not k8s-api.lab.internal"),
            "{err}"
        );
        assert!(matches!(
            api.get_lease("kube-system", "hactl").await,
            Err(SeamError::NotFound { .. })
        ));

        // The bootstrap tokens, as kubectl sees their Secrets; cluster-info's signatures, made
        // by the lab's bootstrapsigner, verify with them (the secret never shows in Debug).
        let tokens = api.bootstrap_tokens().await.unwrap();
        let secrets = lab.kubectl_json(&["get", "secrets", "-n", "kube-system"]);
        let ids: Vec<String> = secrets["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["type"] == "bootstrap.kubernetes.io/token")
            .map(|s| {
                s["metadata"]["name"].as_str().unwrap()["bootstrap-token-".len()..].to_string()
            })
            .collect();
        assert!(!ids.is_empty());
        assert_eq!(tokens.iter().map(|t| t.id.clone()).collect::<Vec<_>>(), ids);
        let info = api
            .get_configmap("kube-public", "cluster-info")
            .await
            .unwrap();
        for t in &tokens {
            assert_eq!(t.secret.len(), 16);
            assert!(!format!("{t:?}").contains(&t.secret));
            assert_eq!(
                info.data[&format!("jws-kubeconfig-{}", t.id)],
                hactl::jws::compute_detached_signature(&info.data["kubeconfig"], &t.id, &t.secret)
            );
        }
    });
}
