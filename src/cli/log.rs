//! `HACTL_LOG`: what hactl does and when, as Terraform's `TF_LOG` says it: off unless asked,
//! on stderr or appended to `HACTL_LOG_PATH`, each line timed in seconds since hactl started.
//!
//! A bare level (`trace`, `debug`, `info`, `warn`, `error`, `off`, any case) is for hactl's own
//! events only; other crates' (kube, hyper) log only when a filter names them
//! (`HACTL_LOG=hactl=debug,kube=debug`), so that `HACTL_LOG=trace` cannot print a request's
//! headers. hactl's own events name nodes, addresses, commands and durations, never what a
//! command read or was sent.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::str::FromStr;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::time::Uptime;

pub const LOG_VAR: &str = "HACTL_LOG";
pub const LOG_PATH_VAR: &str = "HACTL_LOG_PATH";

/// The filter `HACTL_LOG`'s value stands for, or why it stands for none.
fn filter(value: &str) -> Result<EnvFilter, String> {
    let value = value.trim();
    if let Ok(level) = LevelFilter::from_str(value) {
        return Ok(EnvFilter::new(format!("hactl={level}")));
    }
    EnvFilter::builder().parse(value).map_err(|e| e.to_string())
}

/// Starts logging when `HACTL_LOG` is set and not empty. A value that is neither a level nor
/// a filter, or a `HACTL_LOG_PATH` that cannot be opened, is said once on stderr: logging
/// then stays off, or goes to stderr, and the command runs as it would without.
pub fn init() {
    let Some(value) = std::env::var_os(LOG_VAR) else {
        return;
    };
    let value = value.to_string_lossy();
    if value.trim().is_empty() {
        return;
    }
    let filter = match filter(&value) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "warning: {LOG_VAR}={value:?} is neither a level (trace, debug, info, warn, error, \
                 off) nor a filter such as hactl::observe=debug ({e}); logging stays off"
            );
            return;
        }
    };
    let logger = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(Uptime::default())
        .with_ansi(false);
    let path = std::env::var_os(LOG_PATH_VAR).filter(|p| !p.is_empty());
    // Owner-only, as a log of a production control plane's nodes and addresses should be.
    let file = path.as_ref().map(|p| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(p)
    });
    let installed = match file {
        Some(Ok(file)) => logger.with_writer(Mutex::new(file)).try_init(),
        Some(Err(e)) => {
            eprintln!(
                "warning: {LOG_PATH_VAR}={}: {e}; logging to stderr instead",
                std::path::Path::new(path.as_deref().unwrap_or_default()).display()
            );
            logger.with_writer(std::io::stderr).try_init()
        }
        None => logger.with_writer(std::io::stderr).try_init(),
    };
    // Only a second call in one process finds one installed; the first logger stays.
    drop(installed);
}

#[cfg(test)]
mod tests {
    use super::filter;

    #[test]
    fn a_bare_level_is_for_hactl_alone_and_a_filter_is_taken_as_written() {
        assert_eq!(filter("DEBUG").unwrap().to_string(), "hactl=debug");
        assert_eq!(filter(" trace ").unwrap().to_string(), "hactl=trace");
        assert_eq!(filter("off").unwrap().to_string(), "hactl=off");
        assert_eq!(
            filter("hactl::observe=debug,kube=info")
                .unwrap()
                .to_string(),
            "hactl::observe=debug,kube=info"
        );
        assert!(filter("hactl=verbose").is_err());
    }
}
