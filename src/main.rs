//! The `tidegate` binary: parse the command line, hand over to the library, map the
//! outcome to an exit code (0 success, 2 bad usage or bad config, 1 anything else).

fn main() -> std::process::ExitCode {
    tidegate::cli::main()
}
