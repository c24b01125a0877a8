"""Variants from a mailing list: a patch series -> patches/NAME/.

The series comes from an mbox file (works offline) or from lore by message-id.
b4 does what a maintainer does with a thread: it picks the newest revision,
puts the patches in order and collects the trailers (Reviewed-by, Acked-by,
Tested-by) that reviewers sent as replies. Each patch b4 hands back becomes a
git-format-patch style file, split with git mailinfo; the folder gets a quilt
`series` and a variant.toml with provenance (message-ids, b4's version) and
expectations: copied from another variant, or a template that `s2fault check`
refuses to judge until someone fills it in. A guessed expectation would turn
a variant nobody looked at into a silent pass.

The folder is written beside its final place and renamed into it, so a failed
import leaves nothing half-written under patches/.

Here: the import itself, the patch files and the folder's publication. The mail
side (b4, the lore fetch, the headers) is lore_mail's; the variant.toml, lore_toml's.
"""

from __future__ import annotations

import argparse
import email.policy
import os
import re
import shutil
import subprocess
import tempfile
import textwrap
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from s2fault import hosttools, project
from s2fault.errors import InfraError, InputError
from s2fault.kernel import variants
from s2fault.lore import mail as lore_mail
from s2fault.lore import variant_toml

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
# The body of a git-format-patch file ends its commit message at this line.
PATCH_SEPARATOR = "---"


@dataclass(frozen=True)
class ImportedPatch:
    file: str
    subject: str
    message_id: str
    trailers: tuple[str, ...]


@dataclass(frozen=True)
class ImportedVariant:
    name: str
    folder: Path
    patches: tuple[ImportedPatch, ...]
    origin: str
    cover: str | None
    revision: int
    b4_version: str
    expectations_from: str | None  # None: the template, not judged until filled in


def add_variant(
    name: str,
    mbox: Path | None = None,
    msgid: str | None = None,
    base: str | None = None,
    expect_like: str | None = None,
    force: bool = False,
) -> ImportedVariant:
    """Turn a patch series into patches/NAME/. Exactly one of `mbox` and `msgid`."""
    if (mbox is None) == (msgid is None):
        raise InputError("give one of --from-mbox FILE and --from-msgid ID")
    if not NAME_RE.fullmatch(name):
        raise InputError(f"variant name '{name}' must be letters, digits and ._+- "
                         "(not starting with a dot or dash)")
    root = project.patches_dir()
    dest = root / name
    if dest.exists() and not force:
        raise InputError(f"variant {name} already exists ({dest}); --force replaces it")
    if base is not None:
        if base == name:
            raise InputError(f"variant {name} cannot be its own base")
        variants.load(base)  # names the valid ones when it is unknown
    expectations = variant_toml.expectations_like(expect_like) if expect_like else None
    if mbox is not None and not mbox.exists():  # b4 also reads a maildir
        raise InputError(f"mbox {mbox} does not exist")
    b4 = lore_mail.b4_command()
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".b4-", dir=root) as scratch_name:
        scratch = Path(scratch_name)
        if msgid is not None:
            msgid, mbox = lore_mail.fetch_thread(msgid, scratch / "thread.mbox")
            origin = f"lore {lore_mail.lore_host()} <{msgid}>"
        else:
            assert mbox is not None  # exactly one of mbox and msgid
            origin = f"mbox {mbox.resolve()}"
        assert mbox is not None
        what = f"thread <{msgid}>" if msgid else f"mbox {mbox}"
        messages, cover = lore_mail.b4_am(b4, mbox, scratch / "am", msgid, what)
        staged = scratch / "variant"
        staged.mkdir()
        patches = _write_patches(messages, staged)
        revision = lore_mail.revision(messages[0], cover)
        imported = ImportedVariant(
            name=name, folder=dest, patches=tuple(patches), origin=origin,
            cover=lore_mail.clean_msgid(cover) if cover is not None else None,
            revision=revision,
            b4_version=lore_mail.b4_version(b4), expectations_from=expect_like,
        )
        text = variant_toml.variant_toml(imported, lore_mail.description(messages[0], cover),
                                      base, expectations)
        variant_toml.validate(text, expect_like)
        (staged / "variant.toml").write_text(text)
        _publish(staged, dest, force)
    return imported


def _write_patches(messages: list[EmailMessage], folder: Path) -> list[ImportedPatch]:
    git = hosttools.require("git")
    total = len(messages)
    out = []
    series = ["# Imported with b4 (see [provenance] in variant.toml), in b4's order."]
    for n, msg in enumerate(messages, 1):
        info, body, diff = _mailinfo(git, msg, folder)
        if "diff --git " not in diff and "\n+++ " not in "\n" + diff:
            raise InputError(f"message <{lore_mail.clean_msgid(msg)}> "
                             f"({info.get('Subject', '?')}) has no diff")
        subject = (info.get("Subject", "").strip()
                   or lore_mail.bare_subject(str(msg.get("Subject", ""))))
        prefix = "[PATCH]" if total == 1 else f"[PATCH {n}/{total}]"
        author = info.get("Email", "")
        if info.get("Author"):
            author = f"{info['Author']} <{author}>"
        name = f"{n:04d}-{_file_slug(subject)}.patch"
        msgid = lore_mail.clean_msgid(msg)
        head = [
            "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001",
            f"From: {author}",
            f"Date: {info.get('Date', '')}",
            _fold(f"Subject: {prefix} {subject}"),
        ]
        if msgid:
            head.append(f"Message-Id: <{msgid}>")
        text = "\n".join(head) + "\n\n" + body.rstrip("\n") + "\n"
        if not diff.startswith(PATCH_SEPARATOR + "\n"):
            text += PATCH_SEPARATOR + "\n"
        # The blank line b4 leaves between messages is not part of the diff.
        text += diff.rstrip("\n") + "\n"
        (folder / name).write_text(text)
        series.append(name)
        out.append(ImportedPatch(name, subject, msgid, tuple(
            ln for ln in body.splitlines() if lore_mail.TRAILER_RE.match(ln))))
    (folder / "series").write_text("\n".join(series) + "\n")
    return out


def _mailinfo(git: str, msg: EmailMessage, scratch: Path) -> tuple[dict[str, str], str, str]:
    """git mailinfo: the author, the subject without its [PATCH] prefix, the commit
    message and the diff, as git am would see them (MIME and encodings undone)."""
    msg_file, patch_file = scratch / ".msg", scratch / ".patch"
    r = subprocess.run([git, "mailinfo", "--scissors", str(msg_file), str(patch_file)],
                       input=msg.as_bytes(policy=email.policy.default.clone(linesep="\n")),
                       capture_output=True)
    try:
        if r.returncode != 0:
            raise InputError(f"message <{lore_mail.clean_msgid(msg)}>: git mailinfo failed: "
                             f"{r.stderr.decode(errors='replace').strip()}")
        info = {}
        for line in r.stdout.decode(errors="replace").splitlines():
            key, _, value = line.partition(": ")
            info[key] = value
        body = msg_file.read_text(errors="replace")
        diff = patch_file.read_text(errors="replace")
    finally:
        msg_file.unlink(missing_ok=True)
        patch_file.unlink(missing_ok=True)
    return info, body, diff


def _file_slug(subject: str) -> str:
    """format-patch's file name: runs of other characters become one dash, 52 at most."""
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", subject).strip("-.")
    return slug[:52] or "patch"


def _fold(header: str, width: int = 78) -> str:
    lines = textwrap.wrap(header, width=width, break_long_words=False, break_on_hyphens=False)
    return "\n ".join(lines) if lines else header


def _publish(staged: Path, dest: Path, force: bool) -> None:
    """Rename the finished folder into place; a replaced one is moved aside first."""
    trash = None
    try:
        if dest.exists():
            if not force:
                raise InputError(f"variant {dest.name} already exists ({dest}); "
                                 "--force replaces it")
            trash = Path(tempfile.mkdtemp(prefix=f".old-{dest.name}-", dir=dest.parent))
            os.rename(dest, trash / dest.name)
        try:
            os.rename(staged, dest)
        except OSError:
            if trash is not None:  # put the old one back rather than lose both
                os.rename(trash / dest.name, dest)
            raise
    except OSError as e:
        raise InfraError(f"cannot write {dest}: {e.strerror}") from e
    finally:
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)


def cmd_variant_add(args: argparse.Namespace) -> int:
    v = add_variant(args.name, Path(args.from_mbox) if args.from_mbox else None,
                    args.from_msgid, base=args.base, expect_like=args.expect_like,
                    force=args.force)
    print(f"{v.name}: {len(v.patches)} patch(es), revision v{v.revision}, from {v.origin} "
          f"(b4 {v.b4_version})")
    for p in v.patches:
        extra = [t for t in p.trailers if not t.startswith("Signed-off-by")]
        print(f"  {p.file}" + (f"  [{'; '.join(extra)}]" if extra else ""))
    if v.expectations_from:
        print(f"  expectations: copied from {v.expectations_from}")
    else:
        print(f"  expectations: to fill in, in {v.folder / 'variant.toml'} "
              f"(check will not judge {v.name} until then)")
    return 0
