//! How far a long task is (`seed` at millions of rows, `migrate` converting the read models): a live
//! line on stderr when it is a terminal (drawn by `indicatif`), and otherwise a plain log line per
//! phase, at its end and at most every `LOG_EVERY` between, so that a container's log shows progress without a flood.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Plain log lines at most this often within a phase.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Where a task is now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    /// What it is doing ("companies", "prospects", "company_prospect_view: building indexes"): a
    /// new phase is always logged.
    pub phase: String,
    /// More on where the phase is ("sorting live tuples"), shown but not a new phase.
    pub detail: Option<String>,
    /// Units done of the phase's total, when it has one (the fraction gives the estimate).
    pub done: Option<(u64, u64)>,
    pub unit: &'static str,
    /// Rows written so far (or expected, with `~`), when known.
    pub rows: Option<u64>,
    /// Time left, when the task knows better than the fraction done.
    pub remaining: Option<Duration>,
}

/// The phase being reported: its name, when it started, was last reported and last logged, and
/// whether its end was logged.
struct Phase {
    name: String,
    started: Instant,
    reported: Instant,
    logged: Instant,
    end_logged: bool,
}

pub struct Progress {
    task: &'static str,
    /// None: not on a terminal (or hidden), log lines instead.
    bar: Option<ProgressBar>,
    phase: Mutex<Option<Phase>>,
    started: Instant,
}

impl Progress {
    /// Progress of `task`, shown on stderr if it is a terminal, logged otherwise.
    pub fn new(task: &'static str) -> Progress {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let bar = (!bar.is_hidden()).then(|| {
            bar.set_style(
                ProgressStyle::with_template("{spinner} {wide_msg}").expect("a valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            task,
            bar,
            phase: Mutex::new(None),
            started: Instant::now(),
        }
    }

    /// Reported nowhere (library callers that show their own).
    pub fn hidden(task: &'static str) -> Progress {
        Progress {
            task,
            bar: None,
            phase: Mutex::new(None),
            started: Instant::now(),
        }
    }

    pub fn report(&self, step: &Step) {
        let now = Instant::now();
        let mut current = self.phase.lock().expect("never poisoned");
        let new_phase = current.as_ref().is_none_or(|p| p.name != step.phase);
        if new_phase {
            // A phase's first report comes after its first piece of work: it began when the one
            // before last reported (or when the task began).
            let started = current.as_ref().map_or(self.started, |p| p.reported);
            *current = Some(Phase {
                name: step.phase.clone(),
                started,
                reported: now,
                logged: now,
                end_logged: false,
            });
        }
        let phase = current.as_mut().expect("set above");
        phase.reported = now;
        let line = describe(step, now - phase.started, now - self.started);
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{}: {line}", self.task));
            return;
        }
        let ends = finishes_phase(step) && !phase.end_logged;
        if new_phase || ends || now - phase.logged >= LOG_EVERY {
            phase.logged = now;
            phase.end_logged |= ends;
            tracing::info!(task = self.task, "{line}");
        }
    }

    /// Clears the live line (the caller prints its summary).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Whether the step is its phase's last (its total done): always logged.
fn finishes_phase(step: &Step) -> bool {
    step.done.is_some_and(|(done, total)| done >= total)
}

/// `prospects: 40,000 of 100,000 companies (40%), 398,211 rows, 12 s, about 18 s left`.
pub fn describe(step: &Step, in_phase: Duration, elapsed: Duration) -> String {
    let mut parts = vec![step.phase.clone()];
    parts.extend(step.detail.clone());
    if let Some((done, total)) = step.done {
        let percent = (done * 100).checked_div(total).unwrap_or(100);
        parts.push(format!(
            "{} of {} {} ({percent}%)",
            thousands(done),
            thousands(total),
            step.unit
        ));
    }
    if let Some(rows) = step.rows {
        parts.push(format!("{} rows", thousands(rows)));
    }
    parts.push(format!("{} elapsed", seconds(elapsed)));
    let remaining = step.remaining.or_else(|| {
        let (done, total) = step.done?;
        (done > 0 && done < total).then(|| in_phase.mul_f64((total - done) as f64 / done as f64))
    });
    if let Some(remaining) = remaining {
        parts.push(format!("about {} left", seconds(remaining)));
    }
    parts.join(", ")
}

fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 90.0 {
        format!("{s:.0} s")
    } else {
        format!("{:.1} min", s / 60.0)
    }
}

pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_reads_as_phase_fraction_rows_elapsed_and_estimate() {
        let step = Step {
            phase: "prospects".to_owned(),
            detail: None,
            done: Some((40_000, 100_000)),
            unit: "companies",
            rows: Some(398_211),
            remaining: None,
        };
        assert_eq!(
            describe(&step, Duration::from_secs(12), Duration::from_secs(20)),
            "prospects, 40,000 of 100,000 companies (40%), 398,211 rows, 20 s elapsed, about 18 s left"
        );
        let known = Step {
            phase: "company_prospect_view: building indexes".to_owned(),
            detail: Some("sorting live tuples".to_owned()),
            rows: Some(1_003_494),
            remaining: Some(Duration::from_secs(150)),
            ..Step::default()
        };
        assert_eq!(
            describe(&known, Duration::from_secs(3), Duration::from_secs(3)),
            "company_prospect_view: building indexes, sorting live tuples, 1,003,494 rows, 3 s elapsed, about 2.5 min left"
        );
    }
}
