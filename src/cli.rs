//! The command line (in progress).
use std::process::ExitCode;
pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
