"""Helpers shared by the bench harnesses (run.py, run_train.py)."""

import os
import platform


def machine_info():
    """CPU, cores, kernel, load at start and the OpenBLAS variables, for every result."""
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
            "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE")}
