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
 * Output: one "S2FAULT-RESULT {json}" line on stdout.
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
#define DATA_STRIDE	64
#define MAX_ERRORS	64
#define ERROR_LEN	512
#define CTR_IDC		(1UL << 28)
#define CTR_DIC		(1UL << 29)

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT	26
#endif

enum vcpu_state { VCPU_PENDING, VCPU_READY, VCPU_RELEASED, VCPU_DONE,
		  VCPU_FAILED };

struct vcpu {
	int index;
	int fd;
	struct kvm_run *run;
	enum vcpu_state state;
	bool have_t0, have_t1, have_value, have_wall;
	uint64_t t0, t1, value;
	struct timespec released, exited;
	uint64_t exc_esr, exc_elr, exc_far;
};

struct lab {
	/* options */
	unsigned int nr_vcpus;
	unsigned int timeout_s;
	size_t block_size;
	/* host facts */
	long page_size;
	uint64_t ctr, cntfrq;
	uint32_t nonce;
	/* VM */
	int kvm_fd, vm_fd;
	size_t run_size;
	uint64_t block_ipa;
	void *code_mem, *block_mem;
	struct vcpu *vcpus;
	pthread_barrier_t barrier;
	/* progress, under lock */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned int nr_finished;
	const char *phase;		/* for a timeout during setup */
	bool vcpus_running;
	/* report */
	struct timespec start;
	unsigned int nr_errors;
	char errors[MAX_ERRORS][ERROR_LEN];
};

static struct lab lab = {
	.nr_vcpus = 8,
	.timeout_s = 60,
	.kvm_fd = -1,
	.vm_fd = -1,
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.cond = PTHREAD_COND_INITIALIZER,
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

static void add_fault_lists(struct buf *b)
{
	unsigned int i;
	struct vcpu *v;

	buf_add(b, ",\"exec_fault_us\":[");
	for (i = 0; i < lab.nr_vcpus && lab.vcpus; i++) {
		v = &lab.vcpus[i];
		buf_add(b, i ? "," : "");
		if (v->have_t0 && v->have_t1 && lab.cntfrq)
			buf_add(b, "%.1f",
				(double)(int64_t)(v->t1 - v->t0) * 1e6 / lab.cntfrq);
		else
			buf_add(b, "null");
	}
	buf_add(b, "],\"exec_fault_wall_us\":[");
	for (i = 0; i < lab.nr_vcpus && lab.vcpus; i++) {
		v = &lab.vcpus[i];
		buf_add(b, i ? "," : "");
		if (v->have_wall)
			buf_add(b, "%.1f", ts_diff_us(&v->released, &v->exited));
		else
			buf_add(b, "null");
	}
	buf_add(b, "]");
}

static unsigned int count_values(bool match)
{
	unsigned int i, n = 0;

	for (i = 0; i < lab.nr_vcpus && lab.vcpus; i++)
		if (lab.vcpus[i].have_value &&
		    (lab.vcpus[i].value == lab.nonce) == match)
			n++;
	return n;
}

/* One write(2), so the line is not split by our own buffering. */
static void print_result(void)
{
	struct buf b = { 0 };
	struct timespec now;
	unsigned int i, ok = count_values(true);

	clock_gettime(CLOCK_MONOTONIC, &now);
	buf_add(&b, "\nS2FAULT-RESULT {\"vcpus\":%u,\"page_size\":%ld",
		lab.nr_vcpus, lab.page_size);
	buf_add(&b, ",\"block_bytes\":%zu,\"ctr_el0\":\"0x%llx\"",
		lab.block_size, (unsigned long long)lab.ctr);
	buf_add(&b, ",\"dic\":%d,\"idc\":%d,\"cntfrq\":%llu",
		!!(lab.ctr & CTR_DIC), !!(lab.ctr & CTR_IDC),
		(unsigned long long)lab.cntfrq);
	buf_add(&b, ",\"nonce\":\"0x%08x\",\"coherent\":%s",
		lab.nonce, ok == lab.nr_vcpus ? "true" : "false");
	add_fault_lists(&b);
	buf_add(&b, ",\"values_ok\":%u,\"errors\":[", ok);
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

static void read_host_facts(void)
{
	uint64_t ctr, frq;

	asm volatile("mrs %0, ctr_el0" : "=r" (ctr));
	asm volatile("mrs %0, cntfrq_el0" : "=r" (frq));
	lab.ctr = ctr;
	lab.cntfrq = frq;
	lab.page_size = getpagesize();
	if (getrandom(&lab.nonce, sizeof(lab.nonce), 0) != sizeof(lab.nonce))
		lab.nonce = (uint32_t)(time(NULL) * 2654435761u);
	/* Zero is what an unwritten or wrongly mapped block would yield. */
	if (!lab.nonce)
		lab.nonce = 0x5a5a5a5a;
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
	set_memory_region(0, GUEST_CODE_IPA, CODE_SLOT_SIZE, lab.code_mem);
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

static void write_exec_target(void)
{
	size_t len = (guest_exec_target_end - guest_exec_target) *
		     sizeof(uint32_t);
	size_t at = guest_exec_nonce - guest_exec_target;
	uint32_t *code = lab.block_mem;

	memcpy(code, guest_exec_target, len);
	code[at] = a64_set_imm16(code[at], lab.nonce & 0xffff);
	code[at + 1] = a64_set_imm16(code[at + 1], lab.nonce >> 16);
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
	write_exec_target();
	/* Block-aligned IPA, clear of the code slot and the MMIO window. */
	lab.block_ipa = lab.block_size > (1UL << 30) ? lab.block_size :
			1UL << 30;
	set_memory_region(1, lab.block_ipa, lab.block_size, lab.block_mem);
}

static void set_core_reg(struct vcpu *v, size_t offset, uint64_t val)
{
	struct kvm_one_reg reg = {
		.id = KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE |
		      (offset / sizeof(uint32_t)),
		.addr = (uintptr_t)&val,
	};

	kvm_ioctl_checked(v->fd, KVM_SET_ONE_REG, &reg, "KVM_SET_ONE_REG");
}

#define CORE_X(n)	offsetof(struct kvm_regs, regs.regs[n])
#define CORE_PC		offsetof(struct kvm_regs, regs.pc)

static void create_vcpu(struct vcpu *v, const struct kvm_vcpu_init *init)
{
	v->fd = ioctl(lab.vm_fd, KVM_CREATE_VCPU, v->index);
	if (v->fd < 0)
		infra_fail("KVM_CREATE_VCPU", errno);
	v->run = mmap(NULL, lab.run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		      v->fd, 0);
	if (v->run == MAP_FAILED)
		infra_fail("mmap of kvm_run", errno);
	kvm_ioctl_checked(v->fd, KVM_ARM_VCPU_INIT, (void *)init,
			  "KVM_ARM_VCPU_INIT");
	set_core_reg(v, CORE_PC, GUEST_CODE_IPA);
	set_core_reg(v, CORE_X(GUEST_REG_INDEX), v->index);
	set_core_reg(v, CORE_X(GUEST_REG_BLOCK), lab.block_ipa);
	set_core_reg(v, CORE_X(GUEST_REG_MMIO), GUEST_MMIO_IPA);
	set_core_reg(v, CORE_X(GUEST_REG_DATA_OFF),
		     lab.block_size / 2 + (uint64_t)v->index * DATA_STRIDE);
}

/* All vCPUs exist and are initialised before any of them runs. */
static void create_vcpus(void)
{
	struct kvm_vcpu_init init;
	unsigned int i;

	lab.vcpus = calloc(lab.nr_vcpus, sizeof(*lab.vcpus));
	if (!lab.vcpus)
		infra_fail("calloc", ENOMEM);
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
	switch (reg) {
	case MMIO_T0:
		v->t0 = data;
		v->have_t0 = true;
		break;
	case MMIO_T1:
		v->t1 = data;
		v->have_t1 = true;
		break;
	case MMIO_VALUE:
		v->value = data;
		v->have_value = true;
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
	uint64_t data;
	long reg;

	for (;;) {
		reg = vcpu_run_once(v, &data);
		if (v->state == VCPU_RELEASED && !v->have_wall) {
			clock_gettime(CLOCK_MONOTONIC, &v->exited);
			v->have_wall = true;
		}
		if (reg == stop)
			return true;
		if (reg < 0 || !vcpu_record(v, reg, data))
			return false;
	}
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	bool ready;

	/* The data fault: KVM maps the block without execute permission. */
	ready = vcpu_run_until(v, MMIO_READY);
	if (ready)
		v->state = VCPU_READY;
	/* Failed vCPUs still meet the barrier so the others are released. */
	pthread_barrier_wait(&lab.barrier);
	if (ready) {
		clock_gettime(CLOCK_MONOTONIC, &v->released);
		v->state = VCPU_RELEASED;
		if (vcpu_run_until(v, MMIO_DONE))
			v->state = VCPU_DONE;
	}
	pthread_mutex_lock(&lab.lock);
	lab.nr_finished++;
	pthread_cond_signal(&lab.cond);
	pthread_mutex_unlock(&lab.lock);
	return NULL;
}

static void start_vcpu_threads(void)
{
	pthread_attr_t attr;
	pthread_t tid;
	unsigned int i;
	int err;

	err = pthread_barrier_init(&lab.barrier, NULL, lab.nr_vcpus);
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

static void report_timeout(void)
{
	char list[ERROR_LEN - 48] = "";
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
	add_error_locked("timeout after %u s: vcpus %s did not finish",
			 lab.timeout_s, list);
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

static void wait_vcpus(void)
{
	pthread_mutex_lock(&lab.lock);
	while (lab.nr_finished < lab.nr_vcpus)
		pthread_cond_wait(&lab.cond, &lab.lock);
}

static int run_exit_code(void)
{
	if (count_values(false))
		return EXIT_INCOHERENT;
	if (count_values(true) != lab.nr_vcpus)
		return EXIT_INFRA;
	return EXIT_OK;
}

/* ---- command line ---------------------------------------------------- */

static void print_usage(FILE *f)
{
	fprintf(f,
		"usage: s2fault-vmm [--vcpus N] [--timeout S] [--block-size BYTES]\n"
		"\n"
		"Run N vCPUs that fault on one hugetlb-backed stage-2 block, first for\n"
		"write (mapped without execute), then all at once for execute (KVM\n"
		"invalidates the I-cache for the block). Prints one line\n"
		"'S2FAULT-RESULT {json}' with per-vCPU exec fault latencies and whether\n"
		"every vCPU ran the code just written (coherent).\n"
		"\n"
		"  --vcpus N          vCPUs to run (default 8)\n"
		"  --timeout S        wall-clock limit in seconds (default 60)\n"
		"  --block-size BYTES stage-2 block / hugetlb page size, K/M/G suffix\n"
		"                     allowed (default: PMD size for the host page\n"
		"                     size: 4K->2M, 16K->32M, 64K->512M)\n"
		"  --help             this text\n"
		"\n"
		"Needs /dev/kvm and one free hugetlb page of the block size.\n"
		"Exit status: 0 run completed, 1 a vCPU ran stale code,\n"
		"2 bad usage, 3 infrastructure problem or timeout.\n");
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
		{ "timeout", required_argument, NULL, 't' },
		{ "block-size", required_argument, NULL, 'b' },
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
		case 't':
			ok = parse_uint(optarg, 1, 86400, &lab.timeout_s);
			break;
		case 'b':
			ok = parse_size(optarg, &lab.block_size);
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
	wait_vcpus();
	finish_locked(run_exit_code());
}
