//! Each control-plane node's API server certificate: reissued for its own key with every
//! existing SAN kept and the load balancer's names added (DESIGN §1.2).

use super::*;

impl<'a> Planner<'a> {
    /// The SANs kubeadm puts on this node's API server certificate, then the endpoint's.
    pub(super) fn wanted_sans(&self, node: &Node, advertise: &str) -> Vec<San> {
        let mut sans = Vec::new();
        // kubeadm's own set needs the cluster's networking; without it only the LB's are added.
        if let Some(cfg) = &self.cluster_config {
            sans.push(San::Dns(node.name.clone()));
            for name in ["kubernetes", "kubernetes.default", "kubernetes.default.svc"] {
                sans.push(San::Dns(name.into()));
            }
            sans.push(San::Dns(format!(
                "kubernetes.default.svc.{}",
                cfg.dns_domain
            )));
            if let Some(ip) = cfg.first_service_ip() {
                sans.push(San::Ip(ip));
            }
            if let Ok(ip) = advertise.parse() {
                sans.push(San::Ip(ip));
            }
        }
        sans.push(San::Dns(self.desired.endpoint.host.clone()));
        sans.extend(self.desired.endpoint.addresses.iter().map(|a| San::Ip(*a)));
        sans
    }

    pub(super) fn apiserver_cert(&mut self, resource: &Resource, name: &str) -> ResourceChange {
        let obs = match self.observe(resource, name) {
            Ok(obs) => obs,
            Err(undecided) => return *undecided,
        };
        let fp = fingerprint::certificate(obs);
        let Some(cert) = &obs.apiserver_cert else {
            self.problem(
                Severity::Error,
                &resource.address(),
                format!("{name} runs a control plane but has no {APISERVER_CERT}"),
                format!("restore it (kubeadm init phase certs apiserver on {name}) and plan again"),
            );
            return unknown(
                resource,
                format!("{APISERVER_CERT} is missing on {name}"),
                fp,
            );
        };
        if !cert.issuer_matches_ca {
            self.problem(
                Severity::Error,
                &resource.address(),
                format!("{APISERVER_CERT} on {name} is not signed by the cluster CA (issuer {})", cert.issuer),
                "hactl reissues the certificate with pki/ca.key and would change who signs it; find out who issued it first".into(),
            );
        }
        let Some(node) = self.node(name) else {
            return unknown(resource, format!("{name} is not in the desired state"), fp);
        };
        let advertise = obs
            .apiserver_endpoint
            .as_ref()
            .map_or_else(|| node.address.to_string(), |e| e.advertise_address.clone());
        let missing: Vec<San> = self
            .wanted_sans(node, &advertise)
            .into_iter()
            .filter(|s| !cert.sans.contains(s))
            .collect();
        let before = ResourceValue::Certificate {
            path: APISERVER_CERT.into(),
            subject: cert.subject.clone(),
            sans: cert.sans.clone(),
            key_type: cert.key_type,
            not_after: Some(cert.not_after.clone()),
        };
        if missing.is_empty() {
            let reason = format!(
                "the certificate's SANs already include {}",
                self.endpoint_names()
            );
            return unchanged(resource, reason, before, fp);
        }
        let (Some(observed_sha256), Some(public_key_sha256)) =
            (cert.sha256.clone(), cert.public_key_sha256.clone())
        else {
            return self.unhashed(resource, name, APISERVER_CERT, fp);
        };
        let mut sans = cert.sans.clone();
        sans.extend(missing.iter().cloned());
        let operation = Operation::ReissueApiserverCertificate {
            node: name.to_string(),
            cert_path: APISERVER_CERT.into(),
            key_path: APISERVER_KEY.into(),
            ca_cert_path: CA_CERT.into(),
            ca_key_path: CA_KEY.into(),
            public_key_sha256,
            key_type: cert.key_type,
            sans: sans.clone(),
            observed_sha256,
        };
        let after = ResourceValue::Certificate {
            path: APISERVER_CERT.into(),
            subject: cert.subject.clone(),
            sans,
            key_type: cert.key_type,
            not_after: None,
        };
        self.trigger(self.reload_serving_certificate(name, &advertise));
        let reason = format!(
            "the certificate lacks {}: clients that reach the API through the load balancer would fail x509 verification; it is reissued with every existing SAN kept, signed by the cluster CA",
            missing
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        update(resource, reason, before, after, fp, operation)
    }

    /// A change that cannot be planned as an operation: the observation has no hash of the
    /// file (a snapshot from an older hactl), so apply could not tell whether it changed since.
    pub(super) fn unhashed(
        &mut self,
        resource: &Resource,
        name: &str,
        path: &str,
        fp: String,
    ) -> ResourceChange {
        let message = format!("the observation of {path} on {name} has no hash of the file");
        self.problem(
            Severity::Error,
            &resource.address(),
            message.clone(),
            "observe the cluster again with this hactl (hactl plan without --observed, or hactl observe)".into(),
        );
        unknown(resource, message, fp)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{change, lab_plan, plan_with, problems};
    use super::*;

    fn reissue(plan: &Plan) -> (Vec<San>, Vec<San>, String) {
        let c = change(plan, "apiserver_cert.cp1");
        let Some(ResourceValue::Certificate { sans: before, .. }) = &c.before else {
            panic!("{c:?}")
        };
        let Some(Operation::ReissueApiserverCertificate {
            sans,
            key_path,
            public_key_sha256,
            ..
        }) = &c.operation
        else {
            panic!("{c:?}")
        };
        assert_eq!(key_path, APISERVER_KEY);
        assert!(
            public_key_sha256.starts_with("sha256:"),
            "{public_key_sha256}"
        );
        (before.clone(), sans.clone(), c.reason.clone())
    }

    #[test]
    fn the_certificate_is_reissued_with_every_san_kept_and_the_endpoints_added() {
        let (before, after, reason) = reissue(&lab_plan("fresh-1.31"));
        assert_eq!(
            after[..before.len()],
            before[..],
            "existing SANs first, in order"
        );
        assert_eq!(
            after[before.len()..],
            [
                San::Dns("k8s-api.lab.internal".into()),
                San::Ip("127.0.0.100".parse().unwrap())
            ]
        );
        assert!(
            reason.starts_with("the certificate lacks DNS:k8s-api.lab.internal, IP:127.0.0.100"),
            "{reason}"
        );
    }

    #[test]
    fn a_certificate_that_has_the_names_is_left_alone() {
        let plan = lab_plan("converted-1.31");
        let c = change(&plan, "apiserver_cert.cp1");
        assert_eq!(c.actions, [Action::NoOp]);
        assert!(c.operation.is_none() && c.handlers.is_empty());
    }

    #[test]
    fn a_certificate_not_signed_by_the_cluster_ca_is_an_error() {
        let plan = plan_with("fresh-1.31", |o| {
            let cert = o
                .nodes
                .get_mut("cp1")
                .unwrap()
                .apiserver_cert
                .as_mut()
                .unwrap();
            cert.issuer_matches_ca = false;
        });
        let said = problems(&plan, "apiserver_cert.cp1");
        assert!(
            said.iter()
                .any(|p| p.contains("is not signed by the cluster CA")),
            "{said:?}"
        );
    }

    #[test]
    fn a_missing_certificate_leaves_the_resource_undecided() {
        let plan = plan_with("fresh-1.31", |o| {
            o.nodes.get_mut("cp1").unwrap().apiserver_cert = None;
        });
        let c = change(&plan, "apiserver_cert.cp1");
        assert_eq!(c.actions, [Action::Unknown]);
        assert_eq!(
            c.reason,
            "/etc/kubernetes/pki/apiserver.crt is missing on cp1"
        );
    }

    #[test]
    fn the_reload_handler_names_the_runtime_that_restarts_the_static_pod() {
        for (fixture, tool) in [("fresh-1.31", "crictl"), ("fresh-1.23-docker", "docker")] {
            let plan = lab_plan(fixture);
            let handler = plan
                .handlers
                .iter()
                .find(|h| h.triggered_by == ["apiserver_cert.cp1"])
                .unwrap();
            assert!(
                handler
                    .description
                    .contains(&format!("restarted with {tool}")),
                "{fixture}: {}",
                handler.description
            );
        }
    }
}
