//! The audit verdict in the words the report and stdout use (`cxr_audit::report`; the study's page is built
//! by `cxr_study::report`, an audit's by `cxr_audit::report`).

pub use cxr_audit::report::{data_risk_words, status_words, verdict_headline};
