//! kubeadm's conventions per version: which kubeconfig files exist, where each should point,
//! how `kubeadm join` is spelled (DESIGN §1, "version facts").

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::observed::ContainerRuntime;
use crate::spec::ComponentEndpoint;

/// A Kubernetes or kubeadm version, `vMAJOR.MINOR.PATCH` (a pre-release suffix is ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl KubeVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        KubeVersion {
            major,
            minor,
            patch,
        }
    }

    /// `1.31`: the minor version, as people say it.
    pub fn minor_string(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }

    fn at_least(&self, major: u32, minor: u32, patch: u32) -> bool {
        *self >= KubeVersion::new(major, minor, patch)
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for KubeVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bare = s.trim().trim_start_matches('v');
        // `v1.31.2-rc.0+abc`: the suffix does not change any convention.
        let bare = bare.split(['-', '+']).next().unwrap_or(bare);
        let mut parts = bare.split('.');
        let mut next = |what: &str| -> Result<u32, String> {
            parts
                .next()
                .ok_or_else(|| format!("version {s:?} has no {what} number"))?
                .parse()
                .map_err(|_| format!("version {s:?} has an invalid {what} number"))
        };
        let major = next("major")?;
        let minor = next("minor")?;
        // `1.31` alone names the minor release.
        let patch = match parts.next() {
            None => 0,
            Some(p) => p
                .parse()
                .map_err(|_| format!("version {s:?} has an invalid patch number"))?,
        };
        Ok(KubeVersion::new(major, minor, patch))
    }
}

impl TryFrom<String> for KubeVersion {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<KubeVersion> for String {
    fn from(v: KubeVersion) -> String {
        v.to_string()
    }
}

/// Where a kubeconfig's `server:` should point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The load balancer: `https://HOST:PORT` of the endpoint.
    LoadBalancer,
    /// The node's own API server: `https://ADVERTISE:PORT`.
    Local,
}

/// The component that reads a kubeconfig, and so what must restart after it changes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    Kubelet,
    KubeApiserver,
    KubeControllerManager,
    KubeScheduler,
    KubeProxy,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Kubelet => "kubelet",
            Component::KubeApiserver => "kube-apiserver",
            Component::KubeControllerManager => "kube-controller-manager",
            Component::KubeScheduler => "kube-scheduler",
            Component::KubeProxy => "kube-proxy",
        }
    }
}

/// One kubeconfig file kubeadm writes on a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KubeconfigFile {
    /// The short name used in resource addresses: `admin`, `kubelet`, …
    pub short: &'static str,
    /// The file name under `/etc/kubernetes`.
    pub file: &'static str,
    pub target: Target,
    /// Who reads it; `None` for files people use (admin.conf).
    pub reader: Option<Component>,
    /// Why it points where it does, for the plan's reason line.
    pub why: &'static str,
}

impl KubeconfigFile {
    pub fn path(&self) -> String {
        format!("/etc/kubernetes/{}", self.file)
    }
}

/// The conventions of one kubeadm version, with the policy's overrides applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conventions {
    pub version: KubeVersion,
    pub component_endpoint: ComponentEndpoint,
}

impl Conventions {
    pub fn new(version: KubeVersion, component_endpoint: ComponentEndpoint) -> Self {
        Conventions {
            version,
            component_endpoint,
        }
    }

    /// kubeadm 1.29 added super-admin.conf (admin.conf lost system:masters).
    pub fn has_super_admin_conf(&self) -> bool {
        self.version.at_least(1, 29, 0)
    }

    /// Since kubeadm 1.19.1, controller-manager.conf and scheduler.conf use the local API
    /// server rather than controlPlaneEndpoint (kubernetes/kubeadm#2271).
    pub fn components_use_local_endpoint(&self) -> bool {
        self.version.at_least(1, 19, 1)
    }

    /// ControlPlaneKubeletLocalMode is on by default from 1.33: control-plane kubelets keep
    /// talking to their own API server.
    pub fn control_plane_kubelet_local(&self) -> bool {
        self.version.at_least(1, 33, 0)
    }

    /// `kubeadm join --control-plane` adds the etcd member as a learner by default from 1.29.
    pub fn etcd_learner_join(&self) -> bool {
        self.version.at_least(1, 29, 0)
    }

    /// Before 1.15 the control-plane join flags carried an `experimental-` prefix.
    pub fn join_flags(&self) -> (&'static str, &'static str) {
        if self.version.at_least(1, 15, 0) {
            ("--control-plane", "--certificate-key")
        } else {
            ("--experimental-control-plane", "--certificate-key")
        }
    }

    /// The runtime kubeadm clusters of this version use when observation cannot tell: dockershim
    /// left in 1.24.
    pub fn default_runtime(&self) -> ContainerRuntime {
        if self.version.at_least(1, 24, 0) {
            ContainerRuntime::Containerd
        } else {
            ContainerRuntime::Docker
        }
    }

    /// The kubeconfig files kubeadm writes on a control-plane node, and where each should point
    /// once the cluster is highly available.
    pub fn control_plane_kubeconfigs(&self) -> Vec<KubeconfigFile> {
        let mut files = vec![KubeconfigFile {
            short: "admin",
            file: "admin.conf",
            target: Target::LoadBalancer,
            reader: None,
            why: "admin.conf reaches the cluster through the load balancer",
        }];
        if self.has_super_admin_conf() {
            files.push(KubeconfigFile {
                short: "super-admin",
                file: "super-admin.conf",
                target: Target::LoadBalancer,
                reader: None,
                why: "super-admin.conf (kubeadm 1.29+) reaches the cluster through the load balancer",
            });
        }
        files.push(if self.control_plane_kubelet_local() {
            KubeconfigFile {
                short: "kubelet",
                file: "kubelet.conf",
                target: Target::Local,
                reader: Some(Component::Kubelet),
                why: "ControlPlaneKubeletLocalMode (default from 1.33) keeps control-plane kubelets on their own API server",
            }
        } else {
            KubeconfigFile {
                short: "kubelet",
                file: "kubelet.conf",
                target: Target::LoadBalancer,
                reader: Some(Component::Kubelet),
                why: "the kubelet reaches the API through the load balancer",
            }
        });
        let (target, why_cm, why_sched) = match self.component_endpoint {
            ComponentEndpoint::Endpoint => (
                Target::LoadBalancer,
                "policy.component_endpoint = \"endpoint\" sends controller-manager through the load balancer",
                "policy.component_endpoint = \"endpoint\" sends the scheduler through the load balancer",
            ),
            ComponentEndpoint::Kubeadm if self.components_use_local_endpoint() => (
                Target::Local,
                "kubeadm 1.19.1+ points controller-manager at the local API server",
                "kubeadm 1.19.1+ points the scheduler at the local API server",
            ),
            ComponentEndpoint::Kubeadm => (
                Target::LoadBalancer,
                "kubeadm before 1.19.1 points controller-manager at controlPlaneEndpoint",
                "kubeadm before 1.19.1 points the scheduler at controlPlaneEndpoint",
            ),
        };
        files.push(KubeconfigFile {
            short: "controller-manager",
            file: "controller-manager.conf",
            target,
            reader: Some(Component::KubeControllerManager),
            why: why_cm,
        });
        files.push(KubeconfigFile {
            short: "scheduler",
            file: "scheduler.conf",
            target,
            reader: Some(Component::KubeScheduler),
            why: why_sched,
        });
        files
    }

    /// The kubeconfig of a worker node.
    pub fn worker_kubeconfigs(&self) -> Vec<KubeconfigFile> {
        vec![KubeconfigFile {
            short: "kubelet",
            file: "kubelet.conf",
            target: Target::LoadBalancer,
            reader: Some(Component::Kubelet),
            why: "the kubelet reaches the API through the load balancer",
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(v: &str) -> Conventions {
        Conventions::new(v.parse().unwrap(), ComponentEndpoint::Kubeadm)
    }

    fn shorts(c: &Conventions) -> Vec<(&'static str, Target)> {
        c.control_plane_kubeconfigs()
            .iter()
            .map(|f| (f.short, f.target))
            .collect()
    }

    #[test]
    fn parses_versions_as_kubeadm_prints_them() {
        assert_eq!("v1.31.2".parse(), Ok(KubeVersion::new(1, 31, 2)));
        assert_eq!("1.23".parse(), Ok(KubeVersion::new(1, 23, 0)));
        assert_eq!("v1.30.0-rc.1+abc".parse(), Ok(KubeVersion::new(1, 30, 0)));
        assert!("v1".parse::<KubeVersion>().is_err());
        assert!("vx.y.z".parse::<KubeVersion>().is_err());
        assert!("".parse::<KubeVersion>().is_err());
    }

    #[test]
    fn files_and_targets_follow_the_version() {
        use Target::*;
        assert_eq!(
            shorts(&conv("v1.23.17")),
            [
                ("admin", LoadBalancer),
                ("kubelet", LoadBalancer),
                ("controller-manager", Local),
                ("scheduler", Local)
            ]
        );
        assert_eq!(
            shorts(&conv("v1.31.2")),
            [
                ("admin", LoadBalancer),
                ("super-admin", LoadBalancer),
                ("kubelet", LoadBalancer),
                ("controller-manager", Local),
                ("scheduler", Local)
            ]
        );
        assert_eq!(shorts(&conv("v1.33.0"))[2], ("kubelet", Local));
        // The 2019 procedure: components through the LB.
        assert_eq!(
            shorts(&conv("v1.19.0"))[2],
            ("controller-manager", LoadBalancer)
        );
    }

    #[test]
    fn policy_overrides_the_component_convention() {
        let c = Conventions::new("v1.31.2".parse().unwrap(), ComponentEndpoint::Endpoint);
        assert!(
            c.control_plane_kubeconfigs()
                .iter()
                .filter(|f| f.short == "scheduler" || f.short == "controller-manager")
                .all(|f| f.target == Target::LoadBalancer)
        );
    }

    #[test]
    fn version_facts() {
        assert!(!conv("v1.28.9").etcd_learner_join());
        assert!(conv("v1.29.0").etcd_learner_join());
        assert_eq!(
            conv("v1.14.3").join_flags().0,
            "--experimental-control-plane"
        );
        assert_eq!(conv("v1.23.0").default_runtime(), ContainerRuntime::Docker);
        assert_eq!(
            conv("v1.24.0").default_runtime(),
            ContainerRuntime::Containerd
        );
    }
}
