//! The three ConfigMaps kubeadm writes: kube-proxy's and cluster-info's kubeconfigs pointed at
//! the load balancer, kubeadm's ClusterConfiguration given the endpoint and its SANs.

use super::*;

impl<'a> Planner<'a> {
    pub(super) fn configmap(
        &mut self,
        resource: &Resource,
        cm: KubeadmConfigMap,
    ) -> ResourceChange {
        let (namespace, name, key) = (cm.namespace(), cm.name(), cm.key());
        let address = resource.address();
        if let Err(reason) = self.api() {
            return unknown(
                resource,
                reason,
                fingerprint::api_unreachable(&self.observed.api.reachable),
            );
        }
        let obs = self.observed.configmap(cm);
        let Some(obs) = obs else {
            self.problem(
                Severity::Error,
                &address,
                format!("ConfigMap {namespace}/{name} does not exist"),
                "hactl converts clusters built by kubeadm, which creates it; recreate it (kubeadm init phase upload-config / addon) and plan again".into(),
            );
            return unknown(
                resource,
                format!("ConfigMap {namespace}/{name} does not exist"),
                fingerprint::configmap(None, &[]),
            );
        };
        // kube-proxy Pods older than the ConfigMap decide restarts: they are observed too.
        let stale = match cm {
            KubeadmConfigMap::KubeProxy => self.kube_proxy_pods_older_than(obs),
            _ => Vec::new(),
        };
        let fp = fingerprint::configmap(Some(obs), &stale);
        let Some(text) = obs.data.get(key) else {
            self.problem(
                Severity::Error,
                &address,
                format!("ConfigMap {namespace}/{name} has no key {key}"),
                format!("restore the {key} key as kubeadm writes it, then plan again"),
            );
            return unknown(
                resource,
                format!("ConfigMap {namespace}/{name} has no key {key}"),
                fp,
            );
        };
        let outcome = match cm {
            KubeadmConfigMap::KubeadmConfig => self.converge_cluster_configuration(text),
            _ => self.converge_server(text, cm),
        };
        let before = configmap_value(namespace, name, obs, None);
        let (new_text, reason) = match outcome {
            Ok(Some(done)) => done,
            Ok(None) => {
                let mut reason = match cm {
                    KubeadmConfigMap::KubeadmConfig => format!(
                        "controlPlaneEndpoint is {} and certSANs include {}",
                        self.desired.control_plane_endpoint(),
                        self.endpoint_names()
                    ),
                    _ => format!("server is already {}", self.desired.endpoint_url()),
                };
                if !stale.is_empty() {
                    // Edited by hand without the restart: the restarts are what is left.
                    reason.push_str(&format!(
                        "; but the ConfigMap changed at {} and the kube-proxy Pods on {} are older, so they still use the old server: they are restarted",
                        obs.changed_at.as_deref().unwrap_or_default(),
                        stale.join(", ")
                    ));
                    for node in stale {
                        self.trigger(restart_kube_proxy(&node));
                    }
                }
                return unchanged(resource, reason, before, fp);
            }
            Err(message) => {
                self.problem(
                    Severity::Error,
                    &address,
                    format!("ConfigMap {namespace}/{name}, key {key}: {message}"),
                    format!(
                        "fix it with kubectl edit -n {namespace} configmap {name}, then plan again"
                    ),
                );
                return change(resource, Action::Unknown, message, Some(before), None, fp);
            }
        };
        let operation = Operation::ReplaceConfigMapKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
            key: key.to_string(),
            resource_version: obs.resource_version.clone(),
            observed_sha256: sha256(text.as_bytes()),
            content: new_text.clone(),
        };
        let after = configmap_value(namespace, name, obs, Some((key, new_text)));
        match cm {
            KubeadmConfigMap::KubeProxy => {
                for node in self.kube_proxy_nodes() {
                    self.trigger(restart_kube_proxy(&node));
                }
            }
            KubeadmConfigMap::ClusterInfo => self.trigger(await_bootstrap_signer()),
            KubeadmConfigMap::KubeadmConfig => {}
        }
        update(resource, reason, before, after, fp, operation)
    }

    /// kube-proxy's and cluster-info's kubeconfig text, pointed at the LB; `None` when it is.
    pub(super) fn converge_server(
        &self,
        text: &str,
        cm: KubeadmConfigMap,
    ) -> Result<Option<(String, String)>, String> {
        let wanted = self.desired.endpoint_url();
        let current = crate::kubeconfig::current_server(text).map_err(|e| e.to_string())?;
        if current.server == wanted {
            return Ok(None);
        }
        let new_text = crate::kubeconfig::replace_server(text, &current, &wanted)
            .map_err(|e| e.to_string())?;
        let reason = match cm {
            KubeadmConfigMap::ClusterInfo => format!(
                "joining nodes take their kubelet's server from cluster-info, which is {}; they must get the load balancer",
                current.server
            ),
            _ => format!(
                "kube-proxy reaches the API at {}; it must use the load balancer, then every kube-proxy Pod restarts to read it",
                current.server
            ),
        };
        Ok(Some((new_text, reason)))
    }

    pub(super) fn converge_cluster_configuration(
        &self,
        text: &str,
    ) -> Result<Option<(String, String)>, String> {
        let ep = &self.desired.endpoint;
        let mut sans = vec![ep.host.clone()];
        sans.extend(ep.addresses.iter().map(ToString::to_string));
        let endpoint = self.desired.control_plane_endpoint();
        let current = cluster_config::read(text).map_err(|e| e.to_string())?;
        let new_text =
            cluster_config::converge(text, &endpoint, &sans).map_err(|e| e.to_string())?;
        if new_text == text {
            return Ok(None);
        }
        let mut why = Vec::new();
        match &current.control_plane_endpoint {
            None => why.push(format!(
                "controlPlaneEndpoint is not set (kubeadm join --control-plane refuses such a cluster); it becomes {endpoint}"
            )),
            Some(old) if *old != endpoint => why.push(format!("controlPlaneEndpoint is {old}; it becomes {endpoint}")),
            Some(_) => {}
        }
        let missing: Vec<&String> = sans
            .iter()
            .filter(|s| !current.cert_sans.contains(s))
            .collect();
        if !missing.is_empty() {
            why.push(format!(
                "apiServer.certSANs lacks {} (joining nodes issue their certificates from it)",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(Some((new_text, why.join("; "))))
    }

    /// The nodes of [`Self::kube_proxy_nodes`] whose kube-proxy Pod was created before the
    /// ConfigMap last changed; none when either time is unknown.
    pub(super) fn kube_proxy_pods_older_than(&self, cm: &ConfigMapObservation) -> Vec<String> {
        let Some(changed) = cm.changed_at.as_deref() else {
            return Vec::new();
        };
        self.kube_proxy_nodes()
            .into_iter()
            .filter(|node| {
                self.observed
                    .api
                    .kube_proxy_pods
                    .get(node)
                    .and_then(|p| p.created_at.as_deref())
                    .and_then(|created| later(changed, created))
                    == Some(true)
            })
            .collect()
    }

    /// Nodes whose kube-proxy restarts after its ConfigMap changes: every node already in the
    /// cluster, in file order (joining nodes start theirs with the new ConfigMap).
    pub(super) fn kube_proxy_nodes(&self) -> Vec<String> {
        self.desired
            .nodes
            .iter()
            .filter(|n| n.role == Role::Worker || self.facts.members.contains(&n.name))
            .map(|n| n.name.clone())
            .collect()
    }
}

pub(super) fn configmap_value(
    namespace: &str,
    name: &str,
    obs: &ConfigMapObservation,
    replace: Option<(&str, String)>,
) -> ResourceValue {
    let mut data: BTreeMap<String, String> = obs.data.clone();
    let replaced = replace.is_some();
    if let Some((key, text)) = replace {
        data.insert(key.to_string(), text);
    }
    ResourceValue::ConfigMap {
        namespace: namespace.to_string(),
        name: name.to_string(),
        // The API server assigns a new resourceVersion on write.
        resource_version: (!replaced).then(|| obs.resource_version.clone()),
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{change, lab_plan, plan_with, problems};
    use super::*;

    fn replaced(plan: &Plan, cm: KubeadmConfigMap) -> (String, String) {
        let address = Resource::ConfigMap(cm).address();
        let c = change(plan, &address);
        let Some(Operation::ReplaceConfigMapKey {
            namespace,
            name,
            key,
            content,
            ..
        }) = &c.operation
        else {
            panic!("{c:?}")
        };
        assert_eq!(
            (namespace.as_str(), name.as_str(), key.as_str()),
            (cm.namespace(), cm.name(), cm.key())
        );
        (content.clone(), c.reason.clone())
    }

    #[test]
    fn each_configmap_gets_the_endpoint_in_its_own_key() {
        let plan = lab_plan("fresh-1.31");
        let (proxy, _) = replaced(&plan, KubeadmConfigMap::KubeProxy);
        assert!(
            proxy.contains("server: https://k8s-api.lab.internal:6443"),
            "{proxy}"
        );
        let (info, _) = replaced(&plan, KubeadmConfigMap::ClusterInfo);
        assert!(
            info.contains("server: https://k8s-api.lab.internal:6443"),
            "{info}"
        );
        let (config, reason) = replaced(&plan, KubeadmConfigMap::KubeadmConfig);
        assert!(
            config.contains("controlPlaneEndpoint: k8s-api.lab.internal:6443"),
            "{config}"
        );
        assert!(
            config.contains("certSANs:\n  - k8s-api.lab.internal\n  - 127.0.0.100"),
            "{config}"
        );
        assert!(
            reason.starts_with("controlPlaneEndpoint is not set"),
            "{reason}"
        );
    }

    #[test]
    fn kube_proxy_restarts_on_every_node_and_cluster_info_waits_for_its_signatures() {
        let plan = lab_plan("fresh-1.31");
        let proxy = change(&plan, "configmap.kube-system.kube-proxy");
        assert_eq!(
            proxy.handlers,
            [
                "handler.cp1.kube-proxy",
                "handler.w1.kube-proxy",
                "handler.w2.kube-proxy"
            ]
        );
        let info = change(&plan, "configmap.kube-public.cluster-info");
        assert_eq!(info.handlers, ["handler.cluster-info.jws"]);
        assert!(
            change(&plan, "configmap.kube-system.kubeadm-config")
                .handlers
                .is_empty()
        );
    }

    #[test]
    fn a_converted_cluster_changes_no_configmap() {
        let plan = lab_plan("converted-1.31");
        for cm in KubeadmConfigMap::ALL {
            let c = change(&plan, &Resource::ConfigMap(cm).address());
            assert_eq!(c.actions, [Action::NoOp], "{}: {}", c.address, c.reason);
        }
    }

    #[test]
    fn a_missing_configmap_or_key_is_an_error_naming_it() {
        let plan = plan_with("fresh-1.31", |o| {
            o.api.configmaps.remove("kube-public/cluster-info");
        });
        let said = problems(&plan, "configmap.kube-public.cluster-info");
        assert!(
            said[0].starts_with("ConfigMap kube-public/cluster-info does not exist"),
            "{said:?}"
        );
        let plan = plan_with("fresh-1.31", |o| {
            let cm = o.api.configmaps.get_mut("kube-system/kube-proxy").unwrap();
            cm.data.remove("kubeconfig.conf");
        });
        let c = change(&plan, "configmap.kube-system.kube-proxy");
        assert_eq!(c.actions, [Action::Unknown]);
        assert_eq!(
            c.reason,
            "ConfigMap kube-system/kube-proxy has no key kubeconfig.conf"
        );
    }

    #[test]
    fn without_the_api_every_configmap_is_undecided() {
        let plan = plan_with("fresh-1.31", |o| {
            o.api.reachable = Probe::Failed {
                reason: "connection refused".into(),
            };
        });
        for cm in KubeadmConfigMap::ALL {
            let c = change(&plan, &Resource::ConfigMap(cm).address());
            assert_eq!(c.actions, [Action::Unknown], "{}", c.address);
        }
    }
}
