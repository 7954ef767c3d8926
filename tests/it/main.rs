//! The integration tests: one binary (cargo links every top-level `tests/*.rs` on its
//! own, so one crate keeps the suite's link time to one), one module per area, and the
//! support shared by them in `support/`.
//!
//! Every test drives the real `haconn` binary or the library against real peers that the
//! tests start themselves on 127.0.0.0/8 (or in namespaces they make): `ipmi_sim`,
//! `snmpd`, `sshd`, `fence_kdump_send`. Ports come from the kernel.

mod support;

mod alerts;
mod cli;
mod daemon;
mod dump;
mod esxi;
mod fence;
mod ipmi;
mod lab;
mod merge;
mod metrics;
mod netns;
mod operator;
mod pacemaker;
mod package;
mod pair;
mod pipeline_smoke;
mod pipeline_timing;
mod readme;
mod reconcile;
mod resetpath;
mod schema;
mod sd_notify;
mod snmp;
mod storm;
mod trap_decode;
mod views;
mod watch;
