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

/// The median of `values` (the mean of the middle two for an even count); NaN for none.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// A benchmark measured in interleaved rounds: per round, one figure per path (each round
/// starting at another path), so that a ratio compares two paths measured seconds apart,
/// not minutes apart on a machine whose speed drifts.
pub struct Rounds<const N: usize>(pub Vec<[f64; N]>);

impl<const N: usize> Rounds<N> {
    /// Measures `rounds` rounds of the `N` paths, `figure(path)` giving one path's figure;
    /// round `r` starts at path `r % N`, so that no path always follows the same one.
    pub fn measure(rounds: usize, mut figure: impl FnMut(usize) -> f64) -> Self {
        Rounds(
            (0..rounds)
                .map(|round| {
                    let mut figures = [0.0f64; N];
                    for turn in 0..N {
                        let path = (round + turn) % N;
                        figures[path] = figure(path);
                    }
                    figures
                })
                .collect(),
        )
    }

    /// Path `i`'s median figure.
    pub fn value(&self, i: usize) -> f64 {
        median(self.0.iter().map(|r| r[i]).collect())
    }

    /// The median over the rounds of path `a`'s figure over path `b`'s in the same round.
    pub fn ratio(&self, a: usize, b: usize) -> f64 {
        median(self.0.iter().map(|r| r[a] / r[b]).collect())
    }
}

/// CPU time process `pid` has used so far, all its threads together (the first field of
/// each thread's `/proc/PID/task/TID/schedstat`: nanoseconds on a CPU; threads that
/// already exited are not counted, so measure a process whose threads live throughout; a
/// thread that exits while they are read is skipped). `None` if the process is gone or the
/// kernel keeps no schedstat.
pub fn cpu_time(pid: u32) -> Option<std::time::Duration> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut ns: u64 = 0;
    for t in tasks.flatten() {
        let stat = match std::fs::read_to_string(t.path().join("schedstat")) {
            Ok(stat) => stat,
            // gone since the directory was listed (a blocking-pool thread, a test thread)
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => return None,
        };
        ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(std::time::Duration::from_nanos(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process's CPU time grows by at least the CPU its threads spent (here: a busy loop
    /// of 50 ms on this thread), and not by time spent asleep.
    #[test]
    fn cpu_time_counts_what_the_threads_ran_not_what_they_slept() {
        let pid = std::process::id();
        let before = cpu_time(pid).expect("schedstat of this process");
        std::thread::sleep(std::time::Duration::from_millis(100));
        let slept = cpu_time(pid).unwrap() - before;
        let busy = std::time::Instant::now();
        let mut x = 0u64;
        while busy.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let ran = cpu_time(pid).unwrap() - before - slept;
        assert!(slept < std::time::Duration::from_millis(50), "{slept:?}");
        assert!(ran >= std::time::Duration::from_millis(40), "{ran:?}");
        assert_eq!(cpu_time(u32::MAX), None);
    }

    #[test]
    fn medians_and_ratios_of_rounds() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(vec![]).is_nan());
        // path 0 is twice path 1 in every round, though both drift between rounds
        let r = Rounds(vec![[2.0, 1.0], [8.0, 4.0], [4.0, 2.0]]);
        assert_eq!(r.value(0), 4.0);
        assert_eq!(r.value(1), 2.0);
        assert_eq!(r.ratio(0, 1), 2.0);
        assert_eq!(r.ratio(1, 0), 0.5);
    }

    #[test]
    fn measured_rounds_start_at_another_path_each() {
        let mut order = Vec::new();
        let r = Rounds::<3>::measure(4, |path| {
            order.push(path);
            (path * 10 + order.len()) as f64
        });
        assert_eq!(order, [0, 1, 2, 1, 2, 0, 2, 0, 1, 0, 1, 2]);
        // each figure lands in its path's column, whatever the order it was taken in
        assert_eq!(r.0[1], [6.0, 14.0, 25.0]);
        assert_eq!(r.0.len(), 4);
    }
}
