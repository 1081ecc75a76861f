//! What the emulator binaries share: print the URL as the first stdout
//! line (a script reads it), then serve until SIGINT or SIGTERM.

use std::io::Write;

/// Prints `url` as one line on stdout and flushes it.
pub fn announce(url: &str) {
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{url}");
    let _ = stdout.flush();
}

/// Blocks until SIGINT or SIGTERM.
pub fn wait_for_shutdown_signal() -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })
}
