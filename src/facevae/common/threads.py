"""Intra-op threads per process, so that processes sharing a machine share its cores.

Two torch processes on two cores, each with as many OpenMP threads as cores, spin at their barriers
and slow each other down several times over. A process that knows it is one of ``processes``
workers takes its share of the cores it may run on.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_process(processes: int) -> int:
    return max(1, usable_cores() // max(1, int(processes)))


def share_cores(processes: int) -> int:
    """Set torch's intra-op threads to this process's share; returns the number set."""
    import torch

    threads = threads_per_process(processes)
    torch.set_num_threads(threads)
    return threads
