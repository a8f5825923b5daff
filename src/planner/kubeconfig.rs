//! The kubeconfig files on every node: `server:` pointed at the load balancer (or, for the
//! files kubeadm keeps local, left alone), and the restart of the component that reads each.

use super::*;

impl<'a> Planner<'a> {
    pub(super) fn local_url(&self, node: &Node, obs: &NodeObservation) -> String {
        obs.apiserver_endpoint.as_ref().map_or_else(
            || match node.address {
                std::net::IpAddr::V6(a) => format!("https://[{a}]:6443"),
                std::net::IpAddr::V4(a) => format!("https://{a}:6443"),
            },
            |e| e.url(),
        )
    }

    pub(super) fn kubeconfig(
        &mut self,
        resource: &Resource,
        name: &str,
        role: Role,
        file: &KubeconfigFile,
    ) -> ResourceChange {
        let obs = match self.observe(resource, name) {
            Ok(obs) => obs,
            Err(undecided) => return *undecided,
        };
        let text = obs.kubeconfigs.get(file.file);
        // Whether the reader still runs with an older file decides a restart: it is observed.
        let reader_started = self.reader_started(name, obs, file.reader);
        let modified = obs.kubeconfigs_modified_at.get(file.file);
        let stale = match (&reader_started, modified) {
            (Some(r), Some(m)) => later_by(m, r.at, r.margin_secs),
            _ => None,
        };
        // The file's hash counts too: a change in what redaction hides is a change.
        let sha = obs.kubeconfigs_sha256.get(file.file);
        let fp = fingerprint::kubeconfig(&obs.ssh, text, sha, stale);
        let path = file.path();
        let Some(text) = text else {
            if file.short == "super-admin" {
                return change(
                    resource,
                    Action::NoOp,
                    format!(
                        "{path} does not exist on {name}: kubeadm writes it only on the node where kubeadm init ran"
                    ),
                    None,
                    None,
                    fp,
                );
            }
            let help = if role == Role::Worker {
                format!(
                    "{name} does not look like a joined node: join it with kubeadm join first, or remove it from the desired state"
                )
            } else {
                format!(
                    "restore it (kubeadm init phase kubeconfig {} on {name}) and plan again",
                    file.short
                )
            };
            self.problem(
                Severity::Error,
                &resource.address(),
                format!("{path} is missing on {name}"),
                help,
            );
            return unknown(resource, format!("{path} is missing on {name}"), fp);
        };
        let Some(node) = self.node(name) else {
            return unknown(resource, format!("{name} is not in the desired state"), fp);
        };
        let wanted = match file.target {
            Target::LoadBalancer => self.desired.endpoint_url(),
            Target::Local => self.local_url(node, obs),
        };
        let current = match crate::kubeconfig::current_server(text) {
            Ok(current) => current,
            Err(e) => {
                self.problem(
                    Severity::Error,
                    &resource.address(),
                    format!("{path} on {name}: {e}"),
                    format!("fix {path} on {name} so that its current context names a cluster with a one-line server, then plan again"),
                );
                return unknown(resource, format!("{path} could not be read: {e}"), fp);
            }
        };
        let before = ResourceValue::File {
            path: path.clone(),
            server: Some(current.server.clone()),
            content: text.clone(),
        };
        if current.server == wanted {
            let mut reason = format!("server is already {wanted}: {}", file.why);
            if let (Some(true), Some(r), Some(m), Some(component)) =
                (stale, &reader_started, modified, file.reader)
            {
                // Changed by hand without the restart: the restart is what is left.
                let before = match r.margin_secs {
                    0 => "before".to_string(),
                    secs => format!("more than {} minutes before", secs / 60),
                };
                reason.push_str(&format!(
                    "; but {} on {name} started at {}, {before} {path} changed at {m}, so it still uses the old server: it is restarted",
                    r.who, r.at
                ));
                self.trigger(self.restart(name, component));
            }
            return unchanged(resource, reason, before, fp);
        }
        let new_text = match crate::kubeconfig::replace_server(text, &current, &wanted) {
            Ok(t) => t,
            Err(e) => {
                self.problem(
                    Severity::Error,
                    &resource.address(),
                    format!("{path} on {name}: the server line cannot be rewritten safely: {e}"),
                    format!("edit {path} on {name} so its server is a one-line value"),
                );
                return change(
                    resource,
                    Action::Unknown,
                    e.to_string(),
                    Some(before),
                    None,
                    fp,
                );
            }
        };
        let Some(observed_sha256) = obs.kubeconfigs_sha256.get(file.file).cloned() else {
            return self.unhashed(resource, name, &path, fp);
        };
        let operation = Operation::SetKubeconfigServer {
            node: name.to_string(),
            path: path.clone(),
            cluster: current.cluster.clone(),
            from: current.server.clone(),
            to: wanted.clone(),
            observed_sha256,
        };
        let after = ResourceValue::File {
            path: path.clone(),
            server: Some(wanted.clone()),
            content: new_text,
        };
        if let Some(component) = file.reader {
            self.trigger(self.restart(name, component));
            if component == Component::Kubelet && role == Role::Worker {
                // Rolling, node by node: the worker's kube-proxy restarts with its kubelet.
                self.trigger(restart_kube_proxy(name));
            }
        }
        let reason = format!("server is {}; {}", current.server, file.why);
        update(resource, reason, before, after, fp, operation)
    }

    /// When the reader of a kubeconfig on `name` started, on the node's clock as the file's
    /// modification time: the kubelet's service, or the static pod's running container.
    pub(super) fn reader_started(
        &self,
        name: &str,
        obs: &'a NodeObservation,
        reader: Option<Component>,
    ) -> Option<ReaderStart<'a>> {
        match reader? {
            Component::Kubelet => Some(ReaderStart {
                who: "the kubelet",
                at: obs.kubelet_started_at.as_deref()?,
                margin_secs: KUBELET_BOOTSTRAP_WINDOW_SECS,
            }),
            // kubeadm writes their kubeconfigs before their manifests: no window.
            c @ (Component::KubeControllerManager | Component::KubeScheduler) => {
                Some(ReaderStart {
                    who: c.as_str(),
                    at: self.observed.api.static_pod_started(c.as_str(), name)?,
                    margin_secs: 0,
                })
            }
            Component::KubeApiserver | Component::KubeProxy => None,
        }
    }
}

/// When a file's reader started: a file changed more than `margin_secs` later is not what it
/// runs with.
pub(super) struct ReaderStart<'a> {
    who: &'static str,
    at: &'a str,
    margin_secs: i64,
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{change, lab_plan, plan_with, problems};
    use super::*;

    #[test]
    fn a_kubelet_conf_is_pointed_at_the_load_balancer_and_its_readers_restart() {
        let plan = lab_plan("fresh-1.31");
        let c = change(&plan, "kubeconfig.w1.kubelet");
        assert_eq!(c.actions, [Action::Update]);
        let Some(Operation::SetKubeconfigServer {
            node,
            path,
            from,
            to,
            observed_sha256,
            ..
        }) = &c.operation
        else {
            panic!("{c:?}")
        };
        assert_eq!(
            (node.as_str(), path.as_str(), from.as_str(), to.as_str()),
            (
                "w1",
                "/etc/kubernetes/kubelet.conf",
                "https://127.0.0.11:6443",
                "https://k8s-api.lab.internal:6443"
            )
        );
        assert!(observed_sha256.starts_with("sha256:"));
        // A worker's kube-proxy reaches the API through the kubelet's node: it restarts too.
        assert_eq!(c.handlers, ["handler.w1.kubelet", "handler.w1.kube-proxy"]);
        let Some(ResourceValue::File { content, .. }) = &c.after else {
            panic!("{c:?}")
        };
        assert!(content.contains("server: https://k8s-api.lab.internal:6443"));
    }

    #[test]
    fn files_kubeadm_keeps_local_are_left_on_the_local_api_server() {
        let plan = lab_plan("fresh-1.31");
        for file in ["controller-manager", "scheduler"] {
            let c = change(&plan, &format!("kubeconfig.cp1.{file}"));
            assert_eq!(c.actions, [Action::NoOp], "{file}");
            assert!(
                c.reason
                    .starts_with("server is already https://127.0.0.11:6443"),
                "{}",
                c.reason
            );
        }
        // admin.conf has no reader to restart.
        assert!(change(&plan, "kubeconfig.cp1.admin").handlers.is_empty());
    }

    #[test]
    fn a_converted_cluster_changes_no_kubeconfig() {
        let plan = lab_plan("converted-1.31");
        for c in plan
            .resource_changes
            .iter()
            .filter(|c| c.address.starts_with("kubeconfig."))
        {
            assert_eq!(c.actions, [Action::NoOp], "{}: {}", c.address, c.reason);
        }
    }

    #[test]
    fn a_worker_without_kubelet_conf_is_not_joined() {
        let plan = plan_with("fresh-1.31", |o| {
            o.nodes
                .get_mut("w2")
                .unwrap()
                .kubeconfigs
                .remove("kubelet.conf");
        });
        let c = change(&plan, "kubeconfig.w2.kubelet");
        assert_eq!(c.actions, [Action::Unknown]);
        let said = problems(&plan, "kubeconfig.w2.kubelet");
        assert!(
            said[0].contains("w2 does not look like a joined node"),
            "{said:?}"
        );
    }

    #[test]
    fn the_fingerprint_covers_what_redaction_hides() {
        let before = change(&lab_plan("fresh-1.31"), "kubeconfig.cp1.admin")
            .fingerprint
            .clone();
        // The redacted text is the same; only the hash of the file says it changed.
        let plan = plan_with("fresh-1.31", |o| {
            let sha = o
                .nodes
                .get_mut("cp1")
                .unwrap()
                .kubeconfigs_sha256
                .get_mut("admin.conf");
            *sha.unwrap() = format!("sha256:{}", "0".repeat(64));
        });
        assert_ne!(change(&plan, "kubeconfig.cp1.admin").fingerprint, before);
    }
}
