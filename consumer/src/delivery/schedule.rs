//! When a parked alert is tried again: pure arithmetic over
//! `Butler.qlikSenseCloud.consumer.redelivery.scheduleSeconds`, kept apart from the worker so it
//! can be tested without clocks or files.

use std::time::Duration;

/// The longest a destination's `Retry-After` pauses it: a destination asking for more is paused
/// for an hour and asked again then. Its alerts are held durably meanwhile (`holdSeconds`).
pub const MAX_PAUSE: Duration = Duration::from_secs(3600);

/// Unix seconds of the next automatic redelivery of an alert that has had `redeliveries` of
/// them, the last (or its parking) at `now`; `None` when the schedule is used up, so the alert
/// waits for `consumer replay`.
pub fn next_attempt(now: u64, redeliveries: u32, schedule: &[Duration]) -> Option<u64> {
    let step = schedule.get(usize::try_from(redeliveries).ok()?)?;
    Some(now.saturating_add(step.as_secs()))
}

/// The pause a destination asked for, bounded by [`MAX_PAUSE`].
pub fn pause_for(retry_after: Duration) -> Duration {
    retry_after.min(MAX_PAUSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(list: &[u64]) -> Vec<Duration> {
        list.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    #[test]
    fn each_redelivery_takes_the_next_step_then_the_schedule_ends() {
        let schedule = secs(&[60, 300, 1800]);
        assert_eq!(next_attempt(1000, 0, &schedule), Some(1060));
        assert_eq!(next_attempt(2000, 1, &schedule), Some(2300));
        assert_eq!(next_attempt(3000, 2, &schedule), Some(4800));
        assert_eq!(next_attempt(4000, 3, &schedule), None);
        assert_eq!(next_attempt(4000, u32::MAX, &schedule), None);
        assert_eq!(
            next_attempt(1, 0, &[]),
            None,
            "an empty schedule: replay only"
        );
        assert_eq!(next_attempt(u64::MAX, 0, &schedule), Some(u64::MAX));
    }

    #[test]
    fn the_default_schedule_spans_about_27_hours() {
        let total: u64 = crate::config::DEFAULT_REDELIVERY_SCHEDULE.iter().sum();
        assert!((26 * 3600..=28 * 3600).contains(&total), "{total}");
    }

    #[test]
    fn a_pause_is_bounded() {
        assert_eq!(pause_for(Duration::from_secs(30)), Duration::from_secs(30));
        assert_eq!(pause_for(Duration::from_secs(86_400)), MAX_PAUSE);
    }
}
