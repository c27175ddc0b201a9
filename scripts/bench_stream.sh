#!/bin/bash
# Peak memory of `manifest check`, `score` and `preprocess` against the row count (issue 31, docs/PERFORMANCE.md,
# "Streaming"): generated manifests of N rows (unique ids; 4 tiny 16x16 PNGs reused by path), each command run
# under /usr/bin/time -v, its maximum resident set size printed.
#
#   scripts/bench_stream.sh CXR_BINARY LABEL [N ...]      (default N: 10000 100000 1000000)
#
# Data and outputs go to /tmp/stream-bench (about 0.9 GB at 10^6 rows); remove it afterwards.
set -u
BIN=$(realpath "$1"); LABEL=$2; shift 2
SIZES=("$@"); [ ${#SIZES[@]} -eq 0 ] && SIZES=(10000 100000 1000000)
SPEC=$(realpath "$(dirname "$0")/../crates/onnx/tests/fixtures/small_cnn.toml")
DIR=/tmp/stream-bench; mkdir -p "$DIR"; cd "$DIR" || exit 1
python3 - "${SIZES[@]}" <<'PY'
import hashlib, os, struct, sys, zlib
def png(w, h, pix):
    raw = b''.join(b'\x00' + bytes(pix[r * w:(r + 1) * w]) for r in range(h))
    def chunk(t, d):
        return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))
os.makedirs('img', exist_ok=True)
shas = []
for i in range(4):
    b = png(16, 16, [(k * (i + 3) + i * 40) % 256 for k in range(256)])
    open(f'img/{i}.png', 'wb').write(b)
    shas.append(hashlib.sha256(b).hexdigest())
for n in map(int, sys.argv[1:]):
    if os.path.exists(f'm{n}.csv'):
        continue
    with open(f'm{n}.csv', 'w') as f:
        f.write('id,source,label,patient,view,path,format,sha256,split,png8\n')
        for r in range(n):
            i = r % 4
            src = ('nih', 'bimcv', 'padchest')[r % 3]
            lab = ('covid', 'pneumonia')[(r // 3) % 2]
            sp = ('train', 'val', 'test')[r % 3]
            f.write(f'row{r:07d},{src},{lab},pat{r % 5000:05d},PA,img/{i}.png,png,{shas[i]},{sp},img/{i}.png\n')
PY
for cmd in check score pre; do
  for n in "${SIZES[@]}"; do
    out=out-$cmd-$LABEL-$n; rm -rf "$out"
    case $cmd in
      check) args=(manifest check "m$n.csv");;
      score) args=(score --model-spec "$SPEC" --manifest "m$n.csv" --out "$out/predictions.csv" --batch-size 16);;
      pre) args=(preprocess --manifest "m$n.csv" --out "$out" --size 16);;
    esac
    /usr/bin/time -v -o "time-$cmd-$LABEL-$n.txt" nice -n 10 "$BIN" "${args[@]}" > "log-$cmd-$LABEL-$n.txt" 2>&1
    rc=$?
    rss=$(awk '/Maximum resident/ {print $NF}' "time-$cmd-$LABEL-$n.txt")
    wall=$(awk '/Elapsed \(wall/ {print $NF}' "time-$cmd-$LABEL-$n.txt")
    echo "$cmd $LABEL rows=$n rc=$rc max_rss_kib=$rss wall=$wall"
  done
done
