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
