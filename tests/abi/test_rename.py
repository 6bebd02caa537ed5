#!/usr/bin/env python3
"""test_rename.py SRCROOT -- tools/rename-0.1.py converts old names and is idempotent.

Why: the lead re-runs the script on the merged tree after every merge of a
branch still written against the old names, so a second run must change
nothing, and the two swaps (an old function name that is the new name of a
type) must come out right in every context the tree uses. The fixture below
holds one of each context; the script runs twice on a copy of it.
"""
import os
import subprocess
import sys
import tempfile

OLD_C = """\
/** Training progress values (see aims_trainer_stat()). */
typedef enum aims_stat { AIMS_STAT_EPOCH = 1 } aims_stat;
typedef enum aims_svc_stat { AIMS_SVC_REQUESTS = 1 } aims_svc_stat;
AIMS_API aims_status aims_trainer_stat(const aims_trainer *t, aims_stat stat, double *out);
AIMS_API aims_status aims_service_stat(aims_service *s, aims_svc_stat stat, double *out);
static double f(aims_service *s, aims_svc_stat st) { double v; aims_service_stat(s, st, &v); return v; }
int g(void) { return aimsi_err(NULL, 1, "aims_trainer_stat: unknown stat %d", (int)(aims_stat)3); }
int h(aims_msg *m) { aims_model_create(AIMS_MODEL_MLP, 1, 2, 0); return aims_msg_count(m) + aims_msg_get(m, 0); }
/* AIMS_SVC_H, AIMS_MODEL_THREADS, aims_metrics_count, aims_eval_get_metric stay. */
AIMS_API aims_status aims_msg_get(const aims_msg *m, size_t index,
                                  const char **out_name);
"""
NEW_C = """\
/** Training progress values (see aims_trainer_get_stat()). */
typedef enum aims_trainer_stat { AIMS_TRAINER_STAT_EPOCH = 1 } aims_trainer_stat;
typedef enum aims_service_stat { AIMS_SERVICE_STAT_REQUESTS = 1 } aims_service_stat;
AIMS_API aims_status aims_trainer_get_stat(const aims_trainer *t, aims_trainer_stat stat, double *out);
AIMS_API aims_status aims_service_get_stat(aims_service *s, aims_service_stat stat, double *out);
static double f(aims_service *s, aims_service_stat st) { double v; aims_service_get_stat(s, st, &v); return v; }
int g(void) { return aimsi_err(NULL, 1, "aims_trainer_get_stat: unknown stat %d", (int)(aims_trainer_stat)3); }
int h(aims_msg *m) { aims_model_create(AIMS_MODEL_KIND_MLP, 1, 2, 0); return aims_msg_num_tensors(m) + aims_msg_get_tensor(m, 0); }
/* AIMS_SVC_H, AIMS_MODEL_THREADS, aims_metrics_count, aims_eval_get_metric stay. */
AIMS_API aims_status aims_msg_get_tensor(const aims_msg *m, size_t index,
                                         const char **out_name);
"""
OLD_PY = """\
stat = ctypes.c_int  # aims_stat (enum)
PROTOS = {"aims_trainer_stat": (status, [handle]), 'aims_service_stat': (status, [])}
x = _c.aims_service_stat(ptr, 1, ctypes.byref(out))
"""
NEW_PY = """\
stat = ctypes.c_int  # aims_trainer_stat (enum)
PROTOS = {"aims_trainer_get_stat": (status, [handle]), 'aims_service_get_stat': (status, [])}
x = _c.aims_service_get_stat(ptr, 1, ctypes.byref(out))
"""
OLD_MAP = "AIMS_0.1 {\n  global:\n    aims_service_stat;\n    aims_trainer_stat;\n    aims_msg_get;\n};\n"
NEW_MAP = ("AIMS_0.1 {\n  global:\n    aims_service_get_stat;\n    aims_trainer_get_stat;\n"
           "    aims_msg_get_tensor;\n};\n")

FILES = {"src/x.c": (OLD_C, NEW_C), "bindings/python/aims/_lib.py": (OLD_PY, NEW_PY),
         "src/libaims.map": (OLD_MAP, NEW_MAP),
         "docs/NAMING.md": (OLD_C, OLD_C)}  # the rename table keeps the old names


def run(script, root, *extra):
    return subprocess.run([sys.executable, script, "--root", root] + list(extra),
                          capture_output=True, text=True)


def main(argv):
    script = os.path.join(argv[1], "tools", "rename-0.1.py")
    fail = 0
    with tempfile.TemporaryDirectory() as root:
        for rel, (old, _) in FILES.items():
            os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
            with open(os.path.join(root, rel), "w") as f:
                f.write(old)
        if run(script, root, "--check").returncode != 1:
            print("--check on old names did not exit 1"); fail = 1
        r = run(script, root)
        if r.returncode != 0:
            print("first run failed:", r.stdout, r.stderr); fail = 1
        for rel, (_, new) in FILES.items():
            with open(os.path.join(root, rel)) as f:
                got = f.read()
            if got != new:
                print("%s after the first run:\n%s\nwant:\n%s" % (rel, got, new)); fail = 1
        r = run(script, root, "--check")
        if r.returncode != 0 or "0 file(s)" not in r.stdout:
            print("second run would change something:", r.stdout, r.stderr); fail = 1
    if fail:
        print("rename test FAILED")
        return 1
    print("rename test ok: converts every context, second run changes nothing")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
