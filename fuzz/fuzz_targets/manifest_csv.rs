//! cxr_core::Manifest::from_reader on arbitrary bytes: an error naming the file or a manifest, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz/manifest.csv");
    match cxr_core::Manifest::from_reader(data, path) {
        Ok(m) => {
            for r in &m.records {
                let _ = m.resolve(r);
            }
        }
        Err(e) => assert!(e.to_string().contains("manifest.csv"), "{e}"),
    }
});
