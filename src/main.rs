//! The `ltxvault` binary; all logic lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    // SAFETY: called first thing, before any other thread exists; restoring the default
    // SIGPIPE action makes `ltxvault ... | head` end quietly like other Unix tools instead
    // of panicking on a closed stdout.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Logging (stderr, RUST_LOG, --log-format) is set up by `run` once it knows the command.
    ltxvault::cli::run()
}
