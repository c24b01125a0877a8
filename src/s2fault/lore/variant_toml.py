"""The variant.toml an import writes: the description and the base, where the series
came from ([provenance]: message-ids, b4's version, reviewers' trailers), and the
expectations, copied from another variant with their comments or a template that
`s2fault check` refuses to judge until someone fills it in. What is written must
load, and copied expectations must mean what they meant where they came from.
"""

from __future__ import annotations

import json
import re
import textwrap
import tomllib
from typing import TYPE_CHECKING

from s2fault import project
from s2fault.errors import InfraError, InputError
from s2fault.kernel import variants

if TYPE_CHECKING:  # lore imports this module; the record is only a type here
    from s2fault.lore import ImportedVariant


def toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, except that TOML wants DEL escaped."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_paragraph(text: str) -> str:
    """A long one-paragraph string as a multi-line TOML string, wrapped with line-ending
    backslashes (which TOML removes together with the newline and the next indent)."""
    escaped = toml_string(" ".join(text.split()))[1:-1]
    lines = textwrap.wrap(escaped, width=90, break_long_words=False, break_on_hyphens=False)
    return '"""\\\n' + " \\\n".join(lines) + '"""'


EXPECT_TEMPLATE = """\
# What this variant must show in each mode: see patches/README.md and the other
# variants. Until the line below is deleted, `s2fault check` builds and runs it but
# judges nothing ("could not judge: expectations of NAME not filled in").
#
# [expect.functional]           # TCG at full speed
# clean = true                  # no splat at all, or:
# splats = [
#     { kind = "lockdep", subtype = "invalid_wait_context", in_frames = ["FUNCTION"] },
# ]
# clean = false
# latency_ratio_min = 10.0      # max exec-fault latency against the reference's, same run
# latency_reference = "upstream"
#
# [expect.dilated]              # -icount time dilation: lockups show up here
# clean = true                  # or:
# splats = [
#     { kind = "soft_lockup", function = ["icache_inval_pou"], task = "s2fault-vmm" },
# ]
# clean = false
"""


def variant_toml(v: ImportedVariant, description: str, base: str | None,
                 expectations: str | None) -> str:
    lines = [f"description = {_toml_paragraph(description)}"]
    if base:
        lines.append(f"base = {toml_string(base)}")
    if expectations is None:
        lines += ["", EXPECT_TEMPLATE.replace("NAME", v.name).rstrip("\n"),
                  f"{variants.FILLED_KEY} = false"]
    lines += [
        "",
        "# Where the series came from (s2fault variant add, with b4).",
        "[provenance]",
        f"origin = {toml_string(v.origin)}",
        f"b4 = {toml_string(v.b4_version)}",
        f"revision = {v.revision}",
    ]
    if v.cover:
        lines.append(f"cover = {toml_string(v.cover)}")
    lines.append("message_ids = [")
    lines += [f"    {toml_string(p.message_id)},  # {p.file}" for p in v.patches]
    lines.append("]")
    trailers = sorted({t for p in v.patches for t in p.trailers if not t.startswith("Signed")})
    if trailers:
        lines.append("trailers = [")
        lines += [f"    {toml_string(t)}," for t in trailers]
        lines.append("]")
    if expectations is not None:
        lines += ["", f"# Expectations copied from {v.expectations_from}.", expectations.strip()]
    return "\n".join(lines) + "\n"


def expectations_like(name: str) -> str:
    """The [expect.*] tables of variant `name`, as written there (comments included)."""
    var = variants.load(name)
    sections = expect_sections((var.folder / "variant.toml").read_text())
    if not sections.strip():
        raise InputError(f"variant {name} declares no [expect.*] tables to copy")
    return sections


def expect_sections(text: str) -> str:
    """The [expect...] tables of a TOML text, each with the comment lines just above it."""
    out: list[str] = []
    pending: list[str] = []  # comments and blank lines that may belong to the next table
    keep = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("[["):
            keep = re.match(r"\[\s*expect\s*[.\]]", stripped) is not None
            if keep:
                while pending and not pending[0].strip():
                    pending.pop(0)
                out += ([""] if out else []) + pending + [line]
            pending = []
            continue
        if not stripped or stripped.startswith("#"):
            pending.append(line)
            continue
        if keep:
            out += pending
            out.append(line)
        pending = []
    return "\n".join(out).strip("\n") + "\n" if out else ""


def validate(text: str, expect_like: str | None) -> None:
    """What is written must load, and copied expectations must mean what they meant."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:  # a bug here, not the user's input
        raise InfraError(f"variant.toml written for the import does not parse: {e}") from e
    if expect_like:
        source = tomllib.loads((project.patches_dir() / expect_like / "variant.toml").read_text())
        if data.get("expect") != source.get("expect"):
            raise InfraError(f"expectations copied from {expect_like} changed in the copy")
