// SPDX-License-Identifier: GPL-2.0
/*
 * The small files of /proc, /sys and debugfs the programs read and set:
 * sysctls (watchdog_thresh), failslab's attributes, meminfo's lines,
 * tracefs' kprobe_events, the kernel command line.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "s2f.h"

ssize_t s2f_read_file(const char *path, char *buf, size_t size)
{
	ssize_t n;
	int fd, err;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, size - 1);
	err = errno;
	close(fd);
	if (n < 0) {
		errno = err;
		return -1;
	}
	buf[n] = '\0';
	return n;
}

int s2f_write_file(const char *path, const char *val, int flags)
{
	ssize_t n, len = strlen(val);
	int fd, err;

	fd = open(path, O_WRONLY | O_CLOEXEC | flags);
	if (fd < 0)
		return errno;
	n = write(fd, val, len);
	err = n < 0 ? errno : EIO;
	close(fd);
	return n == len ? 0 : err;
}

bool s2f_read_long(const char *path, long *val)
{
	char text[32];

	if (s2f_read_file(path, text, sizeof(text)) <= 0)
		return false;
	*val = strtol(text, NULL, 0);
	return true;
}

bool s2f_file_field(const char *path, const char *key, long *val)
{
	size_t len = strlen(key);
	char buf[8192];
	const char *p;

	if (s2f_read_file(path, buf, sizeof(buf)) < 0)
		return false;
	for (p = buf; p; p = strchr(p, '\n')) {
		if (*p == '\n')
			p++;
		if (!strncmp(p, key, len))
			return sscanf(p + len, " %ld", val) == 1;
	}
	return false;
}

bool s2f_write_all(int fd, const char *p, size_t len)
{
	ssize_t n;

	while (len) {
		n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= n;
	}
	return true;
}
