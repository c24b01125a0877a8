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
 *
 * The parts, by concern, are listed in vmm.h; this file has the command
 * line and main(), the run from start to finish.
 */
#define _GNU_SOURCE
#include "vmm.h"

const char * const remap_names[2] = {
	[REMAP_MEMSLOT] = "memslot",
	[REMAP_DONTNEED] = "dontneed",
};

const char * const touch_names[2] = {
	[TOUCH_DATA] = "data",
	[TOUCH_EXEC] = "exec",
};

struct lab lab = {
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
			ok = s2f_parse_uint(optarg, 1, 4096, &lab.nr_vcpus);
			break;
		case 'r':
			ok = s2f_parse_uint(optarg, 1, MAX_ROUNDS, &lab.nr_rounds);
			break;
		case 't':
			ok = s2f_parse_uint(optarg, 1, 86400, &lab.timeout_s);
			break;
		case 'b':
			ok = s2f_parse_size(optarg, &lab.block_size);
			break;
		case 'w':
			ok = s2f_parse_uint(optarg, 0, 60, &lab.watchdog_thresh);
			break;
		case 'V':
			ok = s2f_parse_uint(optarg, 1, MAX_VMS, &lab.nr_vms);
			break;
		case 'B':
			ok = s2f_parse_uint(optarg, 1, MAX_BLOCKS, &lab.nr_blocks);
			break;
		case 'S':
			ok = s2f_parse_uint(optarg, 0, 4095, &lab.nr_storm);
			break;
		case 'R':
			ok = s2f_parse_name(optarg, remap_names,
					    ARRAY_SIZE(remap_names), &kind);
			lab.remap = kind;
			break;
		case 'F':
			ok = s2f_parse_name(optarg, touch_names,
					    ARRAY_SIZE(touch_names), &kind);
			lab.first_touch = kind;
			break;
		case 'A':
			ok = s2f_parse_uint(optarg, 0, 1000, &lab.fail_alloc);
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
