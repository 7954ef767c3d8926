//! The pair's role core: which of the two management servers serves the reset path.
//!
//! A pure state machine in the style of the reset core: [`RoleCore::handle`] takes the
//! time and one [`Input`] (a timer tick, the peer's authenticated heartbeat, the result
//! of fencing the peer, an operator's command) and appends the [`Effect`]s the shell must
//! carry out (serve, stop serving, fence the peer, log). No socket, clock or runtime.
//!
//! The one rule everything else follows (ARCHITECTURE.md, "Management-server
//! duplication"): **a server becomes active only on authenticated word from a live peer
//! that it is not active and gives way, or after the peer was fenced** (its BMC
//! acknowledged a hard reset or power off, or its outlets were confirmed cut), or when an
//! operator confirms the peer is down. Never on silence alone. Hence:
//! - only a server that is not active ever fences, and only its peer; the active never
//!   fences and never gives up its role because it hears nothing;
//! - at start-up both are undecided; two live undecided (or standby) servers that hear
//!   each other elect the lower name, once the peer's heartbeat shows it heard this run
//!   of the lower (so it was sent after any change of the peer's mind); the other waits
//!   for its `active` heartbeat; a server that hears no peer for the start-up grace
//!   fences it before serving;
//! - a standby that loses the active's heartbeat for `misses` intervals fences it, and
//!   serves only once that is confirmed; if it cannot be confirmed it stays standby, says
//!   why ([`RoleCore::blocked`]) and tries again every [`Timing::fence_retry`];
//! - a graceful handover (`act restart`): the active stops serving first, then says
//!   `leaving`; the standby takes over on that word; the leaving server serves again only
//!   after fencing a peer that went silent, never on its own;
//! - two actives heard at once (only possible if a fence was acknowledged but did not
//!   happen, or an operator confirmed a live peer down) end at once: the higher name stops
//!   serving.
//!
//! Heartbeats from one run of the peer (an *incarnation*, its start time) carry increasing
//! sequence numbers, and runs never go back; an older heartbeat is ignored, so a
//! reordered or replayed `standby` can never be taken for the current word.

use std::time::{Duration, Instant};

use crate::spec::model::Name;

/// What a server says it is in its heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Just started; not serving; has not decided.
    Undecided,
    /// Not serving; follows the active.
    Standby,
    /// Serving the reset path.
    Active,
    /// Was active, has stopped serving and hands over to its peer.
    Leaving,
}

impl Role {
    /// The word in logs, views and the heartbeat.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Undecided => "undecided",
            Role::Standby => "standby",
            Role::Active => "active",
            Role::Leaving => "leaving",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Undecided, Role::Standby, Role::Active, Role::Leaving]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// The pair's timings (from the spec's `pair` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timing {
    /// How often each server sends its heartbeat.
    pub interval: Duration,
    /// How many intervals without a heartbeat make the peer lost.
    pub misses: u32,
    /// How long a starting server waits for its peer before fencing it.
    pub startup_grace: Duration,
    /// How soon a fence that failed is tried again while the peer stays lost.
    pub fence_retry: Duration,
}

impl Timing {
    /// How long the peer may stay silent before it is lost.
    pub fn lost_after(&self) -> Duration {
        self.interval * self.misses
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            interval: Duration::from_millis(200),
            misses: 4,
            startup_grace: Duration::from_secs(10),
            fence_retry: Duration::from_secs(5),
        }
    }
}

/// The peer's heartbeat, authenticated by the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Heartbeat {
    pub role: Role,
    /// Which run of the peer's daemon sent it (new at every start).
    pub incarnation: u64,
    /// Increasing within one incarnation.
    pub seq: u64,
    /// The incarnation of the receiver the sender last heard, if any: an election needs
    /// the peer's word given *after* it heard this run (a heartbeat sent before could be
    /// from a peer that has since taken over).
    pub heard: Option<u64>,
}

/// Why a server took over, or tries to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Both undecided or standby, this one has the lower name.
    Elected,
    /// The peer said it was leaving.
    Handover,
    /// The peer was fenced after its heartbeat was lost.
    PeerLost,
    /// No peer was heard within the start-up grace; it was fenced.
    NoPeerAtStart,
    /// An operator confirmed the peer is down.
    Confirmed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Elected => "elected (both servers up, lower name)",
            Reason::Handover => "handover from the peer",
            Reason::PeerLost => "the peer was lost and is fenced",
            Reason::NoPeerAtStart => "no peer at start-up; it is fenced",
            Reason::Confirmed => "an operator confirmed the peer down",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Time passed (the shell ticks at least once per heartbeat interval).
    Tick,
    Heartbeat(Heartbeat),
    /// The fence this core asked for ended: how the peer's reset or power off was
    /// confirmed, or why it was not.
    FenceDone(Result<String, String>),
    /// `haconn act restart`: hand over to a healthy standby.
    Handover,
    /// `haconn sby takeover --confirm-peer-down`.
    ConfirmPeerDown,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Take the reset-path address, announce it, open the pipeline.
    Serve(Reason),
    /// Close the pipeline, then give up the reset-path address.
    StopServing,
    /// Fence the peer (its BMC, else its PDU outlets) and answer with
    /// [`Input::FenceDone`].
    Fence(Reason),
    /// A line for the event log.
    Log(String),
    /// An operator command refused, with why.
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum State {
    Undecided,
    Standby,
    /// Fencing the peer, to take over for `Reason` once it is confirmed.
    Fencing(Reason),
    Active,
    Leaving,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Heard {
    at: Instant,
    beat: Heartbeat,
}

/// One server's role and what it knows of its peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleCore {
    me: Name,
    /// This run of the daemon (new at every start).
    incarnation: u64,
    peer: Name,
    timing: Timing,
    started: Instant,
    state: State,
    heard: Option<Heard>,
    /// Why the last fence failed, and when: the standby says so and retries later.
    blocked: Option<(Instant, String)>,
    /// The incarnation this server fenced, and when: its heartbeats still in flight then
    /// are not taken for a live peer.
    fenced: Option<(u64, Instant)>,
    /// A fence of the peer is running (it may outlive the `Fencing` state when an
    /// operator confirms the peer down meanwhile): never two at once.
    fence_running: bool,
}

/// What the views show of the pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairView {
    pub role: Role,
    /// Fencing the peer now.
    pub fencing: bool,
    /// The peer's heartbeat is current.
    pub peer_link: bool,
    /// The peer's role as last heard (`None`: never heard).
    pub peer_role: Option<Role>,
    /// Why this standby cannot take over (the last fence's failure).
    pub blocked: Option<String>,
    /// One active and one standby, each hearing the other.
    pub redundant: bool,
}

impl RoleCore {
    pub fn new(me: Name, incarnation: u64, peer: Name, timing: Timing, now: Instant) -> RoleCore {
        RoleCore {
            me,
            incarnation,
            peer,
            timing,
            started: now,
            state: State::Undecided,
            heard: None,
            blocked: None,
            fenced: None,
            fence_running: false,
        }
    }

    /// The role this server states in its heartbeats.
    pub fn role(&self) -> Role {
        match self.state {
            State::Undecided => Role::Undecided,
            State::Standby | State::Fencing(_) => Role::Standby,
            State::Active => Role::Active,
            State::Leaving => Role::Leaving,
        }
    }

    pub fn serving(&self) -> bool {
        self.state == State::Active
    }

    /// The run (incarnation) of the peer while it is a standby heard now.
    pub fn peer_run(&self, now: Instant) -> Option<u64> {
        (self.peer_now(now) == Some(Role::Standby))
            .then(|| self.heard.map(|h| h.beat.incarnation))?
    }

    /// The heartbeat this server sends now.
    pub fn heartbeat(&self, seq: u64) -> Heartbeat {
        Heartbeat {
            role: self.role(),
            incarnation: self.incarnation,
            seq,
            heard: self.heard.map(|h| h.beat.incarnation),
        }
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Why this server cannot take over, while it cannot.
    pub fn blocked(&self) -> Option<&str> {
        self.blocked.as_ref().map(|(_, why)| why.as_str())
    }

    /// The peer's role if its heartbeat is current.
    fn peer_now(&self, now: Instant) -> Option<Role> {
        self.heard
            .filter(|h| now.saturating_duration_since(h.at) < self.timing.lost_after())
            .map(|h| h.beat.role)
    }

    pub fn view(&self, now: Instant) -> PairView {
        let current = self.peer_now(now);
        PairView {
            role: self.role(),
            fencing: matches!(self.state, State::Fencing(_)),
            peer_link: current.is_some(),
            peer_role: self.heard.map(|h| h.beat.role),
            blocked: self.blocked().map(str::to_string),
            redundant: match self.state {
                State::Active => current == Some(Role::Standby),
                State::Standby => current == Some(Role::Active),
                _ => false,
            },
        }
    }

    pub fn handle(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        match input {
            Input::Tick => {}
            Input::Heartbeat(beat) => {
                // A run is never older than the one heard before (an incarnation is the
                // sender's start time), and its sequence numbers grow.
                let newer = match self.heard {
                    None => true,
                    Some(h) => (beat.incarnation, beat.seq) > (h.beat.incarnation, h.beat.seq),
                };
                if !newer {
                    return;
                }
                if let Some((inc, at)) = self.fenced
                    && inc == beat.incarnation
                {
                    if now.saturating_duration_since(at) < self.timing.lost_after() {
                        return;
                    }
                    self.fenced = None;
                    out.push(Effect::Log(format!(
                        "{} STILL RUNS after it was fenced (its BMC or PDU confirmed what did not happen)",
                        self.peer
                    )));
                }
                if let Some(h) = self.heard
                    && h.beat.incarnation != beat.incarnation
                {
                    out.push(Effect::Log(format!(
                        "{} restarted (now {})",
                        self.peer,
                        beat.role.as_str()
                    )));
                }
                self.heard = Some(Heard { at: now, beat });
            }
            Input::FenceDone(result) => {
                self.fence_running = false;
                let State::Fencing(reason) = self.state else {
                    return;
                };
                match result {
                    Ok(how) => {
                        self.blocked = None;
                        self.fenced = self.heard.map(|h| (h.beat.incarnation, now));
                        out.push(Effect::Log(format!("{} fenced: {how}", self.peer)));
                        self.serve(reason, out);
                    }
                    Err(why) => {
                        out.push(Effect::Log(format!(
                            "fencing {} failed: {why}; staying standby",
                            self.peer
                        )));
                        self.blocked = Some((now, why));
                        self.state = State::Standby;
                    }
                }
                return;
            }
            Input::Handover => {
                if self.state != State::Active {
                    out.push(Effect::Refused(format!(
                        "{} is {}, not active",
                        self.me,
                        self.role().as_str()
                    )));
                    return;
                }
                if self.peer_now(now) != Some(Role::Standby) {
                    out.push(Effect::Refused(format!(
                        "{} is not a healthy standby ({}); not handing over",
                        self.peer,
                        self.peer_words(now)
                    )));
                    return;
                }
                out.push(Effect::StopServing);
                out.push(Effect::Log(format!("handing over to {}", self.peer)));
                self.state = State::Leaving;
                return;
            }
            Input::ConfirmPeerDown => {
                if self.serving() {
                    out.push(Effect::Refused(format!("{} is active already", self.me)));
                    return;
                }
                if let Some(role) = self.peer_now(now) {
                    out.push(Effect::Refused(format!(
                        "{} is alive ({}): its heartbeat is current; not taking over",
                        self.peer,
                        role.as_str()
                    )));
                    return;
                }
                out.push(Effect::Log(format!(
                    "an operator confirmed {} down",
                    self.peer
                )));
                self.blocked = None;
                self.fenced = self.heard.map(|h| (h.beat.incarnation, now));
                self.serve(Reason::Confirmed, out);
                return;
            }
        }
        self.step(now, out);
    }

    fn peer_words(&self, now: Instant) -> String {
        match (self.peer_now(now), self.heard) {
            (Some(r), _) => r.as_str().to_string(),
            (None, Some(_)) => "heartbeat lost".to_string(),
            (None, None) => "never heard".to_string(),
        }
    }

    fn serve(&mut self, reason: Reason, out: &mut Vec<Effect>) {
        self.state = State::Active;
        out.push(Effect::Serve(reason));
    }

    fn fence(&mut self, now: Instant, reason: Reason, out: &mut Vec<Effect>) {
        if self.fence_running {
            return;
        }
        if let Some((at, _)) = &self.blocked
            && now.saturating_duration_since(*at) < self.timing.fence_retry
        {
            return;
        }
        self.state = State::Fencing(reason);
        self.fence_running = true;
        out.push(Effect::Fence(reason));
        out.push(Effect::Log(format!(
            "fencing {}: {}",
            self.peer,
            match reason {
                Reason::NoPeerAtStart => "not heard since start-up",
                _ => "its heartbeat is lost",
            }
        )));
    }

    /// The transitions time and heartbeats cause.
    fn step(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let peer = self.peer_now(now);
        let lower = self.me.as_str() < self.peer.as_str();
        let heard_me = self.heard.and_then(|h| h.beat.heard) == Some(self.incarnation);
        match self.state {
            State::Fencing(_) => {}
            State::Active => {
                if peer == Some(Role::Active) && !lower {
                    out.push(Effect::StopServing);
                    out.push(Effect::Log(format!(
                        "TWO ACTIVE SERVERS: {} is active too; {} stops serving (higher name)",
                        self.peer, self.me
                    )));
                    self.state = State::Standby;
                }
            }
            State::Leaving => match peer {
                Some(Role::Active) => {
                    out.push(Effect::Log(format!(
                        "handover done: {} is active; standby",
                        self.peer
                    )));
                    self.state = State::Standby;
                }
                Some(_) => {}
                None => self.fence(now, Reason::PeerLost, out),
            },
            State::Undecided | State::Standby => match peer {
                Some(Role::Active) => {
                    if self.state == State::Undecided {
                        out.push(Effect::Log(format!("standby: {} is active", self.peer)));
                    }
                    self.state = State::Standby;
                    self.blocked = None;
                }
                Some(Role::Leaving) => self.serve(Reason::Handover, out),
                Some(Role::Undecided | Role::Standby) => {
                    self.blocked = None;
                    if lower && heard_me {
                        self.serve(Reason::Elected, out);
                    }
                }
                None => {
                    let reason = if self.heard.is_some() {
                        Reason::PeerLost
                    } else if now.saturating_duration_since(self.started)
                        >= self.timing.startup_grace
                    {
                        Reason::NoPeerAtStart
                    } else {
                        return;
                    };
                    self.fence(now, reason, out);
                }
            },
        }
    }
}

#[cfg(test)]
#[path = "role_tests.rs"]
mod tests;
