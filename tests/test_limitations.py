"""Pinned records behind README "Limitations": real console captures, judged by the
project's own analyzer, workload parser and judge, so a claim there cannot drift from
the evidence it rests on.

Nested MMUs (more than one stage-2 per VM): booting 6.12 with kvm-arm.mode=nested under
QEMU 7.2 TCG. Both logs are `s2fault run --kernel <upstream Image> --kvm-mode nested`,
the first with the default `-cpu max`, the second with `--cpu cortex-a72`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import ROOT
from s2fault import project
from s2fault.judge import analyzer
from s2fault.judge import lines as workload
from s2fault.judge.rules import judge
from s2fault.machine import MachineRun
from s2fault.outcome import exit_code_of

DATA = Path(__file__).parent / "data"
NESTED_MAX = (DATA / "nested-mode-console.log").read_text()
NESTED_NVHE = (DATA / "nested-mode-nvhe-console.log").read_text()

# cpufeature.c prints this when kvm-arm.mode=nested asks for ARM64_HAS_NESTED_VIRT and
# ID_AA64MMFR2_EL1.NV is below NV2: QEMU 7.2's `max` has NV=0.
UNAVAILABLE = "CPU features: unavailable: Nested Virtualization Support"


def _readme_nested() -> str:
    """README's "Nested MMUs" section of Limitations, up to the next heading."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("### Nested MMUs")
    end = re.compile(r"^#{1,3} ", re.M).search(readme, start + 1)
    return readme[start:end.start() if end else None]


def _judge(text: str):
    run = MachineRun("exited", "QEMU exited", 0, 3.0, Path("console.log"), Path("qmp.log"),
                     Path("err.log"), ["qemu"])
    return judge(run, text, workload.parse(text))


def test_nested_mode_asked_for_but_not_granted_on_max():
    assert "kvm-arm.mode=nested" in NESTED_MAX
    assert UNAVAILABLE in NESTED_MAX
    assert "detected: Nested Virtualization Support" not in NESTED_MAX
    # KVM falls back to the ordinary VHE host: one stage-2 per VM, as without the option.
    assert "kvm [1]: VHE mode initialized successfully" in NESTED_MAX


def test_the_readme_quotes_the_logs_it_cites():
    """The console lines README shows are lines of the pinned logs, and say what the
    claim rests on: nested asked for, refused, KVM up as a plain VHE host."""
    section = _readme_nested()
    assert "tests/data/nested-mode-console.log" in section
    assert "tests/data/nested-mode-nvhe-console.log" in section
    block = section[section.index("**Console**"):]
    quoted = [ln.strip() for ln in block.splitlines() if ln.startswith("    [")]
    assert quoted, "no console lines quoted under **Console**"
    assert set(quoted) <= {ln.strip() for ln in NESTED_MAX.splitlines()}, quoted
    assert any(UNAVAILABLE in ln for ln in quoted)
    assert any("kvm [1]: VHE mode initialized successfully" in ln for ln in quoted)
    nvhe_lines = [ln.strip() for ln in NESTED_NVHE.splitlines()]
    for quote in re.findall(r"`(WARNING: [^`]+|Malformed early option [^`]+)`", section):
        assert any(ln.endswith(quote) for ln in nvhe_lines), quote


def test_the_readme_states_what_the_judge_says():
    """Each outcome README claims (verdict, exit code, reason) is what the judge gives
    the pinned log: max first, then the nVHE CPU model."""
    section = _readme_nested()
    claims = re.findall(r'judged \*\*(\w+)\*\* \(exit (\d+)\),\s+"([^"]+)"', section)
    assert len(claims) == 2, claims
    for (word, code, reason), log in zip(claims, (NESTED_MAX, NESTED_NVHE), strict=True):
        v = _judge(log)
        assert v.verdict == word, (word, v.verdict, v.reason)
        assert exit_code_of([v.verdict]) == int(code), (code, v.verdict)
        assert v.reason.startswith(re.sub(r"\s+", " ", reason)), (reason, v.reason)


def test_nested_mode_on_max_is_an_ordinary_run_and_not_judged_as_nested():
    assert analyzer.analyze(NESTED_MAX) == []
    v = _judge(NESTED_MAX)
    # The workload ran clean, but not with what was asked: never a pass for "nested".
    assert v.verdict == "skip", v.reason
    assert v.reason.startswith("not applicable: kvm-arm.mode=nested was not granted")
    assert v.preconditions.dic == 0
    assert v.preconditions.exec_faults_taken is True
    assert v.workload.coherent is True


def test_nested_mode_on_an_nvhe_cpu_is_a_boot_warning():
    # cortex-a72 has no VHE, so the kernel is not at EL2 and arm.c's
    # WARN_ON(!is_kernel_in_hyp_mode()) fires before the option is rejected.
    assert "Malformed early option 'kvm-arm.mode'" in NESTED_NVHE
    assert "kvm [1]: Hyp nVHE mode initialized successfully" in NESTED_NVHE
    splats = analyzer.analyze(NESTED_NVHE)
    assert [(s.kind, s.function) for s in splats] == [("warning", "early_kvm_mode_cfg")]
    # The workload still runs; the user's option was refused, so nothing is judged
    # (the WARN is the kernel's answer to a bad option, not a kernel failure).
    v = _judge(NESTED_NVHE)
    assert v.verdict == "skip" and "rejected kvm-arm.mode" in v.reason


def _debian_tree() -> Path:
    trees = sorted((project.cache_dir() / "sources").glob("*/tree/linux-source-6.12"))
    if not trees:
        pytest.skip("Debian linux-source-6.12 is not unpacked in the cache (run `make check`)")
    return trees[0]


def test_6_12_rejects_has_el2_from_userspace():
    """The probe's ENOENT comes from here: HAS_EL2 is bit 7, valid features are bits 0-6,
    and 6.12 has no capability that advertises EL2 to a VMM."""
    tree = _debian_tree()
    host = (tree / "arch/arm64/include/asm/kvm_host.h").read_text()
    uapi = (tree / "arch/arm64/include/uapi/asm/kvm.h").read_text()
    arm = (tree / "arch/arm64/kvm/arm.c").read_text()
    caps = (tree / "include/uapi/linux/kvm.h").read_text()
    assert "#define KVM_VCPU_MAX_FEATURES 7\n" in host
    assert "#define KVM_ARM_VCPU_HAS_EL2\t\t7" in uapi
    assert "if (features & ~KVM_VCPU_VALID_FEATURES)\n\t\treturn -ENOENT;" in arm
    assert "KVM_CAP_ARM_EL2" not in caps
