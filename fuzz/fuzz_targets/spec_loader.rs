//! Feeds arbitrary bytes to the spec loader: loading, validating and re-rendering a spec
//! must never panic, whatever the file holds.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    haconn::fuzz_spec_loader(data);
});
