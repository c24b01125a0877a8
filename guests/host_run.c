// SPDX-License-Identifier: GPL-2.0
/*
 * s2fault-host-run: what init runs (s2fault.program=s2fault-host-run) when
 * a nested run proves `s2fault host-run` end to end. The nested kernel has
 * no CONFIG_BINFMT_SCRIPT, so init cannot exec a Python entry point
 * itself: this execs
 *
 *   /usr/bin/python3 -m s2fault host-run A B C ... --verdict-line
 *
 * with A,B,C from s2fault.host_run=A,B,C on the kernel command line (the
 * host-run command line a user would type, comma-separated). The arguments
 * init passes are the VMM's and are ignored: host-run derives the VMM's
 * from its own options, as it does on a real host.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "compiler.h"
#include "s2f.h"

#define KEY		"s2fault.host_run"
#define PYTHON		"/usr/bin/python3"
#define MAX_WORDS	32

static char cmdline[4096];

static int __noreturn fail(const char *what)
{
	printf("\nS2FAULT-ERROR s2fault-host-run: %s: %s\n", what,
	       strerror(errno));
	fflush(stdout);
	_exit(127);
}

int main(void)
{
	static char * const envp[] = {
		"HOME=/tmp", "PATH=/usr/bin:/bin", "LANG=C.UTF-8", NULL
	};
	char *argv[MAX_WORDS + 6];
	char *p, *end;
	int argc = 0;

	if (s2f_read_file("/proc/cmdline", cmdline, sizeof(cmdline)) < 0)
		fail("read /proc/cmdline");
	argv[argc++] = PYTHON;
	argv[argc++] = "-m";
	argv[argc++] = "s2fault";
	argv[argc++] = "host-run";
	p = s2f_cmdline_value(cmdline, KEY);
	if (p) {
		end = p + strcspn(p, "\t\n ");
		*end = '\0';
		while (p < end && argc < MAX_WORDS + 4) {
			argv[argc++] = p;
			p += strcspn(p, ",");
			*p++ = '\0';
		}
	}
	argv[argc++] = "--verdict-line";
	argv[argc] = NULL;
	execve(PYTHON, argv, envp);
	fail("execve " PYTHON);
}
