//! The version strings of `--version`/`-V`, with the git revision and build date that `build.rs` found (`unknown`
//! when built outside a git checkout, e.g. from a crate tarball).

/// `0.1.0 (revision 1a2b3c4d5e6f)`, for `-V` and `mmuscope_build_info`.
pub const SHORT: &str = concat!(env!("CARGO_PKG_VERSION"), " (revision ", env!("MMUSCOPE_GIT_REVISION"), ")");

/// The `--version` text, in the layout of the Prometheus exporters' `--version`.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision: ",
    env!("MMUSCOPE_GIT_REVISION"),
    ")\n  build date:  ",
    env!("MMUSCOPE_BUILD_DATE"),
    "\n  rustc:       ",
    env!("MMUSCOPE_RUSTC_VERSION"),
    "\n  platform:    ",
    env!("MMUSCOPE_TARGET"),
);

/// The git revision the binary was built from, or `unknown`.
pub const REVISION: &str = env!("MMUSCOPE_GIT_REVISION");
