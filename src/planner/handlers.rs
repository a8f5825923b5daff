//! The restarts changes trigger, with what verifies each.

use super::*;

impl<'a> Planner<'a> {
    /// The restart of `component` on `name`, after a change of a file it reads.
    pub(super) fn restart(&self, name: &str, component: Component) -> Handler {
        if component == Component::Kubelet {
            return restart_kubelet(name);
        }
        let runtime = self.facts.runtime;
        Handler {
            id: format!("handler.{name}.{}", component.as_str()),
            node: Some(name.to_string()),
            action: HandlerAction::RestartStaticPod {
                component,
                runtime: runtime.as_str().into(),
            },
            description: format!(
                "restart {} on {name} ({}; the kubelet recreates it)",
                component.as_str(),
                match runtime {
                    ContainerRuntime::Docker => "docker kill of its container",
                    _ => "crictl stopp and rmp of its pod",
                }
            ),
            verify: format!("{}'s leader Lease is renewed", component.as_str()),
            check: Some(HandlerCheck::LeaderLeaseRenewed {
                lease: component.as_str().to_string(),
            }),
            triggered_by: Vec::new(),
            runs_after: String::new(),
        }
    }

    /// After a new API server certificate on `name` (advertising `advertise`): served, or
    /// the static pod restarted.
    pub(super) fn reload_serving_certificate(&self, name: &str, advertise: &str) -> Handler {
        let runtime = self.facts.runtime;
        Handler {
            id: format!("handler.{name}.kube-apiserver"),
            node: Some(name.to_string()),
            action: HandlerAction::ReloadServingCertificate {
                runtime: runtime.as_str().into(),
            },
            description: format!(
                "reload kube-apiserver's serving certificate on {name} (it rereads the file; its static pod is restarted with {} only if the new certificate is not served within {CERT_RELOAD_TIMEOUT_SECS}s)",
                runtime_tool(runtime)
            ),
            verify: format!(
                "{}:6443 serves a certificate that verifies as {} against the cluster CA",
                advertise, self.desired.endpoint.host
            ),
            check: Some(HandlerCheck::ServedCertificate {
                address: format!("{advertise}:6443"),
                server_name: self.desired.endpoint.host.clone(),
            }),
            triggered_by: Vec::new(),
            runs_after: String::new(),
        }
    }
}

/// After cluster-info changed: kube-controller-manager's bootstrapsigner re-signs it.
pub(super) fn await_bootstrap_signer() -> Handler {
    Handler {
        id: "handler.cluster-info.jws".into(),
        node: None,
        action: HandlerAction::AwaitBootstrapSigner,
        description: "wait for kube-controller-manager's bootstrapsigner to re-sign cluster-info for every bootstrap token".into(),
        verify: "every jws-kubeconfig-<token-id> key of cluster-info verifies against the new kubeconfig".into(),
        check: Some(HandlerCheck::ClusterInfoSigned),
        triggered_by: Vec::new(),
        runs_after: String::new(),
    }
}

pub(super) fn runtime_tool(runtime: ContainerRuntime) -> &'static str {
    match runtime {
        ContainerRuntime::Docker => "docker",
        _ => "crictl",
    }
}

pub(super) fn restart_kubelet(node: &str) -> Handler {
    Handler {
        id: format!("handler.{node}.kubelet"),
        node: Some(node.to_string()),
        action: HandlerAction::RestartKubelet,
        description: format!("restart kubelet on {node} (systemctl restart kubelet)"),
        verify: format!("Node {node} stays Ready and its Lease is renewed"),
        check: Some(HandlerCheck::NodeReady {
            node: node.to_string(),
        }),
        triggered_by: Vec::new(),
        runs_after: String::new(),
    }
}

pub(super) fn restart_kube_proxy(node: &str) -> Handler {
    Handler {
        id: format!("handler.{node}.kube-proxy"),
        node: Some(node.to_string()),
        action: HandlerAction::RestartKubeProxy,
        description: format!(
            "restart kube-proxy on {node} (delete its Pod; the DaemonSet recreates it)"
        ),
        verify: format!("the new kube-proxy Pod on {node} becomes Ready"),
        check: Some(HandlerCheck::KubeProxyReady {
            node: node.to_string(),
        }),
        triggered_by: Vec::new(),
        runs_after: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::lab_plan;
    use super::*;

    fn handler<'p>(plan: &'p Plan, id: &str) -> &'p Handler {
        plan.handlers
            .iter()
            .find(|h| h.id == id)
            .unwrap_or_else(|| panic!("no {id}"))
    }

    #[test]
    fn each_handler_is_checked_against_the_cluster() {
        let plan = lab_plan("fresh-1.31");
        let checks: Vec<(&str, Option<&HandlerCheck>)> = plan
            .handlers
            .iter()
            .map(|h| (h.id.as_str(), h.check.as_ref()))
            .collect();
        assert!(checks.iter().all(|(_, c)| c.is_some()), "{checks:?}");
        assert_eq!(
            handler(&plan, "handler.w1.kubelet").check,
            Some(HandlerCheck::NodeReady { node: "w1".into() })
        );
        assert_eq!(
            handler(&plan, "handler.w2.kube-proxy").check,
            Some(HandlerCheck::KubeProxyReady { node: "w2".into() })
        );
        assert_eq!(
            handler(&plan, "handler.cp1.kube-apiserver").check,
            Some(HandlerCheck::ServedCertificate {
                address: "127.0.0.11:6443".into(),
                server_name: "k8s-api.lab.internal".into()
            })
        );
        assert_eq!(
            handler(&plan, "handler.cluster-info.jws").check,
            Some(HandlerCheck::ClusterInfoSigned)
        );
    }

    #[test]
    fn a_handler_two_changes_trigger_runs_once_after_the_later() {
        let plan = lab_plan("fresh-1.31");
        let proxy = handler(&plan, "handler.w1.kube-proxy");
        assert_eq!(
            proxy.triggered_by,
            ["configmap.kube-system.kube-proxy", "kubeconfig.w1.kubelet"]
        );
        assert_eq!(proxy.runs_after, "kubeconfig.w1.kubelet");
        assert_eq!(plan.handlers.iter().filter(|h| h.id == proxy.id).count(), 1);
    }

    #[test]
    fn a_static_pod_restarts_through_the_clusters_runtime() {
        let plan = lab_plan("fresh-1.23-docker");
        let reload = handler(&plan, "handler.cp1.kube-apiserver");
        assert_eq!(
            reload.action,
            HandlerAction::ReloadServingCertificate {
                runtime: "docker".into()
            }
        );
        assert_eq!(runtime_tool(ContainerRuntime::Docker), "docker");
        assert_eq!(runtime_tool(ContainerRuntime::Containerd), "crictl");
    }
}
