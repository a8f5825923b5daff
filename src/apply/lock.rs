//! One run at a time per cluster: the Lease `kube-system/hactl`, held by `user@host RUN`,
//! taken before the first change, renewed while the run goes on and released when it ends. A
//! holder that stopped renewing is taken over only when the operator names its run, as
//! Terraform's `force-unlock` (or when rollback undoes that very run).

use std::time::Duration;

use crate::seams::{Clock, ClusterApi, Lease, SeamError};

pub const NAMESPACE: &str = "kube-system";
pub const NAME: &str = "hactl";
/// How long the lock lasts unrenewed. It is renewed three times as often, so that the API's
/// short absences while its server restarts do not lose it.
pub const DURATION: Duration = Duration::from_secs(15);
pub const RENEW_EVERY: Duration = Duration::from_secs(5);

/// Who holds the lock: `user@host` and the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub who: String,
    pub run: String,
}

impl Holder {
    /// The Lease's `holderIdentity`.
    pub fn identity(&self) -> String {
        format!("{} {}", self.who, self.run)
    }

    fn parse(identity: &str) -> Holder {
        let (who, run) = identity.rsplit_once(' ').unwrap_or((identity, ""));
        Holder {
            who: who.into(),
            run: run.into(),
        }
    }
}

/// The lock as found: its holder, since when, and how long ago it was renewed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub holder: Holder,
    pub since: String,
    /// None when the Lease has no (readable) renewTime: counted stale.
    pub renewed_ago: Option<Duration>,
}

impl Held {
    fn of(lease: &Lease, now: Duration) -> Held {
        let renewed = lease.renew_time.as_deref().and_then(parse_time);
        Held {
            holder: Holder::parse(lease.holder.as_deref().unwrap_or("")),
            since: lease
                .acquire_time
                .clone()
                .or_else(|| lease.renew_time.clone())
                .unwrap_or_else(|| "an unknown time".into()),
            renewed_ago: renewed.map(|r| now.saturating_sub(r)),
        }
    }

    /// Not renewed for longer than the Lease says it lasts.
    pub fn stale(&self) -> bool {
        self.renewed_ago.is_none_or(|ago| ago > DURATION)
    }

    /// `N s ago`, or `never`.
    pub fn renewed(&self) -> String {
        match self.renewed_ago {
            Some(ago) => format!("{} s ago", ago.as_secs()),
            None => "never".into(),
        }
    }
}

/// Why the lock was not had or kept; each says whose it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    #[error(
        "the cluster is locked by {} (hactl run {}) since {}, last renewed {}",
        held.holder.who, held.holder.run, held.since, held.renewed()
    )]
    Held { held: Held },
    #[error(
        "--force-unlock {given} does not name the lock's holder: it is held by {} (hactl run {})",
        held.holder.who, held.holder.run
    )]
    WrongRun { given: String, held: Held },
    #[error(
        "the lock of {} (hactl run {}) was renewed {}: that hactl is still running",
        held.holder.who, held.holder.run, held.renewed()
    )]
    Renewed { held: Held },
    #[error("the lock (Lease {NAMESPACE}/{NAME}): {0}")]
    Api(SeamError),
    #[error("the lock (Lease {NAMESPACE}/{NAME}) was taken over by {0}")]
    Lost(String),
}

impl LockError {
    /// What the operator does next.
    pub fn help(&self) -> String {
        match self {
            LockError::Held { held } if held.stale() => format!(
                "wait for that run to finish; if its hactl is dead (it stopped renewing the lock), take the lock over with --force-unlock {}",
                held.holder.run
            ),
            LockError::Held { .. } => {
                "wait for that run to finish (`kubectl -n kube-system get lease hactl` shows the lock), then run the command again".into()
            }
            LockError::WrongRun { held, .. } => {
                format!("name the run that holds it: --force-unlock {}", held.holder.run)
            }
            LockError::Renewed { .. } => format!(
                "a lock is taken over only when its holder stopped renewing it for {} s: stop that hactl, or wait for it to finish",
                DURATION.as_secs()
            ),
            LockError::Api(_) => "fix what the message names and run the command again".into(),
            LockError::Lost(_) => {
                "another operator took the lock over: hactl stopped where it was; agree who goes on, then roll the run back".into()
            }
        }
    }
}

/// Takes the lock for `me`. A lock held by another run is refused, naming it, unless `force`
/// names that run and it stopped renewing; one held by `own` (the run rollback undoes) is
/// waited for until it stops renewing (`on_wait` is told, once), then taken.
pub async fn acquire<C: ClusterApi, K: Clock>(
    cluster: &C,
    clock: &K,
    me: &Holder,
    (force, own): (Option<&str>, Option<&str>),
    mut on_wait: impl FnMut(&Held),
) -> Result<Lease, LockError> {
    // The own run's renewTime when hactl began to wait for it: a later one means it is alive.
    let mut waited_at: Option<Option<String>> = None;
    // Two writers racing for it make a conflict; a few rounds settle it.
    for _ in 0..8 {
        let now = clock.now();
        let found = match cluster.get_lease(NAMESPACE, NAME).await {
            Err(SeamError::NotFound { .. }) => None,
            Err(e) => return Err(LockError::Api(e)),
            Ok(l) => Some(l),
        };
        let Some(found) = found else {
            match cluster.create_lease(&fresh(me, now)).await {
                Ok(l) => return Ok(l),
                Err(SeamError::Conflict { .. }) => continue,
                Err(e) => return Err(LockError::Api(e)),
            }
        };
        let held = Held::of(&found, now);
        let own_run = own.is_some_and(|r| r == held.holder.run);
        if !own_run {
            match force {
                None => return Err(LockError::Held { held }),
                Some(given) if given != held.holder.run => {
                    return Err(LockError::WrongRun {
                        given: given.into(),
                        held,
                    });
                }
                Some(_) => {}
            }
        }
        if !held.stale() {
            // The run being rolled back was killed a moment ago: its lock runs out soon,
            // unless it is still renewed (then that hactl is alive).
            if !own_run || waited_at.as_ref().is_some_and(|t| *t != found.renew_time) {
                return Err(LockError::Renewed { held });
            }
            if waited_at.is_none() {
                on_wait(&held);
                waited_at = Some(found.renew_time.clone());
            }
            let left = DURATION.saturating_sub(held.renewed_ago.unwrap_or_default());
            clock.sleep(left + Duration::from_secs(1)).await;
            continue;
        }
        let taken = Lease {
            resource_version: found.resource_version.clone(),
            ..fresh(me, now)
        };
        match cluster.renew_lease(&taken).await {
            Ok(l) => return Ok(l),
            Err(SeamError::Conflict { .. }) => continue,
            Err(e) => return Err(LockError::Api(e)),
        }
    }
    Err(LockError::Api(SeamError::Conflict {
        what: format!("leases {NAMESPACE}/{NAME} changed on every try to take it"),
    }))
}

/// The Lease `me` holds from `now`.
fn fresh(me: &Holder, now: Duration) -> Lease {
    Lease {
        namespace: NAMESPACE.into(),
        name: NAME.into(),
        holder: Some(me.identity()),
        acquire_time: Some(format_time(now)),
        renew_time: Some(format_time(now)),
        duration_secs: Some(DURATION.as_secs() as u32),
        resource_version: String::new(),
    }
}

/// Renews the lock; a renewal whose answer was lost (a newer resourceVersion, still ours) is
/// adopted, one taken over by someone else is [`LockError::Lost`].
pub async fn renew<C: ClusterApi, K: Clock>(
    cluster: &C,
    clock: &K,
    lease: &Lease,
) -> Result<Lease, LockError> {
    let mut current = lease.clone();
    for _ in 0..2 {
        let renewed = Lease {
            renew_time: Some(format_time(clock.now())),
            ..current.clone()
        };
        match cluster.renew_lease(&renewed).await {
            Ok(l) => return Ok(l),
            Err(SeamError::Conflict { .. }) => {}
            Err(SeamError::NotFound { .. }) => {
                return Err(LockError::Lost("nobody: it was deleted".into()));
            }
            Err(e) => return Err(LockError::Api(e)),
        }
        match cluster.get_lease(NAMESPACE, NAME).await {
            Ok(l) if l.holder == lease.holder => current = l,
            Ok(l) => return Err(LockError::Lost(l.holder.unwrap_or_else(|| "nobody".into()))),
            Err(SeamError::NotFound { .. }) => {
                return Err(LockError::Lost("nobody: it was deleted".into()));
            }
            Err(e) => return Err(LockError::Api(e)),
        }
    }
    Err(LockError::Api(SeamError::Conflict {
        what: format!("leases {NAMESPACE}/{NAME}"),
    }))
}

/// Releases the lock if it is still `lease`'s holder's.
pub async fn release<C: ClusterApi>(cluster: &C, lease: &Lease) -> Result<(), LockError> {
    match cluster.get_lease(NAMESPACE, NAME).await {
        Err(SeamError::NotFound { .. }) => Ok(()),
        Err(e) => Err(LockError::Api(e)),
        Ok(l) if l.holder != lease.holder => {
            Err(LockError::Lost(l.holder.unwrap_or_else(|| "nobody".into())))
        }
        Ok(_) => match cluster.delete_lease(NAMESPACE, NAME).await {
            Ok(()) | Err(SeamError::NotFound { .. }) => Ok(()),
            Err(e) => Err(LockError::Api(e)),
        },
    }
}

/// RFC 3339 with microseconds, as the API writes Lease times.
pub fn format_time(since_epoch: Duration) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(since_epoch.as_nanos() as i128)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    ))
    .unwrap_or_default()
}

/// A Lease time as a duration since the epoch.
pub fn parse_time(s: &str) -> Option<Duration> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    let nanos = t.unix_timestamp_nanos();
    (nanos >= 0).then(|| Duration::from_nanos(nanos as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seams::fake::{Call, FakeCluster, Injected, World};

    /// The fake answers at once and its clock moves when slept on: nothing ever waits.
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        use futures_util::FutureExt;
        f.now_or_never().expect("the fake cluster never waits")
    }

    fn me(run: &str) -> Holder {
        Holder {
            who: "ana@laptop".into(),
            run: run.into(),
        }
    }

    fn lease_of(fake: &FakeCluster) -> Option<Lease> {
        fake.world()
            .leases
            .get(&(NAMESPACE.to_string(), NAME.to_string()))
            .cloned()
    }

    #[test]
    fn the_lock_is_taken_once_and_a_second_run_is_refused_naming_the_holder() {
        let fake = FakeCluster::new(World::default());
        let held = block_on(acquire(&fake, &fake, &me("r1"), (None, None), |_| {})).unwrap();
        assert_eq!(held.holder.as_deref(), Some("ana@laptop r1"));
        assert_eq!(held.duration_secs, Some(15));
        assert_eq!(lease_of(&fake), Some(held.clone()));
        let since = held.acquire_time.clone().unwrap();

        let bob = Holder {
            who: "bob@desk".into(),
            run: "r2".into(),
        };
        let err = block_on(acquire(&fake, &fake, &bob, (None, None), |_| {})).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the cluster is locked by ana@laptop (hactl run r1) since {since}, last renewed 0 s ago"
            )
        );
        assert!(
            err.help().starts_with("wait for that run to finish"),
            "{}",
            err.help()
        );
        // Naming the holder's run does not take a lock that is still renewed.
        let err = block_on(acquire(&fake, &fake, &bob, (Some("r1"), None), |_| {})).unwrap_err();
        assert!(matches!(err, LockError::Renewed { .. }), "{err}");
        assert_eq!(lease_of(&fake), Some(held));
    }

    #[test]
    fn a_lock_not_renewed_is_taken_over_only_by_naming_its_run() {
        let fake = FakeCluster::new(World::default());
        block_on(acquire(&fake, &fake, &me("r1"), (None, None), |_| {})).unwrap();
        block_on(fake.sleep(Duration::from_secs(60)));
        let bob = Holder {
            who: "bob@desk".into(),
            run: "r2".into(),
        };
        let err = block_on(acquire(&fake, &fake, &bob, (None, None), |_| {})).unwrap_err();
        assert!(err.to_string().ends_with("last renewed 60 s ago"), "{err}");
        assert!(err.help().ends_with("--force-unlock r1"), "{}", err.help());
        let err = block_on(acquire(&fake, &fake, &bob, (Some("r9"), None), |_| {})).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--force-unlock r9 does not name the lock's holder"),
            "{err}"
        );
        let taken = block_on(acquire(&fake, &fake, &bob, (Some("r1"), None), |_| {})).unwrap();
        assert_eq!(taken.holder.as_deref(), Some("bob@desk r2"));
        assert_eq!(taken.acquire_time, Some(format_time(fake.now())));
        assert_eq!(lease_of(&fake), Some(taken));
    }

    #[test]
    fn rollback_of_the_holders_own_run_waits_for_its_lock_to_run_out() {
        let fake = FakeCluster::new(World::default());
        block_on(acquire(&fake, &fake, &me("r1"), (None, None), |_| {})).unwrap();
        let start = fake.now();
        let mut told = Vec::new();
        let taken = block_on(acquire(
            &fake,
            &fake,
            &me("r1-rollback"),
            (None, Some("r1")),
            |held| told.push(held.holder.run.clone()),
        ))
        .unwrap();
        assert!(
            fake.now() - start > DURATION,
            "waited {:?}",
            fake.now() - start
        );
        assert_eq!(told, ["r1"], "the wait is said once");
        assert_eq!(taken.holder.as_deref(), Some("ana@laptop r1-rollback"));
        // Another run's lock is not waited for.
        let err =
            block_on(acquire(&fake, &fake, &me("r3"), (None, Some("r1")), |_| {})).unwrap_err();
        assert!(matches!(err, LockError::Held { .. }), "{err}");
    }

    #[test]
    fn renewal_survives_a_lost_answer_and_notices_a_takeover() {
        let fake = FakeCluster::new(World::default());
        let held = block_on(acquire(&fake, &fake, &me("r1"), (None, None), |_| {})).unwrap();
        block_on(fake.sleep(RENEW_EVERY));
        // The renewal is made but its answer lost: the next one conflicts, finds it still
        // ours, and adopts it.
        fake.fail(Call::RenewLease, 1, Injected::LostAfter);
        assert!(matches!(
            block_on(renew(&fake, &fake, &held)),
            Err(LockError::Api(_))
        ));
        let renewed = block_on(renew(&fake, &fake, &held)).unwrap();
        assert_eq!(renewed.renew_time, Some(format_time(fake.now())));
        assert_eq!(lease_of(&fake), Some(renewed.clone()));

        fake.edit(|w| {
            let l = w.leases.get_mut(&(NAMESPACE.into(), NAME.into())).unwrap();
            l.holder = Some("bob@desk r2".into());
            l.resource_version = "999".into();
        });
        let err = block_on(renew(&fake, &fake, &renewed)).unwrap_err();
        assert_eq!(err, LockError::Lost("bob@desk r2".into()));
        // Nor is it released from under its new holder.
        assert_eq!(block_on(release(&fake, &renewed)), Err(err));
        assert!(lease_of(&fake).is_some());
    }

    #[test]
    fn release_deletes_the_lock_once_and_forgives_it_gone() {
        let fake = FakeCluster::new(World::default());
        let held = block_on(acquire(&fake, &fake, &me("r1"), (None, None), |_| {})).unwrap();
        block_on(release(&fake, &held)).unwrap();
        assert_eq!(lease_of(&fake), None);
        block_on(release(&fake, &held)).unwrap();
        block_on(acquire(&fake, &fake, &me("r2"), (None, None), |_| {})).unwrap();
    }

    #[test]
    fn lease_times_are_the_apis_and_read_back() {
        let t = Duration::from_micros(1_790_000_000_123_456);
        assert_eq!(format_time(t), "2026-09-21T14:13:20.123456Z");
        assert_eq!(parse_time(&format_time(t)), Some(t));
        assert_eq!(
            parse_time("2026-09-21T14:13:20Z"),
            Some(Duration::from_secs(1_790_000_000))
        );
        assert_eq!(parse_time("yesterday"), None);
    }
}
