//! The audit verdict in the words the report and stdout use (`cxr_audit::report`; the page itself is built
//! by `cxr_report`).

pub use cxr_audit::report::{humanise_rule, test_label, verdict_headline, verdict_words};
pub use cxr_report::{Block, Report, Section};
