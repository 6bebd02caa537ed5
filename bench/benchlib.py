"""Helpers shared by the bench harnesses (run.py, run_train.py, run_svc.py, run_http.py).

BLAS settings (issue 15 item 1, DATA.md "Measuring honestly"): these machines may
set OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, which force OpenBLAS's AVX2 kernels on an
AVX-512 CPU. A contender's best configuration includes its BLAS kernel choice, so a
harness runs every contender (peers and libaims alike) twice: with the machine's
settings ("machine") and with both variables unset together, in that command
alone ("native"). blas_variants() says which settings to run, blas_env() builds
the environment of one command, pick_blas() keeps the faster of the pooled
results (pool_by_blas() pools one contender's tagged records per setting and
picks) and blas_summary() records both beside the ratio. The machine's own
environment is never changed (tests and CI keep it as it is).
"""

import os
import platform

import machine

BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def machine_info(build_dir=None):
    """CPU, cores, kernel, load at start and the OpenBLAS variables, for every result,
    and "machine": machine.describe(build_dir) -- CPU generation, the ISA flags
    libaims cares about and the kernels build_dir's library picks on this CPU,
    with "machine"]["short"] the phrase every summary footer prints (session 12)."""
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "nproc": os.cpu_count(), "kernel": platform.release(),
            "loadavg_at_start": [round(v, 2) for v in os.getloadavg()],
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
            "machine": machine.describe(build_dir)}


def machine_line(info):
    """The summary footer line of a machine_info() record."""
    return "machine: %s" % info["machine"]["short"]


def blas_variants(mode="both"):
    """The BLAS settings to run each contender with, as tags.

    mode "both" (the default of the harnesses): ["machine", "native"] when the
    machine sets any of BLAS_VARS, else ["machine"] alone (the two would be the
    same command); "inherit": ["machine"]; "native": ["native"]."""
    if mode == "inherit":
        return ["machine"]
    if mode == "native":
        return ["native"]
    if any(os.environ.get(v) is not None for v in BLAS_VARS):
        return ["machine", "native"]
    return ["machine"]


def blas_env(tag, base=None):
    """The environment of one command run with BLAS setting `tag`."""
    env = dict(os.environ if base is None else base)
    if tag == "native":
        for v in BLAS_VARS:
            env.pop(v, None)
    return env


def blas_desc(tag):
    """What a tag means on this machine, for the printed table."""
    if tag == "native":
        return "native (%s unset)" % "/".join(BLAS_VARS)
    set_ = ["%s=%s" % (v, os.environ[v]) for v in BLAS_VARS if os.environ.get(v) is not None]
    return "machine (%s)" % (" ".join(set_) or "no OPENBLAS_* set")


def pick_blas(by_tag, higher_is_better=False):
    """by_tag: {tag: pooled stats with "median"} -> the tag of the faster setting."""
    tags = [t for t, s in by_tag.items() if s and s.get("median") is not None]
    if not tags:
        return None
    key = (lambda t: -by_tag[t]["median"]) if higher_is_better else (lambda t: by_tag[t]["median"])
    return min(tags, key=key)


def pool_by_blas(recs, pool, higher_is_better=False):
    """recs: one contender's records, each tagged {"blas": tag}; pool(list of
    records) -> stats with "median" (or None). Returns (best tag, {tag: stats},
    stats of the best tag): the contender at its faster BLAS setting, with
    every setting kept for blas_summary()."""
    by = {}
    for tag in sorted({r.get("blas") for r in recs if r.get("blas")}):
        st = pool([r for r in recs if r.get("blas") == tag])
        if st:
            by[tag] = st
    best = pick_blas(by, higher_is_better)
    return best, by, by.get(best) if best else None


def blas_summary(by_tag):
    """{tag: {"median", "min", "max", "n", "accuracy"}} recorded beside every ratio."""
    return {t: ({k: s.get(k) for k in ("median", "min", "max", "n", "accuracy")} if s else None)
            for t, s in by_tag.items()}


def blas_cell(row, fmt):
    """The table cell "best (other median, ...)" of a row with blas_best/blas_settings."""
    cell = row.get("blas_best") or "-"
    others = ["%s %s" % (t, fmt((v or {}).get("median")))
              for t, v in (row.get("blas_settings") or {}).items() if t != row.get("blas_best")]
    return cell + (" (%s)" % ", ".join(others) if others else "")


def cached_grid(path, version, compute, force=False):
    """A peer's tuning grid, cached as JSON at `path`: the cached one when its
    "version" is `version` (and not `force`), else compute() -- a dict with that
    "version" -- written atomically and returned."""
    import json
    if not force:
        try:
            with open(path) as f:
                g = json.load(f)
            if g.get("version") == version:
                return g
        except (OSError, ValueError):
            pass
    g = compute()
    with open(path + ".tmp", "w") as f:
        json.dump(g, f, indent=1)
    os.replace(path + ".tmp", path)
    return g
