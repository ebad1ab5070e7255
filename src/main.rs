//! The `ltxvault` binary; all logic lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    // SAFETY: called first thing, before any other thread exists; restoring the default
    // SIGPIPE action makes `ltxvault ... | head` end quietly like other Unix tools instead
    // of panicking on a closed stdout.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Logs go to stderr, filtered by RUST_LOG (default: warnings and errors only, so that
    // command output stays clean; `serve` will log more).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    ltxvault::cli::run()
}
