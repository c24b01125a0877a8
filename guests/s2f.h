/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The guest programs' shared library: what vmm, ksft, init and host_run
 * each had a copy of, once.
 *
 * s2f_json.c  struct s2f_buf, a text buffer that grows as it is written
 *             (the one-write(2) result lines), and JSON strings in it.
 * s2f_opt.c   values of command-line options (--vcpus 8, --block-size 2M,
 *             --remap memslot) and key=value words of the kernel command
 *             line (s2fault.vcpus=8).
 * s2f_sys.c   small files of /proc, /sys and debugfs: read, write, a
 *             number, a "Key: value" line.
 */
#ifndef S2FAULT_S2F_H
#define S2FAULT_S2F_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "compiler.h"

/* ---- s2f_json.c ------------------------------------------------------ */

/*
 * Starts empty ({ .oom_exit = N }: p NULL, len and cap 0) and grows with
 * realloc(), so a line is never cut short. If it cannot grow, the program
 * says so on stderr and exits with @oom_exit: a result is whole or absent.
 * p is NUL-terminated once anything was added.
 */
struct s2f_buf {
	char *p;
	size_t len, cap;
	int oom_exit;
};

void s2f_buf_add(struct s2f_buf *b, const char *fmt, ...)
	__printf(2, 3);
/* @s as a JSON string: quoted, '"' '\\' and control characters escaped. */
void s2f_json_string(struct s2f_buf *b, const char *s);
void s2f_buf_free(struct s2f_buf *b);

/* ---- s2f_opt.c ------------------------------------------------------- */

/* A decimal in [@min, @max]; *@out is left alone if @s is not one. */
bool s2f_parse_uint(const char *s, unsigned int min, unsigned int max,
		    unsigned int *out);
/* A power of two, with an optional K, M or G suffix (binary). */
bool s2f_parse_size(const char *s, size_t *out);
/* The index of @s in @names. */
bool s2f_parse_name(const char *s, const char * const *names,
		    unsigned int nr, unsigned int *out);

/*
 * The kernel command line: words separated by blanks, "key=value" ones
 * read here. The value of the first word that is @key=...; NULL if none.
 */
char *s2f_cmdline_value(const char *cmdline, const char *key);
/* @key's value as a decimal, or @def; false if the value is no number. */
bool s2f_cmdline_uint(const char *cmdline, const char *key,
		      unsigned int def, unsigned int *out);

enum s2f_word_err { S2F_WORD_OK, S2F_WORD_BAD, S2F_WORD_EMPTY };

/*
 * @key's value into @out (@n bytes), or @def: a word of letters, digits,
 * '-', '_', '.' or ','. S2F_WORD_BAD if it has anything else or does not
 * fit, S2F_WORD_EMPTY for "key=".
 */
enum s2f_word_err s2f_cmdline_word(const char *cmdline, const char *key,
				   const char *def, char *out, size_t n);

/* ---- s2f_sys.c ------------------------------------------------------- */

/* Up to @size - 1 bytes of @path, NUL-terminated; -1 and errno on error. */
ssize_t s2f_read_file(const char *path, char *buf, size_t size);
/*
 * @val into @path, opened O_WRONLY | O_CLOEXEC | @flags (O_APPEND,
 * O_TRUNC): 0, or the errno (EIO for a short write).
 */
int s2f_write_file(const char *path, const char *val, int flags);
/* The file's contents as a number (strtol, base 0: 0x.. too). */
bool s2f_read_long(const char *path, long *val);
/*
 * The number after @key on the first line of @path that starts with @key
 * ("HugePages_Free:" in /proc/meminfo; "" for a file that is one number).
 * False if the file, the line or the number is missing.
 */
bool s2f_file_field(const char *path, const char *key, long *val);
/* All of it, through partial writes and EINTR; false on an error. */
bool s2f_write_all(int fd, const char *p, size_t len);

#endif /* S2FAULT_S2F_H */
