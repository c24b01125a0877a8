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
 * The shape of the load is set by four options (the workloads);
 * the defaults are the run described above.
 *
 * --blocks M (many-blocks): M huge blocks at consecutive IPAs, one memslot
 * each. Every vCPU data-faults on all of them, then, once released,
 * executes block 0, 1, ..., M-1 in turn, each exec fault timed on its own:
 * how the cost grows with the memory made executable.
 *
 * --storm N (guest-icache-storm): the last N vCPUs take no exec fault.
 * Once released they run I-cache maintenance in the guest (ic ivau over
 * up to 1 MiB of their block's data half, line by line, then ic iallu,
 * dsb ish, isb), each iteration timed, until every faulting vCPU of the
 * round is done (at least one batch of STORM_BATCH iterations): the VMM
 * answers their MMIO_STORM_GO load. Both sides' latency is reported.
 *
 * --remap dontneed (coherence-rounds): between rounds the block is
 * dropped with madvise(MADV_DONTNEED) instead of a memslot delete/add: the
 * MMU notifier unmaps stage 2 and the next touch gets a fresh zeroed huge
 * page, into which the VMM writes the new round's code. A vCPU that
 * executes anything but the new nonce is listed as stale, with what it
 * got and the previous round's nonce. In every mode the VMM also checks
 * that each vCPU's data-fault store landed in the block.
 *
 * --first-touch exec (exec-first-touch): the vCPUs skip the stores, so
 * their first access to the block is the instruction fetch: KVM maps the
 * block executable in the stage-2 map walker (stage2_map_walker_try_leaf()
 * invalidates the I-cache there), the other fault path of the bug, where
 * the PTE is already broken (locked) while the I-cache is invalidated. No
 * data-fault store is checked then.
 *
 * --fail-alloc N (alloc-failure): just before the first round's release,
 * arm failslab (debugfs) to fail the next N slab allocations made with
 * kvm_pgtable_walk() on the stack (under mmu_lock), and print the stack of each
 * (verbose=2): the allocation a fault-path patch makes, made to fail.
 * The result says how many failed ("fault_injection"). A vCPU that then
 * never comes back from its fault is listed in "stuck_vcpus" when the
 * timeout ends the run.
 *
 * --vms K (multi-vm): K VMs, each its own VMM process (forked before the
 * VM exists, so each has its own blocks and vCPU threads, all named
 * s2fault-vmm). The processes meet at a process-shared barrier before
 * each round's release and after each round, so the exec faults of every
 * VM start together; a VM that gives up releases the others. Each process
 * prints its own result line; the first waits for the others and exits
 * with the worst status.
 *
 * Output: one "S2FAULT-RESULT {json}" line on stdout per VM: top-level
 * values of the last round, "rounds" with each round's.
 * Exit: 0 run completed, 1 a vCPU executed stale code or a data store was
 * lost, 2 bad usage, 3 infrastructure (no KVM, no hugetlb memory, ioctl
 * failure, timeout).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <linux/futex.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/wait.h>
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
#define BLOCK_SLOT	1	/* the first; block b is slot BLOCK_SLOT + b */
#define DATA_STRIDE	64
#define MAX_ROUNDS	1000
#define MAX_BLOCKS	64
#define MAX_VMS		64
#define STORM_RANGE	(1UL << 20)
#define MAX_ERRORS	64
#define ERROR_LEN	512
#define CTR_IDC		(1UL << 28)
#define CTR_DIC		(1UL << 29)

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT	26
#endif

enum vcpu_state { VCPU_PENDING, VCPU_READY, VCPU_RELEASED, VCPU_DONE,
		  VCPU_FAILED };

enum remap_kind { REMAP_MEMSLOT, REMAP_DONTNEED };

static const char * const remap_names[] = {
	[REMAP_MEMSLOT] = "memslot",
	[REMAP_DONTNEED] = "dontneed",
};

/* The block's first access in a round: a store, or the instruction fetch. */
enum touch_kind { TOUCH_DATA, TOUCH_EXEC };

static const char * const touch_names[] = {
	[TOUCH_DATA] = "data",
	[TOUCH_EXEC] = "exec",
};

/* What one vCPU reported about one block's exec fault in one round. */
struct exec_sample {
	bool have_t0, have_t1, have_value;
	uint64_t t0, t1, value;
};

/* What one vCPU reported in one round. */
struct sample {
	struct exec_sample *exec;	/* one per block */
	bool stored;			/* its data-fault stores are done */
	bool have_wall;
	struct timespec released, exited;
	/* a storm vCPU's iterations, in counter ticks */
	uint64_t storm_max, storm_sum, storm_iterations;
};

struct round {
	uint32_t nonce;
	bool ended;
	struct timespec start, end;
	struct sample *samples;		/* one per vCPU */
	unsigned int stores_lost;	/* (vCPU, block) pairs, see check_stores() */
};

struct vcpu {
	int index;
	int fd;
	pid_t tid;
	bool storm;			/* I-cache maintenance, no exec fault */
	struct kvm_run *run;
	enum vcpu_state state;		/* in the current round */
	struct sample *s;		/* the current round's */
	unsigned int block;		/* of the exec results being reported */
	uint64_t exc_esr, exc_elr, exc_far;
};

/*
 * The VMs' meeting point, in memory shared by the VMM processes: a
 * sense-counting barrier on a futex, which (unlike a pthread barrier) a
 * process that gives up can open for everyone.
 */
struct vm_sync {
	uint32_t arrived;
	uint32_t generation;
	uint32_t aborted;		/* 1 + the index of the VM that gave up */
};

struct lab {
	/* options */
	unsigned int nr_vcpus;
	unsigned int nr_rounds;
	unsigned int timeout_s;
	unsigned int watchdog_thresh;
	size_t block_size;
	unsigned int nr_vms;
	unsigned int nr_blocks;
	unsigned int nr_storm;
	enum remap_kind remap;
	enum touch_kind first_touch;
	unsigned int fail_alloc;	/* slab allocations to fail, see arm_failslab() */
	/* this process */
	unsigned int vm_index;
	unsigned int nr_children;
	pid_t children[MAX_VMS];
	struct vm_sync *vm_sync;	/* NULL with one VM */
	/* host facts */
	long page_size;
	uint64_t ctr, cntfrq;
	/* VM */
	int kvm_fd, vm_fd;
	size_t run_size;
	uint64_t block_ipa;		/* of block 0 */
	void *code_mem, *block_mem;	/* block_mem: all blocks, in order */
	size_t storm_range;		/* bytes a storm vCPU invalidates */
	struct vcpu *vcpus;
	/* vCPU threads and the main thread meet here, see run_rounds() */
	pthread_barrier_t barrier;
	/* progress, under lock */
	pthread_mutex_t lock;
	const char *phase;		/* for a timeout outside a round */
	bool vcpus_running;
	unsigned int nr_started;	/* rounds begun, the last one current */
	bool rounds_complete;		/* every round ran (this VM's part) */
	/* faulting vCPUs not yet done in this round; storm vCPUs poll it */
	unsigned int faulters_left;
	/* report */
	struct round rounds[MAX_ROUNDS];
	unsigned int watchdog_armed;
	bool facts_only;	/* --facts: print the host facts, run nothing */
	bool failslab_armed;
	char failslab_window[64];	/* the function whose frames it requires */
	struct timespec start;
	unsigned int nr_errors;
	char errors[MAX_ERRORS][ERROR_LEN];
};

static struct lab lab = {
	.nr_vcpus = 8,
	.nr_rounds = 1,
	.timeout_s = 60,
	.nr_vms = 1,
	.nr_blocks = 1,
	.remap = REMAP_MEMSLOT,
	.first_touch = TOUCH_DATA,
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

static void add_error_unlocked(const char *fmt, ...)
	__printf(1, 2);

/* For callers that do not hold lab.lock. */
static void add_error_unlocked(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	pthread_mutex_lock(&lab.lock);
	add_error(fmt, ap);
	pthread_mutex_unlock(&lab.lock);
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

static unsigned int nr_faulting(void)
{
	return lab.nr_vcpus - lab.nr_storm;
}

static double ticks_us(uint64_t ticks)
{
	return (double)(int64_t)ticks * 1e6 / lab.cntfrq;
}

/* One exec fault as JSON: microseconds by the guest's counter, or null. */
static void add_exec_us(struct buf *b, const struct exec_sample *e)
{
	if (e->have_t0 && e->have_t1 && lab.cntfrq)
		buf_add(b, "%.1f", ticks_us(e->t1 - e->t0));
	else
		buf_add(b, "null");
}

/*
 * Per-vCPU lists of @rd; "null" for what a vCPU did not report (and for
 * the exec faults of storm vCPUs, which take none). The exec fault is
 * block 0's. Before the vCPUs exist (setup failed) the lists are empty.
 */
static void add_fault_lists(struct buf *b, const struct round *rd)
{
	const struct sample *s;
	unsigned int i;

	buf_add(b, "\"exec_fault_us\":[");
	for (i = 0; i < lab.nr_vcpus && lab.vcpus; i++) {
		buf_add(b, i ? "," : "");
		add_exec_us(b, &rd->samples[i].exec[0]);
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

/* many-blocks: [[vcpu 0 block 0, ..., block M-1], [vcpu 1 ...], ...]. */
static void add_block_lists(struct buf *b, const struct round *rd)
{
	unsigned int i, k;

	buf_add(b, ",\"block_fault_us\":[");
	for (i = 0; i < lab.nr_vcpus && lab.vcpus; i++) {
		buf_add(b, "%s[", i ? "," : "");
		for (k = 0; k < lab.nr_blocks; k++) {
			buf_add(b, k ? "," : "");
			add_exec_us(b, &rd->samples[i].exec[k]);
		}
		buf_add(b, "]");
	}
	buf_add(b, "]");
}

/* guest-icache-storm: per vCPU, null for the faulting ones. */
static void add_storm_lists(struct buf *b, const struct round *rd)
{
	static const char * const keys[] = {
		"storm_max_us", "storm_mean_us", "storm_iterations"
	};
	const struct sample *s;
	unsigned int i, k;

	for (k = 0; k < 3; k++) {
		buf_add(b, ",\"%s\":[", keys[k]);
		for (i = 0; i < lab.nr_vcpus && lab.vcpus; i++) {
			s = &rd->samples[i];
			buf_add(b, i ? "," : "");
			if (!lab.vcpus[i].storm || !s->storm_iterations ||
			    (k < 2 && !lab.cntfrq))
				buf_add(b, "null");
			else if (k == 0)
				buf_add(b, "%.1f", ticks_us(s->storm_max));
			else if (k == 1)
				buf_add(b, "%.1f", ticks_us(s->storm_sum) /
					s->storm_iterations);
			else
				buf_add(b, "%llu", (unsigned long long)
					s->storm_iterations);
		}
		buf_add(b, "]");
	}
	buf_add(b, ",\"storm_range_bytes\":%zu", lab.storm_range);
}

/*
 * A faulting vCPU of @rd whose every block returned the nonce (@match), or
 * one that returned something else from at least one block (!@match).
 * Storm vCPUs execute no block and count as neither.
 */
static bool vcpu_matches(const struct round *rd, unsigned int i, bool match)
{
	const struct exec_sample *e = rd->samples[i].exec;
	unsigned int k;

	if (lab.vcpus[i].storm)
		return false;
	for (k = 0; k < lab.nr_blocks; k++) {
		if (match && (!e[k].have_value || e[k].value != rd->nonce))
			return false;
		if (!match && e[k].have_value && e[k].value != rd->nonce)
			return true;
	}
	return match;
}

static unsigned int count_values(const struct round *rd, bool match)
{
	unsigned int i, n = 0;

	for (i = 0; i < lab.nr_vcpus && lab.vcpus; i++)
		if (vcpu_matches(rd, i, match))
			n++;
	return n;
}

static bool round_coherent(const struct round *rd)
{
	return count_values(rd, true) == nr_faulting() && !rd->stores_lost;
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

/*
 * Each block value of round @r that is not its nonce, with the previous
 * round's nonce (null in round 0): got == previous is stale code.
 */
static void add_stale(struct buf *b, unsigned int r)
{
	const struct round *rd = &lab.rounds[r];
	const struct exec_sample *e;
	unsigned int i, k, n = 0;

	buf_add(b, ",\"stale\":[");
	for (i = 0; i < lab.nr_vcpus && lab.vcpus; i++) {
		for (k = 0; k < lab.nr_blocks && !lab.vcpus[i].storm; k++) {
			e = &rd->samples[i].exec[k];
			if (!e->have_value || e->value == rd->nonce)
				continue;
			buf_add(b, "%s{\"vcpu\":%u,", n++ ? "," : "", i);
			if (lab.nr_blocks > 1)
				buf_add(b, "\"block\":%u,", k);
			buf_add(b, "\"got\":\"0x%08llx\",\"expected\":\"0x%08x\"",
				(unsigned long long)e->value, rd->nonce);
			if (r)
				buf_add(b, ",\"previous\":\"0x%08x\"}",
					lab.rounds[r - 1].nonce);
			else
				buf_add(b, ",\"previous\":null}");
		}
	}
	buf_add(b, "]");
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
		if (lab.nr_blocks > 1)
			add_block_lists(b, rd);
		if (lab.nr_storm)
			add_storm_lists(b, rd);
		add_stale(b, r);
		buf_add(b, ",\"values_ok\":%u,\"coherent\":%s",
			count_values(rd, true),
			round_coherent(rd) ? "true" : "false");
		buf_add(b, ",\"stores_lost\":%u", rd->stores_lost);
		if (rd->ended)
			now = rd->end;
		else
			clock_gettime(CLOCK_MONOTONIC, &now);
		buf_add(b, ",\"elapsed_ms\":%.0f}",
			ts_diff_us(&rd->start, &now) / 1e3);
	}
	buf_add(b, "]");
}

/* Which VM this is, and the ids a kernel splat names ([comm:tid]). */
static void add_vm(struct buf *b)
{
	unsigned int i;

	buf_add(b, ",\"vm\":%u,\"vms\":%u,\"blocks\":%u,\"storm\":%u",
		lab.vm_index, lab.nr_vms, lab.nr_blocks, lab.nr_storm);
	buf_add(b, ",\"remap\":\"%s\",\"first_touch\":\"%s\"",
		remap_names[lab.remap], touch_names[lab.first_touch]);
	buf_add(b, ",\"pid\":%d,\"vcpu_tids\":[", (int)getpid());
	for (i = 0; i < lab.nr_vcpus && lab.vcpus; i++)
		buf_add(b, "%s%d", i ? "," : "", (int)lab.vcpus[i].tid);
	buf_add(b, "]");
}

static bool read_failslab(const char *name, long *val);

/* With --fail-alloc: armed or not, and how many allocations failed. */
static void add_fault_injection(struct buf *b)
{
	long left = -1;

	if (!lab.fail_alloc)
		return;
	if (lab.failslab_armed)
		read_failslab("times", &left);
	buf_add(b, ",\"fault_injection\":{\"armed\":%s,\"window\":",
		lab.failslab_armed ? "true" : "false");
	buf_add_json_string(b, lab.failslab_window);
	buf_add(b, ",\"requested\":%u,\"failures\":", lab.fail_alloc);
	if (left >= 0 && left <= (long)lab.fail_alloc)
		buf_add(b, "%ld}", (long)lab.fail_alloc - left);
	else
		buf_add(b, "null}");
}

/*
 * vCPUs released into their exec faults that have not come back: only
 * when the run ends early (a timeout), they are the ones stuck in it.
 */
static void add_stuck(struct buf *b)
{
	unsigned int i, n = 0;

	buf_add(b, ",\"stuck_vcpus\":[");
	for (i = 0; i < lab.nr_vcpus && lab.vcpus; i++)
		if (lab.vcpus[i].state == VCPU_RELEASED)
			buf_add(b, "%s%u", n++ ? "," : "", i);
	buf_add(b, "]");
}

/*
 * One write(2), so the line is not split by our own buffering (nor mixed
 * with another VM's: a tty write holds the tty's write lock throughout).
 * The top-level per-vCPU values are those of the current (last begun)
 * round.
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
	add_vm(&b);
	buf_add(&b, ",\"nonce\":\"0x%08x\",\"coherent\":%s,",
		cur->nonce, all_coherent() ? "true" : "false");
	add_fault_lists(&b, cur);
	buf_add(&b, ",\"values_ok\":%u", count_values(cur, true));
	add_rounds(&b);
	add_fault_injection(&b);
	add_stuck(&b);
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

/* ---- the VMs' barrier ------------------------------------------------ */

static long futex(uint32_t *addr, int op, uint32_t val)
{
	/* Not FUTEX_PRIVATE_FLAG: the word is shared between processes. */
	return syscall(SYS_futex, addr, op, val, NULL, NULL, 0);
}

/* Let every VM out of vm_sync_wait(), now and from now on. */
static void vm_sync_abort(void)
{
	struct vm_sync *vs = lab.vm_sync;
	uint32_t none = 0;

	if (!vs)
		return;
	__atomic_compare_exchange_n(&vs->aborted, &none, lab.vm_index + 1,
				    false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
	__atomic_add_fetch(&vs->generation, 1, __ATOMIC_SEQ_CST);
	futex(&vs->generation, FUTEX_WAKE, INT_MAX);
}

/*
 * The main threads of all VMs meet here. False if a VM gave up: this one
 * then stops too, since the others will not come.
 */
static bool vm_sync_wait(const char *where)
{
	struct vm_sync *vs = lab.vm_sync;
	uint32_t gen, who;

	if (!vs)
		return true;
	gen = __atomic_load_n(&vs->generation, __ATOMIC_SEQ_CST);
	if (!__atomic_load_n(&vs->aborted, __ATOMIC_SEQ_CST)) {
		if (__atomic_add_fetch(&vs->arrived, 1, __ATOMIC_SEQ_CST) ==
		    lab.nr_vms) {
			__atomic_store_n(&vs->arrived, 0, __ATOMIC_SEQ_CST);
			__atomic_add_fetch(&vs->generation, 1,
					   __ATOMIC_SEQ_CST);
			futex(&vs->generation, FUTEX_WAKE, INT_MAX);
		}
		while (__atomic_load_n(&vs->generation, __ATOMIC_SEQ_CST) ==
		       gen)
			futex(&vs->generation, FUTEX_WAIT, gen);
	}
	who = __atomic_load_n(&vs->aborted, __ATOMIC_SEQ_CST);
	if (!who)
		return true;
	pthread_mutex_lock(&lab.lock);
	add_error_locked("stopped %s: vm %u gave up", where, who - 1);
	pthread_mutex_unlock(&lab.lock);
	return false;
}

/* The more telling of two exit codes: stale code, infra, usage, ok. */
static int worse_exit(int a, int b)
{
	static const int rank[] = {
		[EXIT_OK] = 0, [EXIT_USAGE] = 1, [EXIT_INFRA] = 2,
		[EXIT_INCOHERENT] = 3,
	};
	int ra = a >= 0 && a <= EXIT_INFRA ? rank[a] : rank[EXIT_INFRA];
	int rb = b >= 0 && b <= EXIT_INFRA ? rank[b] : rank[EXIT_INFRA];

	return rb > ra ? b : a;
}

/* VM 0 outlives the others, so init sees one exit for the whole run. */
static int wait_other_vms(int code)
{
	unsigned int i;
	int status;
	pid_t ret;

	for (i = 0; i < lab.nr_children; i++) {
		do {
			ret = waitpid(lab.children[i], &status, 0);
		} while (ret < 0 && errno == EINTR);
		if (ret < 0 || !WIFEXITED(status))
			code = worse_exit(code, EXIT_INFRA);
		else
			code = worse_exit(code, WEXITSTATUS(status));
	}
	return code;
}

/*
 * The single way out once the run has started: with lab.lock held, so the
 * result is printed once, and never released, so that vCPU threads still
 * running cannot change what is being printed.
 */
static void __noreturn finish_locked(int code)
{
	print_result();
	if (!lab.rounds_complete)
		vm_sync_abort();
	_exit(wait_other_vms(code));
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
}

/*
 * The facts host-run needs before it reserves anything: CTR_EL0 can only
 * be read by an instruction (EL0 access, or the kernel's emulation of it).
 */
static void print_facts(void)
{
	printf("S2FAULT-FACTS {\"page_size\":%ld,\"block_bytes\":%zu,\"ctr_el0\":\"0x%llx\",\"dic\":%d,\"idc\":%d,\"cntfrq\":%llu}\n",
	       lab.page_size, lab.block_size, (unsigned long long)lab.ctr,
	       !!(lab.ctr & CTR_DIC), !!(lab.ctr & CTR_IDC),
	       (unsigned long long)lab.cntfrq);
	fflush(stdout);
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

static void setup_block_slot(void)
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
static void remap_blocks(uint32_t nonce)
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
static uint64_t data_token(const struct vcpu *v, unsigned int r)
{
	return (uint64_t)lab.rounds[r].nonce << 32 | (uint32_t)v->index;
}

/*
 * After round @r, with no vCPU in KVM_RUN: did each vCPU's data-fault
 * store reach its block? The guest stored with the MMU off (non-cacheable
 * unless the CPU forces write-back at stage 2), so drop any line this
 * process may hold before reading it back.
 */
static void check_stores(unsigned int r)
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

/* The guest_abi.h registers for round @r and the entry point; 0 or errno. */
static int set_entry_regs(struct vcpu *v, unsigned int r)
{
	const struct {
		size_t reg;
		uint64_t val;
	} regs[] = {
		{ CORE_X(GUEST_REG_INDEX), v->index },
		{ CORE_X(GUEST_REG_BLOCK), lab.block_ipa },
		{ CORE_X(GUEST_REG_MMIO), GUEST_MMIO_IPA },
		{ CORE_X(GUEST_REG_DATA_OFF), lab.block_size / 2 +
					      (uint64_t)v->index * DATA_STRIDE },
		{ CORE_X(GUEST_REG_NR_BLOCKS), lab.nr_blocks },
		{ CORE_X(GUEST_REG_BLOCK_STRIDE), lab.block_size },
		{ CORE_X(GUEST_REG_STORM_START), lab.block_ipa +
						 lab.block_size / 2 },
		{ CORE_X(GUEST_REG_STORM_BYTES), v->storm ? lab.storm_range : 0 },
		{ CORE_X(GUEST_REG_DATA_TOKEN), data_token(v, r) },
		{ CORE_X(GUEST_REG_EXEC_FIRST), lab.first_touch == TOUCH_EXEC },
		{ CORE_PC, GUEST_CODE_IPA },
	};
	unsigned int i;
	int err = 0;

	for (i = 0; i < ARRAY_SIZE(regs) && !err; i++)
		err = set_core_reg(v, regs[i].reg, regs[i].val);
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
	err = set_entry_regs(v, 0);
	if (err)
		infra_fail("KVM_SET_ONE_REG", err);
}

/* All vCPUs exist and are initialised before any of them runs. */
static void create_vcpus(void)
{
	size_t nr_samples = (size_t)lab.nr_rounds * lab.nr_vcpus;
	struct exec_sample *exec;
	struct kvm_vcpu_init init;
	struct sample *samples;
	struct vcpu *vcpus;
	size_t i;

	vcpus = calloc(lab.nr_vcpus, sizeof(*vcpus));
	samples = calloc(nr_samples, sizeof(*samples));
	exec = calloc(nr_samples * lab.nr_blocks, sizeof(*exec));
	if (!vcpus || !samples || !exec)
		infra_fail("calloc", ENOMEM);
	for (i = 0; i < nr_samples; i++)
		samples[i].exec = exec + i * lab.nr_blocks;
	for (i = 0; i < lab.nr_rounds; i++)
		lab.rounds[i].samples = samples + i * lab.nr_vcpus;
	/* From here on the report has per-vCPU lists. */
	lab.vcpus = vcpus;
	memset(&init, 0, sizeof(init));
	kvm_ioctl_checked(lab.vm_fd, KVM_ARM_PREFERRED_TARGET, &init,
			  "KVM_ARM_PREFERRED_TARGET");
	for (i = 0; i < lab.nr_vcpus; i++) {
		lab.vcpus[i].index = i;
		/* The last --storm vCPUs. */
		lab.vcpus[i].storm = i >= nr_faulting();
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
	/* MMIO_STORM_GO is the one register the guest loads. */
	if (run->mmio.is_write != (off != MMIO_STORM_GO) ||
	    run->mmio.len != 8 || off >= MMIO_SIZE) {
		vcpu_fail(v, "unexpected MMIO %s of %u bytes at 0x%llx",
			  run->mmio.is_write ? "write" : "read",
			  run->mmio.len,
			  (unsigned long long)run->mmio.phys_addr);
		return -1;
	}
	memcpy(data, run->mmio.data, sizeof(*data));
	return off;
}

/* Storm vCPUs go on while a faulting vCPU of the round is not done. */
static void storm_answer(struct vcpu *v)
{
	uint64_t go = !!__atomic_load_n(&lab.faulters_left, __ATOMIC_SEQ_CST);

	memcpy(v->run->mmio.data, &go, sizeof(go));
}

static bool vcpu_record(struct vcpu *v, long reg, uint64_t data)
{
	struct sample *s = v->s;
	struct exec_sample *e = &s->exec[v->block];

	switch (reg) {
	case MMIO_BLOCK:
		if (data >= lab.nr_blocks) {
			vcpu_fail(v, "reported block %llu of %u",
				  (unsigned long long)data, lab.nr_blocks);
			return false;
		}
		v->block = data;
		break;
	case MMIO_T0:
		e->t0 = data;
		e->have_t0 = true;
		break;
	case MMIO_T1:
		e->t1 = data;
		e->have_t1 = true;
		break;
	case MMIO_VALUE:
		e->value = data;
		e->have_value = true;
		break;
	case MMIO_STORM_MAX:
		if (data > s->storm_max)
			s->storm_max = data;
		break;
	case MMIO_STORM_SUM:
		s->storm_sum += data;
		s->storm_iterations += STORM_BATCH;
		break;
	case MMIO_STORM_GO:
		storm_answer(v);
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
		if (v->state == VCPU_RELEASED && !s->have_wall && !v->storm) {
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
static bool vcpu_reset(struct vcpu *v, unsigned int next_round)
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
	err = set_entry_regs(v, next_round);
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

	v->tid = gettid();
	for (r = 0; r < lab.nr_rounds; r++) {
		barrier_wait();
		/* The data faults: KVM maps the blocks without execute permission. */
		ready = vcpu_run_until(v, MMIO_READY);
		if (ready) {
			v->s->stored = lab.first_touch == TOUCH_DATA;
			v->state = VCPU_READY;
		}
		barrier_wait();
		barrier_wait();
		if (ready) {
			clock_gettime(CLOCK_MONOTONIC, &v->s->released);
			v->state = VCPU_RELEASED;
			v->block = 0;
			if (vcpu_run_until(v, MMIO_DONE) &&
			    (r + 1 == lab.nr_rounds || vcpu_reset(v, r + 1)))
				v->state = VCPU_DONE;
		}
		/* Done or failed, it no longer keeps the storm going. */
		if (!v->storm)
			__atomic_sub_fetch(&lab.faulters_left, 1,
					   __ATOMIC_SEQ_CST);
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

#define FAILSLAB_DIR	"/sys/kernel/debug/failslab/"
/* Allocations made while walking stage 2, under mmu_lock (see arm_failslab). */
#define FAILSLAB_WINDOW	"kvm_pgtable_walk"

/* A failslab attribute as a number; false if it cannot be read. */
static bool read_failslab(const char *name, long *val)
{
	char path[128], text[32];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), FAILSLAB_DIR "%s", name);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return false;
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return false;
	text[n] = '\0';
	*val = strtol(text, NULL, 0);
	return true;
}

/*
 * [start, end) of a text symbol: its address and the next one's. One pass
 * over /proc/kallsyms (it is not sorted, and producing it is slow under
 * TCG: a second pass cost seconds of the run's timeout).
 */
static bool symbol_range(const char *name, unsigned long *start,
			 unsigned long *end)
{
	unsigned long addr, *addrs = NULL, next = ULONG_MAX;
	size_t n = 0, cap = 0, i;
	char line[256], sym[128], type;
	FILE *f;

	*start = 0;
	f = fopen("/proc/kallsyms", "r");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx %c %127s", &addr, &type, sym) != 3 || !addr)
			continue;
		if (!*start && !strcmp(sym, name))
			*start = addr;
		if (n == cap) {
			unsigned long *more;

			cap = cap ? 2 * cap : 4096;
			more = realloc(addrs, cap * sizeof(*addrs));
			if (!more)
				break;
			addrs = more;
		}
		addrs[n++] = addr;
	}
	fclose(f);
	for (i = 0; *start && i < n; i++)
		if (addrs[i] > *start && addrs[i] < next)
			next = addrs[i];
	free(addrs);
	*end = next;
	return *start && next != ULONG_MAX;
}

/*
 * Fail the next --fail-alloc slab allocations whose stack holds
 * kvm_pgtable_walk(): those made while the fault handler walks stage 2
 * under mmu_lock, which is where a patch's allocation lands. KVM itself
 * allocates before it takes the lock (the memory cache top-up, whose
 * first use allocates its array with kvmalloc: failing that one makes
 * KVM_RUN return ENOMEM, as it should) and takes its page-table pages
 * from that cache inside the walk, so a kernel that does not allocate on
 * the path sees no failure at all. ignore-gfp-wait off: the allocations
 * under test are GFP_KERNEL_ACCOUNT, which failslab skips by default.
 * Armed just before the release, after the code slot is mapped.
 */
static void arm_failslab(void)
{
	unsigned long start, end;
	char val[32];

	if (!lab.fail_alloc)
		return;
	set_phase("arming failslab");
	snprintf(lab.failslab_window, sizeof(lab.failslab_window), "%s",
		 FAILSLAB_WINDOW);
	if (access(FAILSLAB_DIR, F_OK) &&
	    mount("debugfs", "/sys/kernel/debug", "debugfs", 0, NULL) &&
	    errno != EBUSY) {
		add_error_unlocked("mount debugfs: %s", strerror(errno));
		return;
	}
	if (access(FAILSLAB_DIR, F_OK)) {
		add_error_unlocked("no %s: the kernel lacks CONFIG_FAILSLAB or CONFIG_FAULT_INJECTION_DEBUG_FS",
				 FAILSLAB_DIR);
		return;
	}
	if (!symbol_range(FAILSLAB_WINDOW, &start, &end)) {
		add_error_unlocked("%s not found in /proc/kallsyms", FAILSLAB_WINDOW);
		return;
	}
	snprintf(val, sizeof(val), "0x%lx", start);
	if (!write_proc(FAILSLAB_DIR "require-start", val))
		return;
	snprintf(val, sizeof(val), "0x%lx", end);
	if (!write_proc(FAILSLAB_DIR "require-end", val))
		return;
	snprintf(val, sizeof(val), "%u", lab.fail_alloc);
	if (write_proc(FAILSLAB_DIR "stacktrace-depth", "32") &&
	    write_proc(FAILSLAB_DIR "ignore-gfp-wait", "N") &&
	    write_proc(FAILSLAB_DIR "task-filter", "N") &&
	    write_proc(FAILSLAB_DIR "verbose", "2") &&
	    write_proc(FAILSLAB_DIR "interval", "1") &&
	    write_proc(FAILSLAB_DIR "space", "0") &&
	    write_proc(FAILSLAB_DIR "times", val) &&
	    write_proc(FAILSLAB_DIR "probability", "100"))
		lab.failslab_armed = true;
}

static void disarm_failslab(void)
{
	if (lab.failslab_armed)
		write_proc(FAILSLAB_DIR "probability", "0");
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
		remap_blocks(rd->nonce);
	for (i = 0; i < lab.nr_vcpus; i++) {
		lab.vcpus[i].s = &rd->samples[i];
		lab.vcpus[i].state = VCPU_PENDING;
	}
	/* Published to the vCPU threads by the next barrier. */
	lab.faulters_left = nr_faulting();
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
	check_stores(r);
	for (i = 0; i < lab.nr_vcpus; i++)
		if (lab.vcpus[i].state != VCPU_DONE)
			ok = false;
	if (!ok && r + 1 < lab.nr_rounds)
		add_error_locked("stopped after round %u of %u: not every vCPU completed it",
				 r + 1, lab.nr_rounds);
	pthread_mutex_unlock(&lab.lock);
	return ok;
}

static int run_exit_code(void);

/* A VM gave up: this one stops too, judged on what it has so far. */
static void __noreturn stop_rounds(void)
{
	disarm_watchdog();
	pthread_mutex_lock(&lab.lock);
	finish_locked(run_exit_code());
}

/*
 * The main thread's side of the rounds: the vCPU threads and this one
 * meet at four barriers a round, so the memslots and the registers are
 * only changed while no vCPU is in KVM_RUN. With several VMs the main
 * threads also meet before the release (so the exec faults of all VMs
 * start together) and after the round (so no VM disarms the watchdog, or
 * starts its next round, while another is still faulting).
 */
static void run_rounds(void)
{
	unsigned int r;
	bool ok;

	for (r = 0; r < lab.nr_rounds; r++) {
		begin_round(r);
		barrier_wait();		/* go: the data faults */
		barrier_wait();		/* all parked before the branch */
		if (!r) {
			arm_watchdog();
			arm_failslab();
		}
		if (!vm_sync_wait("before the release"))
			stop_rounds();
		barrier_wait();		/* release: the exec faults */
		barrier_wait();		/* all done, reset, out of KVM_RUN */
		ok = end_round(r);
		if (!vm_sync_wait("after a round"))
			stop_rounds();
		if (!ok)
			break;
	}
	lab.rounds_complete = r == lab.nr_rounds;
	disarm_watchdog();
	disarm_failslab();
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

/* Stale code or a lost store in any round beats a missing value in any. */
static int run_exit_code(void)
{
	bool missing = lab.nr_started < lab.nr_rounds;
	unsigned int r;

	for (r = 0; r < lab.nr_started; r++) {
		if (count_values(&lab.rounds[r], false) ||
		    lab.rounds[r].stores_lost)
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
		"                   [--vms K] [--blocks M] [--storm N]\n"
		"                   [--remap memslot|dontneed] [--first-touch data|exec]\n"
		"                   [--fail-alloc N]\n"
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
		"  --vms K            K VMs, one VMM process each, their exec faults\n"
		"                     released together; one result line per VM\n"
		"                     (default 1, at most %u)\n"
		"  --blocks M         M huge blocks per VM, one memslot each, at\n"
		"                     consecutive IPAs; each vCPU exec-faults them in\n"
		"                     turn, each timed (default 1, at most %u)\n"
		"  --storm N          the last N vCPUs take no exec fault: they run\n"
		"                     ic ivau over up to 1 MiB of the block, ic iallu,\n"
		"                     dsb ish, isb, timed, while the others fault\n"
		"                     (default 0; fewer than --vcpus)\n"
		"  --remap HOW        how a round makes stage 2 forget the blocks:\n"
		"                     memslot (delete and add again, default) or\n"
		"                     dontneed (madvise MADV_DONTNEED: fresh pages)\n"
		"  --first-touch HOW  the blocks' first access in a round: data (a\n"
		"                     store, then the exec permission fault; default)\n"
		"                     or exec (the fetch itself: KVM maps the block\n"
		"                     executable in its map walker)\n"
		"  --fail-alloc N     fail the next N slab allocations made under\n"
		"                     kvm_pgtable_walk() (failslab, armed just\n"
		"                     before the first exec faults; needs debugfs and\n"
		"                     CONFIG_FAILSLAB; default 0)\n"
		"  --facts            print S2FAULT-FACTS {json} (CTR_EL0, DIC, page and\n"
		"                     block size) and exit, touching nothing: what\n"
		"                     host-run reads before it changes the host\n"
		"  --help             this text\n"
		"\n"
		"Needs /dev/kvm and K x M free hugetlb pages of the block size.\n"
		"Exit status: 0 run completed, 1 a vCPU ran stale code or a data\n"
		"store was lost, 2 bad usage, 3 infrastructure problem or timeout.\n",
		MAX_ROUNDS, MAX_VMS, MAX_BLOCKS);
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

static bool parse_name(const char *s, const char * const *names,
		       unsigned int nr, unsigned int *out)
{
	unsigned int i;

	for (i = 0; i < nr; i++) {
		if (!strcmp(s, names[i])) {
			*out = i;
			return true;
		}
	}
	return false;
}

static void parse_args(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "vcpus", required_argument, NULL, 'n' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "timeout", required_argument, NULL, 't' },
		{ "block-size", required_argument, NULL, 'b' },
		{ "arm-watchdog", required_argument, NULL, 'w' },
		{ "vms", required_argument, NULL, 'V' },
		{ "blocks", required_argument, NULL, 'B' },
		{ "storm", required_argument, NULL, 'S' },
		{ "remap", required_argument, NULL, 'R' },
		{ "first-touch", required_argument, NULL, 'F' },
		{ "fail-alloc", required_argument, NULL, 'A' },
		{ "facts", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	unsigned int kind = 0;
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
		case 'V':
			ok = parse_uint(optarg, 1, MAX_VMS, &lab.nr_vms);
			break;
		case 'B':
			ok = parse_uint(optarg, 1, MAX_BLOCKS, &lab.nr_blocks);
			break;
		case 'S':
			ok = parse_uint(optarg, 0, 4095, &lab.nr_storm);
			break;
		case 'R':
			ok = parse_name(optarg, remap_names,
					ARRAY_SIZE(remap_names), &kind);
			lab.remap = kind;
			break;
		case 'F':
			ok = parse_name(optarg, touch_names,
					ARRAY_SIZE(touch_names), &kind);
			lab.first_touch = kind;
			break;
		case 'A':
			ok = parse_uint(optarg, 0, 1000, &lab.fail_alloc);
			break;
		case 'f':
			lab.facts_only = true;
			break;
		case 'h':
			print_usage(stdout);
			exit(EXIT_OK);
		default:
			ok = false;
		}
	}
	if (ok && lab.nr_storm >= lab.nr_vcpus) {
		fprintf(stderr, "s2fault-vmm: --storm %u leaves none of the %u vCPUs to take exec faults\n",
			lab.nr_storm, lab.nr_vcpus);
		exit(EXIT_USAGE);
	}
	if (!ok || optind != argc) {
		print_usage(stderr);
		exit(EXIT_USAGE);
	}
}

/*
 * Before anything else exists (threads, the VM): fork VMs 1..K-1, which
 * go on from here as VMM processes of their own, and share the barrier
 * of vm_sync_wait(). They die with VM 0, which waits for them.
 */
static void start_vms(void)
{
	pid_t parent = getpid(), pid;
	unsigned int i;

	if (lab.nr_vms == 1)
		return;
	lab.vm_sync = mmap(NULL, sizeof(*lab.vm_sync), PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (lab.vm_sync == MAP_FAILED) {
		lab.vm_sync = NULL;
		infra_fail("mmap of the VMs' barrier", errno);
	}
	for (i = 1; i < lab.nr_vms; i++) {
		pid = fork();
		if (pid < 0)
			infra_fail("fork", errno);
		if (!pid) {
			lab.vm_index = i;
			lab.nr_children = 0;
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(EXIT_INFRA);
			return;
		}
		lab.children[lab.nr_children++] = pid;
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
	if (lab.facts_only) {
		print_facts();
		return EXIT_OK;
	}
	start_vms();
	/* After the fork: each VM checks coherence against nonces of its own. */
	make_nonces();
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
