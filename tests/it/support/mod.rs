//! What the integration tests share.
//! - `harness`: a fluent runner of the `haconn` binary in a temporary directory (`Test`);
//! - `run`: one run of the binary and its output (`Run`), used by `daemon` and `resetpath`;
//! - `daemon`: a daemon on loopback with its files (`Daemon`), the one daemon builder;
//! - `resetpath`: a daemon with a reset path on loopback and `haconn node` helpers (`Lab`);
//! - `pipeline`: the in-process pipeline with a recording simulator and UDP monitors;
//! - `esxi`, `ipmi`, `snmp`: the real peers (`sshd`, `ipmi_sim`, `snmpd`) and their doubles;
//! - `netns`: network namespaces, veths and a bridge: hosts on a LAN of their own;
//! - `pacemaker`: Debian's stand-alone `pacemaker-fenced` and `stonith_admin`, with
//!   `fence_haconn` installed for them;
//! - `pair`: two management servers in namespaces with BMCs that really fence them;
//! - `secret_leaks`: a spec with a marker in every secret field.
//!
//! Not every test uses every helper.
#![allow(dead_code)]

pub mod daemon;
pub mod esxi;
pub mod harness;
pub mod ipmi;
pub mod netns;
pub mod pacemaker;
pub mod pair;
pub mod pipeline;
pub mod resetpath;
pub mod run;
pub mod secret_leaks;
pub mod snmp;

/// The members of a tar.gz (`haconn dump`'s archives), by path.
pub fn unpack_tar_gz(gz: impl std::io::Read) -> std::collections::BTreeMap<String, Vec<u8>> {
    use std::io::Read;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut members = std::collections::BTreeMap::new();
    for entry in tar.entries().expect("a tar stream") {
        let mut entry = entry.expect("a tar entry");
        let path = entry.path().expect("a path").display().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("the entry's bytes");
        members.insert(path, data);
    }
    members
}
