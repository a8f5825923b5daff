//! The three ConfigMaps kubeadm writes that the conversion edits, as one type.

/// The three ConfigMaps kubeadm writes that the conversion edits, each with the data key
/// that changes; the graph, observation, the planner and apply's handlers name them by this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KubeadmConfigMap {
    /// kube-proxy's kubeconfig, which every kube-proxy Pod reads at start.
    KubeProxy,
    /// kubeadm's ClusterConfiguration, from which joining control-plane nodes take
    /// `controlPlaneEndpoint` and `certSANs`.
    KubeadmConfig,
    /// The kubeconfig joining nodes discover the API server from, signed per bootstrap token.
    ClusterInfo,
}

impl KubeadmConfigMap {
    /// In the order the plan lists them.
    pub const ALL: [KubeadmConfigMap; 3] = [
        KubeadmConfigMap::KubeProxy,
        KubeadmConfigMap::KubeadmConfig,
        KubeadmConfigMap::ClusterInfo,
    ];

    pub fn namespace(self) -> &'static str {
        match self {
            KubeadmConfigMap::KubeProxy | KubeadmConfigMap::KubeadmConfig => "kube-system",
            KubeadmConfigMap::ClusterInfo => "kube-public",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KubeadmConfigMap::KubeProxy => "kube-proxy",
            KubeadmConfigMap::KubeadmConfig => "kubeadm-config",
            KubeadmConfigMap::ClusterInfo => "cluster-info",
        }
    }

    /// The data key the conversion changes.
    pub fn key(self) -> &'static str {
        match self {
            KubeadmConfigMap::KubeProxy => "kubeconfig.conf",
            KubeadmConfigMap::KubeadmConfig => "ClusterConfiguration",
            KubeadmConfigMap::ClusterInfo => "kubeconfig",
        }
    }
}
