#!/usr/bin/env python3
"""Check that include/cortex.h and the Swift @_cdecl exports agree.

    python3 scripts/check_abi.py --swift Sources/CortexABI   # the @_cdecl sources themselves (CI)
    python3 scripts/check_abi.py GENERATED_HEADER            # swiftc -emit-clang-header-path output
    python3 scripts/check_abi.py --exports libcortex.so     # nm -D lists exactly the header's functions
    python3 scripts/check_abi.py --version-script ABI       # print the linker version script
    python3 scripts/check_abi.py --cpp bindings/c/cortex.hpp  # the C++ wrapper calls every function

GENERATED_HEADER is what swiftc writes for the CortexABI module with
-emit-clang-header-path (scripts/test.sh makes it). Opaque handles appear there as
`void *` and Int as NSInteger, so both sides are normalised before comparing every
function's return type and parameter types. Functions implemented in C
(Sources/CCortex) are exempt. Exit 1 on any drift.
"""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

C_IMPLEMENTED = {"cx_last_error", "cx_status_name", "cx_version_string"}
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


SWIFT_SCALARS = {"CChar": "char", "Int64": "int64_t", "Int32": "int32_t", "UInt32": "uint32_t", "Int": "intptr",
                 "UInt8": "uint8_t", "Void": "void"}


def swift_type(t: str) -> str:
    """A Swift parameter or return type of an @_cdecl function in the header's normal form."""
    t = t.strip()
    if t.endswith("?"):
        t = t[:-1]
    m = re.fullmatch(r"Unsafe(?:Mutable)?Pointer<(.+)>", t)
    if m:
        return norm(swift_type(m.group(1)) + " *")
    if t in ("OpaquePointer", "UnsafeRawPointer", "UnsafeMutableRawPointer"):
        return norm("void *")
    return norm(SWIFT_SCALARS.get(t, t))


def split_params(p: str):
    depth, cur, out = 0, "", []
    for ch in p:
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return out


def swift_protos(directory: str):
    """The @_cdecl exports as written in the Swift sources: name -> (return, params)."""
    found = {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".swift"):
            continue
        text = open(os.path.join(directory, name)).read()
        for m in re.finditer(r'@_cdecl\("(cx_\w+)"\)\s*public\s+func\s+\w+\s*\((.*?)\)\s*(?:->\s*([^{]+?))?\s*\{', text, re.S):
            params = [swift_type(a.split(":", 1)[1]) for a in split_params(m.group(2))]
            found[m.group(1)] = (swift_type(m.group(3) or "Void"), params)
    return found


def header_functions():
    return protos(open(os.path.join(ROOT, "include", "cortex.h")).read())


def version_script(abi: str) -> str:
    """Export the header's functions as CORTEX_<abi>; everything else is local."""
    names = "".join(f"    {n};\n" for n in sorted(header_functions()))
    return f"CORTEX_{abi} {{\n  global:\n{names}  local:\n    *;\n}};\n"


def check_exports(lib: str) -> int:
    """The library's dynamic symbol table holds exactly the header's functions."""
    out = subprocess.run(["nm", "-D", "--defined-only", lib], check=True, capture_output=True, text=True).stdout
    # Global symbols only: a lowercase type letter is a local (unlinkable) entry.
    rows = [line.split() for line in out.splitlines() if line.strip()]
    exported = {r[-1].split("@")[0] for r in rows if len(r) >= 2 and r[-2].isupper()}
    exported.discard("CORTEX_" + open(os.path.join(ROOT, "include", "cortex.h")).read().split("#define CX_ABI_VERSION ")[1].split()[0])
    header = set(header_functions())
    extra, missing = sorted(exported - header), sorted(header - exported)
    for n in extra[:20]:
        print("exported but not in cortex.h:", n)
    for n in missing:
        print("in cortex.h but not exported:", n)
    print(f"check_abi --exports: {len(exported)} dynamic symbols, {len(header)} header functions, "
          f"{len(extra)} extra, {len(missing)} missing")
    return 1 if extra or missing else 0


def check_cpp(path: str) -> int:
    """Every function of cortex.h is used by the C++ wrapper (called, or a handle's
    release function given to its owner template)."""
    text = re.sub(r"//[^\n]*", " ", open(path).read())
    missing = sorted(n for n in header_functions() if not re.search(r"\b" + n + r"\b", text))
    for n in missing:
        print("not wrapped by cortex.hpp:", n)
    print(f"check_abi --cpp: {len(header_functions()) - len(missing)} of {len(header_functions())} functions wrapped")
    return 1 if missing else 0


def main():
    if sys.argv[1] == "--cpp":
        return check_cpp(sys.argv[2])
    if sys.argv[1] == "--version-script":
        sys.stdout.write(version_script(sys.argv[2]))
        return 0
    if sys.argv[1] == "--exports":
        return check_exports(sys.argv[2])
    header = header_functions()
    gen = swift_protos(sys.argv[2]) if sys.argv[1] == "--swift" else protos(open(sys.argv[1]).read())
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
