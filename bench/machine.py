#!/usr/bin/python3
"""machine.py -- which machine a benchmark ran on, in one place (session 12).

The figures of libaims depend on the CPU more than on anything else: on a
Zen 5 with AVX-512 + AVX512_BF16 the trainer runs libaims' own GEMM and
softmax kernels; on a Zen 3 with AVX2 only those paths are off at run time and
training goes to OpenBLAS, and "bf16" trains in fp32. A result that says only
"AMD EPYC, 2 cores" cannot be read. describe() returns:

  cpu, vendor, family, model, uarch  from /proc/cpuinfo (uarch from family/model
                                     where known, e.g. "Zen 3"; else None)
  cores                              os.cpu_count()
  isa                                {flag: bool} for the ISA flags libaims cares
                                     about (ISA_FLAGS)
  kernels, kernels_from              what libaims will pick: asked from the
                                     library (aims_build_info()'s "kernels", in a
                                     child process so the harness never loads
                                     OpenBLAS) -> "library"; a library without that
                                     object -> the rules of 94cc067 applied to the
                                     flags -> "cpu flags"
  short                              one table-footer phrase, e.g.
                                     "Zen 3 EPYC, 2 cores, AVX2 (no AVX-512)"

unavailable(contender, desc) says when a contender cannot run as named on this
CPU (UNAVAILABLE): the harness then reports it "n/a: ..." and does not run it.

    /usr/bin/python3 bench/machine.py [--build-dir DIR]   one JSON line {"machine": ...}
    /usr/bin/python3 bench/machine.py --short [--build-dir DIR]
    /usr/bin/python3 bench/machine.py --self-check
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# /proc/cpuinfo spellings of the ISA extensions libaims' kernels test for.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni",
             "vaes")

# Contenders whose name promises a CPU feature: (flag needed, the n/a text).
UNAVAILABLE = {
    "libaims-bf16": ("avx512_bf16", "n/a: no AVX512_BF16 on this CPU (would run fp32)"),
}


def read_cpuinfo(text=None):
    """Model name, vendor, family, model and flags of the first CPU."""
    if text is None:
        try:
            with open("/proc/cpuinfo") as f:
                text = f.read()
        except OSError:
            text = ""
    out = {"cpu": None, "vendor": None, "family": None, "model": None, "flags": set()}
    keys = {"model name": "cpu", "vendor_id": "vendor", "cpu family": "family", "model": "model"}
    for line in text.splitlines():
        if not line.strip():
            if out["flags"]:
                break  # the first processor's block is enough
            continue
        k, _, v = line.partition(":")
        k, v = k.strip(), v.strip()
        if k in keys and out[keys[k]] is None:
            out[keys[k]] = int(v) if k in ("cpu family", "model") and v.isdigit() else v
        elif k == "flags":
            out["flags"] = set(v.split())
    return out


def uarch(vendor, family, model):
    """AMD's core generation from family/model (the ranges AMD documents)."""
    if vendor != "AuthenticAMD" or family is None or model is None:
        return None
    if family == 0x1A:
        return "Zen 5"
    if family == 0x19:
        if 0x10 <= model <= 0x1F or 0x60 <= model <= 0x7F or 0xA0 <= model <= 0xAF:
            return "Zen 4"
        return "Zen 3"
    if family == 0x17:
        return "Zen 2" if model >= 0x30 else "Zen"
    return None


def kernels_from_flags(isa):
    """What 94cc067 picks from the flags alone (a library without "kernels")."""
    own = isa["avx512f"] and isa["avx512bw"] and isa["avx512vl"]
    if own and isa["avx512_vnni"]:
        int8 = "vnni"
    else:
        int8 = "avx2" if isa["avx2"] else "c"
    return {"gemm_f32": "own" if own else "openblas",
            "gemm_bf16": "own" if own and isa["avx512_bf16"] else "openblas",
            "smax_step": "own" if own else "off", "int8": int8}


def library_info(build_dir):
    """aims_build_info() of build_dir's libaims.so as a dict, read in a child
    process, or None (no build dir, not built, or an error)."""
    if not build_dir:
        return None
    lib = os.path.join(build_dir if os.path.isabs(build_dir) else os.path.join(REPO, build_dir),
                       "src", "libaims.so")
    if not os.path.exists(lib):
        return None
    code = ("import ctypes, sys; l = ctypes.CDLL(sys.argv[1]); "
            "l.aims_build_info.restype = ctypes.c_char_p; print(l.aims_build_info().decode())")
    try:
        p = subprocess.run([sys.executable, "-c", code, lib], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, timeout=30)
        return json.loads(p.stdout.decode()) if p.returncode == 0 else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def short_name(cpu):
    """"AMD EPYC 9R45 64-Core Processor" -> "EPYC 9R45"."""
    words = [w for w in (cpu or "").replace("(R)", "").replace("(TM)", "").split()
             if w not in ("AMD", "Intel", "CPU", "Processor") and not w.endswith("-Core")]
    return " ".join(words[:2]) or "unknown CPU"


def isa_phrase(isa):
    if isa["avx512f"]:
        extra = [n for f, n in (("avx512_bf16", "BF16"), ("avx512_vnni", "VNNI")) if isa[f]]
        return "AVX-512" + "".join(" + " + e for e in extra)
    if isa["avx2"]:
        return "AVX2%s (no AVX-512)" % (" + FMA" if not isa["fma"] else "")
    return "no AVX2"


def short(d):
    """The table-footer phrase of describe()'s dict."""
    head = " ".join(x for x in (d.get("uarch"), short_name(d.get("cpu"))) if x)
    own = [k for k in ("gemm_f32", "gemm_bf16", "smax_step") if d["kernels"].get(k) == "own"]
    return "%s, %s cores, %s; own kernels: %s" % (
        head, d.get("cores"), isa_phrase(d["isa"]),
        ", ".join(own) if own else "none (training on OpenBLAS)")


def describe(build_dir=None, cpuinfo_text=None, lib=None):
    """The machine record every results file carries (see the module doc).
    lib: aims_build_info() as a dict (default: asked from build_dir)."""
    ci = read_cpuinfo(cpuinfo_text)
    isa = {f: f in ci["flags"] for f in ISA_FLAGS}
    if lib is None:
        lib = library_info(build_dir)
    kern = (lib or {}).get("kernels")
    d = {"cpu": ci["cpu"], "vendor": ci["vendor"], "family": ci["family"], "model": ci["model"],
         "uarch": uarch(ci["vendor"], ci["family"], ci["model"]), "cores": os.cpu_count(),
         "isa": isa, "kernels": kern or kernels_from_flags(isa),
         "kernels_from": "library" if kern else "cpu flags",
         "blas_core": (lib or {}).get("blas_core")}
    d["short"] = short(d)
    return d


def unavailable(contender, d):
    """The n/a text when `contender` cannot run as named on this CPU, else None."""
    need = UNAVAILABLE.get(contender)
    if need is None:
        return None
    flag, text = need
    if not d["isa"].get(flag):
        return text
    if contender == "libaims-bf16" and d["kernels"].get("gemm_bf16") != "own":
        return "n/a: libaims' bf16 kernel is off on this CPU (would run fp32)"
    return None


ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx fma avx2 vaes

processor\t: 1
"""
ZEN5 = """vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC 9R45 64-Core Processor
flags\t\t: avx fma avx2 avx512f avx512bw avx512vl avx512_bf16 avx512_vnni vaes
"""


def self_check():
    """describe(), short() and unavailable() on two made-up CPUs, nothing run."""
    z3 = describe(cpuinfo_text=ZEN3, lib={})
    assert z3["uarch"] == "Zen 3" and z3["family"] == 25 and z3["model"] == 1, z3
    assert z3["isa"]["avx2"] and not z3["isa"]["avx512f"] and z3["isa"]["vaes"], z3
    assert z3["kernels_from"] == "cpu flags" and z3["kernels"]["gemm_f32"] == "openblas"
    assert z3["kernels"]["int8"] == "avx2" and z3["kernels"]["smax_step"] == "off"
    assert z3["short"].startswith("Zen 3 EPYC, %s cores, AVX2 (no AVX-512);" % z3["cores"]), z3
    assert unavailable("libaims-bf16", z3) == UNAVAILABLE["libaims-bf16"][1]
    assert unavailable("libaims", z3) is None
    z5 = describe(cpuinfo_text=ZEN5, lib={})
    assert z5["uarch"] == "Zen 5" and z5["kernels"]["gemm_bf16"] == "own", z5
    assert "AVX-512 + BF16 + VNNI" in z5["short"] and "EPYC 9R45" in z5["short"], z5["short"]
    assert unavailable("libaims-bf16", z5) is None
    # the library's answer wins over the flags (e.g. a build without the own kernels)
    lib = {"kernels": {"gemm_f32": "openblas", "gemm_bf16": "openblas", "smax_step": "off",
                       "int8": "vnni"}, "blas_core": "SkylakeX"}
    z5l = describe(cpuinfo_text=ZEN5, lib=lib)
    assert z5l["kernels_from"] == "library" and z5l["blas_core"] == "SkylakeX"
    assert "own kernels: none" in z5l["short"] and unavailable("libaims-bf16", z5l), z5l
    assert uarch("AuthenticAMD", 25, 0x61) == "Zen 4" and uarch("GenuineIntel", 6, 85) is None
    print("machine.py self-check: ok")
    return 0


def main():
    ap = argparse.ArgumentParser(description="which machine a benchmark runs on")
    ap.add_argument("--build-dir", help="ask this build's libaims.so which kernels it picks")
    ap.add_argument("--short", action="store_true", help="print the one-line phrase only")
    ap.add_argument("--self-check", action="store_true")
    a = ap.parse_args()
    if a.self_check:
        return self_check()
    d = describe(a.build_dir)
    print(d["short"] if a.short else json.dumps({"machine": d}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
