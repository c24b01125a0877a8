from s2fault.kernel import kconfig


def test_parse_set_and_unset():
    text = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\n# comment\nCONFIG_D=64\n"
    assert kconfig.parse(text) == {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": '"x y"',
                                   "CONFIG_D": "64"}


def test_dropped_names_symbols_that_did_not_survive(tmp_path):
    frag = tmp_path / "f.config"
    frag.write_text("CONFIG_KVM=y\nCONFIG_HUGETLBFS=y\n# CONFIG_SWAP is not set\n")
    final = "CONFIG_KVM=y\n# CONFIG_HUGETLBFS is not set\nCONFIG_SWAP=y\n"
    assert kconfig.dropped([frag], final) == ["CONFIG_HUGETLBFS=y (got n)", "CONFIG_SWAP=n (got y)"]


def test_later_fragment_wins(tmp_path):
    a, b = tmp_path / "a.config", tmp_path / "b.config"
    a.write_text("CONFIG_ARM64_64K_PAGES=y\n")
    b.write_text("# CONFIG_ARM64_64K_PAGES is not set\nCONFIG_ARM64_4K_PAGES=y\n")
    assert kconfig.requested([a, b]) == {
        "CONFIG_ARM64_64K_PAGES": "n", "CONFIG_ARM64_4K_PAGES": "y"}


def test_default_fragments_request_what_design_lists():
    wanted = kconfig.requested(kconfig.fragment_paths())
    for sym in ("CONFIG_ARM64_64K_PAGES", "CONFIG_KVM", "CONFIG_HUGETLBFS", "CONFIG_PROVE_LOCKING",
                "CONFIG_DEBUG_ATOMIC_SLEEP", "CONFIG_SOFTLOCKUP_DETECTOR", "CONFIG_KALLSYMS",
                "CONFIG_DETECT_HUNG_TASK", "CONFIG_BLK_DEV_INITRD", "CONFIG_SERIAL_AMBA_PL011"):
        assert wanted.get(sym) == "y", sym


def test_page_size_of():
    assert kconfig.page_size_of("CONFIG_ARM64_4K_PAGES=y\n") == 4096
    assert kconfig.page_size_of("CONFIG_ARM64_64K_PAGES=y\n") == 65536
    assert kconfig.page_size_of("") is None
