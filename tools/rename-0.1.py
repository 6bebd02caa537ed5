#!/usr/bin/env python3
"""rename-0.1.py -- apply the 0.1 public renames (docs/NAMING.md, "Renamed in 0.1").

Why: the names were fixed once, just before the ABI baseline 0.1 was cut, while
several branches were still being written against the old names. The script is
re-run on the merged tree after every merge, so it must be idempotent: running it
on a tree it has already converted changes nothing.

How: every rename is a regular expression with word boundaries, applied to the
text files under include/ src/ examples/ tools/ tests/ bench/ bindings/python/
docs/ deploy/ (docs/NAMING.md, the frozen tests/abi/python-0.1/ snapshot, the
ABI baseline XML and this script are skipped: they must keep the old names).
A plain rename old -> new is idempotent because no new name contains an old
name as a whole word. In .c, .h and .py files, continuation lines aligned to a
parenthesis that a rename moved are re-indented to follow it (realign()).

The two swaps. Two old *function* names become new *type* names:
    function aims_trainer_stat -> aims_trainer_get_stat, type aims_stat     -> aims_trainer_stat
    function aims_service_stat -> aims_service_get_stat, type aims_svc_stat -> aims_service_stat
A word is taken as the FUNCTION (and renamed to *_get_stat) only in these
contexts, none of which a type name appears in:
    name(          a call, declaration or doc reference `name()`
    .name          a ctypes attribute (lib.name, _c.name)
    "name" 'name'  a string naming the symbol (ctypes prototype tables)
    name:          an error message or doc label ("aims_trainer_stat: unknown stat")
    name;          a line of a linker version script (*.map)
Every other occurrence is taken as the type and left alone. Functions are
renamed before types in each file, so on the first run `aims_stat x` becomes
`aims_trainer_stat x` (left alone on the next run) and `aims_trainer_stat(`
becomes `aims_trainer_get_stat(` (no longer matched). A bare mention of an old
function name in prose ("see aims_service_stat") cannot be told from the type;
the script prints such lines from the tree *before* rewriting them, for a human
to check (write `aims_service_get_stat()` instead).

Usage:
    tools/rename-0.1.py [--root DIR] [--check] [PATH...]
        --root   tree to convert (default: the repository holding this script)
        --check  change nothing; list what would change, exit 1 if anything would
        PATH     files or folders (relative to --root) instead of the default set
"""
import argparse
import os
import re
import sys

FUNCTIONS = [
    ("aims_model_get_kind", "aims_model_kind_of"),
    ("aims_bundle_get_meta", "aims_bundle_meta"),
    ("aims_health_in_panic", "aims_health_is_in_panic"),
    ("aims_msg_count", "aims_msg_num_tensors"),
    ("aims_loadopts_set_i64", "aims_loadopts_set_param_i64"),
    ("aims_loadopts_get_i64", "aims_loadopts_get_param_i64"),
    ("aims_pipeline_set_step_i64", "aims_pipeline_set_step_param_i64"),
    ("aims_pipeline_set_step_f64", "aims_pipeline_set_step_param_f64"),
    ("aims_pipeline_get_step_i64", "aims_pipeline_get_step_param_i64"),
    ("aims_pipeline_get_step_f64", "aims_pipeline_get_step_param_f64"),
    ("aims_eval_get", "aims_eval_get_metric"),
    ("aims_eval_confusion", "aims_eval_get_confusion"),
    ("aims_registry_address", "aims_registry_get_address"),
    ("aims_node_address", "aims_node_get_address"),
    ("aims_msg_get", "aims_msg_get_tensor"),
    ("aims_client_use_registry", "aims_client_set_registry"),
    ("aims_trainer_set_progress", "aims_trainer_set_progress_fn"),
    ("aims_health_on_change", "aims_health_set_change_fn"),
    ("aims_metrics_gauge", "aims_metrics_set_gauge"),
]

# Old function name -> new function name, where the old name becomes a type.
SWAPPED_FUNCTIONS = [
    ("aims_trainer_stat", "aims_trainer_get_stat"),
    ("aims_service_stat", "aims_service_get_stat"),
]

TYPES = [
    ("aims_metric", "aims_eval_metric"),
    ("aims_stat", "aims_trainer_stat"),
    ("aims_svc_stat", "aims_service_stat"),
]


def _values(old_prefix, new_prefix, names):
    return [(old_prefix + n, new_prefix + n) for n in names]


VALUES = (
    _values("AIMS_MODEL_", "AIMS_MODEL_KIND_",
            ["LINEAR", "LOGISTIC", "SOFTMAX", "MLP", "TEXT"])
    + _values("AIMS_STEP_", "AIMS_STEP_KIND_",
              ["STANDARDIZE", "MINMAX", "IMPUTE", "CLIP", "ONEHOT", "SCALE",
               "NORMALIZE", "TOKENIZE", "NGRAMS", "HASH", "TFIDF"])
    + _values("AIMS_HEALTH_", "AIMS_HEALTH_STATE_", ["HEALTHY", "EJECTED"])
    + _values("AIMS_METRIC_", "AIMS_EVAL_METRIC_",
              ["ACCURACY", "MACRO_F1", "LOG_LOSS", "MSE", "R2", "ROWS"])
    + _values("AIMS_STAT_", "AIMS_TRAINER_STAT_",
              ["EPOCH", "STEP", "TRAIN_LOSS", "VAL_LOSS", "VAL_ACCURACY",
               "SAMPLES_PER_S", "LR", "BEST_EPOCH", "STEPS_PER_EPOCH"])
    + _values("AIMS_SVC_", "AIMS_SERVICE_STAT_",
              ["REQUESTS", "ERRORS", "REJECTED", "INFLIGHT", "QUEUED", "BATCHES",
               "BATCH_ROWS", "BUSY_NS", "P50_NS", "P99_NS"])
    + _values("AIMS_PARAM_", "AIMS_PARAM_TYPE_", ["I64", "F64"])
)

DEFAULT_PATHS = ["include", "src", "examples", "tools", "tests", "bench",
                 "bindings/python", "docs", "deploy"]
SKIP = ["docs/NAMING.md", "tools/rename-0.1.py", "tests/abi/test_rename.py",
        "tests/abi/python-0.1",
        "tests/abi/libaims-0.1.abi"]
SKIP_DIRS = {".git", "__pycache__", "build", "node_modules"}


def _word(name):
    return re.compile(r"(?<![A-Za-z0-9_])" + re.escape(name) + r"(?![A-Za-z0-9_])")


def _swap_function(name):
    """The function contexts of a swapped name (see the module comment)."""
    n = re.escape(name)
    b, e = r"(?<![A-Za-z0-9_])", r"(?![A-Za-z0-9_])"
    return re.compile(
        b + n + r"(?=\()"                 # name(
        + r"|(?<=\.)" + n + e             # .name
        + r"|(?<=[\"'])" + n + r"(?=[\"'])"   # "name"
        + r"|" + b + n + r"(?=:)"         # name:
        + r"|(?m:^)(?P<indent>[ \t]*)" + n + r"(?=;[ \t]*(?:\n|$))")  # name;  (version script)


PLAIN = [(_word(o), n) for o, n in FUNCTIONS + VALUES]
SWAPS = [(o, _swap_function(o), n) for o, n in SWAPPED_FUNCTIONS]
TYPE_RES = [(_word(o), n) for o, n in TYPES]
# One pass to skip the files that hold no old name at all (most of them).
ANY_OLD = re.compile(r"(?<![A-Za-z0-9_])(?:" + "|".join(
    re.escape(o) for o, _ in FUNCTIONS + SWAPPED_FUNCTIONS + TYPES + VALUES)
    + r")(?![A-Za-z0-9_])")


def convert(text, path="", warn=None):
    """Return @p text with every rename applied (functions before types)."""
    for old, rx, new in SWAPS:
        text = rx.sub(lambda m, new=new: (m.group("indent") or "") + new, text)
        if warn is not None:
            for m in _word(old).finditer(text):
                line = text[:m.start()].count("\n") + 1
                src = text.splitlines()[line - 1].strip()
                warn.append("%s:%d: '%s' taken as the type: %s" % (path, line, old, src))
    for rx, new in PLAIN + TYPE_RES:
        text = rx.sub(new, text)
    return text


def _open_paren(line):
    """Columns of the parentheses still open at the end of @p line, and the net
    change in depth (string and character literals skipped)."""
    stack, depth, quote, i = [], 0, None, 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            stack.append(i)
            depth += 1
        elif ch == ")":
            if stack:
                stack.pop()
            depth -= 1
        i += 1
    return stack, depth


def realign(old, new):
    """Re-indent continuation lines aligned to a parenthesis that a rename moved.

    @p old and @p new have the same lines (a rename never adds a newline). Where
    line i changed and its last open parenthesis moved from column a to b, the
    following lines of that expression indented to a + 1 are indented to b + 1.
    Idempotent: a second run changes no line, so it moves nothing."""
    olines, nlines = old.split("\n"), new.split("\n")
    if len(olines) != len(nlines):
        return new
    for i, (o, n) in enumerate(zip(olines, nlines)):
        if o == n:
            continue
        ostack, depth = _open_paren(o)
        nstack, _ = _open_paren(n)
        if not ostack or len(ostack) != len(nstack) or ostack[-1] == nstack[-1]:
            continue
        a, b = ostack[-1] + 1, nstack[-1] + 1
        j = i + 1
        while depth > 0 and j < len(nlines):
            line = nlines[j]
            if len(line) - len(line.lstrip(" ")) != a or not line.strip():
                break
            nlines[j] = " " * b + line.lstrip(" ")
            depth += _open_paren(olines[j])[1]
            j += 1
    return "\n".join(nlines)


def _skipped(rel):
    rel = rel.replace(os.sep, "/")
    return any(rel == s or rel.startswith(s + "/") for s in SKIP)


def files(root, paths):
    for p in paths:
        full = os.path.join(root, p)
        if os.path.isfile(full):
            if not _skipped(p):
                yield p
            continue
        for d, dirs, names in os.walk(full):
            dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS
                             and not x.startswith("build"))
            for name in sorted(names):
                rel = os.path.relpath(os.path.join(d, name), root)
                if not _skipped(rel):
                    yield rel


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--check", action="store_true")
    ap.add_argument("paths", nargs="*")
    args = ap.parse_args(argv)
    changed, warnings = [], []
    for rel in files(args.root, args.paths or DEFAULT_PATHS):
        full = os.path.join(args.root, rel)
        try:
            with open(full, encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, OSError):
            continue  # binary data (corpora, images): no names to rename
        # Only the swapped names in a file the script will change are
        # ambiguous; an already converted file holds the types legitimately.
        if not ANY_OLD.search(text):
            continue
        new = convert(text, rel)
        if rel.endswith((".c", ".h", ".py")):
            new = realign(text, new)
        if new == text:
            continue
        convert(text, rel, warnings)
        changed.append(rel)
        if not args.check:
            with open(full, "w", encoding="utf-8") as f:
                f.write(new)
    for w in warnings:
        print("warning: " + w, file=sys.stderr)
    for rel in changed:
        print(("would change: " if args.check else "changed: ") + rel)
    if args.check and changed:
        print("%d file(s) still use names renamed in 0.1 (run tools/rename-0.1.py)"
              % len(changed), file=sys.stderr)
        return 1
    print("%d file(s) %s" % (len(changed), "to change" if args.check else "changed"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
