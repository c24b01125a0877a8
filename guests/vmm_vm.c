// SPDX-License-Identifier: GPL-2.0
/*
 * The VM and its memory: the code slot at IPA 0, the huge blocks (one
 * memslot each) with the exec target and its nonce written into them, the
 * remap that makes stage 2 forget them between rounds, and the check that
 * the vCPUs' data-fault stores landed.
 */
#define _GNU_SOURCE
#include "vmm.h"

/*
 * One nonce per round. Zero is what an unwritten or wrongly mapped block
 * would yield; the previous round's is what stale code would return.
 */
void make_nonces(void)
{
	uint32_t n, prev = 0;
	unsigned int r;

	for (r = 0; r < lab.nr_rounds; r++) {
		if (getrandom(&n, sizeof(n), 0) != sizeof(n))
			n = (uint32_t)((time(NULL) + r) * 2654435761u);
		while (!n || n == prev)
			n += 0x5a5a5a5a;
		lab.rounds[r].nonce = n;
		prev = n;
	}
}

/* ---- VM setup -------------------------------------------------------- */

int kvm_ioctl_checked(int fd, unsigned long req, void *arg,
		      const char *name)
{
	int ret = ioctl(fd, req, arg);

	if (ret < 0)
		infra_fail(name, errno);
	return ret;
}

/* A size of 0 deletes the slot. */
static void set_memory_region(unsigned int slot, uint64_t ipa, size_t size,
			      void *mem)
{
	struct kvm_userspace_memory_region region = {
		.slot = slot,
		.guest_phys_addr = ipa,
		.memory_size = size,
		.userspace_addr = (uintptr_t)mem,
	};

	kvm_ioctl_checked(lab.vm_fd, KVM_SET_USER_MEMORY_REGION, &region,
			  "KVM_SET_USER_MEMORY_REGION");
}

void create_vm(void)
{
	int ret;

	lab.kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (lab.kvm_fd < 0)
		infra_fail("open /dev/kvm", errno);
	ret = ioctl(lab.kvm_fd, KVM_GET_API_VERSION, 0);
	if (ret != KVM_API_VERSION)
		fail("KVM_GET_API_VERSION: %d, expected %d", ret,
		     KVM_API_VERSION);
	lab.vm_fd = ioctl(lab.kvm_fd, KVM_CREATE_VM, 0);
	if (lab.vm_fd < 0)
		infra_fail("KVM_CREATE_VM", errno);
	ret = ioctl(lab.kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (ret < 0)
		infra_fail("KVM_GET_VCPU_MMAP_SIZE", errno);
	lab.run_size = ret;
	ret = ioctl(lab.vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
	if (ret > 0 && lab.nr_vcpus > (unsigned int)ret)
		fail("KVM_CAP_MAX_VCPUS is %d, %u requested", ret,
		     lab.nr_vcpus);
}

void setup_code_slot(void)
{
	size_t len = (guest_code_end - guest_code_start) * sizeof(uint32_t);

	lab.code_mem = mmap(NULL, CODE_SLOT_SIZE, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (lab.code_mem == MAP_FAILED)
		infra_fail("mmap of the code slot", errno);
	memcpy(lab.code_mem, guest_code_start, len);
	set_memory_region(CODE_SLOT, GUEST_CODE_IPA, CODE_SLOT_SIZE,
			  lab.code_mem);
}

static void describe_size(char *s, size_t n, size_t bytes)
{
	if (!(bytes & ((1UL << 20) - 1)))
		snprintf(s, n, "%zu MiB", bytes >> 20);
	else
		snprintf(s, n, "%zu KiB", bytes >> 10);
}

/* movz/movk take their 16-bit immediate in bits [20:5]. */
static uint32_t a64_set_imm16(uint32_t insn, uint16_t imm)
{
	return (insn & ~(0xffffU << 5)) | ((uint32_t)imm << 5);
}

static void *block_mem(unsigned int k)
{
	return (char *)lab.block_mem + (size_t)k * lab.block_size;
}

static void write_exec_target(unsigned int k, uint32_t nonce)
{
	size_t len = (guest_exec_target_end - guest_exec_target) *
		     sizeof(uint32_t);
	size_t at = guest_exec_nonce - guest_exec_target;
	uint32_t *code = block_mem(k);

	memcpy(code, guest_exec_target, len);
	code[at] = a64_set_imm16(code[at], nonce & 0xffff);
	code[at + 1] = a64_set_imm16(code[at + 1], nonce >> 16);
	/* KVM cleans/invalidates on map; this only orders our own view. */
	__builtin___clear_cache((char *)code, (char *)code + len);
}

/* Every block's slot, at consecutive IPAs; a size of 0 deletes them. */
static void set_block_slots(size_t size)
{
	unsigned int k;

	for (k = 0; k < lab.nr_blocks; k++)
		set_memory_region(BLOCK_SLOT + k,
				  lab.block_ipa + (uint64_t)k * lab.block_size,
				  size, block_mem(k));
}

static void write_exec_targets(uint32_t nonce)
{
	unsigned int k;

	for (k = 0; k < lab.nr_blocks; k++)
		write_exec_target(k, nonce);
}

void setup_block_slot(void)
{
	int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE;
	size_t bytes = (size_t)lab.nr_blocks * lab.block_size;
	char size[32];

	flags |= (__builtin_ctzl(lab.block_size)) << MAP_HUGE_SHIFT;
	lab.block_mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, flags, -1,
			     0);
	if (lab.block_mem == MAP_FAILED) {
		describe_size(size, sizeof(size), lab.block_size);
		fail("hugetlb mmap of %u x %s failed: %s", lab.nr_blocks,
		     size, strerror(errno));
	}
	write_exec_targets(lab.rounds[0].nonce);
	/* Block-aligned IPA, clear of the code slot and the MMIO window. */
	lab.block_ipa = lab.block_size > (1UL << 30) ? lab.block_size :
			1UL << 30;
	set_block_slots(lab.block_size);
	/* The data half of the block, where no code is. */
	lab.storm_range = lab.nr_storm ? lab.block_size / 2 : 0;
	if (lab.storm_range > STORM_RANGE)
		lab.storm_range = STORM_RANGE;
}

static uint64_t *data_slot(unsigned int k, unsigned int vcpu)
{
	return (uint64_t *)((char *)block_mem(k) + lab.block_size / 2 +
			    (size_t)vcpu * DATA_STRIDE);
}

/*
 * Between rounds, with no vCPU in KVM_RUN, stage 2 forgets the blocks so
 * that the next round takes the data fault (mapped without execute) and
 * the execute-permission fault again, and the code gets a new nonce.
 *
 * memslot: deleting the memslots unmaps them at stage 2; the hugetlb pages
 * stay populated. dontneed: the memslots stay; MADV_DONTNEED frees the
 * pages, the MMU notifier unmaps them at stage 2, and writing the new code
 * faults in fresh zeroed pages (so the data-fault stores must land in
 * those, see check_stores()).
 */
void remap_blocks(uint32_t nonce)
{
	if (lab.remap == REMAP_DONTNEED) {
		if (madvise(lab.block_mem, (size_t)lab.nr_blocks *
			    lab.block_size, MADV_DONTNEED) < 0)
			infra_fail("madvise(MADV_DONTNEED) of the blocks",
				   errno);
		write_exec_targets(nonce);
		/* Else this round would test nothing new: say so. */
		if (*data_slot(0, 0))
			fail("MADV_DONTNEED left the block's data in place");
		return;
	}
	set_block_slots(0);
	write_exec_targets(nonce);
	set_block_slots(lab.block_size);
}

/* What vCPU @v stores in its data slots in round @r: never 0 nor reused. */
uint64_t data_token(const struct vcpu *v, unsigned int r)
{
	return (uint64_t)lab.rounds[r].nonce << 32 | (uint32_t)v->index;
}

/*
 * After round @r, with no vCPU in KVM_RUN: did each vCPU's data-fault
 * store reach its block? The guest stored with the MMU off (non-cacheable
 * unless the CPU forces write-back at stage 2), so drop any line this
 * process may hold before reading it back.
 */
void check_stores(unsigned int r)
{
	struct round *rd = &lab.rounds[r];
	uint64_t *slot, got, want;
	unsigned int i, k;

	for (i = 0; i < lab.nr_vcpus; i++) {
		if (!rd->samples[i].stored)
			continue;
		want = data_token(&lab.vcpus[i], r);
		for (k = 0; k < lab.nr_blocks; k++) {
			slot = data_slot(k, i);
			asm volatile("dc civac, %0\n\tdsb ish"
				     : : "r" (slot) : "memory");
			got = __atomic_load_n(slot, __ATOMIC_RELAXED);
			if (got == want)
				continue;
			rd->stores_lost++;
			add_error_locked("round %u: vcpu %u's store to block %u did not land (0x%llx, not 0x%llx)",
					 r, i, k, (unsigned long long)got,
					 (unsigned long long)want);
		}
	}
}
