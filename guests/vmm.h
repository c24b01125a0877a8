/* SPDX-License-Identifier: GPL-2.0 */
/*
 * s2fault-vmm's parts, and the one state they share (struct lab, below).
 * What the VMM does is told in vmm.c; by concern:
 *
 *   vmm.c         the command line and main(): the run, start to finish
 *   vmm_vm.c      the VM and its memslots: the code slot, the huge blocks,
 *                 the code written into them, the remap between rounds
 *   vmm_vcpu.c    vCPUs: their threads, KVM_RUN and what the guest reports
 *                 over MMIO, the rounds in lockstep, the run's timeout
 *   vmm_sync.c    the barrier of the VMs (one process each) and their exits
 *   vmm_host.c    the host: CTR_EL0 and friends, the soft-lockup watchdog,
 *                 failslab
 *   vmm_result.c  errors, the S2FAULT-RESULT line, the exit status
 *
 * Threads: the main thread runs the rounds, one thread per vCPU runs it,
 * a timeout thread may end the run at any time. What they share is under
 * lab.lock; the vCPUs' samples are handed over at the barriers.
 */
#ifndef S2FAULT_VMM_H
#define S2FAULT_VMM_H

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
#include "s2f.h"

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

/* Their option values (--remap), in vmm.c. */
extern const char * const remap_names[2];

/* The block's first access in a round: a store, or the instruction fetch. */
enum touch_kind { TOUCH_DATA, TOUCH_EXEC };

/* Their option values (--first-touch), in vmm.c. */
extern const char * const touch_names[2];

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

extern struct lab lab;

/* vmm_result.c */
void add_error_locked(const char *fmt, ...)
	__printf(1, 2);
void add_error_unlocked(const char *fmt, ...)
	__printf(1, 2);
unsigned int nr_faulting(void);
unsigned int count_values(const struct round *rd, bool match);
bool round_coherent(const struct round *rd);
int run_exit_code(void);
void __noreturn finish_locked(int code);
void __noreturn fail(const char *fmt, ...)
	__printf(1, 2);
void __noreturn infra_fail(const char *what, int err);

/* vmm_sync.c */
void start_vms(void);
void vm_sync_abort(void);
bool vm_sync_wait(const char *where);
int wait_other_vms(int code);

/* vmm_host.c */
void read_host_facts(void);
void print_facts(void);
size_t default_block_size(long page_size);
void arm_watchdog(void);
void disarm_watchdog(void);
void arm_failslab(void);
void disarm_failslab(void);
bool read_failslab(const char *name, long *val);

/* vmm_vm.c */
int kvm_ioctl_checked(int fd, unsigned long req, void *arg,
		      const char *name);
void make_nonces(void);
void create_vm(void);
void setup_code_slot(void);
void setup_block_slot(void);
void remap_blocks(uint32_t nonce);
uint64_t data_token(const struct vcpu *v, unsigned int r);
void check_stores(unsigned int r);

/* vmm_vcpu.c */
void set_phase(const char *phase);
void create_vcpus(void);
void start_vcpu_threads(void);
void run_rounds(void);
void start_timeout_thread(void);

#endif /* S2FAULT_VMM_H */
