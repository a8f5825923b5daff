//! Per-version facts of kubeadm 1.23–1.33: image repository and tags, pause and etcd
//! versions, groups of its client certificates, the kubelet's runtime flags.

use time::OffsetDateTime;

use super::FilesError;
use crate::kubeadm::KubeVersion;
use crate::lab::LabSpec;
use crate::observed::ContainerRuntime;

/// What changes with the Kubernetes version and the runtime.
#[derive(Clone, Debug)]
pub struct Facts {
    pub version: KubeVersion,
    pub runtime: ContainerRuntime,
}

impl Facts {
    pub fn new(spec: &LabSpec) -> Result<Self, FilesError> {
        let v = spec.version;
        if v.major != 1 || !(23..=33).contains(&v.minor) {
            return Err(FilesError::Version(v.to_string()));
        }
        if spec.runtime == ContainerRuntime::Docker && v.minor >= 24 {
            return Err(FilesError::DockerRemoved(v.to_string()));
        }
        Ok(Facts {
            version: v,
            runtime: spec.runtime,
        })
    }

    pub fn at_least(&self, minor: u32) -> bool {
        self.version.minor >= minor
    }

    /// The default image repository: kubeadm moved from k8s.gcr.io to registry.k8s.io.
    pub fn repository(&self) -> &'static str {
        // kubeadm moved to registry.k8s.io in 1.25 and backported it to 1.24.9 and 1.23.15.
        let v = self.version;
        let backported = (v.minor == 24 && v.patch >= 9) || (v.minor == 23 && v.patch >= 15);
        if self.at_least(25) || backported {
            "registry.k8s.io"
        } else {
            "k8s.gcr.io"
        }
    }

    pub fn image(&self, component: &str) -> String {
        format!("{}/{component}:{}", self.repository(), self.version)
    }

    /// kubeadm's `SupportedEtcdVersion` in the patch release the lab installs
    /// (`lab_version`); later patches of old minors picked up newer etcd 3.5 builds.
    pub fn etcd_image(&self) -> String {
        let tag = match self.version.minor {
            23 | 24 => "3.5.6-0",
            25 => "3.5.9-0",
            26 => "3.5.10-0",
            27 => "3.5.12-0",
            28 => "3.5.15-0",
            29 => "3.5.16-0",
            30 => "3.5.21-0",
            _ => "3.5.24-0",
        };
        format!("{}/etcd:{tag}", self.repository())
    }

    pub fn pause_image(&self) -> String {
        let tag = match self.version.minor {
            23 => "3.6",
            24 => "3.7",
            25 => "3.8",
            26..=30 => "3.9",
            _ => "3.10",
        };
        format!("{}/pause:{tag}", self.repository())
    }

    /// kubeadm 1.29 split admin.conf: admin gets its own group, super-admin keeps
    /// system:masters.
    pub fn has_super_admin(&self) -> bool {
        self.at_least(29)
    }

    pub fn admin_group(&self) -> &'static str {
        if self.has_super_admin() {
            "kubeadm:cluster-admins"
        } else {
            "system:masters"
        }
    }

    /// apiserver-kubelet-client moved with admin.conf from system:masters in 1.29.
    pub fn kubelet_client_orgs(&self) -> &'static [&'static str] {
        if self.has_super_admin() {
            &["kubeadm:cluster-admins"]
        } else {
            &["system:masters"]
        }
    }

    /// The etcd client certificates carry no group: etcd does not read it.
    pub fn etcd_client_orgs(&self) -> &'static [&'static str] {
        &[]
    }

    /// ControlPlaneKubeletLocalMode, on by default from 1.33.
    pub fn control_plane_kubelet_local(&self) -> bool {
        self.at_least(33)
    }

    /// v1beta3 until 1.30, v1beta4 from 1.31.
    pub fn kubeadm_api_version(&self) -> &'static str {
        if self.at_least(31) {
            "kubeadm.k8s.io/v1beta4"
        } else {
            "kubeadm.k8s.io/v1beta3"
        }
    }

    pub fn cri_socket(&self) -> &'static str {
        match self.runtime {
            ContainerRuntime::Containerd => "unix:///var/run/containerd/containerd.sock",
            ContainerRuntime::CriO => "unix:///var/run/crio/crio.sock",
            // dockershim's socket, kubeadm's name for the docker runtime before 1.24.
            ContainerRuntime::Docker => "/var/run/dockershim.sock",
        }
    }

    /// `/var/lib/kubelet/kubeadm-flags.env`.
    pub fn kubeadm_flags_env(&self) -> String {
        let flags = match self.runtime {
            ContainerRuntime::Docker => format!(
                "--network-plugin=cni --pod-infra-container-image={}",
                self.pause_image()
            ),
            // --container-runtime=remote went away with the flag in 1.27.
            _ if !self.at_least(27) => format!(
                "--container-runtime=remote --container-runtime-endpoint={} --pod-infra-container-image={}",
                self.cri_socket(),
                self.pause_image()
            ),
            _ => format!(
                "--container-runtime-endpoint={} --pod-infra-container-image={}",
                self.cri_socket(),
                self.pause_image()
            ),
        };
        format!("KUBELET_KUBEADM_ARGS=\"{flags}\"\n")
    }
}

/// The kubelet's certificate file stamp, `2006-01-02-15-04-05` in UTC.
pub fn file_timestamp() -> String {
    let t = OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}-{:02}-{:02}-{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// RFC 3339 in UTC, seconds precision, as Go's `time.RFC3339` writes expirations.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
