//! The `mmuscope` binary: everything is in the library (`src/lib.rs`), so that the fuzz targets and the tests use
//! the code the agent runs.

fn main() {
    mmuscope::main()
}
