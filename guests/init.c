// SPDX-License-Identifier: GPL-2.0
/*
 * init: PID 1 of the s2fault guest image. Mounts the pseudo filesystems,
 * reports the preconditions (S2FAULT-INIT), runs the workload program
 * (/bin/s2fault-vmm unless s2fault.program says otherwise), reports what
 * is left once every process it started has exited (S2FAULT-POST) and
 * powers off.
 *
 * Kernel command line:
 *   s2fault.vcpus=N            vCPUs for the VMM (default 8)
 *   s2fault.rounds=K           rounds per VMM run (default 1): one VM, the
 *                              faults provoked K times; round 0 is a
 *                              warm-up, the rest independent samples, each
 *                              checked for coherence (see vmm.c)
 *   s2fault.timeout=S          VMM wall timeout in seconds (default 60)
 *   s2fault.repeat=N           run the VMM N times (default 1), each in a
 *                              new VM
 *   s2fault.watchdog_thresh=N  if non-zero, the VMM sets watchdog_thresh to
 *                              N and enables soft_watchdog once its setup is
 *                              done, just before the first exec faults
 *                              (dilated runs boot with nosoftlockup: armed
 *                              any earlier, the detector reports the slow
 *                              setup and unrelated tasks)
 *   s2fault.vms=K              K VMs, one VMM process each (default 1)
 *   s2fault.blocks=M           M huge blocks per VM (default 1)
 *   s2fault.storm=N            of the vCPUs, N run I-cache maintenance
 *                              instead of exec faults (default 0)
 *   s2fault.remap=HOW          memslot (default) or dontneed: how a round
 *                              makes stage 2 forget the blocks
 *   s2fault.first_touch=HOW    data (default) or exec: the blocks' first
 *                              access in a round (exec: the fetch itself)
 *   s2fault.fail_alloc=N       fail the next N slab allocations made in
 *                              the KVM fault handler (failslab; default 0)
 *   s2fault.program=NAME       run /bin/NAME (default s2fault-vmm) with
 *                              the same arguments
 *   s2fault.sweep=N,N,...      run the VMM once per vCPU count, in this
 *                              order, each in a new VM (instead of
 *                              s2fault.vcpus and s2fault.repeat): one boot
 *                              measures a whole scaling curve
 *   s2fault.count_icache=1     count the I-cache invalidations of stage 2
 *                              with kprobe events (hits on
 *                              invalidate_icache_guest_page, the one entry,
 *                              and icache_inval_pou, its line-by-line
 *                              branch); S2FAULT-POST reports them, so the
 *                              whole-cache ones are the difference, counted
 *                              without patching the kernel under test
 *   s2fault.shell=1            a shell on the console afterwards (below)
 *
 * The program gets --vcpus, --rounds, --timeout and --arm-watchdog always,
 * and --vms, --blocks, --storm, --remap, --first-touch and --fail-alloc
 * only when not the default (see
 * vmm.c for what they do). It runs in a process group of its own, so that
 * the processes of a multi-VM run can be killed together.
 *
 * s2fault.shell=1 (s2fault run --shell): the workload runs in a child, and
 * once it is done, or at the first stack dump in the kernel log if that
 * comes first, /bin/sh takes the console; the machine powers off when the
 * shell exits.
 *
 * PID 1 must never exit (the kernel panics), so every path ends in
 * power_off().
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "compiler.h"
#include "s2f.h"

#define DEFAULT_PROGRAM	"s2fault-vmm"
#define DEFAULT_REMAP	"memslot"
#define DEFAULT_TOUCH	"data"
/* After the VMM's own timeout, how long before init kills it. */
#define VMM_GRACE_S	30
#define WORD_LEN	48
#define MAX_ARGS	24
#define MAX_SWEEP	16

struct params {
	unsigned int vcpus;
	unsigned int rounds;
	unsigned int timeout;
	unsigned int repeat;
	unsigned int watchdog_thresh;
	unsigned int vms;
	unsigned int blocks;
	unsigned int storm;
	unsigned int fail_alloc;
	unsigned int count_icache;
	unsigned int shell;
	char remap[WORD_LEN];
	char first_touch[WORD_LEN];
	char program[WORD_LEN];
	char sweep[WORD_LEN];
	char path[WORD_LEN + 8];
};

/* A whole line in one write(2), starting at column 0. */
static void emit(const char *fmt, ...)
	__printf(1, 2);

static void emit(const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	line[0] = '\n';
	va_start(ap, fmt);
	n = vsnprintf(line + 1, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(line) - 3)
		n = sizeof(line) - 3;
	line[n + 1] = '\n';
	if (write(STDOUT_FILENO, line, n + 2) < 0)
		return;
}

static void __noreturn power_off(void)
{
	sync();
	reboot(RB_POWER_OFF);
	/* Only reached if power-off is not possible: never exit. */
	for (;;)
		pause();
}

static void __noreturn fatal(const char *fmt, ...)
	__printf(1, 2);

static void __noreturn fatal(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	emit("S2FAULT-ERROR %s", msg);
	power_off();
}

static void mount_fs(const char *type, const char *dir, bool required)
{
	if (mkdir(dir, 0755) < 0 && errno != EEXIST && required)
		fatal("mkdir %s: %s", dir, strerror(errno));
	if (mount(type, dir, type, 0, NULL) < 0 && errno != EBUSY && required)
		fatal("mount %s on %s: %s", type, dir, strerror(errno));
}

/* The kernel opens /dev/console for us only if the initramfs has it. */
static void setup_console(void)
{
	int fd;

	if (fcntl(STDOUT_FILENO, F_GETFD) >= 0)
		return;
	fd = open("/dev/console", O_RDWR | O_NOCTTY);
	if (fd < 0)
		power_off();	/* nowhere to say why */
	dup2(fd, STDIN_FILENO);
	dup2(fd, STDOUT_FILENO);
	dup2(fd, STDERR_FILENO);
	if (fd > STDERR_FILENO)
		close(fd);
}

static void mount_all(void)
{
	mount_fs("proc", "/proc", false);
	mount_fs("sysfs", "/sys", false);
	mount_fs("devtmpfs", "/dev", false);
	setup_console();
	/* Now stdio works: the first two are required after all. */
	if (access("/proc/self", F_OK) < 0)
		fatal("/proc is not mounted");
	if (access("/sys/kernel", F_OK) < 0)
		fatal("/sys is not mounted");
	mount_fs("debugfs", "/sys/kernel/debug", false);
}

static unsigned int cmdline_uint(const char *cmdline, const char *key,
				 unsigned int def)
{
	unsigned int v;

	if (!s2f_cmdline_uint(cmdline, key, def, &v))
		fatal("bad value for %s on the kernel command line", key);
	return v;
}

/* The value of @key, a word of letters, digits, '-', '_', '.' or ',', or @def. */
static void cmdline_word(const char *cmdline, const char *key,
			 const char *def, char *out, size_t n)
{
	switch (s2f_cmdline_word(cmdline, key, def, out, n)) {
	case S2F_WORD_OK:
		return;
	case S2F_WORD_BAD:
		fatal("bad value for %s on the kernel command line", key);
	case S2F_WORD_EMPTY:
		fatal("empty value for %s on the kernel command line", key);
	}
}

static void parse_cmdline(struct params *p)
{
	char cmdline[4096];

	if (s2f_read_file("/proc/cmdline", cmdline, sizeof(cmdline)) < 0)
		fatal("read /proc/cmdline: %s", strerror(errno));
	p->vcpus = cmdline_uint(cmdline, "s2fault.vcpus", 8);
	p->rounds = cmdline_uint(cmdline, "s2fault.rounds", 1);
	p->timeout = cmdline_uint(cmdline, "s2fault.timeout", 60);
	p->repeat = cmdline_uint(cmdline, "s2fault.repeat", 1);
	p->watchdog_thresh = cmdline_uint(cmdline, "s2fault.watchdog_thresh",
					  0);
	p->vms = cmdline_uint(cmdline, "s2fault.vms", 1);
	p->blocks = cmdline_uint(cmdline, "s2fault.blocks", 1);
	p->storm = cmdline_uint(cmdline, "s2fault.storm", 0);
	p->fail_alloc = cmdline_uint(cmdline, "s2fault.fail_alloc", 0);
	p->count_icache = cmdline_uint(cmdline, "s2fault.count_icache", 0);
	p->shell = cmdline_uint(cmdline, "s2fault.shell", 0);
	cmdline_word(cmdline, "s2fault.remap", DEFAULT_REMAP, p->remap,
		     sizeof(p->remap));
	cmdline_word(cmdline, "s2fault.first_touch", DEFAULT_TOUCH,
		     p->first_touch, sizeof(p->first_touch));
	cmdline_word(cmdline, "s2fault.program", DEFAULT_PROGRAM, p->program,
		     sizeof(p->program));
	cmdline_word(cmdline, "s2fault.sweep", "", p->sweep, sizeof(p->sweep));
	if (!strcmp(p->program, ".") || !strcmp(p->program, ".."))
		fatal("bad value for s2fault.program on the kernel command line");
	snprintf(p->path, sizeof(p->path), "/bin/%s", p->program);
	if (!p->vcpus || !p->rounds || !p->timeout || !p->vms || !p->blocks)
		fatal("s2fault.vcpus, s2fault.rounds, s2fault.timeout, s2fault.vms and s2fault.blocks must be positive");
}

/*
 * Value of the first line of @path starting with @key, as JSON: the number,
 * or "null" if the file or the line is missing.
 */
static void json_field(char *out, size_t n, const char *path, const char *key)
{
	long v;

	if (s2f_file_field(path, key, &v))
		snprintf(out, n, "%ld", v);
	else
		snprintf(out, n, "null");
}

static void report_init(void)
{
	char total[24], free[24], size[24], locks[24];
	struct utsname uts;

	if (uname(&uts) < 0)
		fatal("uname: %s", strerror(errno));
	json_field(total, sizeof(total), "/proc/meminfo", "HugePages_Total:");
	json_field(free, sizeof(free), "/proc/meminfo", "HugePages_Free:");
	json_field(size, sizeof(size), "/proc/meminfo", "Hugepagesize:");
	json_field(locks, sizeof(locks), "/proc/lockdep_stats",
		   " debug_locks:");
	emit("S2FAULT-INIT {\"kernel\":\"%s\",\"page_size\":%d,\"hugepages_total\":%s,\"hugepages_free\":%s,\"hugepage_kb\":%s,\"debug_locks\":%s,\"kvm\":%s}",
	     uts.release, getpagesize(), total, free, size, locks,
	     access("/dev/kvm", F_OK) ? "false" : "true");
}

/* Appends "--@opt @val" to @argv, the value kept in @store. */
static void add_arg(char **argv, unsigned int *argc, char (*store)[16],
		    const char *opt, unsigned int val)
{
	char *s = store[*argc];

	snprintf(s, sizeof(store[0]), "%u", val);
	argv[(*argc)++] = (char *)opt;
	argv[(*argc)++] = s;
}

static pid_t start_vmm(const struct params *p)
{
	char values[MAX_ARGS][16];
	char *argv[MAX_ARGS + 1];
	unsigned int argc = 0;
	sigset_t none;
	pid_t pid;

	argv[argc++] = (char *)p->path;
	add_arg(argv, &argc, values, "--vcpus", p->vcpus);
	add_arg(argv, &argc, values, "--rounds", p->rounds);
	add_arg(argv, &argc, values, "--timeout", p->timeout);
	add_arg(argv, &argc, values, "--arm-watchdog", p->watchdog_thresh);
	/* The workload's shape only where it differs from the plain run. */
	if (p->vms != 1)
		add_arg(argv, &argc, values, "--vms", p->vms);
	if (p->blocks != 1)
		add_arg(argv, &argc, values, "--blocks", p->blocks);
	if (p->storm)
		add_arg(argv, &argc, values, "--storm", p->storm);
	if (p->fail_alloc)
		add_arg(argv, &argc, values, "--fail-alloc", p->fail_alloc);
	if (strcmp(p->remap, DEFAULT_REMAP)) {
		argv[argc++] = "--remap";
		argv[argc++] = (char *)p->remap;
	}
	if (strcmp(p->first_touch, DEFAULT_TOUCH)) {
		argv[argc++] = "--first-touch";
		argv[argc++] = (char *)p->first_touch;
	}
	argv[argc] = NULL;
	pid = fork();
	if (pid < 0)
		fatal("fork: %s", strerror(errno));
	if (pid == 0) {
		setpgid(0, 0);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execv(p->path, argv);
		emit("S2FAULT-ERROR execv %s: %s", p->path, strerror(errno));
		_exit(127);
	}
	/* Also here, so that a kill of the group cannot miss the child. */
	setpgid(pid, pid);
	return pid;
}

/* Shell convention: the exit status, or 128 + the signal that killed it. */
static int exit_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return -1;
}

/*
 * The VMM enforces its own timeout; this is the backstop for a VMM that
 * does not return. A VMM stuck in the kernel is left to the harness.
 * Returns once the whole process group is gone: a multi-VM VMM waits for
 * its other VMs itself, and what a killed one leaves is killed here too.
 */
static int wait_vmm(pid_t pid, const struct params *p)
{
	struct timespec wait = { .tv_sec = p->timeout + VMM_GRACE_S };
	sigset_t chld;
	int status;
	pid_t ret;

	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	while ((ret = waitpid(pid, &status, WNOHANG)) == 0) {
		if (sigtimedwait(&chld, NULL, &wait) < 0 && errno == EAGAIN) {
			emit("S2FAULT-ERROR %s did not exit %d s after its timeout, killing it",
			     p->path, VMM_GRACE_S);
			kill(-pid, SIGKILL);
			ret = waitpid(pid, &status, 0);
			break;
		}
	}
	/* Normally nothing is left, and this returns at once. */
	kill(-pid, SIGKILL);
	while (waitpid(-1, NULL, 0) > 0)
		;
	return ret == pid ? exit_code(status) : -1;
}

/* ---- counting I-cache invalidations: kprobe events ------------------ */

#define TRACEFS		"/sys/kernel/tracing"
#define PROBE_GROUP	"s2fault"

static const char *const icache_probes[][2] = {
	/* Every stage-2 I-cache invalidation enters here (mm_ops). */
	{ "guest_page", "invalidate_icache_guest_page" },
	/* Its line-by-line branch; whatever else it does blows the cache. */
	{ "by_line", "icache_inval_pou" },
};

#define NR_ICACHE_PROBES ARRAY_SIZE(icache_probes)

static bool write_str(const char *path, const char *val, bool append)
{
	return !s2f_write_file(path, val, append ? O_APPEND : O_TRUNC);
}

/* Returns NULL when the probes are set, else what failed. */
static const char *arm_icache_probes(void)
{
	char line[160], path[160];
	size_t i;

	mount_fs("tracefs", TRACEFS, false);
	if (access(TRACEFS "/kprobe_events", W_OK) < 0)
		return "no kprobe_events (needs CONFIG_KPROBE_EVENTS=y)";
	/*
	 * Only the hit counts are read: a small ring buffer, off, so 64 CPUs
	 * do not each get the default megabytes.
	 */
	write_str(TRACEFS "/buffer_size_kb", "4", false);
	write_str(TRACEFS "/tracing_on", "0", false);
	for (i = 0; i < NR_ICACHE_PROBES; i++) {
		snprintf(line, sizeof(line), "p:%s/%s %s\n", PROBE_GROUP,
			 icache_probes[i][0], icache_probes[i][1]);
		if (!write_str(TRACEFS "/kprobe_events", line, true))
			return icache_probes[i][1];
		snprintf(path, sizeof(path), TRACEFS "/events/%s/%s/enable",
			 PROBE_GROUP, icache_probes[i][0]);
		if (!write_str(path, "1", false))
			return icache_probes[i][1];
	}
	return NULL;
}

/* {"guest_page":N,"by_line":M} from kprobe_profile, or an error string. */
static void icache_counts(char *out, size_t n, const char *armed)
{
	char buf[4096], name[64];
	unsigned long hits[NR_ICACHE_PROBES] = { 0 };
	unsigned long h, miss;
	const char *p;
	size_t i;

	if (armed) {
		snprintf(out, n, "\"cannot probe %s\"", armed);
		return;
	}
	if (s2f_read_file(TRACEFS "/kprobe_profile", buf, sizeof(buf)) < 0) {
		snprintf(out, n, "\"cannot read kprobe_profile\"");
		return;
	}
	for (p = buf; p && *p; p = strchr(p, '\n')) {
		if (*p == '\n')
			p++;
		if (sscanf(p, "%63s %lu %lu", name, &h, &miss) != 3)
			continue;
		for (i = 0; i < NR_ICACHE_PROBES; i++)
			if (!strcmp(name, icache_probes[i][0]))
				hits[i] = h;
	}
	snprintf(out, n, "{\"%s\":%lu,\"%s\":%lu}", icache_probes[0][0],
		 hits[0], icache_probes[1][0], hits[1]);
}

static void report_post(int vmm_exit, unsigned int run, const char *icache)
{
	char free[24], locks[24], thresh[24], soft[24];

	json_field(free, sizeof(free), "/proc/meminfo", "HugePages_Free:");
	json_field(locks, sizeof(locks), "/proc/lockdep_stats",
		   " debug_locks:");
	/* Read back, so a dilated run can show the VMM armed the detector. */
	json_field(thresh, sizeof(thresh), "/proc/sys/kernel/watchdog_thresh",
		   "");
	json_field(soft, sizeof(soft), "/proc/sys/kernel/soft_watchdog", "");
	emit("S2FAULT-POST {\"vmm_exit\":%d,\"debug_locks\":%s,\"hugepages_free\":%s,\"run\":%u,\"watchdog_thresh\":%s,\"soft_watchdog\":%s,\"icache\":%s}",
	     vmm_exit, locks, free, run, thresh, soft, icache);
}

/* "1,8,64" -> {1, 8, 64}; the number of counts, 0 for none. */
static unsigned int parse_sweep(const char *sweep, unsigned int *counts)
{
	unsigned int n = 0;
	const char *p = sweep;
	char *end;
	unsigned long v;

	while (*p) {
		v = strtoul(p, &end, 10);
		if (end == p || !v || v > 512 || n == MAX_SWEEP ||
		    (*end && *end != ','))
			fatal("bad value for s2fault.sweep: %s", sweep);
		counts[n++] = v;
		p = *end ? end + 1 : end;
	}
	return n;
}

static void run_workload(struct params *p)
{
	const char *armed = NULL;
	char icache[128] = "null";
	unsigned int sweep[MAX_SWEEP], nr_sweep, runs, run;

	if (p->count_icache)
		armed = arm_icache_probes();
	nr_sweep = parse_sweep(p->sweep, sweep);
	runs = nr_sweep ? nr_sweep : p->repeat;
	for (run = 1; run <= runs; run++) {
		int vmm_exit;

		if (nr_sweep)
			p->vcpus = sweep[run - 1];
		vmm_exit = wait_vmm(start_vmm(p), p);

		/* Cumulative over the runs of this boot. */
		if (p->count_icache)
			icache_counts(icache, sizeof(icache), armed);
		report_post(vmm_exit, run, icache);
	}
	emit("S2FAULT-DONE");
}

/* Until the workload child has exited, or the kernel log shows a stack dump. */
static const char *wait_for_shell(pid_t workload, int kmsg)
{
	char rec[2048];
	ssize_t n;

	for (;;) {
		if (waitpid(workload, NULL, WNOHANG) == workload)
			return "the workload is done";
		while (kmsg >= 0) {
			n = read(kmsg, rec, sizeof(rec) - 1);
			if (n < 0 && errno == EPIPE)	/* records overwritten */
				continue;
			if (n <= 0)
				break;
			rec[n] = '\0';
			if (strstr(rec, "Call trace:"))
				return "a stack dump in the kernel log";
		}
		usleep(200000);
	}
}

/*
 * s2fault.shell=1: the workload runs in a child, a subreaper so that it
 * still collects what its VMM leaves behind, while PID 1 watches the log.
 */
static void __noreturn shell_main(struct params *p)
{
	sigset_t none;
	pid_t workload, sh;
	const char *why;
	int kmsg;

	workload = fork();
	if (workload < 0)
		fatal("fork: %s", strerror(errno));
	if (workload == 0) {
		prctl(PR_SET_CHILD_SUBREAPER, 1);
		run_workload(p);
		_exit(0);
	}
	kmsg = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	why = wait_for_shell(workload, kmsg);
	emit("S2FAULT-SHELL %s: /bin/sh on the console ('exit' powers off)", why);
	sh = fork();
	if (sh == 0) {
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execl("/bin/sh", "sh", (char *)NULL);
		emit("S2FAULT-ERROR execl /bin/sh: %s", strerror(errno));
		_exit(127);
	}
	while (sh > 0 && waitpid(sh, NULL, 0) < 0 && errno == EINTR)
		;
	power_off();
}

int main(void)
{
	struct params p;
	sigset_t chld;

	mount_all();
	parse_cmdline(&p);
	report_init();
	if (access(p.path, X_OK) < 0)
		fatal("%s: %s", p.path, strerror(errno));
	/* SIGCHLD stays pending for sigtimedwait() instead of being lost. */
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, NULL);
	if (p.shell)
		shell_main(&p);
	run_workload(&p);
	power_off();
}
