//! The lab's nodes are real: an sshd per node in its own mount and UTS namespace, reached
//! with the real `ssh`, seeing its own files; stopped by the recorded PID and namespace.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hactl::lab::files::{Content, NodeFile};
use hactl::lab::node;
use hactl::lab::{LabDir, LabNode};

fn ssh(lab: &LabDir, node: &str, cmd: &str) -> std::process::Output {
    Command::new("ssh")
        .arg("-F")
        .arg(lab.root().join("ssh_config"))
        .args(["-o", "BatchMode=yes", node, cmd])
        .output()
        .expect("ssh runs")
}

#[test]
fn each_node_is_a_real_sshd_with_its_own_files_and_name() {
    node::check_host().expect("the lab's test needs root and the lab's packages (see .ci/run)");
    let tmp = tempdir("nodes");
    let lab = LabDir::new(&tmp);
    let nodes = [
        LabNode {
            name: "na".into(),
            address: "127.0.0.71".parse().unwrap(),
            control_plane: true,
        },
        LabNode {
            name: "nb".into(),
            address: "127.0.0.72".parse().unwrap(),
            control_plane: false,
        },
    ];
    std::fs::create_dir_all(lab.root().join("lab")).unwrap();
    node::ssh_keygen(&lab.ssh_key(), "test").unwrap();
    std::fs::copy(
        lab.ssh_key().with_extension("pub"),
        lab.lab_file("authorized_keys"),
    )
    .unwrap();
    let mut known = String::new();
    let mut config = String::new();
    for n in &nodes {
        let files = [NodeFile {
            path: "/etc/kubernetes/whoami".into(),
            mode: 0o600,
            content: Content::Data(format!("I am {}\n", n.name).into_bytes()),
        }];
        node::write_node_tree(&lab, n, &files).unwrap();
        let hk = node::host_key(&lab, &n.name);
        node::ssh_keygen(&hk, "host").unwrap();
        let public = std::fs::read_to_string(hk.with_extension("pub")).unwrap();
        known.push_str(&node::known_hosts_line(n, 22, &public));
        config.push_str(&format!(
            "Host {}\n HostName {}\n User root\n IdentityFile {}\n UserKnownHostsFile {}\n StrictHostKeyChecking yes\n",
            n.name, n.address, lab.ssh_key().display(), lab.known_hosts().display()
        ));
    }
    std::fs::write(lab.known_hosts(), known).unwrap();
    std::fs::write(lab.ssh_config(), config).unwrap();
    for m in hactl::lab::NODE_MOUNTS {
        if !Path::new(m).exists() {
            std::fs::create_dir_all(m).unwrap();
        }
    }
    std::fs::create_dir_all("/run/sshd").unwrap();

    let records: Vec<_> = nodes
        .iter()
        .map(|n| node::start_sshd(&lab, n, 22).unwrap())
        .collect();
    let result = std::panic::catch_unwind(|| {
        for n in &nodes {
            let out = ssh(
                &lab,
                &n.name,
                "hostname; cat /etc/kubernetes/whoami; grep -c . /etc/hosts",
            );
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "ssh {}: {}",
                n.name,
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                text.lines().take(2).collect::<Vec<_>>(),
                [n.name.clone(), format!("I am {}", n.name)]
            );
        }
        // A write on one node is that node's alone.
        assert!(
            ssh(&lab, "na", "echo changed > /etc/kubernetes/whoami")
                .status
                .success()
        );
        assert_eq!(
            std::fs::read_to_string(lab.node_path("na", "/etc/kubernetes/whoami")).unwrap(),
            "changed\n"
        );
        assert_eq!(
            std::fs::read_to_string(lab.node_path("nb", "/etc/kubernetes/whoami")).unwrap(),
            "I am nb\n"
        );
        // The host's own /etc/kubernetes is untouched.
        assert!(!Path::new("/etc/kubernetes/whoami").exists());
        // A host key that does not match is refused (strict checking).
        std::fs::write(lab.known_hosts(), known_hosts_swapped(&lab)).unwrap();
        let out = ssh(&lab, "na", "true");
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        );
    });
    // A session left running in the namespace is stopped with it.
    for r in &records {
        r.stop(Duration::from_secs(2));
        node::stop_namespace(
            r.mnt_ns.expect("sshd runs in its own namespace"),
            Duration::from_secs(2),
        );
        assert!(!r.is_alive());
    }
    for n in &nodes {
        assert!(
            !node::port_taken(n.address, 22),
            "{}'s sshd still listens",
            n.name
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// The known_hosts file with the two nodes' keys swapped.
fn known_hosts_swapped(lab: &LabDir) -> String {
    let text = std::fs::read_to_string(lab.known_hosts()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let key = |l: &str| l.split_once(' ').unwrap().1.to_string();
    let host = |l: &str| l.split(' ').next().unwrap().to_string();
    format!(
        "{} {}\n{} {}\n",
        host(lines[0]),
        key(lines[1]),
        host(lines[1]),
        key(lines[0])
    )
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("hactl-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}
