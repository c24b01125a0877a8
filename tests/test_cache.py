import os
import signal
import subprocess
import sys
import textwrap

from s2fault import cache


def test_publish_then_verify(tmp_path):
    e = cache.Entry("kernels", "k1", tmp_path)
    with e.staging() as staged:
        (staged / "Image").write_bytes(b"image")
        e.publish(staged, {"variant": "x"})
    assert e.verify() and e.metadata() == {"variant": "x"}
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "kernels").iterdir())


def test_corrupt_or_truncated_entry_fails_verification(tmp_path):
    e = cache.Entry("kernels", "k2", tmp_path)
    with e.staging() as staged:
        (staged / "Image").write_bytes(b"0123456789")
        e.publish(staged)
    (e.dir / "Image").write_bytes(b"01234")
    assert not e.verify()
    (e.dir / "manifest.json").write_text("{not json")
    assert not e.verify()


def test_republish_replaces_a_stale_entry(tmp_path):
    e = cache.Entry("kernels", "k3", tmp_path)
    for content in (b"old", b"new"):
        with e.staging() as staged:
            (staged / "Image").write_bytes(content)
            e.publish(staged)
    assert (e.dir / "Image").read_bytes() == b"new" and e.verify()


def test_interrupted_staging_publishes_nothing(tmp_path):
    """A build killed by SIGINT in the middle leaves no entry and no scratch."""
    script = textwrap.dedent(f"""
        import os, signal, time
        from pathlib import Path
        from s2fault import cache
        e = cache.Entry("kernels", "k4", Path({str(tmp_path)!r}))
        with e.staging() as staged:
            (staged / "Image").write_bytes(b"half")
            print("staged", flush=True)
            time.sleep(30)
            e.publish(staged)
    """)
    # SIGINT as a terminal delivers it, whatever this test inherited: a suite started
    # as a script's background job has SIGINT ignored, and exec keeps that.
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                         env=os.environ,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert p.stdout.readline().strip() == "staged"
    p.send_signal(signal.SIGINT)
    p.wait(timeout=10)
    e = cache.Entry("kernels", "k4", tmp_path)
    assert not e.dir.exists() and not e.verify()
    assert list((tmp_path / "kernels").iterdir()) == []


def test_key_is_order_and_boundary_sensitive():
    assert cache.key_of("ab", "c") != cache.key_of("a", "bc")
    assert cache.key_of("a", "b") != cache.key_of("b", "a")
    assert cache.key_of("a", b"b") == cache.key_of("a", "b")


def test_the_interrupt_test_holds_when_the_suite_starts_with_sigint_ignored(tmp_path):
    """As a script's background job runs the suite: SIGINT ignored from the start."""
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp",
         str(tmp_path / "t"), f"{__file__}::test_interrupted_staging_publishes_nothing"],
        capture_output=True, text=True, timeout=600,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout[-2000:]
