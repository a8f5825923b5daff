//! The endpoint: the load balancer, checked (a read, never changed): TCP to every address,
//! and TLS for its name once every API server certificate carries it.

use super::*;

impl<'a> Planner<'a> {
    pub(super) fn endpoint(&mut self, resource: &Resource) -> ResourceChange {
        let ep = &self.desired.endpoint;
        let obs = &self.observed.endpoint;
        let mut refused = Vec::new();
        for address in &ep.addresses {
            match obs.addresses.get(&address.to_string()) {
                Some(Probe::Ok) => {}
                Some(Probe::Failed { reason }) => {
                    refused.push(format!("{address}:{}: {reason}", ep.port))
                }
                None => refused.push(format!("{address}:{}: not probed", ep.port)),
            }
        }
        let reason = if !refused.is_empty() {
            for r in &refused {
                self.problem(
                    Severity::Error,
                    "endpoint",
                    format!("the load balancer does not accept TCP on {r}"),
                    format!(
                        "hactl does not create load balancers: set up a layer-4 (TCP) load balancer on {} with every control-plane node's :6443 as a backend, then plan again",
                        ep.addresses.iter().map(|a| format!("{a}:{}", ep.port)).collect::<Vec<_>>().join(", ")
                    ),
                );
            }
            "the load balancer must accept TCP on every address before anything points at it"
                .to_string()
        } else {
            match &obs.tls {
                Some(Probe::Ok) => format!(
                    "the load balancer accepts TCP on every address and serves a certificate valid for {}",
                    ep.host
                ),
                Some(Probe::Failed { reason }) => format!(
                    "the load balancer accepts TCP on every address; TLS for {} does not verify yet ({reason}) and is checked again once every API server certificate carries the name",
                    ep.host
                ),
                None => {
                    "the load balancer accepts TCP on every address; TLS is checked during apply"
                        .to_string()
                }
            }
        };
        let value = ResourceValue::Endpoint {
            host: ep.host.clone(),
            port: ep.port,
            addresses: ep.addresses.iter().map(ToString::to_string).collect(),
        };
        change(
            resource,
            Action::Read,
            reason,
            None,
            Some(value),
            fingerprint::endpoint(obs),
        )
    }

    /// `k8s-api.lab.internal and 127.0.0.100`, for reasons.
    pub(super) fn endpoint_names(&self) -> String {
        let ep = &self.desired.endpoint;
        let mut names = vec![ep.host.clone()];
        names.extend(ep.addresses.iter().map(ToString::to_string));
        names.join(" and ")
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{change, lab_plan, plan_with, problems};
    use super::*;

    #[test]
    fn the_endpoint_is_a_read_that_says_whether_tls_verifies_yet() {
        let fresh = lab_plan("fresh-1.31");
        let ep = change(&fresh, "endpoint");
        assert_eq!(ep.actions, [Action::Read]);
        assert!(ep.operation.is_none());
        assert!(ep.reason.contains("does not verify yet"), "{}", ep.reason);
        let converted = lab_plan("converted-1.31");
        let ep = change(&converted, "endpoint");
        assert_eq!(ep.actions, [Action::Read]);
        assert!(
            ep.reason
                .ends_with("serves a certificate valid for k8s-api.lab.internal"),
            "{}",
            ep.reason
        );
        assert!(problems(&converted, "endpoint").is_empty());
    }

    #[test]
    fn an_address_refusing_tcp_is_an_error_whose_fix_is_the_load_balancer() {
        let plan = plan_with("fresh-1.31", |o| {
            for probe in o.endpoint.addresses.values_mut() {
                *probe = Probe::Failed {
                    reason: "connection refused".into(),
                };
            }
        });
        let said = problems(&plan, "endpoint");
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].starts_with(
                "the load balancer does not accept TCP on 127.0.0.100:6443: connection refused -- hactl does not create load balancers"
            ),
            "{said:?}"
        );
        assert!(plan.has_errors());
    }

    #[test]
    fn its_fingerprint_follows_the_load_balancers_probes() {
        let before = change(&lab_plan("fresh-1.31"), "endpoint")
            .fingerprint
            .clone();
        let plan = plan_with("fresh-1.31", |o| o.endpoint.tls = Some(Probe::Ok));
        assert_ne!(change(&plan, "endpoint").fingerprint, before);
    }
}
