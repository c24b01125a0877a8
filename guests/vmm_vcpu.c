// SPDX-License-Identifier: GPL-2.0
/*
 * The vCPUs and the rounds: creating them, their threads (KVM_RUN until
 * the guest reports over MMIO, see guest_abi.h), the main thread's side
 * of the rounds in lockstep with them, and the timeout over the whole run.
 */
#define _GNU_SOURCE
#include "vmm.h"

/* ---- creating vCPUs -------------------------------------------------- */

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
void create_vcpus(void)
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

void start_vcpu_threads(void)
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

void set_phase(const char *phase)
{
	pthread_mutex_lock(&lab.lock);
	lab.phase = phase;
	pthread_mutex_unlock(&lab.lock);
}

/* ---- the rounds, and the timeout ------------------------------------- */

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
void run_rounds(void)
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

void start_timeout_thread(void)
{
	pthread_t tid;
	int err;

	err = pthread_create(&tid, NULL, timeout_thread, NULL);
	if (err)
		infra_fail("pthread_create", err);
	pthread_detach(tid);
}
