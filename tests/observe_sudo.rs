//! Observation as a login user who is not root, against a real lab (real sshd, real sudo):
//! without sudo the root-only files are named with the fix, `sudo -n` without a rule is
//! named with its fix, and a NOPASSWD rule reads the cluster as root would.

mod lab_support;

use std::path::{Path, PathBuf};

use lab_support::observing::{actions, plan_json, problem};
use lab_support::{Lab, plan};
use serde_json::Value;

/// A user no machine is likely to have, added to the nodes' own `/etc/passwd` only.
const USER: &str = "hactl-ops";
const UID: u32 = 64123;

/// `USER` on `node`: in the node's passwd, with a home in the lab directory that authorizes
/// the lab's key.
fn add_user(lab: &Lab, node: &str) {
    let home = lab.dir.join(format!("home-{USER}-{node}"));
    let keys = home.join(".ssh/authorized_keys");
    std::fs::create_dir_all(keys.parent().unwrap()).unwrap();
    std::fs::copy(lab.dir.join("id_ed25519.pub"), &keys).unwrap();
    for path in [&home, &home.join(".ssh"), &keys] {
        std::os::unix::fs::chown(path, Some(UID), Some(UID)).unwrap();
    }
    lab.ssh_ok(
        node,
        &format!(
            "echo '{USER}:x:{UID}:{UID}::{}:/bin/sh' >> /etc/passwd && echo '{USER}:*:20000:0:99999:7:::' >> /etc/shadow",
            home.display()
        ),
    );
}

/// The lab's hactl.toml logging in as `USER`, with `sudo` as given, written as `name`.
fn plan_as_user(lab: &Lab, name: &str, sudo: bool) -> PathBuf {
    let original = std::fs::read_to_string(lab.dir.join("hactl.toml")).unwrap();
    let edited = original.replace(
        "user = \"root\"",
        &format!("user = \"{USER}\"\nsudo = {sudo}"),
    );
    assert_ne!(edited, original, "the lab's hactl.toml names no root user");
    let path = lab.dir.join(name);
    std::fs::write(&path, edited).unwrap();
    path
}

/// The plan's one problem about `subject`: (message, help).
fn message_and_help(plan: &Value, subject: &str) -> (String, String) {
    let p = problem(plan, subject);
    assert_eq!(p["severity"], "error", "{p}");
    (
        p["message"].as_str().unwrap().to_string(),
        p["help"].as_str().unwrap().to_string(),
    )
}

#[test]
fn a_login_user_reads_the_cluster_through_sudo_and_each_failure_says_its_fix() {
    let net = 34;
    let lab = Lab::up("sudo34", &plan(net, 1, 1), &[]);
    let (code, as_root, err) = plan_json(&lab.dir.join("hactl.toml"));
    assert_eq!(code, Some(0), "{err}");
    for node in ["cp1", "w1"] {
        add_user(&lab, node);
    }

    // 1. No sudo: kubeadm's files are root's (0600), and the plan says which, as whom, and
    // that sudo is the fix.
    let (code, plan, err) = plan_json(&plan_as_user(&lab, "no-sudo.toml", false));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("Could not observe: cp1, w1"), "{err}");
    let (message, help) = message_and_help(&plan, "cp1");
    for words in [
        "could not be read over SSH: cannot read: /etc/kubernetes/admin.conf (Permission denied)",
        &format!("as user {USER}"),
    ] {
        assert!(message.contains(words), "{message}");
    }
    assert!(help.starts_with("set ssh.sudo = true"), "{help}");
    let (message, _) = message_and_help(&plan, "w1");
    assert!(
        message.contains("cannot read: /etc/kubernetes/kubelet.conf (Permission denied)"),
        "{message}"
    );

    // 2. sudo = true, but no sudoers rule for the user: sudo's words, and NOPASSWD as the fix.
    let with_sudo = plan_as_user(&lab, "sudo.toml", true);
    let (code, plan, err) = plan_json(&with_sudo);
    assert_eq!(code, Some(1), "{err}");
    let (message, help) = message_and_help(&plan, "cp1");
    assert!(message.contains("sudo -n failed"), "{message}");
    assert!(message.contains("a password is required"), "{message}");
    assert!(help.contains("NOPASSWD"), "{help}");

    // 3. A NOPASSWD rule in each node's own sudoers.d (never this machine's): the plan is the
    // one root gets.
    for node in ["cp1", "w1"] {
        lab.ssh_ok(
            node,
            &format!(
                "printf '%s ALL=(ALL) NOPASSWD: ALL\\n' {USER} > /etc/sudoers.d/{USER} && chmod 0440 /etc/sudoers.d/{USER}"
            ),
        );
    }
    assert!(
        !Path::new(&format!("/etc/sudoers.d/{USER}")).exists(),
        "the rule leaked into this machine's sudoers.d"
    );
    let (code, plan, err) = plan_json(&with_sudo);
    assert_eq!(code, Some(0), "{err}\n{}", plan["problems"]);
    assert_eq!(actions(&plan), actions(&as_root));
    assert_eq!(plan["problems"], as_root["problems"]);
}
