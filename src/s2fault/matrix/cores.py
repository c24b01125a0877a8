"""The CPUs a matrix run keeps busy: builds and QEMU runs share one budget."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from s2fault.machine import profiles


def cores_available() -> int:
    """CPUs a matrix run may keep busy: S2FAULT_CORES, else the ones this process may use."""
    env = os.environ.get("S2FAULT_CORES", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Cores:
    """The CPU budget that builds and QEMU runs of one matrix run share.

    What each takes, and why:
    - a functional run: the nested CPUs it emulates (thread=multi), at most all cores.
      Its latency is taken from the guest's counter, which runs on host time: it runs
      with nothing else, or host load would show up as exec-fault latency.
    - a dilated run: one core. -icount is one TCG thread, and its judgement is in guest
      virtual time, which host load slows down but does not change.
    - a build: all cores but one (make -j keeps them busy), so one dilated run
      overlaps it.
    On 2 cores: two dilated runs at once, or one beside a build; a functional run alone.
    """

    def __init__(self, total: int):
        self.total = max(1, total)
        self._free = self.total
        self._cv = threading.Condition()

    @contextlib.contextmanager
    def take(self, n: int) -> Iterator[None]:
        n = max(1, min(n, self.total))
        with self._cv:
            self._cv.wait_for(lambda: self._free >= n)
            self._free -= n
        try:
            yield
        finally:
            with self._cv:
                self._free += n
                self._cv.notify_all()

    def for_build(self) -> int:
        return max(1, self.total - 1)

    def for_run(self, prof: profiles.Profile) -> int:
        return 1 if prof.dilated else profiles.smp_for(prof)
