//! The resource graph: which resources the desired state implies, and what waits for what.
//!
//! Which resources exist depends on a few facts observation provides ([`ClusterFacts`]): the
//! kubeadm version decides the kubeconfig files, and only control-plane nodes that already run
//! have certificates and kubeconfigs to converge (the others get theirs from `kubeadm join`).
//! Edges point from a prerequisite to what waits for it. The order is deterministic: Kahn's
//! algorithm, ties broken by the procedure's step and then by the file's order.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::fmt;

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::configmaps::KubeadmConfigMap;
use crate::kubeadm::{Conventions, KubeVersion, KubeconfigFile};
use crate::observed::{ContainerRuntime, ObservedState};
use crate::spec::{DesiredState, Role};

/// The version assumed when nothing was observed (`hactl graph` without `--observed`).
pub const ASSUMED_VERSION: KubeVersion = KubeVersion::new(1, 31, 0);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    /// The load balancer: checked, never changed.
    Endpoint,
    ApiserverCert {
        node: String,
    },
    Kubeconfig {
        node: String,
        role: Role,
        file: KubeconfigFile,
    },
    ConfigMap(KubeadmConfigMap),
    ControlPlane {
        node: String,
    },
}

impl Resource {
    /// The stable address used in plans, JSON, journals and `--target`.
    pub fn address(&self) -> String {
        match self {
            Resource::Endpoint => "endpoint".into(),
            Resource::ApiserverCert { node } => format!("apiserver_cert.{node}"),
            Resource::Kubeconfig { node, file, .. } => format!("kubeconfig.{node}.{}", file.short),
            Resource::ConfigMap(cm) => format!("configmap.{}.{}", cm.namespace(), cm.name()),
            Resource::ControlPlane { node } => format!("control_plane.{node}"),
        }
    }

    /// The node the resource lives on.
    pub fn node(&self) -> Option<&str> {
        match self {
            Resource::ApiserverCert { node }
            | Resource::Kubeconfig { node, .. }
            | Resource::ControlPlane { node } => Some(node),
            Resource::Endpoint | Resource::ConfigMap(_) => None,
        }
    }

    /// The procedure's step (DESIGN §1), which orders resources no edge orders.
    fn step(&self) -> u8 {
        match self {
            Resource::Endpoint => 1,
            Resource::ApiserverCert { .. } => 2,
            Resource::Kubeconfig {
                role: Role::ControlPlane,
                ..
            } => 3,
            Resource::ConfigMap(_) => 4,
            Resource::Kubeconfig {
                role: Role::Worker, ..
            } => 5,
            Resource::ControlPlane { .. } => 6,
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address())
    }
}

/// What the graph needs to know about the live cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterFacts {
    pub conventions: Conventions,
    /// The runtime the control plane's static pods run on.
    pub runtime: ContainerRuntime,
    /// Control-plane nodes of the desired state that already run a control plane
    /// ([`ObservedState::is_control_plane_member`]); the rest will be joined.
    pub members: BTreeSet<String>,
    /// True when these facts were assumed, not observed.
    pub assumed: bool,
}

impl ClusterFacts {
    /// Facts for a graph drawn without observation: the first control-plane node of the file
    /// is taken for the `kubeadm init` node, at [`ASSUMED_VERSION`].
    pub fn assumed(desired: &DesiredState) -> Self {
        let conventions = Conventions::new(ASSUMED_VERSION, desired.policy.component_endpoint);
        ClusterFacts {
            runtime: conventions.default_runtime(),
            conventions,
            members: desired
                .control_plane_nodes()
                .take(1)
                .map(|n| n.name.clone())
                .collect(),
            assumed: true,
        }
    }

    /// Facts from observation. The version is the kubeadm version of a running control-plane
    /// node (it wrote the files), else kubeadm-config's kubernetesVersion, else assumed.
    pub fn observed(desired: &DesiredState, observed: &ObservedState) -> Self {
        let members: BTreeSet<String> = desired
            .control_plane_nodes()
            .filter(|n| observed.is_control_plane_member(&n.name, &n.address.to_string()))
            .map(|n| n.name.clone())
            .collect();
        let member_obs = || {
            desired
                .control_plane_nodes()
                .filter(|n| members.contains(&n.name))
                .filter_map(|n| observed.nodes.get(&n.name))
        };
        let version = member_obs()
            .find_map(|o| o.kubeadm_version.as_deref()?.parse().ok())
            .or_else(|| {
                let kubeadm_config = KubeadmConfigMap::KubeadmConfig;
                let cm = observed.configmap(kubeadm_config)?;
                let cfg = crate::cluster_config::read(cm.data.get(kubeadm_config.key())?).ok()?;
                cfg.kubernetes_version?.parse().ok()
            });
        let conventions = Conventions::new(
            version.unwrap_or(ASSUMED_VERSION),
            desired.policy.component_endpoint,
        );
        ClusterFacts {
            runtime: member_obs()
                .find_map(|o| o.container_runtime)
                .unwrap_or_else(|| conventions.default_runtime()),
            conventions,
            members,
            assumed: version.is_none(),
        }
    }
}

/// A dependency cycle, with its whole path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the resource graph has a cycle: {}", .path.join(" -> "))]
pub struct CycleError {
    /// The addresses around the cycle; the first is repeated at the end.
    pub path: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ResourceGraph {
    graph: DiGraph<Resource, ()>,
    order: Vec<NodeIndex>,
    /// Each node's position in `order`, by node index.
    rank: Vec<usize>,
}

impl ResourceGraph {
    /// Compiles the desired state into resources and their dependencies.
    pub fn build(desired: &DesiredState, facts: &ClusterFacts) -> Result<Self, CycleError> {
        let conv = &facts.conventions;
        let mut resources = vec![Resource::Endpoint];
        let members: Vec<&str> = desired
            .control_plane_nodes()
            .map(|n| n.name.as_str())
            .filter(|n| facts.members.contains(*n))
            .collect();
        for node in &members {
            resources.push(Resource::ApiserverCert {
                node: node.to_string(),
            });
        }
        for node in &members {
            for file in conv.control_plane_kubeconfigs() {
                resources.push(Resource::Kubeconfig {
                    node: node.to_string(),
                    role: Role::ControlPlane,
                    file,
                });
            }
        }
        for cm in KubeadmConfigMap::ALL {
            resources.push(Resource::ConfigMap(cm));
        }
        for node in desired.worker_nodes() {
            for file in conv.worker_kubeconfigs() {
                resources.push(Resource::Kubeconfig {
                    node: node.name.clone(),
                    role: Role::Worker,
                    file,
                });
            }
        }
        for node in desired.control_plane_nodes() {
            resources.push(Resource::ControlPlane {
                node: node.name.clone(),
            });
        }
        let edges = dependencies(&resources, facts);
        Self::from_parts(resources, &edges)
    }

    /// A graph of the given resources and `(prerequisite, dependent)` index pairs.
    pub fn from_parts(
        resources: Vec<Resource>,
        edges: &[(usize, usize)],
    ) -> Result<Self, CycleError> {
        let mut graph = DiGraph::new();
        let idx: Vec<NodeIndex> = resources.into_iter().map(|r| graph.add_node(r)).collect();
        for &(from, to) in edges {
            graph.update_edge(idx[from], idx[to], ());
        }
        let order = ordered(&graph)?;
        let mut rank = vec![0; order.len()];
        for (position, i) in order.iter().enumerate() {
            rank[i.index()] = position;
        }
        Ok(ResourceGraph { graph, order, rank })
    }

    /// Resources in the order apply carries them out, each with the addresses it waits for
    /// (in that same order).
    pub fn in_order(&self) -> impl Iterator<Item = (&Resource, Vec<String>)> {
        self.order.iter().map(|&i| {
            let mut prerequisites: Vec<NodeIndex> = self
                .graph
                .neighbors_directed(i, Direction::Incoming)
                .collect();
            prerequisites.sort_by_key(|p| self.rank[p.index()]);
            let addresses = prerequisites
                .iter()
                .map(|&p| self.graph[p].address())
                .collect();
            (&self.graph[i], addresses)
        })
    }

    /// The graph in Graphviz DOT, for `dot -Tsvg`; arrows point from a prerequisite to what
    /// waits for it.
    pub fn to_dot(&self, facts: &ClusterFacts) -> String {
        use petgraph::dot::{Config, Dot};
        let mut out = String::new();
        if facts.assumed {
            out.push_str(&format!(
                "// assumed, not observed: kubeadm {}, {} already running; pass --observed for the real graph\n",
                facts.conventions.version,
                facts.members.iter().cloned().collect::<Vec<_>>().join(", "),
            ));
        }
        let dot = Dot::with_attr_getters(
            &self.graph,
            &[Config::EdgeNoLabel, Config::NodeNoLabel],
            &|_, _| String::new(),
            &|_, (_, r)| {
                let shape = match r {
                    Resource::Endpoint => "diamond",
                    Resource::ControlPlane { .. } => "doubleoctagon",
                    _ => "box",
                };
                format!("label = \"{}\" shape = {shape}", r.address())
            },
        );
        out.push_str(&format!("{dot:?}"));
        out
    }
}

/// The procedure's dependencies, as `(prerequisite, dependent)` index pairs.
fn dependencies(resources: &[Resource], facts: &ClusterFacts) -> Vec<(usize, usize)> {
    let indices = |pred: &dyn Fn(&Resource) -> bool| -> Vec<usize> {
        resources
            .iter()
            .enumerate()
            .filter(|(_, r)| pred(r))
            .map(|(i, _)| i)
            .collect()
    };
    let endpoint = indices(&|r| matches!(r, Resource::Endpoint));
    let certs = indices(&|r| matches!(r, Resource::ApiserverCert { .. }));
    let cp_files = indices(&|r| {
        matches!(
            r,
            Resource::Kubeconfig {
                role: Role::ControlPlane,
                ..
            }
        )
    });
    let worker_files = indices(&|r| {
        matches!(
            r,
            Resource::Kubeconfig {
                role: Role::Worker,
                ..
            }
        )
    });
    let kube_proxy = indices(&|r| matches!(r, Resource::ConfigMap(KubeadmConfigMap::KubeProxy)));
    let configmaps = indices(&|r| matches!(r, Resource::ConfigMap(_)));
    let control_planes = indices(&|r| matches!(r, Resource::ControlPlane { .. }));

    let mut edges = Vec::new();
    let mut all = |from: &[usize], to: &[usize]| {
        for &f in from {
            for &t in to {
                edges.push((f, t));
            }
        }
    };
    // Step 1 before everything that names the LB.
    all(&endpoint, &certs);
    // Anything that points at the LB waits for every API server to serve its name: the LB
    // may pick any of them.
    all(&certs, &cp_files);
    all(&certs, &configmaps);
    all(&certs, &worker_files);
    // A worker's kube-proxy restart should read the converted ConfigMap.
    all(&kube_proxy, &worker_files);
    let (existing, joining): (Vec<usize>, Vec<usize>) = control_planes.iter().partition(|&&i| {
        resources[i]
            .node()
            .is_some_and(|n| facts.members.contains(n))
    });
    // Joins come last, after the whole cluster was converted and the existing members checked;
    // then one at a time, in the file's order (each later join waits for the previous one, and
    // so for everything it waited for).
    if let Some(&first) = joining.first() {
        let before: Vec<usize> = configmaps
            .iter()
            .chain(&cp_files)
            .chain(&worker_files)
            .chain(&existing)
            .copied()
            .collect();
        all(&before, &[first]);
    }
    for pair in joining.windows(2) {
        edges.push((pair[0], pair[1]));
    }
    edges
}

/// Kahn's algorithm with ties broken by (step, insertion order); on a cycle, its path.
fn ordered(graph: &DiGraph<Resource, ()>) -> Result<Vec<NodeIndex>, CycleError> {
    let mut indegree: Vec<usize> = graph
        .node_indices()
        .map(|i| graph.neighbors_directed(i, Direction::Incoming).count())
        .collect();
    let key = |i: NodeIndex| Reverse((graph[i].step(), i.index()));
    let mut ready: BinaryHeap<_> = graph
        .node_indices()
        .filter(|i| indegree[i.index()] == 0)
        .map(key)
        .collect();
    let mut order = Vec::with_capacity(graph.node_count());
    while let Some(Reverse((_, i))) = ready.pop() {
        let i = NodeIndex::new(i);
        order.push(i);
        for next in graph.neighbors_directed(i, Direction::Outgoing) {
            indegree[next.index()] -= 1;
            if indegree[next.index()] == 0 {
                ready.push(key(next));
            }
        }
    }
    if order.len() == graph.node_count() {
        Ok(order)
    } else {
        Err(CycleError {
            path: cycle_path(graph, &indegree),
        })
    }
}

/// A cycle among the nodes Kahn's algorithm could not order: every such node has an
/// unordered predecessor, so walking predecessors must come back round.
fn cycle_path(graph: &DiGraph<Resource, ()>, indegree: &[usize]) -> Vec<String> {
    let stuck = |i: &NodeIndex| indegree[i.index()] > 0;
    let Some(start) = graph.node_indices().find(stuck) else {
        return Vec::new();
    };
    let mut seen = vec![start];
    let mut at = start;
    loop {
        let Some(prev) = graph
            .neighbors_directed(at, Direction::Incoming)
            .filter(stuck)
            .min()
        else {
            return Vec::new();
        };
        if let Some(pos) = seen.iter().position(|&s| s == prev) {
            // seen[pos..] walks the cycle backwards; turn it to follow the edges, and start at
            // the resource that comes first in the file so the message is stable.
            let mut cycle: Vec<NodeIndex> = seen[pos..].iter().rev().copied().collect();
            let first = (0..cycle.len()).min_by_key(|&k| cycle[k]).unwrap_or(0);
            cycle.rotate_left(first);
            cycle.push(cycle[0]);
            return cycle.iter().map(|&i| graph[i].address()).collect();
        }
        seen.push(prev);
        at = prev;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_is_reported_with_its_whole_path() {
        let r = |n: &str| Resource::ControlPlane { node: n.into() };
        let err = ResourceGraph::from_parts(
            vec![Resource::Endpoint, r("a"), r("b"), r("c")],
            &[(0, 1), (1, 2), (2, 3), (3, 1)],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the resource graph has a cycle: control_plane.a -> control_plane.b -> control_plane.c -> control_plane.a"
        );
        let self_loop = ResourceGraph::from_parts(vec![r("a")], &[(0, 0)]).unwrap_err();
        assert_eq!(self_loop.path, ["control_plane.a", "control_plane.a"]);
    }

    #[test]
    fn order_breaks_ties_by_step_then_insertion() {
        let r = |n: &str| Resource::ControlPlane { node: n.into() };
        let g = ResourceGraph::from_parts(vec![r("z"), r("a"), Resource::Endpoint], &[]).unwrap();
        let order: Vec<String> = g.in_order().map(|(r, _)| r.address()).collect();
        assert_eq!(order, ["endpoint", "control_plane.z", "control_plane.a"]);
    }
}
