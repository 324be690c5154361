//! Config problems: one line each, `FILE:LINE: key.path: what is wrong`.

use std::fmt;

/// One problem in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file as given on the command line, or `config/set vN` for a push.
    pub origin: String,
    pub line: Option<u32>,
    /// `sensor[3].slave`, `jobs.sample.every`; `syntax` for TOML that does not parse.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(
                f,
                "{}:{}: {}: {}",
                self.origin, line, self.path, self.message
            ),
            None => write!(f, "{}: {}: {}", self.origin, self.path, self.message),
        }
    }
}

/// Every problem found in one document, in document order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
