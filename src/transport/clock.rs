//! The clock seam's real side: the system's wall clock and tokio's sleep.

use std::time::{Duration, SystemTime};

use crate::seams::Clock;

/// The machine's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sleeps_on_tokio_time_and_reads_the_wall_clock() {
        let start = tokio::time::Instant::now();
        SystemClock.sleep(Duration::from_secs(30)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        assert!(SystemClock.now() > Duration::from_secs(1_700_000_000));
    }
}
