//! Shared pieces of the pipeline tests: specs from YAML, a recording wrapper around the
//! simulator with per-operation behaviors, and HA monitors on real loopback UDP.
//!
//! [`Lab`] delegates every call to one [`Sim`] (so `Sim::calls()` stays the complete
//! record) and can override the outcome of one operation on one device — "the NMI is
//! refused but the hard reset works" — which the simulator's per-device behavior cannot
//! say. It also records each call's result and when it ended, which the property tests
//! need to tell an acknowledged hard reset from a refused one.

#![allow(dead_code)] // each test file uses its own part

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use haconn::backend::sim::{Behavior, DeviceId, Sim};
use haconn::backend::{BackendError, BackendResult, Backends, Bmc, Hypervisor, Pdu, PowerState};
use haconn::resetpath::codec::{self, Envelope, Key, Message};
use haconn::spec::model::{Bmc as BmcSpec, Esxi, Pdu as PduSpec, Spec};
use haconn::spec::{CheckOptions, check_bytes};

/// The reset-path key of every test spec.
pub const KEY: &str = "0123456789abcdef0123";

/// The key `system`'s node signs with (per-node keys, the specs' default).
pub fn key(system: &str) -> Key {
    Key::Hmac(haconn::resetpath::keys::node_key(KEY.as_bytes(), system).into_bytes())
}

/// Validates a test spec, failing with every diagnostic when it is not valid.
pub fn spec(yaml: &str) -> Spec {
    let checked = check_bytes(yaml.as_bytes(), CheckOptions::default());
    match checked.spec {
        Some(s) => s,
        None => panic!(
            "test spec does not validate:\n{:#?}\n{yaml}",
            checked.diagnostics
        ),
    }
}

/// An operation of a device, for per-operation rules and the call record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Power,
    Nmi,
    Hard,
    Outlet { outlet: u16, on: bool },
}

/// How a call ended, when it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Power(PowerState),
    Done,
    Refused(String),
}

#[derive(Debug, Clone)]
pub struct Call {
    pub device: DeviceId,
    pub op: Op,
    pub start: Instant,
    /// `None` while it hangs (or after the caller gave up on it).
    pub end: Option<(Instant, Answer)>,
}

impl Call {
    pub fn ok(&self) -> bool {
        matches!(&self.end, Some((_, Answer::Done)))
    }
}

/// The simulator with per-operation overrides and a record of results.
#[derive(Debug)]
pub struct Lab {
    pub sim: Arc<Sim>,
    rules: Mutex<HashMap<(DeviceId, Op), Behavior>>,
    calls: Mutex<Vec<Call>>,
}

impl Lab {
    pub fn new() -> Arc<Lab> {
        Arc::new(Lab {
            sim: Arc::new(Sim::default()),
            rules: Mutex::default(),
            calls: Mutex::default(),
        })
    }

    /// From now on, `op` on `device` answers as `b` (after the simulator has played it,
    /// so the simulator still records the call and waits its delay).
    pub fn rule(&self, device: DeviceId, op: Op, b: Behavior) {
        self.rules.lock().unwrap().insert((device, op), b);
    }

    pub fn backends(self: &Arc<Self>) -> Backends {
        Backends {
            bmc: self.clone(),
            pdu: self.clone(),
            hypervisor: self.clone(),
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    async fn play<T>(
        &self,
        device: DeviceId,
        op: Op,
        answer: impl Fn(&T) -> Answer,
        f: impl std::future::Future<Output = BackendResult<T>>,
    ) -> BackendResult<T> {
        let rule = self
            .rules
            .lock()
            .unwrap()
            .get(&(device.clone(), op))
            .copied();
        let index = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(Call {
                device: device.clone(),
                op,
                start: Instant::now(),
                end: None,
            });
            calls.len() - 1
        };
        let r = match (rule, f.await) {
            (Some(Behavior::Hangs), _) => std::future::pending().await,
            (Some(Behavior::Refuses), _) => Err(BackendError::refused(
                format!("{device:?}"),
                format!("test rule refuses {op:?}"),
            )),
            (_, r) => r,
        };
        let a = match &r {
            Ok(v) => answer(v),
            Err(e) => Answer::Refused(e.to_string()),
        };
        self.calls.lock().unwrap()[index].end = Some((Instant::now(), a));
        r
    }
}

#[async_trait]
impl Bmc for Lab {
    async fn power_state(&self, bmc: &BmcSpec) -> BackendResult<PowerState> {
        let d = DeviceId::Bmc(bmc.address);
        self.play(
            d,
            Op::Power,
            |p| Answer::Power(*p),
            self.sim.power_state(bmc),
        )
        .await
    }
    async fn nmi(&self, bmc: &BmcSpec) -> BackendResult<()> {
        let d = DeviceId::Bmc(bmc.address);
        self.play(d, Op::Nmi, |_| Answer::Done, self.sim.nmi(bmc))
            .await
    }
    async fn hard_reset(&self, bmc: &BmcSpec) -> BackendResult<()> {
        let d = DeviceId::Bmc(bmc.address);
        self.play(d, Op::Hard, |_| Answer::Done, self.sim.hard_reset(bmc))
            .await
    }
    async fn power(&self, bmc: &BmcSpec, _: bool) -> BackendResult<()> {
        Err(not_in_a_reset("power control", bmc.address))
    }
}

fn not_in_a_reset(what: &str, addr: std::net::IpAddr) -> haconn::backend::BackendError {
    haconn::backend::BackendError::refused(addr, format!("{what} is not part of a reset"))
}

#[async_trait]
impl Pdu for Lab {
    async fn set_outlet(&self, pdu: &PduSpec, outlet: u16, on: bool) -> BackendResult<()> {
        let d = DeviceId::Pdu(pdu.address);
        self.play(
            d,
            Op::Outlet { outlet, on },
            |_| Answer::Done,
            self.sim.set_outlet(pdu, outlet, on),
        )
        .await
    }
    async fn outlet_state(
        &self,
        pdu: &PduSpec,
        _: u16,
    ) -> BackendResult<haconn::backend::OutletState> {
        Err(not_in_a_reset("outlet status", pdu.address))
    }
    async fn info(&self, pdu: &PduSpec) -> BackendResult<haconn::backend::PduInfo> {
        Err(not_in_a_reset("PDU info", pdu.address))
    }
}

#[async_trait]
impl Hypervisor for Lab {
    async fn vm_power_state(&self, host: &Esxi, vm: &str) -> BackendResult<PowerState> {
        let d = DeviceId::Vm(host.address, vm.to_string());
        self.play(
            d,
            Op::Power,
            |p| Answer::Power(*p),
            self.sim.vm_power_state(host, vm),
        )
        .await
    }
    async fn vm_nmi(&self, host: &Esxi, vm: &str) -> BackendResult<()> {
        let d = DeviceId::Vm(host.address, vm.to_string());
        self.play(d, Op::Nmi, |_| Answer::Done, self.sim.vm_nmi(host, vm))
            .await
    }
    async fn vm_reset(&self, host: &Esxi, vm: &str) -> BackendResult<()> {
        let d = DeviceId::Vm(host.address, vm.to_string());
        self.play(d, Op::Hard, |_| Answer::Done, self.sim.vm_reset(host, vm))
            .await
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("an IP address")
}

/// A datagram one of the test's sockets received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    /// The name the socket was opened under.
    pub socket: String,
    pub msg: Message,
}

type Inbox = Arc<(Mutex<Vec<Received>>, Condvar)>;

/// HA monitors (and dump agents) on loopback sockets, talking to one pipeline. Every
/// datagram that arrives is kept, with when it arrived, for the assertions.
pub struct Net {
    pipeline: SocketAddr,
    sockets: HashMap<String, UdpSocket>,
    inbox: Inbox,
    stop: Arc<AtomicBool>,
    readers: Vec<thread::JoinHandle<()>>,
}

impl Net {
    pub fn new(pipeline: SocketAddr) -> Net {
        Net {
            pipeline,
            sockets: HashMap::new(),
            inbox: Arc::new((Mutex::new(Vec::new()), Condvar::new())),
            stop: Arc::new(AtomicBool::new(false)),
            readers: Vec::new(),
        }
    }

    /// Opens a socket on 127.0.0.1 under `name`; returns its port.
    pub fn open(&mut self, name: &str) -> u16 {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback socket");
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let reader = sock.try_clone().unwrap();
        let (inbox, stop, name2) = (self.inbox.clone(), self.stop.clone(), name.to_string());
        self.readers.push(thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, _)) = reader.recv_from(&mut buf) else {
                    continue;
                };
                let at = Instant::now();
                // Sockets are named after the system that listens on them.
                let msg = codec::decode(&buf[..n], &key(&name2))
                    .expect("the pipeline sends well-formed signed datagrams")
                    .msg;
                let (lock, cv) = &*inbox;
                lock.lock().unwrap().push(Received {
                    at,
                    socket: name2.clone(),
                    msg,
                });
                cv.notify_all();
            }
        }));
        self.sockets.insert(name.to_string(), sock);
        port
    }

    pub fn port(&self, name: &str) -> u16 {
        self.sockets[name].local_addr().unwrap().port()
    }

    /// Sends `msg` from the socket `from`; returns when it left.
    pub fn send(&self, from: &str, msg: Message) -> Instant {
        let key = key(msg.sender().expect("a client message"));
        let bytes = codec::encode(&Envelope::new(msg), &key);
        let at = Instant::now();
        self.sockets[from]
            .send_to(&bytes, self.pipeline)
            .expect("send to the pipeline");
        at
    }

    /// Waits up to `limit` for a received datagram matching `pred`, looking at every
    /// datagram received so far too.
    pub fn wait_for(&self, limit: Duration, pred: impl Fn(&Received) -> bool) -> Option<Received> {
        self.wait_for_nth(limit, 0, pred)
    }

    /// Like [`Net::wait_for`], for the datagram after the first `skip` that match.
    pub fn wait_for_nth(
        &self,
        limit: Duration,
        skip: usize,
        pred: impl Fn(&Received) -> bool,
    ) -> Option<Received> {
        let deadline = Instant::now() + limit;
        let (lock, cv) = &*self.inbox;
        let mut got = lock.lock().unwrap();
        loop {
            if let Some(r) = got.iter().filter(|r| pred(r)).nth(skip) {
                return Some(r.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            got = cv.wait_timeout(got, deadline - now).unwrap().0;
        }
    }

    /// Returns once nothing has arrived for `quiet` (or after `limit`).
    pub fn wait_quiet(&self, quiet: Duration, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut seen = self.inbox.0.lock().unwrap().len();
        while Instant::now() < deadline {
            thread::sleep(quiet);
            let now = self.inbox.0.lock().unwrap().len();
            if now == seen {
                return;
            }
            seen = now;
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.inbox.0.lock().unwrap().clone()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}
