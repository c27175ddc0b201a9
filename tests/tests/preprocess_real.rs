//! Cross-stage: cxr-ingest's reader + cxr-preprocess's display pipeline on real DICOMs give, byte for byte, the
//! 8-bit rendering pydicom gives (`apply_modality_lut` + `apply_voi_lut`, 8 bits, MONOCHROME1 inversion; hashes
//! made by `crates/preprocess/scripts/reference_voi.py`). This pins the decoder's stored values too (signed
//! 12-bit sign extension in mlut_18, JPEG 2000 lossless in RG1_J2KR, rescale in the 16x16 CRs).

use std::path::{Path, PathBuf};

use cxr_preprocess::{DisplayOptions, MetadataOverride, to_grey8};

fn shared_data() -> Option<PathBuf> {
    let dir = std::env::var_os("CXR_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    dir.join("chest-dicom").is_dir().then_some(dir)
}

#[test]
fn ingest_then_preprocess_matches_pydicom_byte_for_byte() {
    let Some(data) = shared_data() else {
        println!("skipped: preprocess_real: no shared data (set CXR_SHARED_DATA)");
        return;
    };
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/preprocess/tests/fixtures/pydicom_reference.json");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
    let cases = [
        ("chest-dicom/RG1_UNCR.dcm", "chest-dicom/RG1_UNCR.dcm"),
        ("chest-dicom/RG1_J2KR.dcm", "chest-dicom/RG1_UNCR.dcm"),
        ("chest-dicom/mlut_18.dcm", "chest-dicom/mlut_18.dcm"),
        ("chest-dicom/vlut_04.dcm", "chest-dicom/vlut_04.dcm"),
        (
            "dicom-edge-cases/dicomdirtests-CR/CR1_6154.dcm",
            "dicom-edge-cases/dicomdirtests-CR/CR1_6154.dcm",
        ),
        (
            "dicom-edge-cases/dicomdirtests-CR/CR2_6247.dcm",
            "dicom-edge-cases/dicomdirtests-CR/CR2_6247.dcm",
        ),
        (
            "dicom-edge-cases/dicomdirtests-CR/CR3_6278.dcm",
            "dicom-edge-cases/dicomdirtests-CR/CR3_6278.dcm",
        ),
    ];
    for (file, key) in cases {
        let raw = cxr_ingest::read_image(&data.join(file)).unwrap();
        let (grey, applied) = to_grey8(
            &raw,
            &MetadataOverride::default(),
            &DisplayOptions::default(),
        )
        .unwrap();
        let r = &reference[key];
        assert_eq!(
            (u64::from(grey.width), u64::from(grey.height)),
            (r["columns"].as_u64().unwrap(), r["rows"].as_u64().unwrap()),
            "{file}"
        );
        assert_eq!(
            applied.inverted,
            r["photometric"] == "MONOCHROME1",
            "{file}: inversion"
        );
        assert_eq!(
            cxr_core::fsutil::sha256_bytes(&grey.data),
            r["image_sha256"].as_str().unwrap(),
            "{file}: 8-bit rendering differs from pydicom's"
        );
    }
}
