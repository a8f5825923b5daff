//! The control-plane nodes to join: the gates `kubeadm join --control-plane` needs, and etcd's
//! quorum on the way.

use super::*;

impl<'a> Planner<'a> {
    pub(super) fn etcd_member(&self, node: &Node) -> Option<&'a EtcdMember> {
        self.observed
            .etcd_member(&node.name, &node.address.to_string())
    }

    pub(super) fn control_plane(&mut self, resource: &Resource, name: &str) -> ResourceChange {
        let Some(node) = self.node(name) else {
            return unknown(
                resource,
                format!("{name} is not in the desired state"),
                String::new(),
            );
        };
        let member = self.etcd_member(node);
        let kube_node = self.observed.api.nodes.get(name);
        let obs = self.observed.nodes.get(name);
        let fp = fingerprint::control_plane(obs, member, kube_node, &self.observed.etcd.health);
        let member_state = member.map(|m| {
            if !m.started() && m.is_learner {
                "unstarted learner"
            } else if !m.started() {
                "unstarted"
            } else if m.is_learner {
                "learner"
            } else {
                "voting"
            }
        });
        let has_role = kube_node.is_some_and(|k| k.roles.iter().any(|r| r == "control-plane"));
        let before = ResourceValue::ControlPlane {
            etcd_member: member_state.map(str::to_string),
            node_ready: kube_node.map(|k| k.ready),
            control_plane_role: has_role,
            join_command: None,
        };
        if self.facts.members.contains(name) {
            let healthy =
                member_state == Some("voting") && kube_node.is_some_and(|k| k.ready) && has_role;
            let reason = if healthy {
                format!(
                    "{name} is a control-plane member: a voting etcd member, its Node Ready with the control-plane role"
                )
            } else {
                let state = format!(
                    "etcd member: {}, Node: {}",
                    member_state.unwrap_or("none"),
                    match kube_node {
                        Some(k) if k.ready => "Ready",
                        Some(_) => "NotReady",
                        None => "absent",
                    }
                );
                if self.observed.etcd.observed_from.is_some() {
                    self.problem(
                        Severity::Warning,
                        &resource.address(),
                        format!("{name} runs a control plane but is not healthy ({state})"),
                        format!("check {name}'s kubelet and etcd before joining more members"),
                    );
                }
                format!("{name} runs a control plane ({state})")
            };
            return unchanged(resource, reason, before, fp);
        }
        let obs = match self.reachable(name) {
            Ok(obs) => obs,
            Err(reason) => {
                return change(resource, Action::Unknown, reason, Some(before), None, fp);
            }
        };
        self.join_gates(node, obs);
        let after = ResourceValue::ControlPlane {
            etcd_member: Some("voting".into()),
            node_ready: Some(true),
            control_plane_role: true,
            join_command: Some(self.join_command(node)),
        };
        let leftovers: Vec<&str> = obs.kubeconfigs.keys().map(String::as_str).collect();
        if member.is_some() || kube_node.is_some() || !leftovers.is_empty() {
            let mut what = Vec::new();
            if let Some(m) = member {
                what.push(format!(
                    "etcd still lists it: {} member {}",
                    member_state.unwrap_or("a"),
                    m.id
                ));
            }
            if kube_node.is_some() {
                what.push("a Node object exists".to_string());
            }
            if !leftovers.is_empty() {
                what.push(format!("/etc/kubernetes holds {}", leftovers.join(", ")));
            }
            let reason = format!(
                "an earlier join of {name} stopped halfway ({}); it is reset (kubeadm reset -f{}) and joined again",
                what.join("; "),
                member
                    .map(|m| format!(", etcdctl member remove {}", m.id))
                    .unwrap_or_default()
            );
            return change(
                resource,
                Action::Delete,
                reason,
                Some(before),
                Some(after),
                fp,
            );
        }
        let how = if self.facts.conventions.etcd_learner_join() {
            "its etcd member joins as a learner and is promoted once in sync"
        } else {
            "its etcd member joins as a voter at once: while it starts, the cluster needs both members for quorum (kubeadm#2275)"
        };
        let reason = format!(
            "{name} is not a control-plane member; it joins through the load balancer, one node at a time; {how}"
        );
        change(
            resource,
            Action::Create,
            reason,
            Some(before),
            Some(after),
            fp,
        )
    }

    /// Problems that would make a join fail, found before anything changes.
    pub(super) fn join_gates(&mut self, node: &Node, obs: &NodeObservation) {
        let name = node.name.as_str();
        let address = format!("control_plane.{name}");
        let cluster = self.facts.conventions.version;
        for (what, version) in [
            ("kubeadm", &obs.kubeadm_version),
            ("kubelet", &obs.kubelet_version),
        ] {
            match version.as_deref().map(str::parse::<KubeVersion>) {
                None => self.problem(
                    Severity::Error,
                    &address,
                    format!("{what} is not installed on {name}"),
                    format!("install {what} {} on {name}", cluster.minor_string()),
                ),
                Some(Err(e)) => self.problem(
                    Severity::Error,
                    &address,
                    format!("{name}'s {what} version cannot be read: {e}"),
                    format!("check `{what} --version` on {name}"),
                ),
                Some(Ok(v))
                    if (v.major, v.minor) != (cluster.major, cluster.minor)
                        && !self.facts.assumed =>
                {
                    self.problem(
                        Severity::Error,
                        &address,
                        format!("{name} has {what} {v} but the cluster runs {cluster}"),
                        format!(
                            "install {what} {} on {name} before it joins",
                            cluster.minor_string()
                        ),
                    )
                }
                Some(Ok(_)) => {}
            }
        }
        for (target, probe) in &obs.control_plane_reachability {
            if let Probe::Failed { reason } = probe {
                self.problem(
                    Severity::Error,
                    &address,
                    format!("{name} cannot reach {target}: {reason}"),
                    format!(
                        "allow TCP from {name} to the control-plane nodes on 6443, 2379 and 2380"
                    ),
                );
            }
        }
        // A half-joined member of a node this plan joins is removed by that node's own replace;
        // any other odd member blocks the join.
        let joining: Vec<&Node> = self
            .desired
            .control_plane_nodes()
            .filter(|n| !self.facts.members.contains(&n.name))
            .collect();
        let observed = self.observed;
        let blocking: Vec<&EtcdMember> = observed
            .etcd
            .members
            .iter()
            .filter(|m| !joining.iter().any(|n| self.etcd_member(n) == Some(*m)))
            .collect();
        for m in blocking {
            let loopback_peer = m
                .peer_urls
                .iter()
                .any(|u| matches!(url_host(u), "127.0.0.1" | "localhost" | "::1"));
            let what = if !m.started() {
                "an unstarted member"
            } else if m.is_learner {
                "a learner"
            } else if loopback_peer {
                "a member with a loopback peer URL"
            } else if m.healthy == Some(false) {
                "an unhealthy member"
            } else {
                continue;
            };
            self.problem(
                Severity::Error,
                &address,
                format!(
                    "etcd has {what} ({}{}, peers {}): joining {name} now could cost quorum",
                    m.id,
                    // An unstarted member has no name yet.
                    if m.name.is_empty() {
                        String::new()
                    } else {
                        format!(" {}", m.name)
                    },
                    m.peer_urls.join(" ")
                ),
                format!(
                    "remove or repair it first (etcdctl member remove {}), then plan again",
                    m.id
                ),
            );
        }
    }

    /// The join command with its secrets as placeholders; the CA pin is public.
    pub(super) fn join_command(&self, node: &Node) -> String {
        let pin = self
            .facts
            .members
            .iter()
            .filter_map(|m| self.observed.nodes.get(m)?.ca_pin.clone())
            .next()
            .unwrap_or_else(|| "sha256:<ca-pin>".into());
        let (control_plane, certificate_key) = self.facts.conventions.join_flags();
        format!(
            "kubeadm join {} --token <bootstrap-token> --discovery-token-ca-cert-hash {pin} {control_plane} {certificate_key} <certificate-key> --apiserver-advertise-address {}",
            self.desired.control_plane_endpoint(),
            node.address
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{change, lab_plan, plan_with, problems};
    use super::*;

    #[test]
    fn the_init_node_is_a_member_and_the_others_join() {
        let plan = lab_plan("fresh-1.31");
        let cp1 = change(&plan, "control_plane.cp1");
        assert_eq!(cp1.actions, [Action::NoOp]);
        assert!(
            cp1.reason.starts_with("cp1 is a control-plane member"),
            "{}",
            cp1.reason
        );
        for node in ["cp2", "cp3"] {
            let c = change(&plan, &format!("control_plane.{node}"));
            assert_eq!(c.actions, [Action::Create], "{node}");
            assert!(c.reason.contains("joins as a learner"), "{}", c.reason);
        }
    }

    #[test]
    fn a_learner_that_never_started_is_replaced() {
        let plan = lab_plan("stuck-learner-1.31");
        let cp2 = change(&plan, "control_plane.cp2");
        assert_eq!(cp2.actions, [Action::Delete, Action::Create]);
        assert!(
            cp2.reason.contains("etcdctl member remove"),
            "{}",
            cp2.reason
        );
    }

    #[test]
    fn a_joining_node_needs_kubeadm_and_kubelet_of_the_clusters_minor() {
        let plan = plan_with("fresh-1.31", |o| {
            let cp2 = o.nodes.get_mut("cp2").unwrap();
            cp2.kubeadm_version = None;
            cp2.kubelet_version = Some("v1.30.4".into());
        });
        let said = problems(&plan, "control_plane.cp2");
        assert!(
            said.iter()
                .any(|p| p.starts_with("kubeadm is not installed on cp2 -- install kubeadm 1.31")),
            "{said:?}"
        );
        assert!(
            said.iter()
                .any(|p| p.starts_with("cp2 has kubelet v1.30.4 but the cluster runs")),
            "{said:?}"
        );
    }

    #[test]
    fn a_joining_node_that_cannot_reach_the_control_plane_is_an_error() {
        let plan = plan_with("fresh-1.31", |o| {
            let cp3 = o.nodes.get_mut("cp3").unwrap();
            cp3.control_plane_reachability.insert(
                "127.0.0.11:2380".into(),
                Probe::Failed {
                    reason: "Connection refused".into(),
                },
            );
        });
        let said = problems(&plan, "control_plane.cp3");
        assert!(
            said.iter().any(|p| p == "cp3 cannot reach 127.0.0.11:2380: Connection refused -- allow TCP from cp3 to the control-plane nodes on 6443, 2379 and 2380"),
            "{said:?}"
        );
    }

    #[test]
    fn its_fingerprint_follows_etcds_health() {
        let before = change(&lab_plan("fresh-1.31"), "control_plane.cp2")
            .fingerprint
            .clone();
        let plan = plan_with("fresh-1.31", |o| {
            o.etcd.health = Probe::Failed {
                reason: "context deadline exceeded".into(),
            };
        });
        assert_ne!(change(&plan, "control_plane.cp2").fingerprint, before);
    }
}
