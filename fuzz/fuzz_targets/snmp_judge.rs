//! Feeds arbitrary bytes to the SNMP reply judge (snmp2's decoder, then our checks of
//! version, type, request id, community and OIDs): it must never panic
//! (`haconn::fuzz::snmp_judge`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    haconn::fuzz::snmp_judge(data);
});
