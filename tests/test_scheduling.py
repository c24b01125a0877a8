"""The matrix's CPU budget: which builds and runs may overlap (threads, no QEMU)."""

from __future__ import annotations

import threading
import time

from s2fault import matrix
from s2fault.machine import profiles
from s2fault.matrix.cores import Cores, cores_available


def _overlaps(cores: Cores, costs: list[int], hold: float = 0.3) -> int:
    """Run one thread per cost, each holding its share for `hold` seconds; the largest
    number that held at once."""
    lock = threading.Lock()
    now = {"in": 0, "max": 0}

    def work(n: int) -> None:
        with cores.take(n):
            with lock:
                now["in"] += 1
                now["max"] = max(now["max"], now["in"])
            time.sleep(hold)
            with lock:
                now["in"] -= 1

    threads = [threading.Thread(target=work, args=(n,)) for n in costs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return now["max"]


def test_two_cores_two_dilated_runs_at_once_a_functional_run_alone():
    cores = Cores(2)
    dilated = cores.for_run(profiles.mode("dilated"))
    functional = cores.for_run(profiles.mode("functional"))
    assert (dilated, functional, cores.for_build()) == (1, 2, 1)
    assert _overlaps(cores, [dilated, dilated]) == 2
    assert _overlaps(cores, [functional, dilated]) == 1
    assert _overlaps(cores, [cores.for_build(), dilated]) == 2  # boot N while N+1 builds
    assert _overlaps(cores, [cores.for_build(), functional]) == 1


def test_one_core_runs_everything_in_turn():
    cores = Cores(1)
    assert cores.for_build() == 1
    assert _overlaps(cores, [1, 1, 2]) == 1


def test_a_share_larger_than_the_machine_is_the_whole_machine():
    cores = Cores(2)
    assert _overlaps(cores, [4, 1], hold=0.1) == 1  # a 4-CPU profile does not wait forever


def test_cores_from_the_environment(monkeypatch):
    monkeypatch.setenv("S2FAULT_CORES", "1")
    assert cores_available() == 1
    monkeypatch.setenv("S2FAULT_CORES", "")
    assert cores_available() >= 1


def test_a_cell_waiting_for_the_machine_does_not_hold_up_one_that_fits():
    """A dilated cell runs, a functional one waits for the whole machine: the dilated
    cell submitted after it must still start beside the first (with a worker per core,
    it sat in the queue behind the waiting one)."""
    from concurrent.futures import ThreadPoolExecutor

    cores = Cores(2)
    lock = threading.Lock()
    now = {"dilated": 0, "max": 0}

    def run(n: int) -> None:
        with cores.take(n):
            if n == 1:
                with lock:
                    now["dilated"] += 1
                    now["max"] = max(now["max"], now["dilated"])
            time.sleep(0.5 if n == 1 else 0.1)  # dilated runs are the long ones
            if n == 1:
                with lock:
                    now["dilated"] -= 1

    with ThreadPoolExecutor(matrix._MAX_WAITING) as pool:
        for f in [pool.submit(run, n) for n in (1, 2, 1)]:
            f.result()
    assert now["max"] == 2
