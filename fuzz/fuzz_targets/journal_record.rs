//! A journal record read back from disk (a damaged or hostile data dir): never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    taskhub::fuzzing::journal_record(data);
});
