//! Feeds arbitrary bytes to the reset-path datagram decoder, with and without a key: it
//! must never panic (`haconn::fuzz::datagram`: also as an unsigned frame's payload, with
//! a round trip of whatever decodes).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    haconn::fuzz::datagram(data);
});
