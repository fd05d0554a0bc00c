//! YAML bytes → `policy::parse_sources` → `compile` of every interface and
//! every group alone: no panic, and every error located in the input
//! (`firewall_ctl::testing::fuzzing` holds the property). An input may hold several
//! files, separated by `firewall_ctl::testing::fuzzing::FILE_SEPARATOR`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let files = firewall_ctl::testing::fuzzing::files_of(data);
    if let Err(why) = firewall_ctl::testing::fuzzing::check_files(&files) {
        panic!("{why}\ninput files: {files:?}");
    }
});
