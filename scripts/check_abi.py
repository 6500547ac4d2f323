#!/usr/bin/env python3
"""Check that include/cortex.h and the Swift @_cdecl exports agree.

    python3 scripts/check_abi.py GENERATED_HEADER

GENERATED_HEADER is what swiftc writes for the CortexABI module with
-emit-clang-header-path (scripts/test.sh makes it). Opaque handles appear there as
`void *` and Int as NSInteger, so both sides are normalised before comparing every
function's return type and parameter types. Functions implemented in C
(Sources/CCortex) are exempt. Exit 1 on any drift.
"""
import re
import sys

C_IMPLEMENTED = {"cx_last_error", "cx_status_name"}
PROTO = re.compile(r"(?:SWIFT_EXTERN\s+)?([A-Za-z_][\w\s\*]*?)\s*\b(cx_\w+)\s*\(([^;{]*?)\)\s*(?:SWIFT_\w+\s*)*;", re.S)


def norm(t: str) -> str:
    t = re.sub(r"\b(const|_Nullable|_Nonnull|struct|SWIFT_EXTERN)\b", " ", t)
    t = re.sub(r"\bcx_\w+_t\b", "void", t)           # opaque handles
    t = re.sub(r"\b(size_t|NSInteger|ptrdiff_t)\b", "intptr", t)
    t = re.sub(r"\bcx_status\b", "int32_t", t)
    t = t.replace("*", " * ")
    return " ".join(t.split())


def params(p: str):
    p = p.strip()
    if p in ("", "void"):
        return []
    out = []
    for a in p.split(","):
        a = a.strip()
        a = re.sub(r"\b\w+$", "", a) if re.search(r"[\w\*]\s*\b\w+$", a) and not a.endswith("*") else a
        out.append(norm(a))
    return out


def protos(text: str):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    found = {}
    for ret, name, args in PROTO.findall(text):
        found[name] = (norm(ret), params(args))
    return found


def main():
    header = protos(open("include/cortex.h").read())
    gen = protos(open(sys.argv[1]).read())
    bad = []
    for name, sig in sorted(header.items()):
        if name in C_IMPLEMENTED:
            continue
        if name not in gen:
            bad.append(f"{name}: declared in cortex.h but not exported by Swift")
        elif gen[name] != sig:
            bad.append(f"{name}: cortex.h {sig} != Swift {gen[name]}")
    for name in sorted(set(gen) - set(header)):
        bad.append(f"{name}: exported by Swift but not declared in cortex.h")
    for b in bad:
        print("ABI drift:", b)
    print(f"check_abi: {len(header)} functions in cortex.h, {len(gen)} Swift exports, {len(bad)} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
