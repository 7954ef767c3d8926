//! Caps on log lines caused by the network: a token bucket per kind of line, so a flood
//! of datagrams (authenticated or not) cannot fill the disk or rotate the logs away.
//! What is dropped is counted and said in the next line that passes.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct LogBudget {
    capacity: u32,
    tokens: u32,
    /// One token comes back every `refill`.
    refill: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogBudget {
    /// `burst` lines at once, then one every `refill`.
    pub fn new(burst: u32, refill: Duration) -> LogBudget {
        LogBudget {
            capacity: burst,
            tokens: burst,
            refill,
            last: None,
            suppressed: 0,
        }
    }

    /// Whether a line may be written now; `Some(n)` also says how many were dropped
    /// since the last one that passed.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        let last = *self.last.get_or_insert(now);
        let elapsed = now.saturating_duration_since(last);
        let back = (elapsed.as_nanos() / self.refill.as_nanos().max(1)) as u64;
        if back > 0 {
            self.tokens = (u64::from(self.tokens) + back).min(u64::from(self.capacity)) as u32;
            self.last = Some(last + self.refill * back.min(u64::from(u32::MAX)) as u32);
        }
        if self.tokens == 0 {
            self.suppressed += 1;
            return None;
        }
        self.tokens -= 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// A line with the count of the similar lines dropped before it, if any.
pub fn with_suppressed(line: String, suppressed: u64) -> String {
    if suppressed == 0 {
        line
    } else {
        format!("{line} ({suppressed} similar lines suppressed before this one)")
    }
}

/// The nice value of the threads a reset request crosses (the receive thread and the
/// pipeline thread): ahead of everything else on a busy management server, as a cluster
/// engine's own threads are (corosync runs its main thread at a real-time priority; a
/// nice value cannot starve the machine). Needs CAP_SYS_NICE; without it they keep the
/// process's.
pub const FENCING_NICE: libc::c_int = -10;

/// Sets the calling thread's nice value (Linux keeps one per thread); whether it took.
pub fn nice_this_thread(nice: libc::c_int) -> bool {
    // SAFETY: setpriority on this thread's own id has no memory effects.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_refill_and_the_dropped_are_counted() {
        let t0 = Instant::now();
        let mut b = LogBudget::new(3, Duration::from_secs(1));
        assert_eq!(b.allow(t0), Some(0));
        assert_eq!(b.allow(t0), Some(0));
        assert_eq!(b.allow(t0), Some(0));
        for _ in 0..100 {
            assert_eq!(b.allow(t0 + Duration::from_millis(500)), None);
        }
        assert_eq!(b.allow(t0 + Duration::from_millis(1000)), Some(100));
        assert_eq!(b.allow(t0 + Duration::from_millis(1500)), None);
        // A long quiet spell refills up to the burst, no more.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(b.allow(later).is_some());
        }
        assert_eq!(b.allow(later), None);
    }
}

#[cfg(test)]
mod nice_tests {
    #[test]
    fn a_thread_gets_its_own_nice_value() {
        let before = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let set = std::thread::spawn(|| {
            let took = super::nice_this_thread(5);
            (took, unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) })
        })
        .join()
        .unwrap();
        assert_eq!(set, (true, 5), "a higher nice value needs no privilege");
        assert_eq!(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }, before);
    }
}
