//! Progress of the long stages (world generation, preprocessing, segmentation), for a front end to draw.
//!
//! A trait rather than `tracing` events: a bar needs a position and a length many times a second, which as
//! log events would flood `reproduce.log`; stage starts and ends are logged with `tracing` as well.

/// Receives per-item progress of a stage. Called from worker threads, hence `Sync`.
pub trait Progress: Sync {
    /// `done` of `total` items of `stage` (`total` 0 while unknown).
    fn update(&self, stage: &str, done: u64, total: u64);
    /// `stage` has no more items (a bar may be cleared).
    fn finish(&self, stage: &str);
}

/// No display.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {
    fn update(&self, _: &str, _: u64, _: u64) {}
    fn finish(&self, _: &str) {}
}
