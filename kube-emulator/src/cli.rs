//! What the emulator binaries share: print the URL as the first stdout
//! line (a script reads it), then serve until SIGINT or SIGTERM.

use std::io::Write;

/// Prints `url` as one line on stdout, then blocks until SIGINT or
/// SIGTERM. The handlers are in place before the line is printed: a script
/// that signals as soon as it read the URL must not kill the process by the
/// default action.
pub fn announce_and_wait(url: &str) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut stdout = std::io::stdout();
        let _ = writeln!(stdout, "{url}");
        let _ = stdout.flush();
        tokio::select! {
            _ = int.recv() => Ok(()),
            _ = term.recv() => Ok(()),
        }
    })
}
