import gzip
import struct
import subprocess

import pytest

from s2fault import guest
from s2fault.errors import InputError
from s2fault.kernel import image


def fake_image(path, page_code=3, magic=image.ARM64_MAGIC):
    head = bytearray(64)
    struct.pack_into("<QQ", head, 16, 1 << 20, page_code << 1)
    struct.pack_into("<I", head, 56, magic)
    path.write_bytes(bytes(head) + b"\0" * 1024)
    return path


@pytest.mark.parametrize("code,size,block", [(1, 4096, 2 << 20), (2, 16384, 32 << 20),
                                             (3, 65536, 512 << 20)])
def test_page_size_from_header(tmp_path, code, size, block):
    k = image.inspect(fake_image(tmp_path / "Image", code))
    assert (k.page_size, k.block_bytes, k.compressed) == (size, block, False)


def test_gzipped_image(tmp_path):
    raw = fake_image(tmp_path / "Image").read_bytes()
    gz = tmp_path / "Image.gz"
    gz.write_bytes(gzip.compress(raw))
    assert image.inspect(gz).compressed


def test_not_an_image(tmp_path):
    (tmp_path / "x").write_bytes(b"\x7fELF" + b"\0" * 100)
    with pytest.raises(InputError, match="not an arm64 Image"):
        image.inspect(tmp_path / "x")
    with pytest.raises(InputError, match="does not exist"):
        image.inspect(tmp_path / "missing")
    with pytest.raises(InputError, match="page size"):
        image.inspect(fake_image(tmp_path / "y", page_code=0))


def test_initramfs_is_a_cpio_that_cpio_reads(tmp_path):
    blob = guest.pack_initramfs({"init": b"#!init", "bin/s2fault-vmm": b"vmm"})
    assert len(blob) % 512 == 0
    archive = tmp_path / "i.cpio"
    archive.write_bytes(blob)
    listing = subprocess.run(["cpio", "-itv"], input=blob, capture_output=True).stdout.decode()
    names = [line.split()[-1] for line in listing.splitlines()]
    assert {"init", "bin/s2fault-vmm", "dev/console", "proc", "sys", "dev"} <= set(names)
    console = next(line for line in listing.splitlines() if line.endswith("dev/console"))
    assert console.startswith("crw") and "5,   1" in console
    assert guest.pack_initramfs({"init": b"#!init"}) == guest.pack_initramfs({"init": b"#!init"})
