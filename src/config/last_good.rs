//! The last valid configuration, kept in `state_dir` (stub).
use std::path::Path;
use super::{Config, ConfigErrors};

/// Where the running configuration came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    File,
    LastGood { errors: ConfigErrors },
}

#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    pub text: String,
    pub source: Source,
}

pub fn load_with_fallback(path: &Path) -> Result<LoadedConfig, ConfigErrors> {
    let (config, text) = super::load(path)?;
    Ok(LoadedConfig { config, text, source: Source::File })
}

pub fn save_last_good(_state_dir: &Path, _text: &str) -> std::io::Result<()> {
    Ok(())
}
