//! The apply lock at the edge: taken over the real API, renewed by a task on the runtime
//! while hactl asks and applies (a renewal that fails is tried again: the API is away a moment
//! while its server restarts), released when the run ends. A lock taken over by someone else
//! is handed to the journal's sink, which then refuses the next record, so hactl stops. Ctrl-C
//! is handled while the lock is held: at the question it cancels (the lock released); while
//! applying it starts no further step and undoes the run; a second one stops at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use miette::Diagnostic;

use crate::apply::lock::{self, Holder, LockError};
use crate::seams::{Clock, Lease};
use crate::transport::clock::SystemClock;
use crate::transport::cluster::KubeCluster;

/// A lock refused or lost, with what to do next.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{error}")]
#[diagnostic(code(hactl::lock), help("{help}"))]
pub struct LockRefused {
    error: LockError,
    help: String,
}

impl From<LockError> for LockRefused {
    fn from(error: LockError) -> Self {
        let help = error.help();
        LockRefused { error, help }
    }
}

/// Who runs hactl: `user@host`, as the lock names its holder.
pub fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    format!("{user}@{host}")
}

/// Set when the lock was taken over: by whom.
#[derive(Clone, Default)]
pub struct Lost(Arc<Mutex<Option<String>>>);

impl Lost {
    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, by: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(by);
    }
}

/// What Ctrl-C does while the lock is held.
pub struct OnInterrupt {
    /// Still asking: Ctrl-C cancels, as an answer other than `yes`.
    pub asking: bool,
    /// Said at the first Ctrl-C while running.
    pub first: String,
    /// Said at the second, which stops hactl at once.
    pub second: String,
}

/// Ctrl-C as the run sees it.
#[derive(Clone, Default)]
pub struct Interrupt {
    asking: Arc<AtomicBool>,
    pressed: Arc<AtomicBool>,
}

impl Interrupt {
    /// The question was answered: Ctrl-C now stops the run instead of cancelling it.
    pub fn running(&self) {
        self.asking.store(false, Ordering::SeqCst);
    }

    pub fn pressed(&self) -> bool {
        self.pressed.load(Ordering::SeqCst)
    }
}

/// The lock, held: renewed in the background until released.
pub struct Locked {
    lease: Lease,
    pub lost: Lost,
    pub interrupt: Interrupt,
    renewing: tokio::task::JoinHandle<()>,
    watching: tokio::task::JoinHandle<()>,
}

/// Takes the lock (see [`lock::acquire`]), starts renewing it and handles Ctrl-C.
pub async fn take(
    api: &KubeCluster,
    run: &str,
    takeover: (Option<&str>, Option<&str>),
    on_interrupt: OnInterrupt,
) -> Result<Locked, LockRefused> {
    let me = Holder {
        who: who(),
        run: run.to_string(),
    };
    let lease = lock::acquire(api, &SystemClock, &me, takeover, |held| {
        println!(
            "The lock is still run {}'s (last renewed {}): waiting up to {} s for it to run out...",
            held.holder.run,
            held.renewed(),
            lock::DURATION.as_secs()
        );
    })
    .await?;
    let lost = Lost::default();
    let renewing = tokio::spawn(renew(api.clone(), lease.clone(), lost.clone()));
    let interrupt = Interrupt::default();
    interrupt
        .asking
        .store(on_interrupt.asking, Ordering::SeqCst);
    let watching = tokio::spawn(watch(
        api.clone(),
        lease.clone(),
        interrupt.clone(),
        on_interrupt,
    ));
    Ok(Locked {
        lease,
        lost,
        interrupt,
        renewing,
        watching,
    })
}

async fn watch(api: KubeCluster, lease: Lease, interrupt: Interrupt, say: OnInterrupt) {
    loop {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        if interrupt.asking.load(Ordering::SeqCst) {
            // Nothing has changed yet: let go of the lock and leave, as after a `no`.
            let _ = lock::release(&api, &lease).await;
            println!("\nApply cancelled.");
            close_masters().await;
            std::process::exit(1);
        }
        if !interrupt.pressed.swap(true, Ordering::SeqCst) {
            eprintln!("\n{}", say.first);
        } else {
            eprintln!("\n{}", say.second);
            close_masters().await;
            std::process::exit(130);
        }
    }
}

/// The ssh masters closed before `std::process::exit` (which runs no destructor), each within
/// a few seconds: they would stay connected to the nodes for half an hour otherwise.
async fn close_masters() {
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        crate::transport::ssh::close_all_masters(),
    )
    .await;
}

async fn renew(api: KubeCluster, mut lease: Lease, lost: Lost) {
    loop {
        SystemClock.sleep(lock::RENEW_EVERY).await;
        match lock::renew(&api, &SystemClock, &lease).await {
            Ok(l) => lease = l,
            Err(LockError::Lost(by)) => {
                lost.set(by);
                return;
            }
            // The API away a moment: the next round tries again, well inside the Lease.
            Err(e) => eprintln!("Warning: renewing the lock failed, trying again: {e}"),
        }
    }
}

impl Locked {
    /// Stops renewing and releases the lock; says so if it cannot, as it then runs out by
    /// itself.
    pub async fn release(self, api: &KubeCluster) {
        self.renewing.abort();
        self.watching.abort();
        if let Err(e) = lock::release(api, &self.lease).await {
            eprintln!(
                "Warning: could not release the lock: {e}. It runs out {} s after its last renewal.",
                lock::DURATION.as_secs()
            );
        }
    }

    /// Stops renewing and keeps the lock: the run is unfinished, and the lock runs out by
    /// itself for its rollback (`hactl rollback` waits for it).
    pub fn keep(self) {
        self.renewing.abort();
        self.watching.abort();
    }
}
