//! `ward_content::decode` on arbitrary bytes (spec/12).
//!
//! Content comes from any peer a session was opened with, so nothing may
//! panic. The input is tried twice: as a padded plaintext as it arrives,
//! and as the protobuf inside, padded here, so that the fuzzer need not
//! find the padding to reach the fields. Whatever decodes encodes again
//! (an encoder accepts what a decoder accepts, CNT-8) and decodes back to
//! the same content.
#![no_main]

use libfuzzer_sys::fuzz_target;

fn check(plaintext: &[u8]) {
    let Ok(content) = ward_content::decode(plaintext) else {
        return;
    };
    let encoded = ward_content::encode(&content).expect("decoded content encodes");
    let again = ward_content::decode(&encoded).expect("encoded content decodes");
    assert_eq!(again, content, "decode/encode is not a round trip");
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() < ward_content::MAX_PADDED_LEN {
        check(&ward_content::pad(data));
    }
});
