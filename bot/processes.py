"""Which process runs a job, and whether it still does.

A job records its runner as ``<kind>:<host>:<pid>:<start>``. The start time (the kernel's, in
clock ticks since boot, from ``/proc/<pid>/stat``) tells a live process from a later one that was
given the same pid. Where ``/proc`` is missing, the pid alone is checked.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def _start_ticks(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "0"
    # The command name (field 2) is in parentheses and may hold spaces: count from its end.
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, starttime


def this_process(kind: str) -> str:
    """This process's runner name: ``kind`` is "bot" or "cli"."""
    pid = os.getpid()
    return f"{kind}:{socket.gethostname()}:{pid}:{_start_ticks(pid)}"


def is_alive(runner: str) -> bool:
    """Whether the process ``runner`` names still runs. A process on another host cannot be
    checked from here, so it counts as alive (its own host closes its jobs when it restarts)."""
    try:
        _, host, pid_text, start = runner.split(":")
        pid = int(pid_text)
    except ValueError:
        return False
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    return start in ("0", _start_ticks(pid))
