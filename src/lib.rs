//! haconn: a fencing service for HA clusters.
//!
//! # Layout
//!
//! - [`spec`]: the cluster spec: strict YAML loading, the JSON Schema, validation into a
//!   known-good `Spec`, normalized rendering with secrets masked. Pure.
//! - [`plan`]: the diff of a live spec against a desired one, each change classified by
//!   what a reload may do with it (SPEC §6), and the reload summary text. Pure.
//! - [`cli`]: one file per command; maps outcomes to exit codes. The only I/O edge here.
//!
//! See ARCHITECTURE.md for the invariants that hold these apart.

pub mod cli;
pub mod plan;
pub mod spec;

/// Bytes fed to the spec loader, for the fuzz target: must never panic.
pub fn fuzz_spec_loader(data: &[u8]) {
    let checked = spec::check_bytes(data, spec::CheckOptions::default());
    if let Some(s) = checked.spec {
        let text = spec::render::normalized_yaml(&s);
        let again = spec::check_bytes(text.as_bytes(), spec::CheckOptions::default());
        assert!(again.spec.is_some() || text.contains(spec::secret::MASK));
    }
}
