//! `disk-full`: the node's `/etc/kubernetes` becomes a tmpfs exactly as large as its content,
//! mounted in the node's mount namespace over the bind mount, so every write there from the
//! node's processes (ssh sessions, old and new) fails with ENOSPC. Healing copies what
//! changed back to `DIR/nodes/<node>/etc/kubernetes` and unmounts it.
//!
//! The supervisor's simulated parts read the node's files from the host path, under the
//! tmpfs, and do not see it; the lab's `kubeadm` asks `FaultSet::disk_full` instead.

use std::fs;
use std::io;
use std::path::Path;
use std::process::Command;

use crate::lab::LabDir;

/// The tmpfs's source name, how `is_full` recognises it.
const SOURCE: &str = "hactl-lab-disk-full";
/// Takes the last page when `/etc/kubernetes` is empty (a tmpfs of size 0 is unlimited).
const FILLER: &str = ".hactl-lab-disk-full";
const MOUNT: &str = "/etc/kubernetes";

/// Is the full tmpfs mounted on the node's `/etc/kubernetes` (`ns_pid` is its sshd)?
pub fn is_full(ns_pid: u32) -> bool {
    let Ok(text) = fs::read_to_string(format!("/proc/{ns_pid}/mountinfo")) else {
        return false;
    };
    text.lines().any(|l| {
        let Some((left, right)) = l.split_once(" - ") else {
            return false;
        };
        let mount_point = left.split_whitespace().nth(4);
        let mut r = right.split_whitespace();
        mount_point == Some(MOUNT) && r.next() == Some("tmpfs") && r.next() == Some(SOURCE)
    })
}

/// Fills the node's `/etc/kubernetes`.
pub fn fill(lab: &LabDir, node: &str, ns_pid: u32) -> Result<(), String> {
    if is_full(ns_pid) {
        return Ok(());
    }
    let src = lab.node_path(node, MOUNT);
    // In the node's namespace the host's lab directory is still visible under its own path.
    // tmpfs counts pages of file data; shrinking it to what the copy uses leaves none free.
    let script = format!(
        "set -e\n\
         mount -t tmpfs -o mode=0755 {SOURCE} {MOUNT}\n\
         fill() {{\n\
           cp -a \"$1/.\" {MOUNT}/ || return 1\n\
           used=$(df -B4096 --output=used {MOUNT} | tail -n 1 | tr -d ' ') || return 1\n\
           if [ \"$used\" -eq 0 ]; then head -c 4096 /dev/zero > {MOUNT}/{FILLER}; used=1; fi\n\
           mount -o remount,size=$((used * 4))k {MOUNT}\n\
         }}\n\
         fill \"$1\" || {{ umount {MOUNT}; exit 1; }}\n"
    );
    in_namespace(ns_pid, &script, &[&src.to_string_lossy()])
}

/// Copies what changed back to the host and unmounts the tmpfs.
pub fn drain(lab: &LabDir, node: &str, ns_pid: u32) -> Result<(), String> {
    if !is_full(ns_pid) {
        return Ok(());
    }
    let seen = Path::new("/proc")
        .join(ns_pid.to_string())
        .join("root")
        .join(MOUNT.trim_start_matches('/'));
    let host = lab.node_path(node, MOUNT);
    mirror(&seen, &host).map_err(|e| {
        format!(
            "cannot copy the node's {MOUNT} back to {}: {e}",
            host.display()
        )
    })?;
    // Lazily: a session whose working directory is there keeps it until it leaves.
    in_namespace(ns_pid, &format!("umount -l {MOUNT}\n"), &[])
}

fn in_namespace(ns_pid: u32, script: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new("nsenter")
        .arg(format!("--target={ns_pid}"))
        .args(["--mount", "--", "/bin/sh", "-c", script, "sh"])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run nsenter: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "in the node's mount namespace: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Makes `dst` hold what `src` holds: changed and new files copied (with their mode),
/// what `src` lacks removed.
fn mirror(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    fs::create_dir_all(dst)?;
    fs::set_permissions(dst, meta.permissions())?;
    let mut names = std::collections::BTreeSet::new();
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == FILLER {
            continue;
        }
        names.insert(name.clone());
        let (from, to) = (entry.path(), dst.join(&name));
        let m = fs::symlink_metadata(&from)?;
        let existing = fs::symlink_metadata(&to).ok();
        let ft = m.file_type();
        if ft.is_dir() {
            if existing.as_ref().is_some_and(|e| !e.is_dir()) {
                fs::remove_file(&to)?;
            }
            mirror(&from, &to)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&from)?;
            if fs::read_link(&to).ok().as_ref() != Some(&target) {
                remove_any(&to)?;
                std::os::unix::fs::symlink(&target, &to)?;
            }
        } else if ft.is_file() {
            let bytes = fs::read(&from)?;
            if existing.as_ref().is_some_and(|e| !e.is_file()) {
                remove_any(&to)?;
            }
            if fs::read(&to).ok().as_deref() != Some(bytes.as_slice()) {
                fs::write(&to, &bytes)?;
            }
            fs::set_permissions(&to, m.permissions())?;
        }
    }
    for entry in fs::read_dir(dst)? {
        let entry = entry?;
        if !names.contains(&entry.file_name()) {
            remove_any(&entry.path())?;
        }
    }
    Ok(())
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn mirror_copies_changes_and_removes_what_is_gone() {
        let base = std::env::temp_dir().join(format!("hactl-mirror-{}", std::process::id()));
        let (src, dst) = (base.join("src"), base.join("dst"));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(src.join("pki")).unwrap();
        fs::create_dir_all(dst.join("manifests")).unwrap();
        fs::write(src.join("pki/ca.crt"), "new").unwrap();
        fs::set_permissions(src.join("pki/ca.crt"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(src.join(FILLER), "x").unwrap();
        fs::write(dst.join("manifests/etcd.yaml"), "gone").unwrap();
        fs::write(dst.join("admin.conf"), "gone").unwrap();
        mirror(&src, &dst).unwrap();
        assert_eq!(fs::read_to_string(dst.join("pki/ca.crt")).unwrap(), "new");
        let mode = fs::metadata(dst.join("pki/ca.crt")).unwrap().permissions();
        assert_eq!(mode.mode() & 0o777, 0o600);
        assert!(!dst.join("manifests").exists());
        assert!(!dst.join("admin.conf").exists());
        assert!(!dst.join(FILLER).exists());
        fs::remove_dir_all(&base).unwrap();
    }
}
