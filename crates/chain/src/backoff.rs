//! The one retry delay of the workspace's chain code: starts short, doubles after each failure up
//! to a ceiling, and starts over after a success. Used by receipt polling here and by the node's
//! settlement and oracle loops.

use std::time::Duration;

/// A doubling delay between `initial` and `max`.
///
/// ```
/// use std::time::Duration;
/// use cloister_chain::Backoff;
/// let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(3));
/// assert_eq!(b.next_delay(), Duration::from_secs(1));
/// assert_eq!(b.next_delay(), Duration::from_secs(2));
/// assert_eq!(b.next_delay(), Duration::from_secs(3));
/// b.reset();
/// assert_eq!(b.next_delay(), Duration::from_secs(1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// A backoff whose first delay is `initial`, never longer than `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            current: initial.min(max),
        }
    }

    /// The delay to wait now; the one after it is twice as long (up to the ceiling).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        delay
    }

    /// Waits [`Backoff::next_delay`].
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// After a success: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.current = self.initial.min(self.max);
    }
}
