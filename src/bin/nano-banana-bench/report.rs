//! What a benchmark run prints: one row per measured load phase, one line per target of
//! BENCHMARKS.md (met or missed), and notes on how the run was set up. Rendered as Markdown
//! tables so the output can be pasted into BENCHMARKS.md as it is.

use std::{fmt::Write as _, time::Duration};

use super::load::Outcome;

/// One measured phase.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: &'static str,
    /// `direct` (the fake upstream alone), `server` (through nano-banana) or `static`.
    pub via: &'static str,
    pub concurrency: usize,
    pub ok: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub per_second: f64,
    pub p50: Option<Duration>,
    pub p90: Option<Duration>,
    pub p99: Option<Duration>,
    /// Peak RSS of the process that answered the load generator, since it started.
    pub peak_rss_bytes: u64,
    /// CPU time of the process that answered, during the phase.
    pub cpu: Duration,
    /// CPU time of the fake upstream during the phase, when it was not the one answering.
    pub upstream_cpu: Option<Duration>,
    /// CPU time of the benchmark process (load generator, receiver) during the phase.
    pub client_cpu: Duration,
}

impl Row {
    pub fn from_outcome(
        scenario: &'static str,
        via: &'static str,
        concurrency: usize,
        outcome: &Outcome,
    ) -> Row {
        Row {
            scenario,
            via,
            concurrency,
            ok: outcome.ok,
            errors: outcome.errors,
            first_error: outcome.first_error.clone(),
            per_second: outcome.per_second(),
            p50: outcome.percentile(0.50),
            p90: outcome.percentile(0.90),
            p99: outcome.percentile(0.99),
            peak_rss_bytes: 0,
            cpu: Duration::ZERO,
            upstream_cpu: None,
            client_cpu: Duration::ZERO,
        }
    }
}

/// One target of the issue, measured.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub scenario: &'static str,
    pub measure: String,
    pub result: String,
    pub target: String,
    /// `None`: no target, measured for the record.
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub verdicts: Vec<Verdict>,
    pub notes: Vec<String>,
    /// Quick runs check that everything works; their numbers mean nothing.
    pub quick: bool,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.rows.iter().map(|r| r.errors).sum()
    }

    pub fn verdict(
        &mut self,
        scenario: &'static str,
        measure: impl Into<String>,
        result: impl Into<String>,
        target: impl Into<String>,
        met: Option<bool>,
    ) {
        self.verdicts.push(Verdict {
            scenario,
            measure: measure.into(),
            result: result.into(),
            target: target.into(),
            met,
        });
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.quick {
            out.push_str(
                "Quick run (smoke scale): the numbers below check the tool, not the server.\n\n",
            );
        }
        out.push_str(
            "| scenario | via | conc | ok | errors | req/s | p50 ms | p90 ms | p99 ms | peak RSS MB | CPU s | CPU ms/req | upstream CPU s | client CPU s |\n",
        );
        out.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
        for row in &self.rows {
            let per_request = if row.ok > 0 {
                format!("{:.3}", row.cpu.as_secs_f64() * 1000.0 / row.ok as f64)
            } else {
                "–".to_owned()
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {:.1} | {:.2} | {} | {} | {:.2} |",
                row.scenario,
                row.via,
                row.concurrency,
                row.ok,
                row.errors,
                row.per_second,
                millis(row.p50),
                millis(row.p90),
                millis(row.p99),
                row.peak_rss_bytes as f64 / (1024.0 * 1024.0),
                row.cpu.as_secs_f64(),
                per_request,
                row.upstream_cpu
                    .map_or_else(|| "–".to_owned(), |c| format!("{:.2}", c.as_secs_f64())),
                row.client_cpu.as_secs_f64(),
            );
        }
        if !self.verdicts.is_empty() {
            out.push_str(
                "\n| scenario | measure | result | target | met |\n|---|---|--:|---|---|\n",
            );
            for v in &self.verdicts {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    v.scenario,
                    v.measure,
                    v.result,
                    v.target,
                    match v.met {
                        Some(true) => "yes",
                        Some(false) => "**no**",
                        None => "–",
                    }
                );
            }
        }
        let errors: Vec<&Row> = self.rows.iter().filter(|r| r.errors > 0).collect();
        if !errors.is_empty() || !self.notes.is_empty() {
            out.push('\n');
        }
        for row in errors {
            let _ = writeln!(
                out,
                "- {} {}: {} errors; first: {}",
                row.scenario,
                row.via,
                row.errors,
                row.first_error.as_deref().unwrap_or("?")
            );
        }
        for note in &self.notes {
            let _ = writeln!(out, "- {note}");
        }
        out
    }
}

fn millis(d: Option<Duration>) -> String {
    match d {
        Some(d) if d < Duration::from_millis(10) => format!("{:.3}", d.as_secs_f64() * 1000.0),
        Some(d) => format!("{:.1}", d.as_secs_f64() * 1000.0),
        None => "–".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_row_per_phase_and_flags_missed_targets() {
        let outcome = Outcome {
            ok: 3,
            latencies: vec![Duration::from_micros(500); 3],
            elapsed: Duration::from_secs(1),
            ..Outcome::default()
        };
        let mut report = Report::default();
        report
            .rows
            .push(Row::from_outcome("S1", "direct", 1, &outcome));
        report.verdict("S1", "added p50", "2.000 ms", "≤ 1 ms", Some(false));
        let text = report.render();
        assert!(
            text.contains("| S1 | direct | 1 | 3 | 0 | 3.0 | 0.500 |"),
            "{text}"
        );
        assert!(
            text.contains("| S1 | added p50 | 2.000 ms | ≤ 1 ms | **no** |"),
            "{text}"
        );
    }
}
