//! The one rule for "running in CI", used by `cargo xtask test` (its tiers), the test harness
//! (`mmuscope_tests::harness::prereq`) and every test that would otherwise skip: in CI a missing
//! prerequisite is a failure, never a skip.
//!
//! `.ci/run` exports `CI=true`; other CI systems set `CI=1`, `CI=yes` or `CI=True`. Any value
//! except empty, `false` and `0` (case-insensitive) therefore counts, so a CI run is never
//! mistaken for a developer's machine.

/// The environment variable CI systems set.
pub const VAR: &str = "CI";

/// Whether this process runs in CI, from the environment.
pub fn in_ci() -> bool {
    is_ci_value(std::env::var_os(VAR).as_deref().and_then(|v| v.to_str()))
}

/// The rule itself, on the variable's value (`None`: unset or not UTF-8).
pub fn is_ci_value(value: Option<&str>) -> bool {
    match value {
        None => false,
        Some(v) => {
            let v = v.trim();
            !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_ci_value;

    #[test]
    fn values_that_mean_ci() {
        for v in ["true", "TRUE", "True", "1", "yes", "woodpecker"] {
            assert!(is_ci_value(Some(v)), "{v:?}");
        }
    }

    #[test]
    fn values_that_do_not() {
        assert!(!is_ci_value(None));
        for v in ["", " ", "0", "false", "FALSE", "False"] {
            assert!(!is_ci_value(Some(v)), "{v:?}");
        }
    }
}
