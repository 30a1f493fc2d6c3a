//! The `tails-server` command: a thin layer over the library that parses arguments,
//! calls a [`tails_server_core::Manager`] operation and prints the result.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Everything we create holds or protects secrets: private by default.
    // SAFETY: umask only changes this process's file creation mask.
    unsafe { libc::umask(0o077) };
    let args = cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        // Saved, but tor is not updated yet: not a failure of the command, not success.
        Err(err) if err.downcast_ref::<cli::TorPending>().is_some() => {
            eprintln!("tails-server: {err}");
            ExitCode::from(cli::EXIT_PENDING)
        }
        Err(err) if err.downcast_ref::<cli::Unreachable>().is_some() => {
            eprintln!("tails-server: {err}");
            ExitCode::from(cli::EXIT_UNREACHABLE)
        }
        // A reader that stopped reading (`tails-server man | head`) is not a failure.
        Err(err) if broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tails-server: error: {err}");
            let top = err.to_string();
            for cause in err.chain().skip(1) {
                let text = cause.to_string();
                if !top.contains(&text) {
                    eprintln!("  caused by: {text}");
                }
            }
            if let Some(hint) = cli::advice(&err) {
                eprintln!("  hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

fn broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<serde_json::Error>()
                .is_some_and(|e| e.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}
