//! haconn: a fencing service for HA clusters.
//!
//! # Layout
//!
//! - [`alert`]: hardware alerts: SNMP traps and informs (IPMI PET among them) decoded,
//!   bounded, and classified (power off, predictive failure, degradation). Pure.
//! - [`spec`]: the cluster spec: strict YAML loading, the JSON Schema, validation into a
//!   known-good `Spec`, normalized rendering with secrets masked. Pure.
//! - [`plan`]: the diff of a live spec against a desired one, each change classified by
//!   what a reload may do with it (SPEC §6), and the reload summary text. Pure.
//! - [`pipeline`]: the reset pipeline's own thread and runtime; owns the live-spec
//!   snapshot and the monitor/reset facts a reload must respect.
//! - [`daemon`]: start-up, the supervisor (a closed set of commands, one at a time), the
//!   control socket and its protocol, the state dir.
//! - [`watch`]: following the spec file through every way it gets replaced.
//! - [`log`]: SPEC §7 log files with timestamps and numbered generations.
//! - [`cli`]: one file per command; maps outcomes to exit codes.
//! - [`fuzz`]: arbitrary bytes into every decoder of network input and the spec loader,
//!   for the fuzz targets (`fuzz/`) and their stable-Rust runner.
//! - [`pair`]: management-server duplication (SPEC §4); for now `addr`, moving the reset
//!   path's virtual address (netlink, gratuitous ARP).
//! - [`lab`]: `haconn lab`: a real pipeline on simulated hardware with HA monitors and
//!   dump agents played over loopback UDP; scenarios, timeline, expected outcomes.
//!
//! See ARCHITECTURE.md for the invariants that hold these apart.

pub mod alert;
pub mod backend;
pub mod cli;
pub mod daemon;
pub mod fuzz;
pub mod lab;
pub mod log;
pub mod metrics;
pub mod pair;
pub mod pipeline;
pub mod plan;
pub mod resetpath;
pub mod spec;
pub mod watch;

/// Bytes fed to the spec loader, for the fuzz target: must never panic.
pub fn fuzz_spec_loader(data: &[u8]) {
    let checked = spec::check_bytes(data, spec::CheckOptions::default());
    if let Some(s) = checked.spec {
        let text = spec::render::normalized_yaml(&s);
        let again = spec::check_bytes(text.as_bytes(), spec::CheckOptions::default());
        assert!(again.spec.is_some() || text.contains(spec::secret::MASK));
    }
}
