//! The rows of `bench/run`'s summary table. Every benchmark prints its own report and, when
//! `BENCH_SUMMARY` names a file (bench/run sets it), appends one line per figure: what was
//! measured, Gatehouse's figure, the baseline's from the same run, their ratio, the target
//! and whether it was met. `bench/table` turns the lines into the table README.md shows.

use std::io::Write;

/// One figure against its baseline.
#[derive(Debug, Clone)]
pub struct Row<'a> {
    /// What was measured (the table's first column).
    pub what: &'a str,
    pub gatehouse: String,
    pub baseline: String,
    /// Gatehouse over the baseline, written so that the target compares with it.
    pub ratio: String,
    pub target: &'a str,
    /// `None`: a figure without a target (reported only).
    pub met: Option<bool>,
}

/// Appends `row` to the file named by `BENCH_SUMMARY` (nothing when it is unset). A write
/// that fails is reported on stderr: the benchmark's own report still stands.
pub fn record(row: &Row<'_>) {
    let Some(path) = std::env::var_os("BENCH_SUMMARY") else {
        return;
    };
    let clean = |s: &str| s.replace(['\t', '\n'], " ");
    let line = format!(
        "{}\t{}\t{}\t{}\t{}\t{}\n",
        clean(row.what),
        clean(&row.gatehouse),
        clean(&row.baseline),
        clean(&row.ratio),
        clean(row.target),
        match row.met {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        }
    );
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!(
            "cannot append to BENCH_SUMMARY {}: {e}",
            path.to_string_lossy()
        );
    }
}
