"""Variants from a mailing list: `s2fault variant add` over real b4, real git mailinfo,
and for --from-msgid a real HTTP server on 127.0.0.1 that answers like lore.

The series is the project's own interval-tree-v1 patch, sent as a thread: an older
revision with another diff, a v2 cover letter, the v2 patch and a reviewer's reply
carrying Reviewed-by. b4 must pick v2 and collect the trailer; the diff that comes out
must be the original's, byte for byte.
"""

from __future__ import annotations

import email
import email.policy
import gzip
import http.server
import json
import tomllib
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import ROOT, loopback_http, project_home, s2fault
from s2fault.kernel import variants
from s2fault.lore import variant_toml

V1_PATCH = next((ROOT / "patches" / "interval-tree-v1").glob("*.patch"))
REVERT_PATCH = next((ROOT / "patches" / "fix-reverted").glob("*.patch"))
OTHER_PATCH = next((ROOT / "patches" / "full-inval-always").glob("*.patch"))
REVIEWER = "Rita Reviewer <rita@s2fault.test>"
AUTHOR = "s2fault <s2fault@localhost>"


def _parts(patch: Path) -> tuple[str, str]:
    """(subject without [PATCH], body with the diff) of a git-format-patch file."""
    msg = email.message_from_string(patch.read_text().split("\n", 1)[1],
                                    policy=email.policy.default)
    subject = " ".join(str(msg["Subject"]).split()).removeprefix("[PATCH] ")
    return subject, msg.get_content()


def _message(subject: str, msgid: str, body: str, sender: str = AUTHOR,
             parents: tuple[str, ...] = (), minute: int = 0) -> str:
    assert not any(line.startswith("From ") for line in body.splitlines())
    head = [f"From {msgid} Mon Sep 17 00:00:00 2001", f"From: {sender}",
            f"Date: Mon, 6 Jan 2025 12:{minute:02d}:00 +0000", f"Subject: {subject}",
            f"Message-Id: <{msgid}>"]
    if parents:
        head += [f"In-Reply-To: <{parents[-1]}>",
                 "References: " + " ".join(f"<{p}>" for p in parents)]
    return "\n".join(head) + "\n\n" + body.rstrip("\n") + "\n\n"


def v1_thread() -> str:
    """interval-tree-v1 as a v2 series with an older v1 and a Reviewed-by reply."""
    subject, body = _parts(V1_PATCH)
    _, other = _parts(OTHER_PATCH)
    return "".join([
        _message(f"[PATCH] {subject}", "old-v1@s2fault.test", other, minute=0),
        _message(f"[PATCH v2 1/1] {subject}", "v2-1@s2fault.test", body,
                 parents=("v2-0@s2fault.test",), minute=11),
        _message(f"Re: [PATCH v2 1/1] {subject}", "review@s2fault.test",
                 f"> looks right\n\nReviewed-by: {REVIEWER}\n", sender=REVIEWER,
                 parents=("v2-0@s2fault.test", "v2-1@s2fault.test"), minute=30),
        _message("[PATCH v2 0/1] KVM: arm64: Serialize I-cache invalidation per range",
                 "v2-0@s2fault.test",
                 "Faults on one huge block invalidate it once at a time.\n\n"
                 "Changes in v2: a real diff.\n", minute=10),
    ])


def _diff(text: str) -> str:
    return text[text.index("\ndiff --git "):].rstrip("\n")


@pytest.fixture
def home(tmp_path):
    """A checkout of our own: the real patches/ copied, the rest linked."""
    return project_home(tmp_path / "home", copy_patches=True)


def _add(home: Path, *args: str, env: dict | None = None):
    return s2fault("variant", "add", *args, env={"S2FAULT_HOME": str(home)} | (env or {}),
                   timeout=120)


def test_mbox_of_interval_tree_v1_becomes_the_same_variant(home, tmp_path, monkeypatch):
    mbox = tmp_path / "thread.mbox"
    mbox.write_text(v1_thread())
    r = _add(home, "v1-from-mbox", "--from-mbox", str(mbox), "--base", "fix-reverted",
             "--expect-like", "interval-tree-v1")
    assert r.returncode == 0, r.stdout + r.stderr
    folder = home / "patches" / "v1-from-mbox"
    series = [ln for ln in (folder / "series").read_text().splitlines()
              if ln and not ln.startswith("#")]
    assert series == [V1_PATCH.name]  # format-patch's file name, from the subject
    patch = (folder / series[0]).read_text()
    assert _diff(patch) == _diff(V1_PATCH.read_text())  # v2's diff, not v1's
    assert f"Reviewed-by: {REVIEWER}\n---\n" in patch  # the reply's trailer, collected
    assert "Subject: [PATCH] KVM: arm64: Serialize I-cache" in patch
    data = tomllib.loads((folder / "variant.toml").read_text())
    prov = data["provenance"]
    assert prov["message_ids"] == ["v2-1@s2fault.test"] and prov["revision"] == 2
    assert prov["cover"] == "v2-0@s2fault.test" and prov["b4"].startswith("0.")
    assert data["base"] == "fix-reverted"
    assert data["description"].startswith("KVM: arm64: Serialize I-cache invalidation per "
                                          "range. Faults on one huge block")
    monkeypatch.setenv("S2FAULT_HOME", str(home))
    new, old = variants.load("v1-from-mbox"), variants.load("interval-tree-v1")
    assert new.combos == old.combos and not new.expectation("functional").unfilled
    assert [p.parent.name for p in new.patches] == ["fix-reverted", "v1-from-mbox"]


def test_b4_orders_the_series_and_a_template_is_never_judged(home, tmp_path, monkeypatch):
    """Two patches sent out of order, no cover letter, no --expect-like."""
    s1, b1 = _parts(REVERT_PATCH)
    s2, b2 = _parts(V1_PATCH)
    mbox = tmp_path / "two.mbox"
    mbox.write_text(_message(f"[PATCH 2/2] {s2}", "p2@s2fault.test", b2, minute=2)
                    + _message(f"[PATCH 1/2] {s1}", "p1@s2fault.test", b1, minute=1))
    r = _add(home, "two", "--from-mbox", str(mbox))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "expectations: to fill in" in r.stdout
    folder = home / "patches" / "two"
    series = [ln for ln in (folder / "series").read_text().splitlines()
              if ln and not ln.startswith("#")]
    assert series == ["0001-" + REVERT_PATCH.name[5:], "0002-" + V1_PATCH.name[5:]]
    assert "Subject: [PATCH 1/2] KVM: arm64: Invalidate" in (folder / series[0]).read_text()
    text = (folder / "variant.toml").read_text()
    assert "expectations_filled = false" in text and "# [expect.functional]" in text
    assert tomllib.loads(text)["provenance"]["message_ids"] == ["p1@s2fault.test",
                                                                "p2@s2fault.test"]
    monkeypatch.setenv("S2FAULT_HOME", str(home))
    two = variants.load("two")
    assert all(e.unfilled for e in two.combos.values())
    assert two.expectation("dilated").describe() == "not filled in"
    listing = s2fault("variants", env={"S2FAULT_HOME": str(home)})
    assert "two: 2 patch(es)" in listing.stdout and "not filled in" in listing.stdout


def test_refusals_are_one_line_and_leave_nothing_behind(home, tmp_path):
    mbox = tmp_path / "thread.mbox"
    mbox.write_text(v1_thread())
    before = sorted(p.name for p in (home / "patches").iterdir())
    cases = [
        (("upstream", "--from-mbox", str(mbox)), "variant upstream already exists"),
        (("x", "--from-mbox", str(tmp_path / "nope.mbox")), "does not exist"),
        (("x", "--from-mbox", str(mbox), "--base", "nope"), "unknown variant 'nope'"),
        (("x", "--from-mbox", str(mbox), "--expect-like", "nope"), "unknown variant 'nope'"),
        (("x", "--from-mbox", str(mbox), "--base", "x"), "cannot be its own base"),
        (("../x", "--from-mbox", str(mbox)), "variant name '../x'"),
    ]
    talk = tmp_path / "talk.mbox"
    talk.write_text(_message("Re: stage-2 faults", "talk@s2fault.test", "No patch here.\n"))
    cases.append((("x", "--from-mbox", str(talk)), f"mbox {talk}: no patches"))
    s1, b1 = _parts(REVERT_PATCH)
    s3, b3 = _parts(V1_PATCH)
    gap = tmp_path / "gap.mbox"
    gap.write_text(_message(f"[PATCH 1/3] {s1}", "g1@s2fault.test", b1)
                   + _message(f"[PATCH 3/3] {s3}", "g3@s2fault.test", b3))
    cases.append((("x", "--from-mbox", str(gap)), "the series is incomplete (no patch 2/3)"))
    for args, words in cases:
        r = _add(home, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (args, r.stderr)
    assert sorted(p.name for p in (home / "patches").iterdir()) == before
    # --force replaces a folder whole (the old series is gone, not mixed in).
    r = _add(home, "upstream", "--from-mbox", str(mbox), "--expect-like", "upstream", "--force")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (home / "patches" / "upstream").iterdir()) == [
        V1_PATCH.name, "series", "variant.toml"]
    assert sorted(p.name for p in (home / "patches").iterdir()) == before


class LoreLike(http.server.BaseHTTPRequestHandler):
    """GET /all/<msgid>/t.mbox.gz, the way public-inbox serves a thread."""

    threads: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        parts = urllib.parse.unquote(self.path).strip("/").split("/")
        if len(parts) == 3 and parts[0] == "all" and parts[2] == "t.mbox.gz" \
                and parts[1] in self.threads:
            body = gzip.compress(self.threads[parts[1]])
            self.send_response(200)
            self.send_header("Content-Type", "application/gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_error(404)

    do_HEAD = do_GET  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture
def lore_server():
    with loopback_http(LoreLike) as url:
        yield url


def _midmask(url: str) -> dict:
    """b4 reads b4.midmask from git config; git takes config from the environment too."""
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "b4.midmask",
            "GIT_CONFIG_VALUE_0": f"{url}/all/%s"}


def test_from_msgid_fetches_the_thread_like_lore(home, lore_server):
    LoreLike.threads = {"v2-1@s2fault.test": v1_thread().encode(), "talk@s2fault.test":
                        _message("stage-2 faults", "talk@s2fault.test", "No patch.\n").encode()}
    r = _add(home, "v1-from-lore", "--from-msgid", "<v2-1@s2fault.test>", "--base",
             "fix-reverted", "--expect-like", "interval-tree-v1", env=_midmask(lore_server))
    assert r.returncode == 0, r.stdout + r.stderr
    folder = home / "patches" / "v1-from-lore"
    patch = (folder / V1_PATCH.name).read_text()
    assert _diff(patch) == _diff(V1_PATCH.read_text()) and f"Reviewed-by: {REVIEWER}" in patch
    host = urllib.parse.urlsplit(lore_server).netloc
    prov = tomllib.loads((folder / "variant.toml").read_text())["provenance"]
    assert prov["origin"] == f"lore {host} <v2-1@s2fault.test>"
    # A pasted archive URL works too, wherever it points (b4 reads it as lore's).
    r = _add(home, "by-url", "--from-msgid", f"{lore_server}/all/v2-1@s2fault.test/")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (home / "patches" / "by-url" / V1_PATCH.name).read_text() == patch
    r = _add(home, "gone", "--from-msgid", "gone@s2fault.test", env=_midmask(lore_server))
    assert r.returncode == 2
    assert r.stderr.strip() == f"s2fault: error: message <gone@s2fault.test> not found on {host}"
    r = _add(home, "talk", "--from-msgid", "talk@s2fault.test", env=_midmask(lore_server))
    assert r.returncode == 2
    assert r.stderr.strip() == "s2fault: error: thread <talk@s2fault.test>: no patches found"


def test_from_msgid_without_network_says_so_in_one_line(home, lore_server):
    # A port nobody listens on: what a machine without network sees of lore.
    closed = lore_server.rsplit(":", 1)[0] + ":9"
    r = _add(home, "x", "--from-msgid", "v2-1@s2fault.test", env=_midmask(closed))
    assert r.returncode == 2
    assert r.stderr.strip() == ("s2fault: error: cannot reach 127.0.0.1:9: Connection refused; "
                                "use --from-mbox")
    assert not (home / "patches" / "x").exists()


def test_expect_sections_keep_their_comments_and_nothing_else():
    text = ('description = "d"\n# about functional\n[expect.functional]\nclean = true\n\n'
            '# provenance is not an expectation\n[provenance]\nb4 = "0.16.0"\n'
            '[expect.dilated.pages.4k]  # why 4k\nclean = false\n')
    out = variant_toml.expect_sections(text)
    assert out == ("# about functional\n[expect.functional]\nclean = true\n\n"
                   "[expect.dilated.pages.4k]  # why 4k\nclean = false\n")
    for name in variants.names():
        full = tomllib.loads((ROOT / "patches" / name / "variant.toml").read_text())
        assert tomllib.loads(variant_toml.expect_sections(
            (ROOT / "patches" / name / "variant.toml").read_text())).get("expect") == \
            full.get("expect"), name


@given(st.text())
def test_toml_strings_round_trip(text):
    assert tomllib.loads(f"k = {variant_toml.toml_string(text)}")["k"] == text
    para = " ".join(text.split())
    assert tomllib.loads(f"k = {variant_toml._toml_paragraph(text)}")["k"] == para


def test_variant_add_is_on_the_command_line():
    r = s2fault("variant", "add", "--help")
    assert r.returncode == 0 and "--from-mbox" in r.stdout and "--from-msgid" in r.stdout
    r = s2fault("variant", "add", "x", "--from-mbox", "a", "--from-msgid", "b")
    assert r.returncode == 2 and "not allowed with" in r.stderr


STALE_PATCH = """\
From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: s2fault <s2fault@localhost>
Date: Mon, 6 Jan 2025 12:00:00 +0000
Subject: [PATCH] KVM: arm64: A hunk written against another tree

Its context is nowhere in 6.12.

Signed-off-by: s2fault <s2fault@localhost>
---
 arch/arm64/kvm/mmu.c | 2 +-
 1 file changed, 1 insertion(+), 1 deletion(-)

diff --git a/arch/arm64/kvm/mmu.c b/arch/arm64/kvm/mmu.c
--- a/arch/arm64/kvm/mmu.c
+++ b/arch/arm64/kvm/mmu.c
@@ -10,7 +10,7 @@
 #include <not/in/this/tree.h>
 #include <nor/this.h>
 #include <nor/that.h>
-static int s2fault_stale;
+static int s2fault_stale = 1;
 #include <and/not/this.h>
 #include <or/this.h>
 #include <or/that.h>
"""


@pytest.fixture(scope="module")
def imported_check(tmp_path_factory):
    """One `check` over the variant imported from interval-tree-v1's mbox and a variant
    whose series does not apply to the Debian source: one build (ccache is warm: the
    same C as interval-tree-v1), one boot, no build for the stale one."""
    tmp = tmp_path_factory.mktemp("imported")
    home = project_home(tmp / "home", copy_patches=True)
    mbox = tmp / "thread.mbox"
    mbox.write_text(v1_thread())
    r = _add(home, "v1-from-mbox", "--from-mbox", str(mbox), "--base", "fix-reverted",
             "--expect-like", "interval-tree-v1")
    assert r.returncode == 0, r.stderr
    stale = home / "patches" / "stale-hunk"
    stale.mkdir()
    (stale / "0001-stale.patch").write_text(STALE_PATCH)
    (stale / "series").write_text("0001-stale.patch\n")
    (stale / "variant.toml").write_text("[expect.functional]\nclean = true\n")
    r = s2fault("check", "--variant", "v1-from-mbox", "--variant", "stale-hunk", "--mode",
                "functional", "--results", str(tmp / "runs"), env={"S2FAULT_HOME": str(home)})
    cells = {c["variant"]: c for c in json.loads((tmp / "runs" / "check.json").read_text())
             ["cells"]}
    return r, cells


@pytest.mark.slow
def test_imported_variant_builds_and_reproduces_interval_tree_v1(imported_check):
    r, cells = imported_check
    cell = cells["v1-from-mbox"]
    assert cell["match"] is True, (cell["why"], r.stdout, r.stderr)
    assert cell["build"]["key"] and cell["mode"] == "functional"
    kinds = {(s["kind"], s.get("subtype")) for s in cell["splats"]
             if "add_fault_range" in (s.get("frames") or []) + [s.get("function")]}
    assert {("lockdep", "invalid_wait_context"), ("atomic_sleep", "sleeping_in_atomic")} <= kinds


@pytest.mark.slow
def test_a_series_that_does_not_apply_is_named_and_never_built(imported_check):
    r, cells = imported_check
    assert r.returncode == 2, r.stdout + r.stderr
    cell = cells["stale-hunk"]
    assert cell["match"] is None and cell["build"] == {}
    why = ("could not judge: patch stale-hunk/0001-stale.patch does not apply: "
           "Hunk #1 FAILED at 10 in arch/arm64/kvm/mmu.c")
    assert cell["why"] == why
    assert "ERROR" in r.stdout and f"stale-hunk/functional: {why}" in r.stdout
