"""Variant folders: series chains and declared expectations (pure data, no build)."""


import pytest

from conftest import project_home
from s2fault.errors import InputError
from s2fault.kernel import variants


def test_every_variant_loads_with_its_chain():
    names = variants.names()
    assert {"upstream", "fix-reverted", "interval-tree-v1", "interval-tree-onstack",
            "full-inval-always"} <= set(names)
    assert variants.load("upstream").patches == ()
    rev = variants.load("fix-reverted").patches
    v1 = variants.load("interval-tree-v1").patches
    assert len(rev) == 1 and v1[0] == rev[0] and len(v1) == 2


def test_known_bad_variants_declare_what_they_must_show():
    lockup = variants.load("fix-reverted").expectation("dilated")
    assert lockup.splats[0].kind == "soft_lockup"
    assert variants.load("fix-reverted").expectation("functional").latency_ratio_min == 10
    for name in ("interval-tree-v1", "interval-tree-onstack"):
        kinds = {(s.kind, s.subtype) for s in variants.load(name).expectation("functional").splats}
        assert ("lockdep", "invalid_wait_context") in kinds


def test_page_size_overrides_only_what_they_name():
    rev = variants.load("fix-reverted")
    assert rev.expectation("functional", "4k").latency_ratio_min == 0
    assert rev.expectation("dilated", "4k").splats == () and rev.expectation("dilated", "4k").clean
    assert rev.expectation("dilated", "64k") == rev.expectation("dilated")
    v1 = variants.load("interval-tree-v1")
    assert [s.kind for s in v1.expectation("dilated", "4k").splats] == ["atomic_sleep", "lockdep"]
    assert v1.expectation("functional", "4k") == v1.expectation("functional")


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = project_home(tmp_path / "home", copy_patches=True)
    monkeypatch.setenv("S2FAULT_HOME", str(home))
    return home


def test_bad_declarations_are_named(home):
    toml = home / "patches" / "upstream" / "variant.toml"
    toml.write_text(toml.read_text() + "\n[expect.dilated.pages.8k]\nclean = true\n")
    with pytest.raises(InputError, match=r"expect.dilated.pages.8k.*pages must be one of"):
        variants.load("upstream")
    loop = home / "patches" / "loop"
    loop.mkdir()
    (loop / "variant.toml").write_text('base = "loop"\n')
    with pytest.raises(InputError, match="base chain loops"):
        variants.load("loop")
    with pytest.raises(InputError, match=r"unknown variant 'nope' \(valid: "):
        variants.load("nope")
