//! What static pods run: real processes (etcd, in the node's mount namespace through
//! `nsenter`) and in-process tasks, both behind `Running`.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use super::{BoxFuture, Running, lock};

/// A real process started for a container; stopped by its PID (`Child::kill`).
pub struct ProcessRunning {
    child: Mutex<Option<tokio::process::Child>>,
    pid: Option<u32>,
    exit: Mutex<Option<String>>,
}

impl ProcessRunning {
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }
}

/// Starts `command` (program and args), in the mount and UTS namespaces of `ns_pid` when
/// given, appending stdout and stderr to `log`.
pub fn spawn_process(
    command: &[String],
    ns_pid: Option<u32>,
    log: &Path,
) -> Result<ProcessRunning, String> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| "the container has no command".to_string())?;
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("open {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("open {}: {e}", log.display()))?;
    let mut cmd = match ns_pid {
        Some(pid) => {
            // nsenter execs the program (no fork without --pid), so the PID is etcd's own.
            let mut c = tokio::process::Command::new("nsenter");
            c.arg(format!("--target={pid}"))
                .arg("--mount")
                .arg("--uts")
                .arg("--");
            match node_cgroup(pid) {
                // The container joins the node's cgroup (where the node's sshd is) before
                // it execs, so the node's network faults (`block-port`) cover its sockets.
                Some(procs) => {
                    c.args(["/bin/sh", "-c", "echo 0 > \"$0\" 2>/dev/null; exec \"$@\""])
                        .arg(procs)
                        .arg(program)
                        .args(args);
                }
                None => {
                    c.arg(program).args(args);
                }
            }
            c
        }
        None => {
            let mut c = tokio::process::Command::new(program);
            c.args(args);
            c
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| format!("failed to start {program}: {e}"))?;
    let pid = child.id();
    Ok(ProcessRunning {
        child: Mutex::new(Some(child)),
        pid,
        exit: Mutex::new(None),
    })
}

/// The `cgroup.procs` of the node whose namespace `ns_pid` holds, when it is not ours.
fn node_cgroup(ns_pid: u32) -> Option<std::path::PathBuf> {
    use crate::lab::faults::isolation::procs_file_of;
    let theirs = procs_file_of(ns_pid)?;
    (Some(&theirs) != procs_file_of(std::process::id()).as_ref()).then_some(theirs)
}

impl Running for ProcessRunning {
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        let child = lock(&self.child).take();
        Box::pin(async move {
            if let Some(mut child) = child {
                // SIGKILL by PID, then reap.
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        })
    }

    fn exited(&self) -> Option<String> {
        if let Some(e) = lock(&self.exit).clone() {
            return Some(e);
        }
        let mut guard = lock(&self.child);
        let child = guard.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                let msg = match status.code() {
                    Some(c) => format!("exit status {c}"),
                    None => "signal: killed".to_string(),
                };
                *lock(&self.exit) = Some(msg.clone());
                Some(msg)
            }
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }
}

/// An in-process container: a task that ends with its exit message, stopped by a signal.
pub struct TaskRunning {
    handle: Mutex<Option<tokio::task::JoinHandle<()>>>,
    stop: tokio::sync::watch::Sender<bool>,
    exit: Arc<Mutex<Option<String>>>,
}

/// Runs `body(stop)` as a container; its `Err(message)` is the container's exit reason.
pub fn spawn_task<F, Fut>(body: F) -> TaskRunning
where
    F: FnOnce(tokio::sync::watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::watch::channel(false);
    let exit = Arc::new(Mutex::new(None));
    let exit2 = exit.clone();
    let fut = body(rx);
    let handle = tokio::spawn(async move {
        let msg = match fut.await {
            Ok(()) => "Completed".to_string(),
            Err(e) => e,
        };
        *lock(&exit2) = Some(msg);
    });
    TaskRunning {
        handle: Mutex::new(Some(handle)),
        stop: tx,
        exit,
    }
}

impl Running for TaskRunning {
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        let _ = self.stop.send(true);
        let handle = lock(&self.handle).take();
        Box::pin(async move {
            if let Some(h) = handle {
                let abort = h.abort_handle();
                if tokio::time::timeout(std::time::Duration::from_secs(3), h)
                    .await
                    .is_err()
                {
                    abort.abort();
                }
            }
        })
    }

    fn exited(&self) -> Option<String> {
        lock(&self.exit).clone()
    }
}

/// Waits until `stop` says stop (or its sender is gone), or `d` passed; true when stopping.
pub async fn sleep_or_stop(
    stop: &mut tokio::sync::watch::Receiver<bool>,
    d: std::time::Duration,
) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        r = stop.changed() => r.is_err() || *stop.borrow(),
    }
}

/// A container that starts `delay` late (`slow-component`): until then it runs and does
/// nothing, like a process still initialising.
pub struct DelayedRunning {
    state: Arc<Mutex<Delayed>>,
}

#[derive(Default)]
struct Delayed {
    stopped: bool,
    inner: Option<Box<dyn Running>>,
}

/// Runs `start()` after `delay`, unless the container was stopped first.
pub fn spawn_delayed<F>(delay: std::time::Duration, start: F) -> DelayedRunning
where
    F: FnOnce() -> Box<dyn Running> + Send + 'static,
{
    let state = Arc::new(Mutex::new(Delayed::default()));
    let state2 = state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let mut s = lock(&state2);
        if !s.stopped {
            s.inner = Some(start());
        }
    });
    DelayedRunning { state }
}

impl Running for DelayedRunning {
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        let inner = {
            let mut s = lock(&self.state);
            s.stopped = true;
            s.inner.take()
        };
        Box::pin(async move {
            if let Some(r) = inner {
                r.stop().await;
            }
        })
    }

    fn exited(&self) -> Option<String> {
        lock(&self.state).inner.as_ref().and_then(|r| r.exited())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn counting(started: Arc<Mutex<u32>>) -> impl FnOnce() -> Box<dyn Running> + Send + 'static {
        move || {
            *lock(&started) += 1;
            Box::new(spawn_task(|mut stop| async move {
                while !sleep_or_stop(&mut stop, Duration::from_secs(60)).await {}
                Err("stopped".into())
            }))
        }
    }

    #[tokio::test]
    async fn a_delayed_container_starts_late_and_not_at_all_when_stopped_first() {
        let started = Arc::new(Mutex::new(0));
        let late = spawn_delayed(Duration::from_millis(200), counting(started.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*lock(&started), 0, "started before its delay");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(*lock(&started), 1);
        assert_eq!(late.exited(), None);
        Box::new(late).stop().await;

        let never = spawn_delayed(Duration::from_millis(100), counting(started.clone()));
        Box::new(never).stop().await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(*lock(&started), 1, "a stopped container must not start");
    }
}
