//! `--web.config.file` (exporter-toolkit YAML): any text parses or is an error naming the file, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mmuscope::webconfig::file;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("/etc/mmuscope/web.yml");
    if let Err(e) = file::parse(path, text) {
        assert!(e.to_string().contains("web.yml"), "error does not name the file: {e}");
    }
});
