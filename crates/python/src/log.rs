//! The libraries' `tracing` events, forwarded to Python's `logging` (the `cxr_confounders` logger), so a
//! notebook shows the audit's progress (`audit: occlusion maps: 3/8 maps, ~40 s left`) in the cell, where
//! the user looks, instead of on the kernel's stderr.
//!
//! An event is never sent to Python from the thread that emits it: that thread may be a rayon worker whose
//! pool a GIL-holding thread waits on, and taking the GIL there would deadlock. Events go through a channel
//! to one forwarding thread, which takes the GIL to call the Python sink; [`flush`] waits (GIL released) until
//! what was sent has been delivered, so a call's last lines appear before it returns.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Events sent and not yet delivered.
static PENDING: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: OnceLock<()> = OnceLock::new();

/// Our crates' INFO (progress and step times) and everyone's warnings and errors.
fn wanted(meta: &Metadata<'_>) -> bool {
    *meta.level() <= Level::WARN
        || (*meta.level() <= Level::INFO && meta.target().starts_with("cxr"))
}

/// Python's numeric level of a tracing level.
fn python_level(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

/// The event's message, then its other fields as ` key=value`.
#[derive(Default)]
struct Message(String, String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.1, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.1, " {}={value}", field.name());
        }
    }
}

struct Forward {
    tx: Sender<(u8, String)>,
}

impl<S: Subscriber> Layer<S> for Forward {
    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        wanted(meta)
    }
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut m = Message::default();
        event.record(&mut m);
        let level = python_level(event.metadata().level());
        PENDING.fetch_add(1, Ordering::SeqCst);
        if self.tx.send((level, m.0 + &m.1)).is_err() {
            PENDING.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Installs the forwarding subscriber once per process, with `sink(level, message)` as the receiver. Does
/// nothing when a global subscriber is already set (an embedding application's own).
#[pyfunction]
pub fn install_logging(sink: Py<PyAny>) {
    INSTALLED.get_or_init(|| {
        let (tx, rx) = channel::<(u8, String)>();
        let subscriber = tracing_subscriber::registry().with(Forward { tx });
        if tracing::subscriber::set_global_default(subscriber).is_err() {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("cxr-log".into())
            .spawn(move || {
                for (level, message) in rx {
                    Python::attach(|py| {
                        // A failing handler is Python's to report; the audit carries on.
                        if let Err(e) = sink.call1(py, (level, message)) {
                            e.print(py);
                        }
                    });
                    PENDING.fetch_sub(1, Ordering::SeqCst);
                }
            });
        if spawned.is_err() {
            eprintln!("cxr_confounders: no thread for log forwarding; progress will not be shown");
        }
    });
}

/// Waits, with the GIL released, until every event sent so far has reached Python (at most 2 s: the
/// forwarder may be blocked by a thread that holds the GIL and never lets go).
pub fn flush(py: Python<'_>) {
    py.detach(|| {
        let until = Instant::now() + Duration::from_secs(2);
        while PENDING.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
    });
}
