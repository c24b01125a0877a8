// SPDX-License-Identifier: GPL-2.0
/*
 * The host the VMM runs on: the facts it reports (CTR_EL0, the counter's
 * frequency, page and block size) and the kernel knobs it turns around the
 * exec faults (the soft-lockup watchdog, failslab).
 */
#define _GNU_SOURCE
#include "vmm.h"

/* ---- host facts ------------------------------------------------------ */

void read_host_facts(void)
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
void print_facts(void)
{
	printf("S2FAULT-FACTS {\"page_size\":%ld,\"block_bytes\":%zu,\"ctr_el0\":\"0x%llx\",\"dic\":%d,\"idc\":%d,\"cntfrq\":%llu}\n",
	       lab.page_size, lab.block_size, (unsigned long long)lab.ctr,
	       !!(lab.ctr & CTR_DIC), !!(lab.ctr & CTR_IDC),
	       (unsigned long long)lab.cntfrq);
	fflush(stdout);
}

/* The PMD block size for the host's translation granule. */
size_t default_block_size(long page_size)
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

/* ---- the soft-lockup watchdog and failslab --------------------------- */

/* A sysctl or debugfs attribute; what failed goes into the result. */
static bool write_proc(const char *path, const char *val)
{
	int err = s2f_write_file(path, val, 0);

	if (!err)
		return true;
	add_error_unlocked("write %s to %s: %s", val, path, strerror(err));
	return false;
}

/*
 * Dilated runs boot with nosoftlockup. Arming the detector any earlier
 * would expose the long setup (zeroing the huge page takes many seconds
 * of guest time) and unrelated tasks to false soft lockups.
 */
void arm_watchdog(void)
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
bool read_failslab(const char *name, long *val)
{
	char path[128];

	snprintf(path, sizeof(path), FAILSLAB_DIR "%s", name);
	return s2f_read_long(path, val);
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
void arm_failslab(void)
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

void disarm_failslab(void)
{
	if (lab.failslab_armed)
		write_proc(FAILSLAB_DIR "probability", "0");
}

/*
 * And disarm it once the exec phase is over: tearing the VM down (unmapping
 * the block, freeing the huge page) is not the path under test, and under
 * dilation its long loops would be reported as lockups of other tasks.
 */
void disarm_watchdog(void)
{
	if (!lab.watchdog_armed)
		return;
	set_phase("disarming the soft-lockup watchdog");
	write_proc("/proc/sys/kernel/soft_watchdog", "0");
}
