"""The session record `make bench` reads (conftest._kept): pure functions, no kernel,
no QEMU."""

from __future__ import annotations

from conftest import _kept


def test_the_session_record_keeps_the_newest_whole_suites_of_each_kind():
    old_cold = {"whole_suite": True, "cold": True, "n": 0}
    old_warm = {"whole_suite": True, "cold": False, "n": 1}
    new_warm = {"whole_suite": True, "cold": False, "n": 2}
    parts = [{"whole_suite": False, "cold": False, "n": 3 + i} for i in range(5)]
    kept = _kept([old_cold, old_warm, new_warm, *parts], keep=3)
    assert [s["n"] for s in kept] == [0, 2, 5, 6, 7]
