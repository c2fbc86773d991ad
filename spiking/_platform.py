"""What this processor is: for keying native builds (a shared home never loads a binary built for
another CPU) and for recording where a run's numbers came from."""
from __future__ import annotations

import functools
import hashlib
import platform


@functools.lru_cache(maxsize=None)
def cpuinfo_field(name: str) -> str:
    """The first ``name : value`` of ``/proc/cpuinfo`` (e.g. "model name", "flags"), or ""."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return ""


def cpu_model() -> str:
    """The CPU's model name, else ``platform.processor()`` or ``platform.machine()``."""
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_key() -> str:
    """12 hex digits identifying the instruction set here: architecture, CPU model and flags."""
    text = "|".join((platform.machine(), cpu_model(), cpuinfo_field("flags")))
    return hashlib.sha1(text.encode()).hexdigest()[:12]
