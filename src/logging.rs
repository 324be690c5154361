//! Logging setup (stub).
