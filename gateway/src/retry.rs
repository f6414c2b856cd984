//! The tries of one request: the route's deadline, how many tries were made,
//! which endpoints they went to, and whether another try is allowed. Pingora
//! calls `upstream_peer` again for every error marked retryable; this decides
//! which errors get that mark, with Envoy's semantics for Istio's `retries`.

use std::time::{Duration, Instant};

use strait_config::snapshot::{RetryPolicy, RoutePolicy};

/// Endpoints remembered per request to send retries elsewhere (Envoy's
/// `previous_hosts` predicate); more tries than this reuse the oldest slots.
const REMEMBERED: usize = 4;

/// What went wrong with a try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be made.
    Connect,
    /// The upstream reset or closed before answering.
    Reset,
    /// The try took longer than its timeout.
    Timeout,
    /// The upstream answered with a status the policy retries.
    Status,
}

/// Tries of one request.
#[derive(Debug, Default)]
pub struct Attempts {
    /// Tries started.
    pub tries: u32,
    deadline: Option<Instant>,
    /// The route's deadline passed: the answer is 504.
    pub timed_out: bool,
    tried: [usize; REMEMBERED],
}

impl Attempts {
    /// Called before every try; the first one starts the route's deadline.
    pub fn begin_try(&mut self, policy: &RoutePolicy, endpoint: usize) {
        if self.tries == 0 {
            // A deadline past what an Instant holds is no deadline: a plain `+`
            // would panic the worker on a huge configured timeout.
            self.deadline = policy.timeout.and_then(|t| Instant::now().checked_add(t));
        }
        self.tried[self.tries as usize % REMEMBERED] = endpoint + 1;
        self.tries += 1;
    }

    /// Whether an earlier try of this request went to `endpoint`.
    pub fn tried(&self, endpoint: usize) -> bool {
        self.tried.contains(&(endpoint + 1))
    }

    /// Time left before the route's deadline (None: no deadline).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether the route's deadline has passed.
    pub fn expired(&self) -> bool {
        self.remaining().is_some_and(|r| r.is_zero())
    }

    /// The timeout of the next try: the per-try timeout, cut to the time left.
    pub fn try_timeout(&self, retry: &RetryPolicy) -> Option<Duration> {
        match (retry.per_try_timeout, self.remaining()) {
            (Some(t), Some(r)) => Some(t.min(r)),
            (t, r) => t.or(r),
        }
    }

    /// Whether `failure` of the last try is followed by another try. A timeout
    /// that used up the route's deadline is final and marks the request as timed out.
    pub fn retry(&mut self, retry: &RetryPolicy, failure: Failure) -> bool {
        if self.expired() {
            self.timed_out = true;
            return false;
        }
        let covered = match failure {
            Failure::Connect => retry.retries_connect_failure(),
            Failure::Reset => retry.retries_reset(),
            Failure::Timeout => retry.retries_timeout(),
            Failure::Status => true,
        };
        covered && self.tries <= retry.attempts
    }

    /// Whether an answer with `status` should be replaced by another try.
    pub fn retry_status(&self, retry: &RetryPolicy, status: u16, grpc_status: Option<u32>) -> bool {
        self.tries <= retry.attempts && !self.expired() && retry.retries_status(status, grpc_status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_tries_against_attempts() {
        let policy = RoutePolicy::default(); // Istio's default: 2 retries, connect-failure, 503
        let mut a = Attempts::default();
        a.begin_try(&policy, 0);
        assert!(a.retry(&policy.retry, Failure::Connect));
        assert!(
            !a.retry(&policy.retry, Failure::Reset),
            "reset is not in the default policy"
        );
        assert!(a.retry_status(&policy.retry, 503, None));
        assert!(!a.retry_status(&policy.retry, 500, None));
        a.begin_try(&policy, 1);
        a.begin_try(&policy, 2);
        assert!(!a.retry(&policy.retry, Failure::Connect), "three tries is all");
        assert!(a.tried(1) && a.tried(2) && !a.tried(3));
    }

    #[test]
    fn deadline_cuts_try_timeouts_and_ends_retries() {
        let mut policy = RoutePolicy {
            timeout: Some(Duration::from_millis(50)),
            ..RoutePolicy::default()
        };
        policy.retry.per_try_timeout = Some(Duration::from_secs(5));
        let mut a = Attempts::default();
        a.begin_try(&policy, 0);
        assert!(a
            .try_timeout(&policy.retry)
            .is_some_and(|t| t <= Duration::from_millis(50)));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!a.retry(&policy.retry, Failure::Connect));
        assert!(a.timed_out);
    }

    #[test]
    fn a_timeout_beyond_any_instant_is_no_deadline() {
        let policy = RoutePolicy {
            timeout: Some(Duration::MAX),
            ..RoutePolicy::default()
        };
        let mut a = Attempts::default();
        a.begin_try(&policy, 0);
        assert_eq!(a.remaining(), None);
        assert!(a.retry(&policy.retry, Failure::Connect));
    }
}
