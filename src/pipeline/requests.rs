//! The request cache: which reset each recent request joined, so that a retransmission
//! (same requester, same req#, same target, from the same address) is answered again
//! instead of acting twice.
//!
//! An entry answers a retransmission only while its reset is in flight or within
//! [`RETRANSMIT_WINDOW`] after the final reply, and never after the target has checked in
//! again (the target's check-in count, its *epoch*, is stored with the entry). Anything
//! else is a new request. Only admitted requests of registered requesters are stored, at
//! most [`PER_REQUESTER`] per requester: the cache is bounded by the spec.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::resetpath::codec::ResetResult;
use crate::spec::model::Name;

use super::system::ResetId;

/// How long after its final reply a request's retransmission is answered again.
pub const RETRANSMIT_WINDOW: Duration = Duration::from_secs(10);
/// Remembered requests per requester (a monitor has one or two requests in flight).
pub const PER_REQUESTER: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    req: u32,
    target: Name,
    from: IpAddr,
    target_epoch: u64,
    reset: ResetId,
    /// The final reply and when it was sent.
    answer: Option<(ResetResult, Option<String>, Instant)>,
}

/// What a retransmission is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repeat {
    InFlight(ResetId),
    Final(ResetResult, Option<String>),
}

#[derive(Debug, Default, Clone)]
pub struct RequestCache {
    by_requester: HashMap<Name, VecDeque<Entry>>,
}

/// A request as the cache identifies it.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    pub requester: &'a str,
    pub req: u32,
    pub target: &'a str,
    pub from: IpAddr,
    pub target_epoch: u64,
}

impl RequestCache {
    pub fn lookup(&self, now: Instant, k: Key<'_>) -> Option<Repeat> {
        let e = self.by_requester.get(k.requester)?.iter().find(|e| {
            e.req == k.req
                && e.target.as_str() == k.target
                && e.from == k.from
                && e.target_epoch == k.target_epoch
        })?;
        match &e.answer {
            None => Some(Repeat::InFlight(e.reset)),
            Some((result, reason, at)) if now.duration_since(*at) <= RETRANSMIT_WINDOW => {
                Some(Repeat::Final(*result, reason.clone()))
            }
            Some(_) => None,
        }
    }

    pub fn insert(&mut self, requester: Name, k: Key<'_>, target: Name, reset: ResetId) {
        let q = self.by_requester.entry(requester).or_default();
        q.retain(|e| !(e.req == k.req && e.target.as_str() == k.target));
        if q.len() >= PER_REQUESTER {
            q.pop_front();
        }
        q.push_back(Entry {
            req: k.req,
            target,
            from: k.from,
            target_epoch: k.target_epoch,
            reset,
            answer: None,
        });
    }

    /// Records the final reply of a reset for every request that joined it.
    pub fn finish(
        &mut self,
        reset: ResetId,
        requesters: impl Iterator<Item = (Name, u32)>,
        result: ResetResult,
        reason: Option<&str>,
        now: Instant,
    ) {
        for (name, req) in requesters {
            if let Some(q) = self.by_requester.get_mut(&name) {
                for e in q.iter_mut().filter(|e| e.reset == reset && e.req == req) {
                    e.answer = Some((result, reason.map(str::to_string), now));
                }
            }
        }
    }

    /// Drops what can no longer answer anything.
    pub fn expire(&mut self, now: Instant) {
        self.by_requester.retain(|_, q| {
            q.retain(|e| {
                e.answer
                    .as_ref()
                    .is_none_or(|(_, _, at)| now.duration_since(*at) <= RETRANSMIT_WINDOW)
            });
            !q.is_empty()
        });
    }

    /// Forgets a requester (it left the spec).
    pub fn forget(&mut self, requester: &str) {
        self.by_requester.remove(requester);
    }

    pub fn len(&self) -> usize {
        self.by_requester.values().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_requester.is_empty()
    }

    /// Every entry, sorted by requester: (requester, req, target, from, target epoch,
    /// reset, final answer and when).
    #[cfg(test)]
    #[allow(clippy::type_complexity)]
    pub(crate) fn entries(
        &self,
    ) -> Vec<(
        &Name,
        u32,
        &Name,
        IpAddr,
        u64,
        ResetId,
        Option<(ResetResult, Instant)>,
    )> {
        let mut v: Vec<_> = self
            .by_requester
            .iter()
            .flat_map(|(n, q)| {
                q.iter().map(move |e| {
                    (
                        n,
                        e.req,
                        &e.target,
                        e.from,
                        e.target_epoch,
                        e.reset,
                        e.answer.as_ref().map(|(r, _, t)| (*r, *t)),
                    )
                })
            })
            .collect();
        v.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        v
    }
}
