//! The command line: argument parsing, reading files, printing, exit codes.

use std::process::ExitCode;

pub fn main() -> ExitCode {
    ExitCode::from(1)
}
