// SPDX-License-Identifier: GPL-2.0
/*
 * Several VMs (--vms K): one VMM process each, forked before any VM exists,
 * meeting at a barrier of their own around each round's exec faults; VM 0
 * waits for the others and exits with the worst status.
 */
#define _GNU_SOURCE
#include "vmm.h"

/* ---- the VMs' barrier ------------------------------------------------ */

static long futex(uint32_t *addr, int op, uint32_t val)
{
	/* Not FUTEX_PRIVATE_FLAG: the word is shared between processes. */
	return syscall(SYS_futex, addr, op, val, NULL, NULL, 0);
}

/* Let every VM out of vm_sync_wait(), now and from now on. */
void vm_sync_abort(void)
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
bool vm_sync_wait(const char *where)
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
int wait_other_vms(int code)
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
 * Before anything else exists (threads, the VM): fork VMs 1..K-1, which
 * go on from here as VMM processes of their own, and share the barrier
 * of vm_sync_wait(). They die with VM 0, which waits for them.
 */
void start_vms(void)
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
