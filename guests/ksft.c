// SPDX-License-Identifier: GPL-2.0
/*
 * s2fault-ksft: runs the kernel's own KVM selftests inside the booted kernel
 * and reports them in one S2FAULT-RESULT line, as the VMM does for its
 * workload. init starts it (s2fault.program=s2fault-ksft) with the VMM's
 * argv.
 *
 * What to run is data, not code: /ksft/plan, written by s2fault's selftests
 * stage next to the binaries, one test a line:
 *
 *   NAME TIMEOUT_S ARG...
 *
 * where an ARG may hold @VCPUS@ or @HUGEPAGE@ (see plan_word()).
 *
 * Each test's output is streamed to the console as it comes (a splat then
 * sits next to the test that provoked it) and scanned for the reason of a
 * skip or an assertion. Exit status 4 is KSFT_SKIP.
 *
 * Exit status: 0 every test passed or skipped, 1 a test failed or timed
 * out, 2 the runner itself could not do its job.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "compiler.h"
#include "s2f.h"

#define KSFT_DIR	"/ksft"
#define PLAN_PATH	KSFT_DIR "/plan"
#define KSFT_SKIP	4
#define MAX_TESTS	16
#define MAX_ARGS	32
#define NOTE_LEN	256
#define MAX_ERRORS	4
/* A test that ignores SIGKILL is stuck in the kernel: wait no longer. */
#define KILL_WAIT_MS	5000
#define CTR_IDC		(1ULL << 28)
#define CTR_DIC		(1ULL << 29)

struct test {
	char *name;
	unsigned int timeout_s;
	char *argv[MAX_ARGS + 2];
	int argc;
	int exit;		/* exit code, 128 + signal, -1 when not reaped */
	const char *status;
	double seconds;
	char skip_reason[NOTE_LEN];
	char assertion[NOTE_LEN];
};

static struct test tests[MAX_TESTS];
static unsigned int nr_tests;
static unsigned int nr_vcpus = 1;
static unsigned int budget_s = 600;
static unsigned int watchdog_thresh;
static unsigned long hugepage_kb;
static char errors[MAX_ERRORS][NOTE_LEN];
static unsigned int nr_errors;

static void add_error(const char *fmt, ...)
	__printf(1, 2);

static void add_error(const char *fmt, ...)
{
	va_list ap;

	if (nr_errors == MAX_ERRORS)
		return;
	va_start(ap, fmt);
	vsnprintf(errors[nr_errors++], NOTE_LEN, fmt, ap);
	va_end(ap);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * A plan word with its placeholders filled in: @VCPUS@ (the --vcpus count)
 * and @HUGEPAGE@ (the default hugepage size, which follows the kernel's page
 * size: 512M with 64K pages, 2M with 4K pages).
 */
static char *plan_word(const char *word)
{
	static const char * const names[] = { "@VCPUS@", "@HUGEPAGE@" };
	char value[32], *out = strdup(word), *at, *next;
	unsigned int i;

	for (i = 0; out && i < 2; i++) {
		at = strstr(out, names[i]);
		if (!at)
			continue;
		if (i == 0)
			snprintf(value, sizeof(value), "%u", nr_vcpus);
		else
			snprintf(value, sizeof(value), "%luK", hugepage_kb);
		if (asprintf(&next, "%.*s%s%s", (int)(at - out), out, value,
			     at + strlen(names[i])) < 0)
			next = NULL;
		free(out);
		out = next;
	}
	return out;
}

static unsigned long read_hugepage_kb(void)
{
	long kb;

	if (!s2f_file_field("/proc/meminfo", "Hugepagesize:", &kb) || kb < 0)
		return 0;
	return kb;
}

static bool parse_plan_line(char *line, struct test *t)
{
	char *save, *word, *path;

	t->name = strtok_r(line, " \t\n", &save);
	word = strtok_r(NULL, " \t\n", &save);
	if (!t->name || !word || t->name[0] == '#')
		return false;
	t->timeout_s = strtoul(word, NULL, 10);
	if (!t->timeout_s || strchr(t->name, '/'))
		return false;
	if (asprintf(&path, KSFT_DIR "/%s", t->name) < 0)
		return false;
	t->argv[t->argc++] = path;
	while ((word = strtok_r(NULL, " \t\n", &save)) && t->argc <= MAX_ARGS)
		t->argv[t->argc++] = plan_word(word);
	t->argv[t->argc] = NULL;
	t->exit = -1;
	t->status = "timeout";
	return true;
}

static bool read_plan(void)
{
	char line[1024];
	FILE *f = fopen(PLAN_PATH, "r");

	if (!f) {
		add_error("cannot open %s: %s", PLAN_PATH, strerror(errno));
		return false;
	}
	while (nr_tests < MAX_TESTS && fgets(line, sizeof(line), f)) {
		if (line[0] == '#' || line[0] == '\n')
			continue;
		if (parse_plan_line(strdup(line), &tests[nr_tests]))
			nr_tests++;
		else
			add_error("bad plan line: %.80s", line);
	}
	fclose(f);
	if (!nr_tests)
		add_error("%s lists no test", PLAN_PATH);
	return nr_tests && !nr_errors;
}

static void copy_note(char *dst, const char *src)
{
	size_t n;

	while (*src == ' ' || *src == '-' || *src == ':' || *src == '\t')
		src++;
	n = strcspn(src, "\r\n");
	if (n >= NOTE_LEN)
		n = NOTE_LEN - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/*
 * One line of a test's output: a KSFT_SKIP prints "# SKIP <reason>", a
 * TEST_ASSERT prints a banner, then "file:line: condition", then the message.
 */
static void scan_line(struct test *t, const char *line, int *after_banner)
{
	const char *skip = strstr(line, "SKIP");
	size_t len;

	if (skip && !t->skip_reason[0]) {
		copy_note(t->skip_reason, skip + strlen("SKIP"));
		return;
	}
	if (strstr(line, "Test Assertion Failure")) {
		*after_banner = 2;
		return;
	}
	if (*after_banner && line[strspn(line, " \t\r\n")]) {
		len = strlen(t->assertion);
		if (len && len < NOTE_LEN - 2)
			strcat(t->assertion, " ");
		len = strlen(t->assertion);
		copy_note(t->assertion + len, line);
		t->assertion[NOTE_LEN - 1] = '\0';
		(*after_banner)--;
	}
}

struct output {
	char line[NOTE_LEN * 2];
	size_t len;
	int after_banner;
};

/* Pass a chunk of output to the console and scan it line by line. */
static void take_output(struct test *t, struct output *o, const char *p,
			size_t n)
{
	size_t i;

	s2f_write_all(STDOUT_FILENO, p, n);
	for (i = 0; i < n; i++) {
		if (o->len < sizeof(o->line) - 1)
			o->line[o->len++] = p[i];
		if (p[i] != '\n')
			continue;
		o->line[o->len] = '\0';
		scan_line(t, o->line, &o->after_banner);
		o->len = 0;
	}
}

/* Read what is there; false at end of file or on error. */
static bool drain(int fd, struct test *t, struct output *o)
{
	char buf[4096];
	ssize_t n;

	for (;;) {
		n = read(fd, buf, sizeof(buf));
		if (n > 0) {
			take_output(t, o, buf, n);
			continue;
		}
		if (n < 0 && (errno == EINTR))
			continue;
		return n < 0 && errno == EAGAIN;
	}
}

static bool reap(pid_t pid, int *wstatus, double deadline)
{
	while (waitpid(pid, wstatus, WNOHANG) == 0) {
		if (now_s() >= deadline)
			return false;
		usleep(20000);
	}
	return true;
}

static pid_t start_test(struct test *t, int out)
{
	pid_t pid = fork();

	if (pid)
		return pid;
	/* Its own process group, so a timeout kills the helpers it forked too. */
	setpgid(0, 0);
	dup2(out, STDOUT_FILENO);
	dup2(out, STDERR_FILENO);
	close(out);
	execv(t->argv[0], t->argv);
	fprintf(stderr, "s2fault-ksft: execv %s: %s\n", t->argv[0],
		strerror(errno));
	_exit(127);
}

/* Run one test; false when it could not be stopped (stop everything). */
static bool run_test(struct test *t, double run_deadline)
{
	struct output o = { .len = 0 };
	double start = now_s(), deadline = start + t->timeout_s;
	bool open = true, reaped;
	struct pollfd pfd;
	int fds[2], wstatus = 0, i;
	pid_t pid;

	if (deadline > run_deadline)
		deadline = run_deadline;
	printf("\ns2fault-ksft: running");
	for (i = 0; i < t->argc; i++)
		printf(" %s", t->argv[i]);
	printf(" (timeout %u s)\n", t->timeout_s);
	fflush(stdout);
	if (pipe2(fds, O_CLOEXEC) < 0) {
		add_error("pipe: %s", strerror(errno));
		return false;
	}
	pid = start_test(t, fds[1]);
	close(fds[1]);
	if (pid < 0) {
		add_error("fork: %s", strerror(errno));
		close(fds[0]);
		return false;
	}
	fcntl(fds[0], F_SETFL, O_NONBLOCK);
	pfd.fd = fds[0];
	pfd.events = POLLIN;
	for (;;) {
		if (waitpid(pid, &wstatus, WNOHANG) == pid) {
			reaped = true;
			break;
		}
		if (now_s() >= deadline) {
			reaped = false;
			break;
		}
		if (!open) {
			usleep(20000);
			continue;
		}
		if (poll(&pfd, 1, 100) > 0)
			open = drain(fds[0], t, &o);
	}
	if (!reaped) {
		kill(-pid, SIGKILL);
		kill(pid, SIGKILL);
		if (!reap(pid, &wstatus, now_s() + KILL_WAIT_MS / 1000.0)) {
			add_error("%s did not die %d ms after SIGKILL", t->name,
				  KILL_WAIT_MS);
			close(fds[0]);
			t->seconds = now_s() - start;
			return false;
		}
	}
	/* Helpers of the test may keep the pipe open: take what is there. */
	if (open)
		drain(fds[0], t, &o);
	close(fds[0]);
	t->seconds = now_s() - start;
	if (WIFEXITED(wstatus))
		t->exit = WEXITSTATUS(wstatus);
	else if (WIFSIGNALED(wstatus))
		t->exit = 128 + WTERMSIG(wstatus);
	if (!reaped)
		t->status = "timeout";
	else if (t->exit == 0)
		t->status = "pass";
	else if (t->exit == KSFT_SKIP)
		t->status = "skip";
	else
		t->status = "fail";
	printf("\ns2fault-ksft: %s %s, exit %d, %.1f s\n", t->name, t->status,
	       t->exit, t->seconds);
	fflush(stdout);
	return true;
}

static void add_test(struct s2f_buf *b, const struct test *t)
{
	int i;

	s2f_buf_add(b, "{\"name\":");
	s2f_json_string(b, t->name);
	s2f_buf_add(b, ",\"args\":[");
	for (i = 1; i < t->argc; i++) {
		s2f_buf_add(b, i > 1 ? "," : "");
		s2f_json_string(b, t->argv[i]);
	}
	s2f_buf_add(b, "],\"timeout\":%u,\"exit\":%d,\"status\":\"%s\"",
		    t->timeout_s, t->exit, t->status);
	s2f_buf_add(b, ",\"seconds\":%.2f,\"skip_reason\":", t->seconds);
	s2f_json_string(b, t->skip_reason);
	s2f_buf_add(b, ",\"assertion\":");
	s2f_json_string(b, t->assertion);
	s2f_buf_add(b, "}");
}

/*
 * One write(2), starting on a fresh line, so kernel messages cannot split it.
 * The buffer grows to hold every test's notes (it used to stop at 16 KiB).
 */
static void print_result(unsigned int nr_run, double seconds)
{
	struct s2f_buf b = { .oom_exit = 2 };
	unsigned long long ctr;
	unsigned int i;

	asm volatile("mrs %0, ctr_el0" : "=r" (ctr));
	s2f_buf_add(&b, "\nS2FAULT-RESULT {\"workload\":\"kvm-selftests\"");
	s2f_buf_add(&b, ",\"vcpus\":%u,\"page_size\":%d", nr_vcpus, getpagesize());
	s2f_buf_add(&b, ",\"ctr_el0\":\"0x%llx\",\"dic\":%d,\"idc\":%d", ctr,
		    !!(ctr & CTR_DIC), !!(ctr & CTR_IDC));
	s2f_buf_add(&b, ",\"watchdog_armed\":%u,\"selftests\":[", watchdog_thresh);
	for (i = 0; i < nr_run; i++) {
		s2f_buf_add(&b, i ? "," : "");
		add_test(&b, &tests[i]);
	}
	s2f_buf_add(&b, "],\"errors\":[");
	for (i = 0; i < nr_errors; i++) {
		s2f_buf_add(&b, i ? "," : "");
		s2f_json_string(&b, errors[i]);
	}
	s2f_buf_add(&b, "],\"elapsed_ms\":%.0f}\n", seconds * 1e3);
	s2f_write_all(STDOUT_FILENO, b.p, b.len);
	s2f_buf_free(&b);
}

/*
 * The VMM's options; the ones that shape the VMM's own workload (--rounds,
 * --block-size, ...) mean nothing here and are accepted and ignored, so
 * init can start either program the same way.
 */
static bool parse_args(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "vcpus", required_argument, NULL, 'n' },
		{ "timeout", required_argument, NULL, 't' },
		{ "arm-watchdog", required_argument, NULL, 'w' },
		{ "rounds", required_argument, NULL, 'x' },
		{ "block-size", required_argument, NULL, 'x' },
		{ "vms", required_argument, NULL, 'x' },
		{ "blocks", required_argument, NULL, 'x' },
		{ "storm", required_argument, NULL, 'x' },
		{ "remap", required_argument, NULL, 'x' },
		{ NULL, 0, NULL, 0 },
	};
	bool ok = true;
	int c;

	while (ok && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'n')
			ok = s2f_parse_uint(optarg, 1, 100000, &nr_vcpus);
		else if (c == 't')
			ok = s2f_parse_uint(optarg, 1, 100000, &budget_s);
		else if (c == 'w')
			ok = s2f_parse_uint(optarg, 0, 100000, &watchdog_thresh);
		else if (c != 'x')
			ok = false;
	}
	if (!ok)
		fprintf(stderr,
			"usage: s2fault-ksft [--vcpus N] [--timeout S] [--arm-watchdog T]\n");
	return ok;
}

int main(int argc, char **argv)
{
	double start = now_s(), run_deadline;
	unsigned int i, nr_run = 0;
	bool failed = false;
	char val[16];

	if (!parse_args(argc, argv))
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	run_deadline = start + budget_s;
	hugepage_kb = read_hugepage_kb();
	if (read_plan() && watchdog_thresh) {
		snprintf(val, sizeof(val), "%u", watchdog_thresh);
		if (s2f_write_file("/proc/sys/kernel/watchdog_thresh", val, 0) ||
		    s2f_write_file("/proc/sys/kernel/soft_watchdog", "1", 0))
			watchdog_thresh = 0;
	}
	for (i = 0; i < nr_tests && !nr_errors; i++) {
		if (now_s() >= run_deadline) {
			add_error("%s not run: the --timeout of %u s was used up",
				  tests[i].name, budget_s);
			break;
		}
		nr_run++;
		if (!run_test(&tests[i], run_deadline))
			break;
		failed |= strcmp(tests[i].status, "pass") &&
			  strcmp(tests[i].status, "skip");
	}
	if (watchdog_thresh)
		s2f_write_file("/proc/sys/kernel/soft_watchdog", "0", 0);
	print_result(nr_run, now_s() - start);
	if (nr_errors)
		return 2;
	return failed ? 1 : 0;
}
