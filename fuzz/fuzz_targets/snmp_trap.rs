//! Feeds arbitrary bytes to the hardware-alert decoders (snmp2's decoder, then our checks
//! and bounds of an SNMP v1/v2c trap or inform, the inform's response, the IPMI PET
//! parser and the classifier): they must never panic (`haconn::fuzz::snmp_trap`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    haconn::fuzz::snmp_trap(data);
});
