//! What the lab's `systemctl show` knows of a unit: its state and the four transition
//! timestamps systemd keeps per unit (CLOCK_REALTIME and CLOCK_MONOTONIC µs), printed the way
//! systemctl prints properties.
//!
//! As in systemd, a timestamp is the *last* time the transition happened and is 0 only when
//! it never happened since boot: a stopped unit keeps its ActiveEnterTimestamp (its
//! ActiveState says it is inactive, InactiveEnterTimestamp when it stopped).

use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::macros::format_description;

/// One point in time on both clocks, in µs; zero is "never".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    pub realtime_us: u64,
    pub monotonic_us: u64,
}

impl Stamp {
    /// Now. CLOCK_MONOTONIC is what systemd uses (not CLOCK_BOOTTIME, which also counts
    /// suspend); the lab's nodes share the host's clocks (no time namespace).
    pub fn now() -> Stamp {
        let mono = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Stamp {
            realtime_us: real,
            monotonic_us: mono.tv_sec as u64 * 1_000_000 + mono.tv_nsec as u64 / 1_000,
        }
    }
}

/// A unit's transitions: inactive → activating (inactive exit), → active (active enter),
/// → deactivating (active exit), → inactive (inactive enter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transitions {
    pub inactive_exit: Stamp,
    pub active_enter: Stamp,
    pub active_exit: Stamp,
    pub inactive_enter: Stamp,
}

impl Transitions {
    /// The unit started (a simple service is active as soon as it is forked).
    pub fn started(&mut self, at: Stamp) {
        self.inactive_exit = at;
        self.active_enter = at;
    }

    pub fn stopped(&mut self, at: Stamp) {
        self.active_exit = at;
        self.inactive_enter = at;
    }

    /// The latest of the four (StateChangeTimestamp).
    fn last_change(&self) -> Stamp {
        [
            self.inactive_exit,
            self.active_enter,
            self.active_exit,
            self.inactive_enter,
        ]
        .into_iter()
        .max_by_key(|s| s.monotonic_us)
        .unwrap_or_default()
    }
}

/// A unit as `systemctl show` sees it.
pub struct Unit {
    /// `kubelet.service`.
    pub id: String,
    pub description: String,
    /// `false`: `LoadState=not-found` (systemctl shows units it does not know, too).
    pub loaded: bool,
    pub active: bool,
    pub transitions: Transitions,
}

/// systemd's `format_timestamp`: `Tue 2026-11-24 08:15:17 UTC`; empty for 0.
fn realtime(us: u64) -> String {
    if us == 0 {
        return String::new();
    }
    OffsetDateTime::from_unix_timestamp((us / 1_000_000) as i64)
        .ok()
        .and_then(|t| {
            t.format(format_description!(
                "[weekday repr:short] [year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// The unit's properties, in the order systemd's Unit interface lists them.
pub fn properties(u: &Unit) -> Vec<(&'static str, String)> {
    let t = &u.transitions;
    let pair = |name: &'static str, mono: &'static str, s: Stamp| {
        [
            (name, realtime(s.realtime_us)),
            (mono, s.monotonic_us.to_string()),
        ]
    };
    let mut out = vec![
        ("Id", u.id.clone()),
        ("Description", u.description.clone()),
        (
            "LoadState",
            if u.loaded { "loaded" } else { "not-found" }.into(),
        ),
        (
            "ActiveState",
            if u.active { "active" } else { "inactive" }.into(),
        ),
        ("SubState", if u.active { "running" } else { "dead" }.into()),
    ];
    out.extend(pair(
        "StateChangeTimestamp",
        "StateChangeTimestampMonotonic",
        t.last_change(),
    ));
    out.extend(pair(
        "InactiveExitTimestamp",
        "InactiveExitTimestampMonotonic",
        t.inactive_exit,
    ));
    out.extend(pair(
        "ActiveEnterTimestamp",
        "ActiveEnterTimestampMonotonic",
        t.active_enter,
    ));
    out.extend(pair(
        "ActiveExitTimestamp",
        "ActiveExitTimestampMonotonic",
        t.active_exit,
    ));
    out.extend(pair(
        "InactiveEnterTimestamp",
        "InactiveEnterTimestampMonotonic",
        t.inactive_enter,
    ));
    out
}

/// What `systemctl show` asked for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ShowArgs {
    /// `-p`/`--property`/`-P` names (comma-separated ones split); empty: all.
    pub properties: Vec<String>,
    /// `--value` (or `-P`): values only.
    pub value_only: bool,
    /// `-a`/`--all`: empty values too.
    pub all: bool,
}

/// systemctl's output for these units: `Name=value` lines in systemd's order (not the
/// order asked), a blank line between units. A property asked for but unknown prints
/// nothing (systemctl only logs it at debug level); one asked for is shown even if empty.
pub fn show(units: &[Unit], args: &ShowArgs) -> String {
    let show_empty = args.all || !args.properties.is_empty();
    let mut out = String::new();
    for (i, u) in units.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        for (name, value) in properties(u) {
            if !args.properties.is_empty() && !args.properties.iter().any(|p| p == name) {
                continue;
            }
            if value.is_empty() && !show_empty {
                continue;
            }
            if args.value_only {
                out.push_str(&format!("{value}\n"));
            } else {
                out.push_str(&format!("{name}={value}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(active: bool, t: Transitions) -> Unit {
        Unit {
            id: "kubelet.service".into(),
            description: "kubelet: The Kubernetes Node Agent".into(),
            loaded: true,
            active,
            transitions: t,
        }
    }

    fn stamp(real_s: u64, mono_s: u64) -> Stamp {
        Stamp {
            realtime_us: real_s * 1_000_000,
            monotonic_us: mono_s * 1_000_000 + 7,
        }
    }

    #[test]
    fn properties_print_as_name_value_in_systemds_order() {
        let mut t = Transitions::default();
        t.started(stamp(1_795_943_717, 123));
        let u = unit(true, t);
        let args = ShowArgs {
            properties: vec![
                "ActiveEnterTimestampMonotonic".into(),
                "ActiveState".into(),
                "NoSuchProperty".into(),
            ],
            ..Default::default()
        };
        assert_eq!(
            show(std::slice::from_ref(&u), &args),
            "ActiveState=active\nActiveEnterTimestampMonotonic=123000007\n"
        );
        let args = ShowArgs {
            properties: vec!["ActiveEnterTimestamp".into(), "ActiveExitTimestamp".into()],
            value_only: true,
            ..Default::default()
        };
        assert_eq!(
            show(std::slice::from_ref(&u), &args),
            "Sun 2026-11-29 09:15:17 UTC\n\n"
        );
        // Without -p, empty values are left out.
        let all = show(&[u], &ShowArgs::default());
        assert!(all.contains("ActiveExitTimestampMonotonic=0\n"), "{all}");
        assert!(!all.contains("ActiveExitTimestamp=\n"), "{all}");
    }

    #[test]
    fn a_stopped_unit_keeps_when_it_last_became_active() {
        let mut t = Transitions::default();
        t.started(stamp(1_795_943_717, 100));
        t.stopped(stamp(1_795_943_727, 110));
        let u = unit(false, t);
        let args = ShowArgs {
            properties: vec![
                "ActiveState".into(),
                "ActiveEnterTimestampMonotonic".into(),
                "InactiveEnterTimestampMonotonic".into(),
                "StateChangeTimestampMonotonic".into(),
            ],
            ..Default::default()
        };
        assert_eq!(
            show(&[u], &args),
            "ActiveState=inactive\nStateChangeTimestampMonotonic=110000007\nActiveEnterTimestampMonotonic=100000007\nInactiveEnterTimestampMonotonic=110000007\n"
        );
    }

    #[test]
    fn a_never_started_unit_has_zero_timestamps() {
        let u = Unit {
            id: "nope.service".into(),
            description: "nope.service".into(),
            loaded: false,
            active: false,
            transitions: Transitions::default(),
        };
        let args = ShowArgs {
            properties: vec![
                "LoadState".into(),
                "ActiveEnterTimestamp".into(),
                "ActiveEnterTimestampMonotonic".into(),
            ],
            ..Default::default()
        };
        assert_eq!(
            show(&[u], &args),
            "LoadState=not-found\nActiveEnterTimestamp=\nActiveEnterTimestampMonotonic=0\n"
        );
    }

    #[test]
    fn now_is_on_the_monotonic_clock() {
        let a = Stamp::now();
        let b = Stamp::now();
        assert!(a.monotonic_us > 0 && b.monotonic_us >= a.monotonic_us);
        assert!(a.realtime_us > 1_700_000_000_000_000);
    }
}
