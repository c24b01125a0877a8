// SPDX-License-Identifier: GPL-2.0
/*
 * What the run says: the errors it collects on the way, the one
 * S2FAULT-RESULT line (the Python side, src/s2fault/judge/lines.py, reads its
 * keys: keep them), the exit status, and the way out that prints them.
 */
#define _GNU_SOURCE
#include "vmm.h"

static void add_error(const char *fmt, va_list ap)
	__printf(1, 0);

/* Callers hold lab.lock: vCPU threads and the timeout thread add errors too. */
static void add_error(const char *fmt, va_list ap)
{
	if (lab.nr_errors < MAX_ERRORS)
		vsnprintf(lab.errors[lab.nr_errors++], ERROR_LEN, fmt, ap);
}

void add_error_locked(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	add_error(fmt, ap);
	va_end(ap);
}

/* For callers that do not hold lab.lock. */
void add_error_unlocked(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	pthread_mutex_lock(&lab.lock);
	add_error(fmt, ap);
	pthread_mutex_unlock(&lab.lock);
	va_end(ap);
}

/* ---- output ---------------------------------------------------------- */

static double ts_diff_us(const struct timespec *a, const struct timespec *b)
{
	return (b->tv_sec - a->tv_sec) * 1e6 + (b->tv_nsec - a->tv_nsec) / 1e3;
}

unsigned int nr_faulting(void)
{
	return lab.nr_vcpus - lab.nr_storm;
}

static double ticks_us(uint64_t ticks)
{
	return (double)(int64_t)ticks * 1e6 / lab.cntfrq;
}

/* One exec fault as JSON: microseconds by the guest's counter, or null. */
static void add_exec_us(struct s2f_buf *b, const struct exec_sample *e)
{
	if (e->have_t0 && e->have_t1 && lab.cntfrq)
		s2f_buf_add(b, "%.1f", ticks_us(e->t1 - e->t0));
	else
		s2f_buf_add(b, "null");
}

/*
 * Per-vCPU lists of @rd; "null" for what a vCPU did not report (and for
 * the exec faults of storm vCPUs, which take none). The exec fault is
 * block 0's. Before the vCPUs exist (setup failed) the lists are empty.
 */
static void add_fault_lists(struct s2f_buf *b, const struct round *rd)
{
	const struct sample *s;
	unsigned int i;

	s2f_buf_add(b, "\"exec_fault_us\":[");
	for (i = 0; i < lab.nr_vcpus && lab.vcpus; i++) {
		s2f_buf_add(b, i ? "," : "");
		add_exec_us(b, &rd->samples[i].exec[0]);
	}
	s2f_buf_add(b, "],\"exec_fault_wall_us\":[");
	for (i = 0; i < lab.nr_vcpus && lab.vcpus; i++) {
		s = &rd->samples[i];
		s2f_buf_add(b, i ? "," : "");
		if (s->have_wall)
			s2f_buf_add(b, "%.1f", ts_diff_us(&s->released, &s->exited));
		else
			s2f_buf_add(b, "null");
	}
	s2f_buf_add(b, "]");
}

/* many-blocks: [[vcpu 0 block 0, ..., block M-1], [vcpu 1 ...], ...]. */
static void add_block_lists(struct s2f_buf *b, const struct round *rd)
{
	unsigned int i, k;

	s2f_buf_add(b, ",\"block_fault_us\":[");
	for (i = 0; i < lab.nr_vcpus && lab.vcpus; i++) {
		s2f_buf_add(b, "%s[", i ? "," : "");
		for (k = 0; k < lab.nr_blocks; k++) {
			s2f_buf_add(b, k ? "," : "");
			add_exec_us(b, &rd->samples[i].exec[k]);
		}
		s2f_buf_add(b, "]");
	}
	s2f_buf_add(b, "]");
}

/* guest-icache-storm: per vCPU, null for the faulting ones. */
static void add_storm_lists(struct s2f_buf *b, const struct round *rd)
{
	static const char * const keys[] = {
		"storm_max_us", "storm_mean_us", "storm_iterations"
	};
	const struct sample *s;
	unsigned int i, k;

	for (k = 0; k < 3; k++) {
		s2f_buf_add(b, ",\"%s\":[", keys[k]);
		for (i = 0; i < lab.nr_vcpus && lab.vcpus; i++) {
			s = &rd->samples[i];
			s2f_buf_add(b, i ? "," : "");
			if (!lab.vcpus[i].storm || !s->storm_iterations ||
			    (k < 2 && !lab.cntfrq))
				s2f_buf_add(b, "null");
			else if (k == 0)
				s2f_buf_add(b, "%.1f", ticks_us(s->storm_max));
			else if (k == 1)
				s2f_buf_add(b, "%.1f", ticks_us(s->storm_sum) /
					    s->storm_iterations);
			else
				s2f_buf_add(b, "%llu", (unsigned long long)
					    s->storm_iterations);
		}
		s2f_buf_add(b, "]");
	}
	s2f_buf_add(b, ",\"storm_range_bytes\":%zu", lab.storm_range);
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

unsigned int count_values(const struct round *rd, bool match)
{
	unsigned int i, n = 0;

	for (i = 0; i < lab.nr_vcpus && lab.vcpus; i++)
		if (vcpu_matches(rd, i, match))
			n++;
	return n;
}

bool round_coherent(const struct round *rd)
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
static void add_stale(struct s2f_buf *b, unsigned int r)
{
	const struct round *rd = &lab.rounds[r];
	const struct exec_sample *e;
	unsigned int i, k, n = 0;

	s2f_buf_add(b, ",\"stale\":[");
	for (i = 0; i < lab.nr_vcpus && lab.vcpus; i++) {
		for (k = 0; k < lab.nr_blocks && !lab.vcpus[i].storm; k++) {
			e = &rd->samples[i].exec[k];
			if (!e->have_value || e->value == rd->nonce)
				continue;
			s2f_buf_add(b, "%s{\"vcpu\":%u,", n++ ? "," : "", i);
			if (lab.nr_blocks > 1)
				s2f_buf_add(b, "\"block\":%u,", k);
			s2f_buf_add(b, "\"got\":\"0x%08llx\",\"expected\":\"0x%08x\"",
				    (unsigned long long)e->value, rd->nonce);
			if (r)
				s2f_buf_add(b, ",\"previous\":\"0x%08x\"}",
					    lab.rounds[r - 1].nonce);
			else
				s2f_buf_add(b, ",\"previous\":null}");
		}
	}
	s2f_buf_add(b, "]");
}

static void add_rounds(struct s2f_buf *b)
{
	const struct round *rd;
	struct timespec now;
	unsigned int r;

	s2f_buf_add(b, ",\"rounds\":[");
	for (r = 0; r < lab.nr_started; r++) {
		rd = &lab.rounds[r];
		s2f_buf_add(b, "%s{\"nonce\":\"0x%08x\",", r ? "," : "",
			    rd->nonce);
		add_fault_lists(b, rd);
		if (lab.nr_blocks > 1)
			add_block_lists(b, rd);
		if (lab.nr_storm)
			add_storm_lists(b, rd);
		add_stale(b, r);
		s2f_buf_add(b, ",\"values_ok\":%u,\"coherent\":%s",
			    count_values(rd, true),
			    round_coherent(rd) ? "true" : "false");
		s2f_buf_add(b, ",\"stores_lost\":%u", rd->stores_lost);
		if (rd->ended)
			now = rd->end;
		else
			clock_gettime(CLOCK_MONOTONIC, &now);
		s2f_buf_add(b, ",\"elapsed_ms\":%.0f}",
			    ts_diff_us(&rd->start, &now) / 1e3);
	}
	s2f_buf_add(b, "]");
}

/* Which VM this is, and the ids a kernel splat names ([comm:tid]). */
static void add_vm(struct s2f_buf *b)
{
	unsigned int i;

	s2f_buf_add(b, ",\"vm\":%u,\"vms\":%u,\"blocks\":%u,\"storm\":%u",
		    lab.vm_index, lab.nr_vms, lab.nr_blocks, lab.nr_storm);
	s2f_buf_add(b, ",\"remap\":\"%s\",\"first_touch\":\"%s\"",
		    remap_names[lab.remap], touch_names[lab.first_touch]);
	s2f_buf_add(b, ",\"pid\":%d,\"vcpu_tids\":[", (int)getpid());
	for (i = 0; i < lab.nr_vcpus && lab.vcpus; i++)
		s2f_buf_add(b, "%s%d", i ? "," : "", (int)lab.vcpus[i].tid);
	s2f_buf_add(b, "]");
}

/* With --fail-alloc: armed or not, and how many allocations failed. */
static void add_fault_injection(struct s2f_buf *b)
{
	long left = -1;

	if (!lab.fail_alloc)
		return;
	if (lab.failslab_armed)
		read_failslab("times", &left);
	s2f_buf_add(b, ",\"fault_injection\":{\"armed\":%s,\"window\":",
		    lab.failslab_armed ? "true" : "false");
	s2f_json_string(b, lab.failslab_window);
	s2f_buf_add(b, ",\"requested\":%u,\"failures\":", lab.fail_alloc);
	if (left >= 0 && left <= (long)lab.fail_alloc)
		s2f_buf_add(b, "%ld}", (long)lab.fail_alloc - left);
	else
		s2f_buf_add(b, "null}");
}

/*
 * vCPUs released into their exec faults that have not come back: only
 * when the run ends early (a timeout), they are the ones stuck in it.
 */
static void add_stuck(struct s2f_buf *b)
{
	unsigned int i, n = 0;

	s2f_buf_add(b, ",\"stuck_vcpus\":[");
	for (i = 0; i < lab.nr_vcpus && lab.vcpus; i++)
		if (lab.vcpus[i].state == VCPU_RELEASED)
			s2f_buf_add(b, "%s%u", n++ ? "," : "", i);
	s2f_buf_add(b, "]");
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
	struct s2f_buf b = { .oom_exit = EXIT_INFRA };
	struct timespec now;
	unsigned int i;

	clock_gettime(CLOCK_MONOTONIC, &now);
	s2f_buf_add(&b, "\nS2FAULT-RESULT {\"vcpus\":%u,\"page_size\":%ld",
		    lab.nr_vcpus, lab.page_size);
	s2f_buf_add(&b, ",\"block_bytes\":%zu,\"ctr_el0\":\"0x%llx\"",
		    lab.block_size, (unsigned long long)lab.ctr);
	s2f_buf_add(&b, ",\"dic\":%d,\"idc\":%d,\"cntfrq\":%llu",
		    !!(lab.ctr & CTR_DIC), !!(lab.ctr & CTR_IDC),
		    (unsigned long long)lab.cntfrq);
	add_vm(&b);
	s2f_buf_add(&b, ",\"nonce\":\"0x%08x\",\"coherent\":%s,",
		    cur->nonce, all_coherent() ? "true" : "false");
	add_fault_lists(&b, cur);
	s2f_buf_add(&b, ",\"values_ok\":%u", count_values(cur, true));
	add_rounds(&b);
	add_fault_injection(&b);
	add_stuck(&b);
	s2f_buf_add(&b, ",\"watchdog_armed\":%u,\"errors\":[",
		    lab.watchdog_armed);
	for (i = 0; i < lab.nr_errors; i++) {
		s2f_buf_add(&b, i ? "," : "");
		s2f_json_string(&b, lab.errors[i]);
	}
	s2f_buf_add(&b, "],\"elapsed_ms\":%.0f}\n",
		    ts_diff_us(&lab.start, &now) / 1e3);
	if (write(STDOUT_FILENO, b.p, b.len) < 0)
		perror("write");
	s2f_buf_free(&b);
}

/*
 * The single way out once the run has started: with lab.lock held, so the
 * result is printed once, and never released, so that vCPU threads still
 * running cannot change what is being printed.
 */
void __noreturn finish_locked(int code)
{
	print_result();
	if (!lab.rounds_complete)
		vm_sync_abort();
	_exit(wait_other_vms(code));
}

void __noreturn fail(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&lab.lock);
	va_start(ap, fmt);
	add_error(fmt, ap);
	va_end(ap);
	finish_locked(EXIT_INFRA);
}

void __noreturn infra_fail(const char *what, int err)
{
	fail("%s: %s", what, strerror(err));
}

/* Stale code or a lost store in any round beats a missing value in any. */
int run_exit_code(void)
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
