//! The node seam (`NodeFiles`) over the real ssh transport against a lab of real sshd: read a
//! file with its mode and owner, write one atomically, back one up under
//! `/var/lib/hactl/runs/<run>/` and restore it byte for byte with its mode and owner, refuse a
//! backup that changed, and fail a write on a full disk leaving the file as it was.

mod lab_support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use hactl::plan::sha256;
use hactl::seams::{FileState, NodeOps, SeamError};
use hactl::transport::files::NodeFiles;
use hactl::transport::ssh::SshSession;
use lab_support::{Lab, plan};

const NET: u8 = 44;

/// Bytes, mode and owner of a file on the host.
fn on_host(p: &Path) -> (Vec<u8>, u32, u32, u32) {
    let m = std::fs::metadata(p).unwrap();
    (
        std::fs::read(p).unwrap(),
        m.permissions().mode() & 0o7777,
        m.uid(),
        m.gid(),
    )
}

/// Files a write or restore left behind in a directory (its temporary files).
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".hactl."))
        .collect()
}

#[test]
fn node_files_over_ssh_against_a_lab() {
    let lab = Lab::up("seams-node", &plan(NET, 1, 1), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut sessions = Vec::new();
        for t in lab.ssh_targets() {
            sessions.push(SshSession::connect(t).await.unwrap());
        }
        let files = NodeFiles::new(sessions);
        let path = "/etc/kubernetes/admin.conf";
        let etc = lab.dir.join("nodes/cp1/etc/kubernetes");
        let host = etc.join("admin.conf");
        let before = on_host(&host);

        // Read: bytes, mode, owner; an absent file is None.
        let read = files.read_file("cp1", path).await.unwrap().unwrap();
        assert_eq!(
            (read.content.clone(), read.mode, read.uid, read.gid),
            before
        );
        assert_eq!(files.read_file("cp1", "/etc/kubernetes/nope.conf").await.unwrap(), None);
        assert_eq!(files.read_file("w1", path).await.unwrap(), None, "w1 has no admin.conf");

        // Backup: outside /etc/kubernetes, the node's own, with the hash of what it copied.
        let b = files.backup("cp1", "run-1", path).await.unwrap();
        assert_eq!(b.backup_path, "/var/lib/hactl/runs/run-1/etc/kubernetes/admin.conf");
        assert_eq!(b.sha256, sha256(&before.0));
        assert_eq!((b.mode, b.uid, b.gid), (before.1, before.2, before.3));
        let copy = lab
            .dir
            .join("nodes/cp1/var/lib/hactl/runs/run-1/etc/kubernetes/admin.conf");
        assert_eq!(on_host(&copy), before);

        // Write: atomically, with the mode and owner asked for; nothing left beside it.
        let edited = String::from_utf8(before.0.clone())
            .unwrap()
            .replace(&format!("127.0.{NET}.11"), "k8s-api.lab.internal");
        assert_ne!(edited.as_bytes(), &before.0[..]);
        let new = FileState {
            content: edited.into_bytes(),
            mode: 0o640,
            uid: 1000,
            gid: 1000,
        };
        files.write_file("cp1", path, &new).await.unwrap();
        assert_eq!(on_host(&host), (new.content.clone(), 0o640, 1000, 1000));
        assert!(leftovers(&etc).is_empty(), "{:?}", leftovers(&etc));

        // Restore: byte for byte, mode and owner as they were.
        files.restore(&b).await.unwrap();
        assert_eq!(on_host(&host), before);

        // A backup that changed is refused, and the file stays as it is.
        std::fs::write(&copy, b"tampered\n").unwrap();
        files.write_file("cp1", path, &new).await.unwrap();
        let err = files.restore(&b).await.unwrap_err();
        assert!(matches!(err, SeamError::BackupChanged { .. }), "{err}");
        assert_eq!(on_host(&host).0, new.content);
        std::fs::write(&copy, &before.0).unwrap();
        files.restore(&b).await.unwrap();
        assert_eq!(on_host(&host), before);

        // A full disk: the write fails with the node's words and the file is as it was.
        lab.fault("cp1", &["disk-full"]);
        let err = files.write_file("cp1", path, &new).await.unwrap_err();
        assert!(
            matches!(&err, SeamError::File { detail, .. } if detail.contains("No space left on device")),
            "{err}"
        );
        lab.heal("cp1");
        assert_eq!(on_host(&host), before);
        assert!(leftovers(&etc).is_empty(), "{:?}", leftovers(&etc));

        // Commands: argv words arrive as they are.
        let out = files
            .run("w1", &["printf".into(), "%s|".into(), "it's".into(), "a b".into()])
            .await
            .unwrap();
        assert!(out.success(), "{out:?}");
        assert_eq!(out.stdout, "it's|a b|");
    });
}
