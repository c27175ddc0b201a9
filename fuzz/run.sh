#!/bin/sh
# Seeds fuzz/corpus from $CXR_SHARED_DATA (copied at run time, never committed: licences), builds the targets
# (build.sh: nightly + sanitizer coverage, no cargo-fuzz needed) and runs each for SECONDS (default 600), one
# after another, at low priority. Findings land in fuzz/artifacts/<target>/. Usage: fuzz/run.sh [SECONDS] [TARGET...]
set -e
cd "$(dirname "$0")"
SECS=${1:-600}; [ $# -gt 0 ] && shift
TARGETS=${*:-"read_dicom read_nifti read_raster manifest_csv predictions_csv onnx_model model_spec"}
# CXR_SHARED_DATA is relative to the repository root (the house rule), default ../shared/data.
D=${CXR_SHARED_DATA:-../shared/data}
case "$D" in /*) ;; *) D="$(pwd)/../$D" ;; esac
mkdir -p corpus/read_dicom corpus/read_nifti corpus/read_raster corpus/manifest_csv corpus/predictions_csv \
  corpus/onnx_model corpus/model_spec
if [ -d "$D" ]; then
  find "$D/dicom-edge-cases" "$D/chest-dicom" -name '*.dcm' -size -600k -exec cp {} corpus/read_dicom/ \;
  find "$D/nifti" -name '*.nii*' -size -600k -exec cp {} corpus/read_nifti/ \;
  find "$D/imlab-lung-masks-demo" "$D/cohen-covid-chestxray/originals_sample" -type f -size -300k -exec cp {} corpus/read_raster/ \;
  head -c 20000 "$D/cohen-covid-chestxray/metadata.csv" > corpus/manifest_csv/metadata.csv
else
  echo "skipped seeds: $D absent" >&2
fi
printf 'id,source,label,patient,view,path,format,sha256,split\na1,nih,pneumonia,p1,PA,a.png,png,00,train\n' > corpus/manifest_csv/m.csv
printf 'id,source,split,label,score,patient,model\na1,nih,test,covid,0.25,p1,m\n' > corpus/predictions_csv/p.csv
# The committed test models (small, ours) seed the ONNX loader; their specs seed the spec parser.
cp ../crates/onnx/tests/fixtures/*.onnx corpus/onnx_model/
cp ../crates/onnx/tests/fixtures/*.toml corpus/model_spec/
./build.sh
mkdir -p artifacts && touch artifacts/.started
for t in $TARGETS; do
  mkdir -p artifacts/$t
  # fork mode keeps going after a finding (a caught-in-production decoder panic aborts under libFuzzer).
  nice -n 19 target/x86_64-unknown-linux-gnu/release/$t corpus/$t -fork=1 -ignore_crashes=1 \
    -max_total_time="$SECS" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 -artifact_prefix=artifacts/$t/ || true
done
# Findings of this run only (older ones stay in artifacts/ until removed by hand).
NEW=$(find artifacts -type f -newer artifacts/.started ! -name .started)
if [ -n "$NEW" ]; then echo "new findings:"; echo "$NEW"; else echo "no new findings ($TARGETS, ${SECS} s each)"; fi
