//! Reading the tree into typed config (stub).
use std::path::Path;
use super::{Config, ConfigErrors};

pub fn load(path: &Path) -> Result<(Config, String), ConfigErrors> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let config = parse_str(&text, &path.display().to_string())?;
    Ok((config, text))
}

pub fn parse_str(_text: &str, _origin: &str) -> Result<Config, ConfigErrors> {
    Err(ConfigErrors::default())
}
