#!/usr/bin/env python3
"""check_names.py SRCROOT -- the naming rules of docs/NAMING.md that a parser can prove.

Why: the public names were made consistent once, before the ABI baseline 0.1,
and from then on a name is a promise that cannot be taken back (docs/ABI.md).
A new declaration that breaks a rule has to fail `meson test --suite abi`
while it can still be renamed for free, not after a release.

How: the public headers are read as text (comments stripped), every AIMS_API
prototype and every `typedef enum` is parsed with regular expressions (the
headers keep one declaration per statement), and each rule below is a check:

  rule 1   a function whose first parameter is an object handle (aims_<object> *)
           is named aims_<object>_...; a constructor that takes its parent first
           is named after the child (rule 2: aims_service_add_*(aims_node *...)).
  rule 3/4 a function named *_get_* returns aims_status (a status getter); a
           plain getter has no get_.
  rule 5   a typed setter/getter taking an aims_param is *_param_<i64|f64>.
  rule 6   counts are num_<plural>: no *_count, *_n_*, *_number_of_* returning a
           value (aims_metrics_count, which counts an event and returns a
           status, is a verb).
  rule 7   a predicate *_is_* returns int.
  rule 9   every object outside the documented exemptions has aims_<object>_errmsg.
  rule 12  every enum's values start with the enum's own stem (AIMS_<TYPE>_ or
           a listed historical stem), and no value starts with another enum's stem.
  rule 2   _destroy returns void and takes the handle alone.

Prints every violation; exits 1 if there is one.
"""
import glob
import os
import re
import sys

# Rule 12's short historical stems (docs/NAMING.md); aims_param is rule 13's
# per-owner prefixes and is only checked against the other enums' stems.
STEMS = {
    "aims_status": "AIMS_E_",
    "aims_dtype": "AIMS_DT_",
    "aims_lb_policy": "AIMS_LB_",
    "aims_activation": "AIMS_ACT_",
    "aims_output": "AIMS_OUT_",
    "aims_log_level": "AIMS_LOG_",
    "aims_format": "AIMS_FORMAT_",
    "aims_event_kind": "AIMS_EVENT_",
    "aims_audit_action": "AIMS_AUDIT_",
}
# Rule 9's exemptions: objects many threads call at once, read-only results,
# messages (aims_core.h overview).
NO_ERRMSG = {"aims_registry", "aims_balancer", "aims_health", "aims_metrics",
             "aims_eval", "aims_msg"}
# Rule 2: constructors that take the parent first, named after the child.
CHILD_VERBS = ("_add_", "_create", "_load", "_parse", "_clone")


def read_headers(root):
    protos, types, enums = [], set(), {}
    for path in sorted(glob.glob(os.path.join(root, "include", "aims", "*.h"))):
        with open(path) as f:
            text = f.read()
        text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
        text = re.sub(r"//[^\n]*", " ", text)
        # The status enum is generated from AIMS_STATUS_MAP's X-macro rows.
        status_rows = re.findall(r"X\((AIMS_E_\w+|AIMS_OK)\s*,", text)
        types |= set(re.findall(r"typedef struct (aims_\w+) \1;", text))
        for m in re.finditer(r"typedef enum (aims_\w+)\s*\{(.*?)\}\s*(\w+)\s*;", text, re.S):
            body = m.group(2)
            values = re.findall(r"\b(AIMS_[A-Z0-9_]+)\s*(?:=|,|$)", body)
            if m.group(1) == "aims_status":
                values = [v for v in status_rows if v != "AIMS_OK"]
            enums[m.group(1)] = (os.path.basename(path), values)
        for m in re.finditer(r"AIMS_API\s+([^;{(]*?)\b(aims_\w+)\s*\(([^)]*)\)\s*;", text):
            ret = " ".join(m.group(1).split())
            params = [" ".join(p.split()) for p in m.group(3).split(",")]
            protos.append((os.path.basename(path), ret, m.group(2), params))
    return protos, types, enums


def handle_type(param, types):
    base = re.sub(r"\bconst\b", "", param)
    m = re.match(r"^\s*(aims_\w+)\s*\*\s*\w*\s*$", base)
    if m and m.group(1) in types:
        return m.group(1)
    return None


def check(root):
    protos, types, enums = read_headers(root)
    bad = []
    names = {p[2] for p in protos}
    for hdr, ret, name, params in protos:
        where = "%s: %s" % (hdr, name)
        first = handle_type(params[0], types) if params else None
        # rule 1 (and 2): named after the object its first argument points to.
        if first is not None and not name.startswith(first + "_"):
            child = any(v in name for v in CHILD_VERBS)
            if not child:
                bad.append("%s: rule 1: first argument is %s *, name does not start %s_"
                           % (where, first, first))
        # rules 3, 4: get_ means a status getter.
        if "_get_" in name and ret != "aims_status":
            bad.append("%s: rules 3/4: a *_get_* function returns aims_status (not %s)"
                       % (where, ret))
        # rule 5: typed parameters keyed by aims_param.
        if re.search(r"_(i64|f64)$", name) and any(re.match(r"^(const )?aims_param \w+$", p)
                                                   for p in params):
            if not re.search(r"_param_(i64|f64)$", name):
                bad.append("%s: rule 5: a typed aims_param accessor is *_param_<i64|f64>" % where)
        # rule 6: counts.
        if re.search(r"_count$|_count_|_n_|_number_of", name) and ret != "aims_status":
            bad.append("%s: rule 6: counts are num_<plural>" % where)
        # rule 7: predicates.
        if re.search(r"_is_", name) and ret != "int":
            bad.append("%s: rule 7: a predicate *_is_* returns int (not %s)" % (where, ret))
        # rule 2: destroy.
        if name.endswith("_destroy") and (ret != "void" or len(params) != 1):
            bad.append("%s: rule 2: _destroy returns void and takes only the handle" % where)
    # rule 9: per-object error text.
    for t in sorted(types - NO_ERRMSG):
        if t + "_errmsg" not in names:
            bad.append("%s: rule 9: no %s_errmsg (or list it in NO_ERRMSG with the reason)"
                       % (t, t))
    # rule 12: one prefix per enum.
    stems = {}
    for e in enums:
        if e == "aims_param":
            continue
        stems[e] = STEMS.get(e, "AIMS_" + e[len("aims_"):].upper() + "_")
    for e, (hdr, values) in sorted(enums.items()):
        for v in values:
            if e != "aims_param" and not v.startswith(stems[e]):
                bad.append("%s: %s: rule 12: value %s does not start with %s"
                           % (hdr, e, v, stems[e]))
            for other, stem in stems.items():
                if other != e and v.startswith(stem) and not stems.get(e, "").startswith(stem):
                    bad.append("%s: %s: rule 12: value %s uses %s's prefix %s"
                               % (hdr, e, v, other, stem))
    return bad, len(protos), len(enums)


def main(argv):
    if len(argv) != 2:
        print(__doc__.split("\n")[0], file=sys.stderr)
        return 2
    bad, nfun, nenum = check(argv[1])
    for b in bad:
        print(b)
    if bad:
        print("naming check FAILED: %d violation(s) of docs/NAMING.md" % len(bad))
        return 1
    print("naming check ok: %d functions, %d enums" % (nfun, nenum))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
