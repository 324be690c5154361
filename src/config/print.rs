//! The effective config, secrets masked (stub).
use super::Config;
pub fn to_toml_masked(config: &Config) -> String {
    format!("{config:?}")
}
