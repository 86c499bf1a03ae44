//! `--config.file`: any text must give entries or an error with a position, never a panic; every position the
//! agent reports (line, column of a key or value) must be computable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mmuscope::config::keys;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(entries) = keys::flatten(text) else { return };
    for e in entries {
        assert!(e.span.end <= text.len() && e.value_span.end <= text.len(), "span outside the text");
        let (line, column) = keys::line_column(text, e.span.start);
        assert!(line >= 1 && column >= 1);
        keys::line_column(text, e.value_span.start);
        if let Ok(flags) = e.to_flags() {
            assert!(flags.iter().all(|f| f.starts_with("--")));
        }
    }
});
