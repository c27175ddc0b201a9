//! Progress of the long steps, for a front end to show (the `cxr` command draws bars; a library draws
//! nothing).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Where one step of a run stands: `done` of `total` items of `step` (`full images`, `occlusion (mean)`,
/// `occlusion maps`, ...). A new `step` starts at `done == 0`; a step is over at `done == total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress<'a> {
    pub step: &'a str,
    pub done: usize,
    pub total: usize,
}

/// A progress callback, as the run functions take it.
pub type OnProgress<'a> = &'a (dyn Fn(Progress<'_>) + Sync);

/// Counts one step's items and reports each advance (and the start, and the end even when the step stops
/// early, so a front end's bar never hangs).
pub(crate) struct Bar<'a> {
    progress: OnProgress<'a>,
    step: String,
    total: usize,
    done: AtomicUsize,
}

impl<'a> Bar<'a> {
    pub(crate) fn new(progress: OnProgress<'a>, step: String, total: usize) -> Self {
        progress(Progress {
            step: &step,
            done: 0,
            total,
        });
        Self {
            progress,
            step,
            total,
            done: AtomicUsize::new(0),
        }
    }

    pub(crate) fn inc(&self, n: usize) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        (self.progress)(Progress {
            step: &self.step,
            done: done.min(self.total),
            total: self.total,
        });
    }
}

impl Drop for Bar<'_> {
    fn drop(&mut self) {
        if self.done.load(Ordering::Relaxed) < self.total {
            (self.progress)(Progress {
                step: &self.step,
                done: self.total,
                total: self.total,
            });
        }
    }
}

/// Wall time of each step of a run, in order: logged as each step ends (`audit: source probe: 12.3 s`) and
/// returned with the outcome. Never written into a file a rerun must reproduce byte for byte.
pub(crate) struct Laps {
    last: std::time::Instant,
    done: Vec<(String, f64)>,
}

impl Laps {
    pub(crate) fn start() -> Self {
        Self {
            last: std::time::Instant::now(),
            done: Vec::new(),
        }
    }

    /// Ends `step` now (its time: since the previous step ended).
    pub(crate) fn lap(&mut self, step: &str) {
        let s = self.last.elapsed().as_secs_f64();
        self.last = std::time::Instant::now();
        tracing::info!("audit: {step}: {s:.1} s");
        self.done.push((step.to_string(), s));
    }

    pub(crate) fn into_vec(self) -> Vec<(String, f64)> {
        self.done
    }
}

/// `3/8 maps, ~1.5 min left`: the estimate from the mean time of the maps done.
pub(crate) fn eta_line(what: &str, done: usize, total: usize, elapsed: f64) -> String {
    let left = if done == 0 || done >= total {
        String::new()
    } else {
        let s = elapsed / done as f64 * (total - done) as f64;
        if s >= 90.0 {
            format!(", ~{:.1} min left", s / 60.0)
        } else {
            format!(", ~{s:.0} s left")
        }
    };
    format!("{done}/{total} {what}{left}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_estimate_scales_the_mean_time_of_the_maps_done() {
        assert_eq!(super::eta_line("maps", 2, 8, 20.0), "2/8 maps, ~60 s left");
        assert_eq!(
            super::eta_line("maps", 1, 8, 30.0),
            "1/8 maps, ~3.5 min left"
        );
        assert_eq!(super::eta_line("maps", 8, 8, 30.0), "8/8 maps");
        assert_eq!(super::eta_line("maps", 0, 8, 0.0), "0/8 maps");
    }
}
