//! Numbered progress lines for long multi-step commands: `[3/7] bpf-linker ... done in 74.2s`.
use std::{
    fmt::Display,
    io::Write,
    time::{Duration, Instant},
};

/// How a step ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing had to change; the text says what was found ("already installed", "/sys/fs/bpf").
    Ready(String),
    /// The step did work; the line reports how long it took.
    Done,
}

/// Counts steps and prints one line per event of the current step.
pub struct Progress {
    total: usize,
    index: usize,
}

/// The step being run: lets it announce long work before it starts ("installing (about 75 s)").
pub struct Step<'a> {
    progress: &'a Progress,
    label: String,
    started: Instant,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        Self { total, index: 0 }
    }

    /// Runs one step, printing its result line. On failure the line says what failed and the error is returned
    /// with the step's name attached.
    pub fn run(
        &mut self,
        label: &str,
        step: impl FnOnce(&Step<'_>) -> anyhow::Result<Outcome>,
    ) -> anyhow::Result<()> {
        self.index += 1;
        let step_ctx = Step {
            progress: self,
            label: label.to_owned(),
            started: Instant::now(),
        };
        let result = step(&step_ctx);
        let elapsed = step_ctx.started.elapsed();
        match result {
            Ok(Outcome::Ready(found)) => step_ctx.say(found),
            Ok(Outcome::Done) => step_ctx.say(format!("done in {}", seconds(elapsed))),
            Err(e) => {
                step_ctx.say(format!("FAILED after {}", seconds(elapsed)));
                return Err(e.context(format!("step '{label}' failed")));
            }
        }
        Ok(())
    }
}

impl Step<'_> {
    /// Prints a line about this step.
    pub fn say(&self, message: impl Display) {
        println!(
            "{}",
            line(
                self.progress.index,
                self.progress.total,
                &self.label,
                &message.to_string()
            )
        );
        // Progress must show up before a long child process starts writing.
        let _ = std::io::stdout().flush();
    }
}

/// One progress line.
pub fn line(index: usize, total: usize, label: &str, message: &str) -> String {
    format!("[{index}/{total}] {label} ... {message}")
}

/// A duration as seconds with one decimal: `74.2s`.
pub fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_counter_label_and_message() {
        assert_eq!(
            line(3, 9, "bpf-linker", "already installed"),
            "[3/9] bpf-linker ... already installed"
        );
    }

    #[test]
    fn seconds_have_one_decimal() {
        assert_eq!(seconds(Duration::from_millis(74_249)), "74.2s");
        assert_eq!(seconds(Duration::from_millis(50)), "0.1s");
        assert_eq!(seconds(Duration::ZERO), "0.0s");
    }

    #[test]
    fn failing_step_names_itself_in_the_error() {
        let mut p = Progress::new(2);
        p.run("first", |_| Ok(Outcome::Done)).unwrap();
        let err = p.run("second", |_| anyhow::bail!("boom")).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("step 'second' failed"), "{text}");
        assert!(text.contains("boom"), "{text}");
    }
}
