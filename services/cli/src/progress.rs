//! Progress on stderr for long operations: the phases of `agentmesh up`
//! (a spinner with the phase and its elapsed time; each finished phase stays
//! as a line with how long it took) and the documents of `agentmesh ingest`
//! (a bar). When stderr is not a terminal nothing is drawn: phases print as
//! plain `==> message` lines and bars stay silent, so logs and pipes get no
//! escape codes. Progress never writes to stdout, which carries the data.

use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether progress is drawn: stderr is a terminal.
pub fn interactive() -> bool {
    std::io::stderr().is_terminal()
}

/// The current phase of a multi-phase operation.
struct Phase {
    bar: ProgressBar,
    message: String,
    started: Instant,
}

static PHASE: Mutex<Option<Phase>> = Mutex::new(None);

/// Starts the next phase (finishing the previous one). Without a terminal:
/// the message as a `==> ` line on stderr.
pub fn phase(message: &str) {
    let mut current = PHASE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(previous) = current.take() {
        previous.finish();
    }
    if !interactive() {
        eprintln!("==> {message}");
        return;
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner:.cyan} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(100));
    *current = Some(Phase {
        bar,
        message: message.to_owned(),
        started: Instant::now(),
    });
}

/// Finishes the current phase, if any (before printing to stdout).
pub fn done() {
    let mut current = PHASE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(previous) = current.take() {
        previous.finish();
    }
}

impl Phase {
    fn finish(self) {
        self.bar.finish_and_clear();
        eprintln!("==> {} ({})", self.message, elapsed(self.started.elapsed()));
    }
}

/// `850ms`, `3.2s`, `2m05s`.
pub fn elapsed(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

/// A bar over `len` items (`unit`: what they are), drawn only on a terminal.
pub fn bar(len: u64, unit: &str) -> ProgressBar {
    let target = if interactive() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    let template =
        format!("{{bar:40.cyan/blue}} {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}}) {{msg}}");
    bar.set_style(
        ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_times_read_at_a_glance() {
        assert_eq!(elapsed(Duration::from_millis(850)), "850ms");
        assert_eq!(elapsed(Duration::from_millis(3240)), "3.2s");
        assert_eq!(elapsed(Duration::from_secs(125)), "2m05s");
    }
}
