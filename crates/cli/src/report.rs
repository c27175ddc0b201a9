//! The audit verdict in the words the report and stdout use: the study's report module holds them, so the
//! printed verdict and the page say the same.

pub use cxr_study::report::audit::verdict_headline;
