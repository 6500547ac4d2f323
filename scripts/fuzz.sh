#!/usr/bin/env bash
# Fuzz the safetensors, JSON, config (the typed stack schema too) and model loaders, the KV-cache and session decoders and the
# serving engine's request bodies with
# libFuzzer + AddressSanitizer.
#   scripts/fuzz.sh [runs]     (default 20000 runs; CI uses a bounded count)
# A crash, trap or sanitizer report fails the run and leaves the input in .build-fuzz/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-20000}"
out="$root/.build-fuzz"
mkdir -p "$out/corpus"
cd "$root"
# The Cortex module and the fuzz entry point compiled as one module; the OpenBLAS
# loader (C) beside it.
mkdir -p "$out/cmod"
printf 'module CKernels {\n  header "%s"\n  export *\n}\n' "$root/Sources/CKernels/include/cortex_kernels.h" > "$out/cmod/module.modulemap"
objs=()
for c in Sources/CKernels/*.c; do
  o="$out/$(basename "$c" .c).o"
  clang -O1 -fsanitize=address -c "$c" -I Sources/CKernels/include -o "$o"
  objs+=("$o")
done
swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name Cortex -package-name cortex \
  -I "$out/cmod" -I Sources/CSQLite -lsqlite3 "${objs[@]}" \
  $(find Sources/Cortex Sources/CortexServing -name '*.swift' | sort) Tests/Fuzz/FuzzLoaders.swift \
  -o "$out/fuzz-loaders" 2>&1 | { grep -v "Cannot export local symbol" || true; }
# Seeds: the golden weights and configs, one per target byte.
python3 - "$out/corpus" <<'PY'
import os, sys, glob
out = sys.argv[1]
root = os.getcwd()
seeds = []
for p in glob.glob(os.path.join(root, "Tests/goldens/*/model/model.safetensors")) + \
        glob.glob(os.path.join(root, "Tests/goldens/mythos/*/model/model.safetensors")):
    data = open(p, "rb").read()
    seeds += [b"\x00" + data, b"\x02" + data]
for p in glob.glob(os.path.join(root, "Tests/Fuzz/seeds/*_cache.bin")):
    seeds.append(b"\x04" + open(p, "rb").read())
for p in glob.glob(os.path.join(root, "Tests/Fuzz/seeds/*_session.bin")):
    seeds.append(b"\x05" + open(p, "rb").read())
for p in glob.glob(os.path.join(root, "Tests/goldens/*/model/config.json")) + \
        glob.glob(os.path.join(root, "Tests/goldens/mythos/*/model/config.json")):
    data = open(p, "rb").read()
    seeds += [b"\x01" + data, b"\x03" + data]
    import json
    doc = json.loads(data)
    if doc.get("architecture") == "cortex_stack":
        seeds.append(b"\x08" + json.dumps(doc["config"]).encode())
for case in json.load(open(os.path.join(root, "Tests/goldens/auto_configs.json")))["cases"]:
    seeds.append(b"\x08" + json.dumps(case["config"]).encode())
# Serving bodies: a binary tensor body and JSON decode bodies.
import struct
def body(tensors):
    out = bytearray(b"CXTB") + struct.pack("<HH", 1, len(tensors))
    for name, code, vals in tensors:
        out += struct.pack("<B", len(name)) + name + struct.pack("<BB", code, 1) + struct.pack("<q", len(vals))
        out += struct.pack("<%d%s" % (len(vals), "f" if code == 3 else "i"), *vals)
    return bytes(out)
seeds.append(b"\x06" + body([(b"x", 3, [1.0, 2.5]), (b"y", 3, [])]))
seeds.append(b"\x07" + body([(b"neuron_ids", 1, [1, 2]), (b"time_bins", 1, [3, 4]), (b"values", 1, [1, 1])]))
# Columns of different lengths (once a trap: the windows were cut before the lengths were checked).
seeds.append(b"\x07" + body([(b"neuron_ids", 1, [1]), (b"time_bins", 1, [3, 4]), (b"values", 1, [1])]))
seeds.append(b"\x07" + b'{"neuron_ids":[1,2],"time_bins":[3,4],"values":[1,2],"deadline_ms":5}')
seeds.append(b"\x07" + b'{"requests":[{"neuron_ids":[1],"time_bins":[3],"values":[1]}]}')
for i, s in enumerate(seeds):
    open(os.path.join(out, f"seed{i}"), "wb").write(s)
PY
# Swift's own crash backtracer can hang under ASan; libFuzzer reports crashes itself.
SWIFT_BACKTRACE=enable=no "$out/fuzz-loaders" -runs="$runs" -max_len=65536 -artifact_prefix="$out/" "$out/corpus" 2>&1 | tail -5
echo "fuzz: $runs runs, no crash"
