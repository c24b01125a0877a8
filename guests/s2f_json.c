// SPDX-License-Identifier: GPL-2.0
/*
 * A text buffer that grows: the result lines are built in one, then
 * written with one write(2). It used to be a fixed array in ksft.c, cut
 * short without a word at 16 KiB (a long plan, long assertions); now it
 * grows with realloc() and, if memory runs out, the program stops with a
 * message instead of printing half a line.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "s2f.h"

static void __noreturn buf_fail(const struct s2f_buf *b, const char *why)
{
	char msg[128];
	int n;

	n = snprintf(msg, sizeof(msg), "\ns2fault: result line of %zu bytes: %s\n",
		     b->len, why);
	if (n > 0)
		s2f_write_all(STDERR_FILENO, msg, (size_t)n < sizeof(msg) ?
			      (size_t)n : sizeof(msg) - 1);
	_exit(b->oom_exit);
}

void s2f_buf_add(struct s2f_buf *b, const char *fmt, ...)
{
	va_list ap;
	size_t cap;
	char *p;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0)
			buf_fail(b, "cannot format it");
		if (b->len + n < b->cap)
			break;
		cap = 2 * (b->len + n + 64);
		p = realloc(b->p, cap);
		if (!p)
			buf_fail(b, "out of memory");
		b->p = p;
		b->cap = cap;
	}
	b->len += n;
}

void s2f_json_string(struct s2f_buf *b, const char *s)
{
	s2f_buf_add(b, "\"");
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			s2f_buf_add(b, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			s2f_buf_add(b, "\\u%04x", *s);
		else
			s2f_buf_add(b, "%c", *s);
	}
	s2f_buf_add(b, "\"");
}

void s2f_buf_free(struct s2f_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = 0;
	b->cap = 0;
}
