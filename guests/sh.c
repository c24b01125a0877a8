// SPDX-License-Identifier: GPL-2.0
/*
 * sh: the s2fault guest image's shell (/bin/sh), for `s2fault run --shell`.
 *
 * The image has no coreutils, so the few things a kernel developer looks at
 * after a run are built in: cat (/proc, /sys, debugfs), ls, echo, cd. Any
 * other word runs a program from /bin (the workload's: s2fault-vmm,
 * s2fault-ksft) with the words after it as arguments. No quoting, no pipes:
 * words are split at blanks. `exit` (or end of input) leaves the shell, and
 * init then powers the machine off.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PROMPT		"s2fault-sh# "
#define LINE_LEN	1024
#define MAX_WORDS	64

static int split(char *line, char **words)
{
	int n = 0;
	char *word;

	for (word = strtok(line, " \t\r\n"); word && n < MAX_WORDS - 1;
	     word = strtok(NULL, " \t\r\n"))
		words[n++] = word;
	words[n] = NULL;
	return n;
}

static int builtin_cat(char **paths)
{
	char buf[4096];
	ssize_t n;
	int fd, ret = 0;

	for (; *paths; paths++) {
		fd = open(*paths, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			printf("cat: %s: %s\n", *paths, strerror(errno));
			ret = 1;
			continue;
		}
		fflush(stdout);
		while ((n = read(fd, buf, sizeof(buf))) > 0)
			if (write(STDOUT_FILENO, buf, n) != n)
				break;
		close(fd);
	}
	return ret;
}

static int builtin_ls(const char *path)
{
	struct dirent *entry;
	DIR *dir = opendir(path);

	if (!dir) {
		printf("ls: %s: %s\n", path, strerror(errno));
		return 1;
	}
	while ((entry = readdir(dir)))
		if (entry->d_name[0] != '.')
			printf("%s\n", entry->d_name);
	closedir(dir);
	return 0;
}

static int run(char **words)
{
	int status;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		printf("sh: fork: %s\n", strerror(errno));
		return 1;
	}
	if (pid == 0) {
		execvp(words[0], words);
		printf("sh: %s: %s\n", words[0], strerror(errno));
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0)
		return 1;
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

static int builtin(char **words, int n, int *done)
{
	if (!strcmp(words[0], "exit") || !strcmp(words[0], "poweroff")) {
		*done = 1;
		return n > 1 ? atoi(words[1]) : 0;
	}
	if (!strcmp(words[0], "cat"))
		return builtin_cat(words + 1);
	if (!strcmp(words[0], "ls"))
		return builtin_ls(n > 1 ? words[1] : ".");
	if (!strcmp(words[0], "cd"))
		return chdir(n > 1 ? words[1] : "/") ? 1 : 0;
	if (!strcmp(words[0], "echo")) {
		for (int i = 1; i < n; i++)
			printf("%s%s", words[i], i + 1 < n ? " " : "");
		printf("\n");
		return 0;
	}
	if (!strcmp(words[0], "help")) {
		printf("built in: cat FILE..., ls [DIR], cd [DIR], echo WORD..., exit [N]\n");
		printf("else: a program from /bin with its arguments (ls /bin)\n");
		return 0;
	}
	return -1;
}

int main(void)
{
	char line[LINE_LEN], *words[MAX_WORDS];
	int n, ret = 0, done = 0;

	setenv("PATH", "/bin", 1);
	while (!done) {
		printf(PROMPT);
		fflush(stdout);
		if (!fgets(line, sizeof(line), stdin))
			break;
		n = split(line, words);
		if (!n)
			continue;
		ret = builtin(words, n, &done);
		if (ret < 0)
			ret = run(words);
		if (ret && !done)
			printf("[exit %d]\n", ret);
	}
	return ret;
}
