// SPDX-License-Identifier: GPL-2.0
/*
 * s2fault-vmm: provoke concurrent stage-2 execute-permission faults on one
 * huge block and report, per vCPU, how long the fault took and whether the
 * code the VMM just wrote is what the vCPU executed.
 *
 * Each vCPU stores into the block (data fault: KVM maps it without execute
 * permission), reports "ready" and is parked; once all are parked they are
 * released together and branch into the block (execute permission fault:
 * KVM invalidates the I-cache for the block, the path under test). The
 * guest code is in guest_code.S, the register/MMIO contract in guest_abi.h.
 *
 * That is one round; --rounds K runs K of them in the same VM, with the
 * same hugetlb page and vCPU threads. Between rounds, while no vCPU is in
 * KVM_RUN, the block's memslot is deleted and added again (so stage 2
 * forgets the block and both faults happen again), a new nonce is written
 * into the code in the block and every vCPU is reset to the entry. Rounds
 * exist because the first exec fault after boot can be slow for reasons
 * other than the I-cache (lockdep validating the fault path's lock chains
 * for the first time: 30-45 ms on a debug kernel, as slow as the bug), so
 * round 0 is a warm-up; the later rounds are independent samples of the
 * same boot, and each checks coherence again against a nonce that differs
 * from the previous round's (stale code would return the old one).
 *
 * Output: one "S2FAULT-RESULT {json}" line on stdout: top-level values of
 * the last round, "rounds" with each round's.
 * Exit: 0 run completed, 1 a vCPU executed stale code, 2 bad usage,
 * 3 infrastructure (no KVM, no hugetlb memory, ioctl failure, timeout).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "compiler.h"
#include "guest_abi.h"

#define EXIT_OK		0
#define EXIT_INCOHERENT	1
#define EXIT_USAGE	2
#define EXIT_INFRA	3

#define CODE_SLOT_SIZE	0x10000UL
#define CODE_SLOT	0
#define BLOCK_SLOT	1
#define DATA_STRIDE	64
#define MAX_ROUNDS	1000
#define MAX_ERRORS	64
#define ERROR_LEN	512
#define CTR_IDC		(1UL << 28)
#define CTR_DIC		(1UL << 29)

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT	26
#endif

enum vcpu_state { VCPU_PENDING, VCPU_READY, VCPU_RELEASED, VCPU_DONE,
		  VCPU_FAILED };

/* What one vCPU reported in one round. */
struct sample {
	bool have_t0, have_t1, have_value, have_wall;
	uint64_t t0, t1, value;
	struct timespec released, exited;
};

struct round {
	uint32_t nonce;
	bool ended;
	struct timespec start, end;
	struct sample *samples;		/* one per vCPU */
};

struct vcpu {
	int index;
	int fd;
	struct kvm_run *run;
	enum vcpu_state state;		/* in the current round */
	struct sample *s;		/* the current round's */
	uint64_t exc_esr, exc_elr, exc_far;
};

struct lab {
	/* options */
	unsigned int nr_vcpus;
	unsigned int nr_rounds;
	unsigned int timeout_s;
	unsigned int watchdog_thresh;
	size_t block_size;
	/* host facts */
	long page_size;
	uint64_t ctr, cntfrq;
	/* VM */
	int kvm_fd, vm_fd;
	size_t run_size;
	uint64_t block_ipa;
	void *code_mem, *block_mem;
	struct vcpu *vcpus;
	/* vCPU threads and the main thread meet here, see run_rounds() */
	pthread_barrier_t barrier;
	/* progress, under lock */
	pthread_mutex_t lock;
	const char *phase;		/* for a timeout outside a round */
	bool vcpus_running;
	unsigned int nr_started;	/* rounds begun, the last one current */
	/* report */
	struct round rounds[MAX_ROUNDS];
	unsigned int watchdog_armed;
	struct timespec start;
	unsigned int nr_errors;
	char errors[MAX_ERRORS][ERROR_LEN];
};

static struct lab lab = {
	.nr_vcpus = 8,
	.nr_rounds = 1,
	.timeout_s = 60,
	.kvm_fd = -1,
	.vm_fd = -1,
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.phase = "starting",
};

static void add_error(const char *fmt, va_list ap)
	__printf(1, 0);

/* Callers hold lab.lock: vCPU threads and the timeout thread add errors too. */
static void add_error(const char *fmt, va_list ap)
{
	if (lab.nr_errors < MAX_ERRORS)
		vsnprintf(lab.errors[lab.nr_errors++], ERROR_LEN, fmt, ap);
}

static void add_error_locked(const char *fmt, ...)
	__printf(1, 2);

static void add_error_locked(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	add_error(fmt, ap);
	va_end(ap);
}

/* ---- output --------------------------------------------------------- */

struct buf {
	char *p;
	size_t len, cap;
};

static void buf_add(struct buf *b, const char *fmt, ...)
	__printf(2, 3);

static void buf_add(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (b->len + n < b->cap)
			break;
		b->cap = 2 * (b->len + n + 64);
		b->p = realloc(b->p, b->cap);
		if (!b->p)
			_exit(EXIT_INFRA);
	}
	b->len += n;
}

static void buf_add_json_string(struct buf *b, const char *s)
{
	buf_add(b, "\"");
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			buf_add(b, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			buf_add(b, "\\u%04x", *s);
		else
			buf_add(b, "%c", *s);
	}
	buf_add(b, "\"");
}

static double ts_diff_us(const struct timespec *a, const struct timespec *b)
{
	return (b->tv_sec - a->tv_sec) * 1e6 + (b->tv_nsec - a->tv_nsec) / 1e3;
}

/*
 * Per-vCPU lists of @rd; "null" for what a vCPU did not report. Before the
 * vCPUs exist (setup failed) the lists are empty.
 */
static void add_fault_lists(struct buf *b, const struct round *rd)
{
	const struct sample *s;
	unsigned int i;

	buf_add(b, "\"exec_fault_us\":[");
	for (i = 0; i < lab.nr_vcpus && lab.vcpus; i++) {
		s = &rd->samples[i];
		buf_add(b, i ? "," : "");
		if (s->have_t0 && s->have_t1 && lab.cntfrq)
			buf_add(b, "%.1f",
				(double)(int64_t)(s->t1 - s->t0) * 1e6 / lab.cntfrq);
		else
			buf_add(b, "null");
	}
	buf_add(b, "],\"exec_fault_wall_us\":[");
	for (i = 0; i < lab.nr_vcpus && lab.vcpus; i++) {
		s = &rd->samples[i];
		buf_add(b, i ? "," : "");
		if (s->have_wall)
			buf_add(b, "%.1f", ts_diff_us(&s->released, &s->exited));
		else
			buf_add(b, "null");
	}
	buf_add(b, "]");
}

/* vCPUs of @rd that returned (@match) or did not return its nonce. */
static unsigned int count_values(const struct round *rd, bool match)
{
	unsigned int i, n = 0;

	for (i = 0; i < lab.nr_vcpus && lab.vcpus; i++)
		if (rd->samples[i].have_value &&
		    (rd->samples[i].value == rd->nonce) == match)
			n++;
	return n;
}

static bool round_coherent(const struct round *rd)
{
	return count_values(rd, true) == lab.nr_vcpus;
}

/* Every round ran, and in each every vCPU returned that round's nonce. */
static bool all_coherent(void)
{
	unsigned int r;

	if (lab.nr_started < lab.nr_rounds)
		return false;
	for (r = 0; r < lab.nr_rounds; r++)
		if (!round_coherent(&lab.rounds[r]))
			return false;
	return true;
}

static void add_rounds(struct buf *b)
{
	const struct round *rd;
	struct timespec now;
	unsigned int r;

	buf_add(b, ",\"rounds\":[");
	for (r = 0; r < lab.nr_started; r++) {
		rd = &lab.rounds[r];
		buf_add(b, "%s{\"nonce\":\"0x%08x\",", r ? "," : "",
			rd->nonce);
		add_fault_lists(b, rd);
		buf_add(b, ",\"values_ok\":%u,\"coherent\":%s",
			count_values(rd, true),
			round_coherent(rd) ? "true" : "false");
		if (rd->ended)
			now = rd->end;
		else
			clock_gettime(CLOCK_MONOTONIC, &now);
		buf_add(b, ",\"elapsed_ms\":%.0f}",
			ts_diff_us(&rd->start, &now) / 1e3);
	}
	buf_add(b, "]");
}

/*
 * One write(2), so the line is not split by our own buffering. The
 * top-level per-vCPU values are those of the current (last begun) round.
 */
static void print_result(void)
{
	const struct round *cur = &lab.rounds[lab.nr_started ?
					       lab.nr_started - 1 : 0];
	struct buf b = { 0 };
	struct timespec now;
	unsigned int i;

	clock_gettime(CLOCK_MONOTONIC, &now);
	buf_add(&b, "\nS2FAULT-RESULT {\"vcpus\":%u,\"page_size\":%ld",
		lab.nr_vcpus, lab.page_size);
	buf_add(&b, ",\"block_bytes\":%zu,\"ctr_el0\":\"0x%llx\"",
		lab.block_size, (unsigned long long)lab.ctr);
	buf_add(&b, ",\"dic\":%d,\"idc\":%d,\"cntfrq\":%llu",
		!!(lab.ctr & CTR_DIC), !!(lab.ctr & CTR_IDC),
		(unsigned long long)lab.cntfrq);
	buf_add(&b, ",\"nonce\":\"0x%08x\",\"coherent\":%s,",
		cur->nonce, all_coherent() ? "true" : "false");
	add_fault_lists(&b, cur);
	buf_add(&b, ",\"values_ok\":%u", count_values(cur, true));
	add_rounds(&b);
	buf_add(&b, ",\"watchdog_armed\":%u,\"errors\":[",
		lab.watchdog_armed);
	for (i = 0; i < lab.nr_errors; i++) {
		buf_add(&b, i ? "," : "");
		buf_add_json_string(&b, lab.errors[i]);
	}
	buf_add(&b, "],\"elapsed_ms\":%.0f}\n",
		ts_diff_us(&lab.start, &now) / 1e3);
	if (write(STDOUT_FILENO, b.p, b.len) < 0)
		perror("write");
	free(b.p);
}

/*
 * The single way out once the run has started: with lab.lock held, so the
 * result is printed once, and never released, so that vCPU threads still
 * running cannot change what is being printed.
 */
static void __noreturn finish_locked(int code)
{
	print_result();
	_exit(code);
}

static void __noreturn fail(const char *fmt, ...)
	__printf(1, 2);

static void __noreturn fail(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&lab.lock);
	va_start(ap, fmt);
	add_error(fmt, ap);
	va_end(ap);
	finish_locked(EXIT_INFRA);
}

static void __noreturn infra_fail(const char *what, int err)
{
	fail("%s: %s", what, strerror(err));
}

/* ---- host facts ------------------------------------------------------ */

/*
 * One nonce per round. Zero is what an unwritten or wrongly mapped block
 * would yield; the previous round's is what stale code would return.
 */
static void make_nonces(void)
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

static void read_host_facts(void)
{
	uint64_t ctr, frq;

	asm volatile("mrs %0, ctr_el0" : "=r" (ctr));
	asm volatile("mrs %0, cntfrq_el0" : "=r" (frq));
	lab.ctr = ctr;
	lab.cntfrq = frq;
	lab.page_size = getpagesize();
	make_nonces();
}

/* The PMD block size for the host's translation granule. */
static size_t default_block_size(long page_size)
{
	switch (page_size) {
	case 4096:
		return 2UL << 20;
	case 16384:
		return 32UL << 20;
	case 65536:
		return 512UL << 20;
	}
	return 0;
}

/* ---- VM setup -------------------------------------------------------- */

static int kvm_ioctl_checked(int fd, unsigned long req, void *arg,
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

static void create_vm(void)
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

static void setup_code_slot(void)
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

static void write_exec_target(uint32_t nonce)
{
	size_t len = (guest_exec_target_end - guest_exec_target) *
		     sizeof(uint32_t);
	size_t at = guest_exec_nonce - guest_exec_target;
	uint32_t *code = lab.block_mem;

	memcpy(code, guest_exec_target, len);
	code[at] = a64_set_imm16(code[at], nonce & 0xffff);
	code[at + 1] = a64_set_imm16(code[at + 1], nonce >> 16);
	/* KVM cleans/invalidates on map; this only orders our own view. */
	__builtin___clear_cache((char *)code, (char *)code + len);
}

static void setup_block_slot(void)
{
	int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE;
	char size[32];

	flags |= (__builtin_ctzl(lab.block_size)) << MAP_HUGE_SHIFT;
	lab.block_mem = mmap(NULL, lab.block_size, PROT_READ | PROT_WRITE,
			     flags, -1, 0);
	if (lab.block_mem == MAP_FAILED) {
		describe_size(size, sizeof(size), lab.block_size);
		fail("hugetlb mmap of %s failed: %s", size, strerror(errno));
	}
	write_exec_target(lab.rounds[0].nonce);
	/* Block-aligned IPA, clear of the code slot and the MMIO window. */
	lab.block_ipa = lab.block_size > (1UL << 30) ? lab.block_size :
			1UL << 30;
	set_memory_region(BLOCK_SLOT, lab.block_ipa, lab.block_size,
			  lab.block_mem);
}

/*
 * Between rounds, with no vCPU in KVM_RUN: deleting the memslot unmaps the
 * block at stage 2, so the next round takes the data fault (mapped without
 * execute) and the execute-permission fault again. The hugetlb page stays
 * populated; only the nonce in the code changes.
 */
static void remap_block(uint32_t nonce)
{
	set_memory_region(BLOCK_SLOT, lab.block_ipa, 0, lab.block_mem);
	write_exec_target(nonce);
	set_memory_region(BLOCK_SLOT, lab.block_ipa, lab.block_size,
			  lab.block_mem);
}

#define CORE_X(n)	offsetof(struct kvm_regs, regs.regs[n])
#define CORE_PC		offsetof(struct kvm_regs, regs.pc)

static int set_core_reg(struct vcpu *v, size_t offset, uint64_t val)
{
	struct kvm_one_reg reg = {
		.id = KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE |
		      (offset / sizeof(uint32_t)),
		.addr = (uintptr_t)&val,
	};

	return ioctl(v->fd, KVM_SET_ONE_REG, &reg) < 0 ? errno : 0;
}

/* The guest_abi.h registers and the entry point; 0 or an errno. */
static int set_entry_regs(struct vcpu *v)
{
	int err;

	err = set_core_reg(v, CORE_X(GUEST_REG_INDEX), v->index);
	if (!err)
		err = set_core_reg(v, CORE_X(GUEST_REG_BLOCK), lab.block_ipa);
	if (!err)
		err = set_core_reg(v, CORE_X(GUEST_REG_MMIO), GUEST_MMIO_IPA);
	if (!err)
		err = set_core_reg(v, CORE_X(GUEST_REG_DATA_OFF),
				   lab.block_size / 2 +
				   (uint64_t)v->index * DATA_STRIDE);
	if (!err)
		err = set_core_reg(v, CORE_PC, GUEST_CODE_IPA);
	return err;
}

static void create_vcpu(struct vcpu *v, const struct kvm_vcpu_init *init)
{
	int err;

	v->fd = ioctl(lab.vm_fd, KVM_CREATE_VCPU, v->index);
	if (v->fd < 0)
		infra_fail("KVM_CREATE_VCPU", errno);
	v->run = mmap(NULL, lab.run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		      v->fd, 0);
	if (v->run == MAP_FAILED)
		infra_fail("mmap of kvm_run", errno);
	kvm_ioctl_checked(v->fd, KVM_ARM_VCPU_INIT, (void *)init,
			  "KVM_ARM_VCPU_INIT");
	err = set_entry_regs(v);
	if (err)
		infra_fail("KVM_SET_ONE_REG", err);
}

/* All vCPUs exist and are initialised before any of them runs. */
static void create_vcpus(void)
{
	struct kvm_vcpu_init init;
	struct sample *samples;
	struct vcpu *vcpus;
	unsigned int i;

	vcpus = calloc(lab.nr_vcpus, sizeof(*vcpus));
	samples = calloc((size_t)lab.nr_rounds * lab.nr_vcpus,
			 sizeof(*samples));
	if (!vcpus || !samples)
		infra_fail("calloc", ENOMEM);
	for (i = 0; i < lab.nr_rounds; i++)
		lab.rounds[i].samples = samples + (size_t)i * lab.nr_vcpus;
	/* From here on the report has per-vCPU lists. */
	lab.vcpus = vcpus;
	memset(&init, 0, sizeof(init));
	kvm_ioctl_checked(lab.vm_fd, KVM_ARM_PREFERRED_TARGET, &init,
			  "KVM_ARM_PREFERRED_TARGET");
	for (i = 0; i < lab.nr_vcpus; i++) {
		lab.vcpus[i].index = i;
		create_vcpu(&lab.vcpus[i], &init);
	}
}

/* ---- vCPU threads ---------------------------------------------------- */

static void vcpu_fail(struct vcpu *v, const char *fmt, ...)
	__printf(2, 3);

static void vcpu_fail(struct vcpu *v, const char *fmt, ...)
{
	char msg[ERROR_LEN - 16];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&lab.lock);
	add_error_locked("vcpu %d: %s", v->index, msg);
	v->state = VCPU_FAILED;
	pthread_mutex_unlock(&lab.lock);
}

static void describe_exit(const struct kvm_run *run, char *s, size_t n)
{
	switch (run->exit_reason) {
	case KVM_EXIT_ARM_NISV:
		snprintf(s, n, "KVM_EXIT_ARM_NISV esr_iss 0x%llx ipa 0x%llx",
			 (unsigned long long)run->arm_nisv.esr_iss,
			 (unsigned long long)run->arm_nisv.fault_ipa);
		break;
	case KVM_EXIT_FAIL_ENTRY:
		snprintf(s, n, "KVM_EXIT_FAIL_ENTRY reason 0x%llx cpu %u",
			 (unsigned long long)
			 run->fail_entry.hardware_entry_failure_reason,
			 run->fail_entry.cpu);
		break;
	case KVM_EXIT_INTERNAL_ERROR:
		snprintf(s, n, "KVM_EXIT_INTERNAL_ERROR suberror %u",
			 run->internal.suberror);
		break;
	case KVM_EXIT_SYSTEM_EVENT:
		snprintf(s, n, "KVM_EXIT_SYSTEM_EVENT type %u",
			 run->system_event.type);
		break;
	default:
		snprintf(s, n, "reason %u", run->exit_reason);
	}
}

/* Returns the MMIO register the guest wrote, or -1 on anything else. */
static long vcpu_run_once(struct vcpu *v, uint64_t *data)
{
	struct kvm_run *run = v->run;
	char msg[ERROR_LEN / 2];
	uint64_t off;

	while (ioctl(v->fd, KVM_RUN, 0) < 0) {
		if (errno != EINTR && errno != EAGAIN) {
			vcpu_fail(v, "KVM_RUN: %s", strerror(errno));
			return -1;
		}
	}
	if (run->exit_reason != KVM_EXIT_MMIO) {
		describe_exit(run, msg, sizeof(msg));
		vcpu_fail(v, "unexpected exit %s", msg);
		return -1;
	}
	off = run->mmio.phys_addr - GUEST_MMIO_IPA;
	if (!run->mmio.is_write || run->mmio.len != 8 || off >= MMIO_SIZE) {
		vcpu_fail(v, "unexpected MMIO %s of %u bytes at 0x%llx",
			  run->mmio.is_write ? "write" : "read",
			  run->mmio.len,
			  (unsigned long long)run->mmio.phys_addr);
		return -1;
	}
	memcpy(data, run->mmio.data, sizeof(*data));
	return off;
}

static bool vcpu_record(struct vcpu *v, long reg, uint64_t data)
{
	struct sample *s = v->s;

	switch (reg) {
	case MMIO_T0:
		s->t0 = data;
		s->have_t0 = true;
		break;
	case MMIO_T1:
		s->t1 = data;
		s->have_t1 = true;
		break;
	case MMIO_VALUE:
		s->value = data;
		s->have_value = true;
		break;
	case MMIO_EXC_ESR:
		v->exc_esr = data;
		break;
	case MMIO_EXC_ELR:
		v->exc_elr = data;
		break;
	case MMIO_EXC_FAR:
		v->exc_far = data;
		break;
	case MMIO_EXC_VECTOR:
		vcpu_fail(v, "guest exception, vector %llu ESR 0x%llx ELR 0x%llx FAR 0x%llx",
			  (unsigned long long)data,
			  (unsigned long long)v->exc_esr,
			  (unsigned long long)v->exc_elr,
			  (unsigned long long)v->exc_far);
		return false;
	default:
		vcpu_fail(v, "unexpected MMIO register 0x%lx", reg);
		return false;
	}
	return true;
}

/*
 * Run until the guest writes @stop, recording what it reports on the way.
 * The host clock is read at the first exit after @released was taken.
 */
static bool vcpu_run_until(struct vcpu *v, long stop)
{
	struct sample *s = v->s;
	uint64_t data;
	long reg;

	for (;;) {
		reg = vcpu_run_once(v, &data);
		if (v->state == VCPU_RELEASED && !s->have_wall) {
			clock_gettime(CLOCK_MONOTONIC, &s->exited);
			s->have_wall = true;
		}
		if (reg == stop)
			return true;
		if (reg < 0 || !vcpu_record(v, reg, data))
			return false;
	}
}

/*
 * Back to the entry for the next round, after the guest's final "done".
 * KVM completes an MMIO exit (steps the PC past the store) only on the
 * next KVM_RUN, so a PC set now would be stepped too. Complete it first
 * with a KVM_RUN that returns before entering the guest (immediate_exit,
 * see KVM_RUN in Documentation/virt/kvm/api.rst).
 */
static bool vcpu_reset(struct vcpu *v)
{
	int ret, err;

	v->run->immediate_exit = 1;
	ret = ioctl(v->fd, KVM_RUN, 0);
	err = errno;
	v->run->immediate_exit = 0;
	if (ret >= 0 || err != EINTR) {
		vcpu_fail(v, "KVM_RUN with immediate_exit: %s",
			  ret >= 0 ? "did not return EINTR" : strerror(err));
		return false;
	}
	err = set_entry_regs(v);
	if (err) {
		vcpu_fail(v, "KVM_SET_ONE_REG: %s", strerror(err));
		return false;
	}
	return true;
}

static void barrier_wait(void)
{
	pthread_barrier_wait(&lab.barrier);
}

/*
 * The rounds, in lockstep with run_rounds() on the main thread. Failed
 * vCPUs still meet every barrier of the round so the others go on.
 */
static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	unsigned int r;
	bool ready;

	for (r = 0; r < lab.nr_rounds; r++) {
		barrier_wait();
		/* The data fault: KVM maps the block without execute permission. */
		ready = vcpu_run_until(v, MMIO_READY);
		if (ready)
			v->state = VCPU_READY;
		barrier_wait();
		barrier_wait();
		if (ready) {
			clock_gettime(CLOCK_MONOTONIC, &v->s->released);
			v->state = VCPU_RELEASED;
			if (vcpu_run_until(v, MMIO_DONE) &&
			    (r + 1 == lab.nr_rounds || vcpu_reset(v)))
				v->state = VCPU_DONE;
		}
		barrier_wait();
	}
	return NULL;
}

static void start_vcpu_threads(void)
{
	pthread_attr_t attr;
	pthread_t tid;
	unsigned int i;
	int err;

	/* The main thread takes part: it runs the rounds. */
	err = pthread_barrier_init(&lab.barrier, NULL, lab.nr_vcpus + 1);
	if (err)
		infra_fail("pthread_barrier_init", err);
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_mutex_lock(&lab.lock);
	lab.vcpus_running = true;
	pthread_mutex_unlock(&lab.lock);
	for (i = 0; i < lab.nr_vcpus; i++) {
		err = pthread_create(&tid, &attr, vcpu_thread, &lab.vcpus[i]);
		if (err)
			infra_fail("pthread_create", err);
	}
	pthread_attr_destroy(&attr);
}

static void set_phase(const char *phase)
{
	pthread_mutex_lock(&lab.lock);
	lab.phase = phase;
	pthread_mutex_unlock(&lab.lock);
}

static bool write_proc(const char *path, const char *val)
{
	ssize_t n, len = strlen(val);
	int fd, err;

	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		n = -1;
	} else {
		n = write(fd, val, len);
		close(fd);
	}
	if (n == len)
		return true;
	err = n < 0 ? errno : EIO;
	pthread_mutex_lock(&lab.lock);
	add_error_locked("write %s to %s: %s", val, path, strerror(err));
	pthread_mutex_unlock(&lab.lock);
	return false;
}

/*
 * Dilated runs boot with nosoftlockup. Arming the detector any earlier
 * would expose the long setup (zeroing the huge page takes many seconds
 * of guest time) and unrelated tasks to false soft lockups.
 */
static void arm_watchdog(void)
{
	char val[16];

	if (!lab.watchdog_thresh)
		return;
	set_phase("arming the soft-lockup watchdog");
	snprintf(val, sizeof(val), "%u", lab.watchdog_thresh);
	if (write_proc("/proc/sys/kernel/watchdog_thresh", val) &&
	    write_proc("/proc/sys/kernel/soft_watchdog", "1"))
		lab.watchdog_armed = lab.watchdog_thresh;
}

/*
 * And disarm it once the exec phase is over: tearing the VM down (unmapping
 * the block, freeing the huge page) is not the path under test, and under
 * dilation its long loops would be reported as lockups of other tasks.
 */
static void disarm_watchdog(void)
{
	if (!lab.watchdog_armed)
		return;
	set_phase("disarming the soft-lockup watchdog");
	write_proc("/proc/sys/kernel/soft_watchdog", "0");
}

/* Only while no vCPU is in KVM_RUN. */
static void begin_round(unsigned int r)
{
	struct round *rd = &lab.rounds[r];
	unsigned int i;

	clock_gettime(CLOCK_MONOTONIC, &rd->start);
	pthread_mutex_lock(&lab.lock);
	lab.nr_started = r + 1;
	lab.phase = "remapping the block";
	pthread_mutex_unlock(&lab.lock);
	/* Round 0 runs on the fresh VM that setup left. */
	if (r)
		remap_block(rd->nonce);
	for (i = 0; i < lab.nr_vcpus; i++) {
		lab.vcpus[i].s = &rd->samples[i];
		lab.vcpus[i].state = VCPU_PENDING;
	}
	set_phase("running vCPUs");
}

/* True if every vCPU got through the round. */
static bool end_round(unsigned int r)
{
	struct round *rd = &lab.rounds[r];
	unsigned int i;
	bool ok = true;

	pthread_mutex_lock(&lab.lock);
	clock_gettime(CLOCK_MONOTONIC, &rd->end);
	rd->ended = true;
	for (i = 0; i < lab.nr_vcpus; i++)
		if (lab.vcpus[i].state != VCPU_DONE)
			ok = false;
	if (!ok && r + 1 < lab.nr_rounds)
		add_error_locked("stopped after round %u of %u: not every vCPU completed it",
				 r + 1, lab.nr_rounds);
	pthread_mutex_unlock(&lab.lock);
	return ok;
}

/*
 * The main thread's side of the rounds: the vCPU threads and this one
 * meet at four barriers a round, so the memslot and the registers are only
 * changed while no vCPU is in KVM_RUN.
 */
static void run_rounds(void)
{
	unsigned int r;

	for (r = 0; r < lab.nr_rounds; r++) {
		begin_round(r);
		barrier_wait();		/* go: the data faults */
		barrier_wait();		/* all parked before the branch */
		if (!r)
			arm_watchdog();
		barrier_wait();		/* release: the exec faults */
		barrier_wait();		/* all done, reset, out of KVM_RUN */
		if (!end_round(r))
			break;
	}
	disarm_watchdog();
}

static void report_timeout(void)
{
	char list[ERROR_LEN - 80] = "";
	size_t len = 0;
	unsigned int i;

	if (!lab.vcpus_running) {
		add_error_locked("timeout after %u s while %s", lab.timeout_s,
				 lab.phase);
		return;
	}
	for (i = 0; i < lab.nr_vcpus; i++) {
		if (lab.vcpus[i].state == VCPU_DONE ||
		    lab.vcpus[i].state == VCPU_FAILED)
			continue;
		if (len < sizeof(list))
			len += snprintf(list + len, sizeof(list) - len,
					"%s%u", len ? "," : "", i);
	}
	if (len)
		add_error_locked("timeout after %u s in round %u of %u: vcpus %s did not finish",
				 lab.timeout_s, lab.nr_started, lab.nr_rounds,
				 list);
	else
		add_error_locked("timeout after %u s in round %u of %u while %s",
				 lab.timeout_s, lab.nr_started, lab.nr_rounds,
				 lab.phase);
}

/*
 * The timeout covers the whole run, setup included: zeroing the huge page
 * alone takes many seconds under time dilation.
 */
static void *timeout_thread(void *arg)
{
	struct timespec deadline = lab.start;

	(void)arg;
	deadline.tv_sec += lab.timeout_s;
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline,
			       NULL) == EINTR)
		;
	pthread_mutex_lock(&lab.lock);
	report_timeout();
	finish_locked(EXIT_INFRA);
}

static void start_timeout_thread(void)
{
	pthread_t tid;
	int err;

	err = pthread_create(&tid, NULL, timeout_thread, NULL);
	if (err)
		infra_fail("pthread_create", err);
	pthread_detach(tid);
}

/* Stale code in any round beats a missing value in any. */
static int run_exit_code(void)
{
	bool missing = lab.nr_started < lab.nr_rounds;
	unsigned int r;

	for (r = 0; r < lab.nr_started; r++) {
		if (count_values(&lab.rounds[r], false))
			return EXIT_INCOHERENT;
		if (!round_coherent(&lab.rounds[r]))
			missing = true;
	}
	return missing ? EXIT_INFRA : EXIT_OK;
}

/* ---- command line ---------------------------------------------------- */

static void print_usage(FILE *f)
{
	fprintf(f,
		"usage: s2fault-vmm [--vcpus N] [--rounds K] [--timeout S]\n"
		"                   [--block-size BYTES] [--arm-watchdog T]\n"
		"\n"
		"Run N vCPUs that fault on one hugetlb-backed stage-2 block, first for\n"
		"write (mapped without execute), then all at once for execute (KVM\n"
		"invalidates the I-cache for the block). Prints one line\n"
		"'S2FAULT-RESULT {json}' with per-vCPU exec fault latencies and whether\n"
		"every vCPU ran the code just written (coherent).\n"
		"\n"
		"With K rounds the same VM does this K times: between rounds the block\n"
		"is unmapped at stage 2 (memslot deleted and added again), a new nonce\n"
		"is written into its code and the vCPUs restart. Round 0 is a warm-up\n"
		"(the first exec fault after boot can be slow for unrelated reasons,\n"
		"such as lockdep seeing the fault path for the first time); the others\n"
		"are independent samples, each a new coherence check. Top-level values\n"
		"are the last round's, \"rounds\" has each round's, \"coherent\" is true\n"
		"only if every vCPU returned the nonce of every round.\n"
		"\n"
		"  --vcpus N          vCPUs to run (default 8)\n"
		"  --rounds K         rounds in the same VM (default 1, at most %u)\n"
		"  --timeout S        wall-clock limit in seconds for the whole run,\n"
		"                     setup and all rounds (default 60)\n"
		"  --block-size BYTES stage-2 block / hugetlb page size, K/M/G suffix\n"
		"                     allowed (default: PMD size for the host page\n"
		"                     size: 4K->2M, 16K->32M, 64K->512M)\n"
		"  --arm-watchdog T   write T to /proc/sys/kernel/watchdog_thresh, then\n"
		"                     1 to soft_watchdog, once set up, just before the\n"
		"                     first round's exec faults, and write 0 to\n"
		"                     soft_watchdog after the last one (for runs booted\n"
		"                     with nosoftlockup; default 0: leave it alone)\n"
		"  --help             this text\n"
		"\n"
		"Needs /dev/kvm and one free hugetlb page of the block size.\n"
		"Exit status: 0 run completed, 1 a vCPU ran stale code,\n"
		"2 bad usage, 3 infrastructure problem or timeout.\n",
		MAX_ROUNDS);
}

static bool parse_size(const char *s, size_t *out)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		return false;
	switch (*end) {
	case 'G': case 'g':
		v <<= 10;
		/* fall through */
	case 'M': case 'm':
		v <<= 10;
		/* fall through */
	case 'K': case 'k':
		v <<= 10;
		end++;
	}
	if (*end || !v || (v & (v - 1)))
		return false;
	*out = v;
	return true;
}

static bool parse_uint(const char *s, unsigned int min, unsigned int max,
		       unsigned int *out)
{
	unsigned long v;
	char *end;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

static void parse_args(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "vcpus", required_argument, NULL, 'n' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "timeout", required_argument, NULL, 't' },
		{ "block-size", required_argument, NULL, 'b' },
		{ "arm-watchdog", required_argument, NULL, 'w' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	bool ok = true;
	int c;

	while (ok && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			ok = parse_uint(optarg, 1, 4096, &lab.nr_vcpus);
			break;
		case 'r':
			ok = parse_uint(optarg, 1, MAX_ROUNDS, &lab.nr_rounds);
			break;
		case 't':
			ok = parse_uint(optarg, 1, 86400, &lab.timeout_s);
			break;
		case 'b':
			ok = parse_size(optarg, &lab.block_size);
			break;
		case 'w':
			ok = parse_uint(optarg, 0, 60, &lab.watchdog_thresh);
			break;
		case 'h':
			print_usage(stdout);
			exit(EXIT_OK);
		default:
			ok = false;
		}
	}
	if (!ok || optind != argc) {
		print_usage(stderr);
		exit(EXIT_USAGE);
	}
}

int main(int argc, char **argv)
{
	clock_gettime(CLOCK_MONOTONIC, &lab.start);
	parse_args(argc, argv);
	read_host_facts();
	if (!lab.block_size)
		lab.block_size = default_block_size(lab.page_size);
	if (!lab.block_size)
		fail("no default block size for %ld-byte pages",
		     lab.page_size);
	start_timeout_thread();
	lab.phase = "creating the VM";
	create_vm();
	setup_code_slot();
	lab.phase = "mapping the hugetlb block";
	setup_block_slot();
	lab.phase = "creating vCPUs";
	create_vcpus();
	start_vcpu_threads();
	run_rounds();
	pthread_mutex_lock(&lab.lock);
	finish_locked(run_exit_code());
}
