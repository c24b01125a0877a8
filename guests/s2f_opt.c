// SPDX-License-Identifier: GPL-2.0
/*
 * Option values: those of the programs' own command lines (getopt_long()
 * finds the options, these read their values) and the key=value words
 * init reads from the kernel command line.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "s2f.h"

bool s2f_parse_uint(const char *s, unsigned int min, unsigned int max,
		    unsigned int *out)
{
	unsigned long v;
	char *end;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

bool s2f_parse_size(const char *s, size_t *out)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		return false;
	switch (*end) {
	case 'G': case 'g':
		v <<= 10;
		/* fall through */
	case 'M': case 'm':
		v <<= 10;
		/* fall through */
	case 'K': case 'k':
		v <<= 10;
		end++;
	}
	if (*end || !v || (v & (v - 1)))
		return false;
	*out = v;
	return true;
}

bool s2f_parse_name(const char *s, const char * const *names,
		    unsigned int nr, unsigned int *out)
{
	unsigned int i;

	for (i = 0; i < nr; i++) {
		if (!strcmp(s, names[i])) {
			*out = i;
			return true;
		}
	}
	return false;
}

char *s2f_cmdline_value(const char *cmdline, const char *key)
{
	size_t len = strlen(key);
	const char *p = cmdline;

	for (; (p = strstr(p, key)); p += len)
		if ((p == cmdline || p[-1] == ' ') && p[len] == '=')
			return (char *)p + len + 1;
	return NULL;
}

bool s2f_cmdline_uint(const char *cmdline, const char *key,
		      unsigned int def, unsigned int *out)
{
	const char *v = s2f_cmdline_value(cmdline, key);
	char *end;

	*out = def;
	if (!v)
		return true;
	*out = strtoul(v, &end, 10);
	return end != v && (!*end || *end == ' ' || *end == '\n');
}

static bool word_char(char c)
{
	return isalnum((unsigned char)c) || c == '-' || c == '_' || c == '.' ||
	       c == ',';
}

enum s2f_word_err s2f_cmdline_word(const char *cmdline, const char *key,
				   const char *def, char *out, size_t n)
{
	const char *v = s2f_cmdline_value(cmdline, key);
	size_t i;

	snprintf(out, n, "%s", def);
	if (!v)
		return S2F_WORD_OK;
	for (i = 0; v[i] && v[i] != ' ' && v[i] != '\n'; i++)
		if (i + 1 >= n || !word_char(v[i]))
			return S2F_WORD_BAD;
	if (!i)
		return S2F_WORD_EMPTY;
	memcpy(out, v, i);
	out[i] = '\0';
	return S2F_WORD_OK;
}
