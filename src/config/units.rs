//! Durations and sizes (stub).
use std::time::Duration;
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}
pub fn parse_size(text: &str) -> Result<u64, String> {
    text.parse().map_err(|_| format!("invalid size {text:?}"))
}
