//! Feeds arbitrary bytes to every decoder of what a BMC sends (RMCP+ framing, Open Session
//! Response, RAKP 2/4, session packets, IPMI responses): it must never panic
//! (`haconn::fuzz::ipmi_replies`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    haconn::fuzz::ipmi_replies(data);
});
