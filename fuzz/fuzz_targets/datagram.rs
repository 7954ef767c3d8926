//! Feeds arbitrary bytes to the reset-path datagram decoder, with and without a key: it
//! must never panic. The bytes also go in as the payload of an unsigned frame, so the
//! fuzzer reaches the JSON parser without having to find the framing first; whatever
//! decodes must encode and decode back to the same envelope.

#![no_main]

use haconn::resetpath::codec::{Key, MAGIC, MAX_DATAGRAM, decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = Key::Hmac(b"fuzz-reset-path-key-0123".to_vec());
    let _ = decode(data, &key);
    let _ = decode(data, &Key::None);

    let mut framed = Vec::with_capacity(data.len() + 5);
    framed.extend_from_slice(MAGIC);
    framed.push(0);
    framed.extend_from_slice(data);
    for bytes in [data, &framed[..]] {
        if let Ok(env) = decode(bytes, &Key::None) {
            for k in [&Key::None, &key] {
                let again = encode(&env, k);
                if again.len() <= MAX_DATAGRAM {
                    assert_eq!(decode(&again, k).as_ref(), Ok(&env), "round trip");
                }
            }
        }
    }
});
