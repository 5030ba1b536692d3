//! The relay's periodic purge: every period, what has expired by the relay's clock is dropped on
//! a blocking thread (a large purge is seconds of sled work), and the outcome is logged and
//! handed back for the metrics. The mailboxes and the file store each run one.

use std::fmt::Display;
use std::time::Duration;

use merpati_proto::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;

/// Runs `purge` every `every` until `shutdown`; `what` names what it drops in the log, and
/// `after` gets how many it dropped (`None` if the purge failed), for the metrics.
pub(crate) async fn every<E: Display + Send + 'static>(
    every: Duration,
    clock: Clock,
    shutdown: CancellationToken,
    what: &'static str,
    purge: impl Fn(Timestamp) -> Result<u64, E> + Clone + Send + 'static,
    mut after: impl FnMut(Option<u64>),
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let (purge, now) = (purge.clone(), clock.now());
        let count = match tokio::task::spawn_blocking(move || purge(now)).await {
            Ok(Ok(count)) => {
                if count > 0 {
                    tracing::info!(count, "relay: purged expired {what}");
                }
                Some(count)
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "relay: purging expired {what} failed");
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "relay: the purge of {what} failed");
                None
            }
        };
        after(count);
    }
}
