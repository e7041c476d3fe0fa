//! Fuzz target: apiserver request bodies (JSON, YAML, JSON patch, merge patch, strategic merge patch, apply) for
//! every served kind, through decoding, patching and validation.
//!
//! No input may panic or run away; a body the server would store must decode as its kind again.
#![no_main]

use control::api::fuzzing;
use libfuzzer_sys::fuzz_target;

// Input layout: byte 0 picks the kind, byte 1 the content type, the rest is the body.
fuzz_target!(|data: &[u8]| {
    let [k, c, body @ ..] = data else { return };
    let kinds = fuzzing::kinds();
    let kind = &kinds[usize::from(*k) % kinds.len()];
    let content_type = fuzzing::CONTENT_TYPES[usize::from(*c) % fuzzing::CONTENT_TYPES.len()];
    if let Ok(stored) = fuzzing::decode_and_validate(kind, content_type, body) {
        assert!(
            fuzzing::decodes_as_kind(kind, &stored),
            "{} {content_type}: the stored object does not decode as its kind: {stored}",
            kind.kind
        );
    }
});
