"""The mail side of an import: a thread from lore (or an mbox), the series b4 picks out
of it, and what its messages' headers say (message-ids, revision, description).

b4 does what a maintainer does with a thread: it picks the newest revision, puts the
patches in order and collects the trailers reviewers sent as replies. A series with a
patch missing is refused: a verdict on it would be about a kernel nobody posted.
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import logging
import re
import shutil
import subprocess
import sys
import urllib.parse
from email.message import EmailMessage
from pathlib import Path

from s2fault.errors import InfraError, InputError

B4_PACKAGE = "b4"  # PyPI
# What b4 names its output in the scratch folder (b4 am -n).
SLUG = "series"
TRAILER_RE = re.compile(r"^[A-Z][A-Za-z-]*-by: ", re.MULTILINE)


def b4_command() -> str:
    """b4 of s2fault's own environment first (its version goes into the provenance)."""
    beside = Path(sys.executable).parent / "b4"
    path = str(beside) if beside.exists() else shutil.which("b4")
    if not path:
        raise InfraError(f"missing tool 'b4' (PyPI package: {B4_PACKAGE}; run 'make setup')")
    return path


def b4_version(b4: str) -> str:
    r = subprocess.run([b4, "--version"], capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def lore_host() -> str:
    try:
        import b4
    except ImportError:
        return "lore.kernel.org"
    return urllib.parse.urlsplit(str(b4.get_main_config().get("midmask", ""))).netloc


def fetch_thread(msgid: str, dest: Path) -> tuple[str, Path]:
    """(message-id, mbox file) of the thread of `msgid` from lore (or wherever git config
    b4.midmask points), through b4's own lore client; one line when the archive cannot
    be reached. `msgid` may be <id>, id, or a lore URL (b4 reads it as lore does)."""
    try:
        import b4
        import liblore
    except ImportError as e:
        raise InfraError(f"b4 is not importable ({e}; PyPI package: {B4_PACKAGE})") from e
    # Their failures are reported here in one line; their retry chatter is not.
    for logger_name in ("b4", "liblore"):
        logging.getLogger(logger_name).addHandler(logging.NullHandler())
        logging.getLogger(logger_name).propagate = False
    b4.setup_config(argparse.Namespace(config=None))
    msgid = b4.parse_msgid(msgid)
    host = lore_host()
    node = b4.get_lore_node()
    try:
        data = node.get_mbox_by_msgid(msgid, nocache=True)
    except liblore.RemoteError as e:
        status = getattr(e, "status_code", None)
        if status == 404:
            raise InputError(f"message <{msgid}> not found on {host}") from e
        if status is None:
            raise InfraError(f"cannot reach {host}: {_short_reason(str(e))}; "
                             "use --from-mbox") from e
        raise InfraError(f"{host} answered HTTP {status} for <{msgid}>; use --from-mbox") from e
    except (OSError, ValueError) as e:  # a body that is not gzip, a local failure
        raise InfraError(f"thread <{msgid}> from {host} cannot be read: {e}") from e
    if not data:
        raise InputError(f"message <{msgid}> not found on {host}")
    dest.write_bytes(data)
    return msgid, dest


def _short_reason(text: str) -> str:
    """The cause inside requests' nested connection errors, e.g. 'Connection refused'."""
    m = re.search(r"\[Errno -?\d+\] ([^)'\"]+)", text)
    if m:
        return m.group(1).strip()
    for phrase in ("timed out", "Name or service not known", "Connection refused"):
        if phrase in text:
            return phrase
    return text.strip()[-160:]


def b4_am(b4: str, mbox: Path, outdir: Path, msgid: str | None, what: str
          ) -> tuple[list[EmailMessage], EmailMessage | None]:
    """Let b4 choose the series (newest revision, in order, trailers applied); as a
    maildir, which unlike b4's mbox output needs no From-line unescaping."""
    cmd = [b4, "--offline-mode", "--no-stdin", "--no-interactive", "am", "--use-local-mbox",
           str(mbox), "--outdir", str(outdir), "--no-cache", "--mbox-name", SLUG,
           "--save-as-maildir"]
    if msgid:
        cmd.append(msgid)
    r = subprocess.run(cmd, capture_output=True, text=True)
    maildir = outdir / f"{SLUG}.maildir"
    emls = sorted((maildir / "new").glob("*.eml")) if maildir.is_dir() else []
    if r.returncode != 0 or not emls:
        lines = [ln.strip() for ln in (r.stderr + r.stdout).splitlines() if ln.strip()
                 and "OFFLINE mode" not in ln and not ln.startswith("Analyzing")]
        why = lines[-1] if lines else "b4 found no messages"
        if r.returncode == 0 and not emls:
            why = "no patches in it" if not lines else why.rstrip(".").lower()
        raise InputError(f"{what}: {why}")
    parser = email.parser.BytesParser(policy=email.policy.default)
    messages = [parser.parsebytes(p.read_bytes()) for p in emls]
    missing = _missing_patches(messages)
    if missing:
        raise InputError(f"{what}: the series is incomplete (no patch {missing})")
    cover_file = outdir / f"{SLUG}.cover"
    cover = parser.parsebytes(cover_file.read_bytes()) if cover_file.is_file() else None
    return messages, cover


def _missing_patches(messages: list[EmailMessage]) -> str:
    """'2/3' when b4 found patches 1/3 and 3/3 only: a partial series builds, and a
    verdict on it would be about a kernel nobody posted."""
    counters = set()
    total = 0
    for msg in messages:
        m = re.search(r"\[[^]]*?\b(\d+)/(\d+)\b[^]]*\]", str(msg.get("Subject", "")))
        if m:
            counters.add(int(m.group(1)))
            total = max(total, int(m.group(2)))
    gaps = [n for n in range(1, total + 1) if n not in counters]
    return ", ".join(f"{n}/{total}" for n in gaps)


def clean_msgid(msg: EmailMessage) -> str:
    return str(msg.get("Message-Id", "")).strip().strip("<>")


def bare_subject(subject: str) -> str:
    """'[PATCH v2 3/7] KVM: arm64: x' -> 'KVM: arm64: x'."""
    subject = " ".join(subject.split())
    return re.sub(r"^(\s*(re:|\[[^]]*\]))+\s*", "", subject, flags=re.IGNORECASE)


def revision(first: EmailMessage, cover: EmailMessage | None) -> int:
    for msg in (cover, first):
        if msg is None:
            continue
        m = re.search(r"^\s*\[[^]]*\bv(\d+)\b[^]]*\]", str(msg.get("Subject", "")),
                      re.IGNORECASE)
        if m:
            return int(m.group(1))
    return 1


def description(first: EmailMessage, cover: EmailMessage | None) -> str:
    """The cover letter's subject and first paragraph (else the first patch's)."""
    msg = cover if cover is not None else first
    subject = bare_subject(str(msg.get("Subject", "")))
    text = ""
    body = msg.get_body(preferencelist=("plain",))
    if body is not None:
        content = body.get_content()
        for para in re.split(r"\n\s*\n", content.split("\n---\n", 1)[0]):
            para = " ".join(para.split())
            if para and "*** BLURB HERE ***" not in para and not TRAILER_RE.match(para):
                text = para
                break
    words = f"{subject}. {text}" if text else subject
    return words if len(words) <= 800 else words[:797].rsplit(" ", 1)[0] + " ..."
