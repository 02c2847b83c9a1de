// SPDX-License-Identifier: MIT
/*
 * fsexec - the model checker's executor in the guest (pytest-vexfs).
 *
 *   fsexec ROOT < batch
 *
 * Reads one operation per line (fields separated by TAB, paths relative to ROOT) and
 * prints one result line per operation: "ok<TAB>DATA" or the errno name ("ENOENT")
 * followed by a TAB and nothing. One exchange applies a whole batch, so the
 * checker pays one guest round trip per batch instead of one per operation.
 *
 * Operations (numbers in decimal, modes in octal):
 *   create P MODE | mkdir P MODE | write P OFF LEN SEED -> "WRITTEN SIZE:CRC32" of the whole file
 *   truncate P LEN -> "SIZE:CRC32" of the file afterwards
 *   read P -> "SIZE CRC32" | stat P -> "TYPE MODE NLINK SIZE" | listdir P -> names separated by '/'
 *   unlink P | rmdir P | rename A B | link A B | symlink TARGET P | readlink P -> target
 *   fsync P | fdatasync P | sync | chmod P MODE
 *   tree -> entries separated by 0x1e: "PATH TYPE MODE NLINK SIZE CRC32|TARGET"
 *   reset -> removes everything under ROOT | rmtree P -> removes P and everything under it
 *   sh COMMAND -> "STATUS OUTPUT" (a shell command: remount, module reload, drop caches, fsck)
 *   kmsg TEXT -> writes TEXT to the kernel log | dropcaches -> drops clean caches (echo 3)
 * Data written by "write" is byte i = ((SEED * 31 + OFF + i) % 251) + 1, never zero, so a hole or
 * a lost write reads back differently. Files are never followed through symlinks (O_NOFOLLOW).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static const char *root;
static uint32_t crc_table[256];
static char *buf;
static size_t bufcap;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
}

static uint32_t crc_update(uint32_t crc, const unsigned char *p, size_t n)
{
	crc = ~crc;
	while (n--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

static char *full(const char *rel)
{
	static char path[2][8192];
	static int which;
	which ^= 1;
	if (!rel || !*rel || !strcmp(rel, "."))
		snprintf(path[which], sizeof(path[which]), "%s", root);
	else
		snprintf(path[which], sizeof(path[which]), "%s/%s", root, rel);
	return path[which];
}

static void grow(size_t n)
{
	if (n > bufcap) {
		free(buf);
		bufcap = n;
		buf = malloc(n);
		if (!buf) {
			perror("fsexec: malloc");
			exit(2);
		}
	}
}

static int fail(void)
{
	const char *name = strerrorname_np(errno);
	printf("%s\t\n", name ? name : "EUNKNOWN");
	return 0;
}

/* fail() with the errno of the failed call, after closing `fd` */
static int close_fail(int fd)
{
	int e = errno;
	close(fd);
	errno = e;
	return fail();
}

/* print a name with TAB, newline, separators and non-printable bytes escaped as \xHH */
static void put_escaped(const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c < 0x21 || c > 0x7e || c == '\\')
			printf("\\x%02x", c);
		else
			putchar(c);
	}
}

static int file_digest(int fd, long long *size, uint32_t *crc)
{
	ssize_t n;
	*size = 0;
	*crc = 0;
	grow(1 << 20);
	while ((n = read(fd, buf, bufcap)) > 0) {
		*crc = crc_update(*crc, (unsigned char *)buf, n);
		*size += n;
	}
	return n < 0 ? -1 : 0;
}

static char type_of(mode_t m)
{
	return S_ISREG(m) ? 'f' : S_ISDIR(m) ? 'd' : S_ISLNK(m) ? 'l' : '?';
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* sorted names of a directory (without . and ..); NULL with errno on failure */
static char **names_of(const char *path, size_t *count)
{
	DIR *d = opendir(path);
	struct dirent *e;
	char **names = NULL;
	size_t n = 0, cap = 0;
	if (!d)
		return NULL;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			names = realloc(names, cap * sizeof(*names));
		}
		names[n++] = strdup(e->d_name);
	}
	closedir(d);
	*count = n;
	if (!names)	/* not qsort(NULL, 0): its nonnull attribute lets the compiler drop this test */
		return calloc(1, sizeof(*names));
	qsort(names, n, sizeof(*names), cmp_names);
	return names;
}

static int first = 1;

static void tree_walk(const char *rel)
{
	size_t n, i;
	char **names = names_of(full(rel), &n);
	if (!names)
		return;
	for (i = 0; i < n; i++) {
		char child[8192];
		struct stat st;
		snprintf(child, sizeof(child), "%s%s%s", rel, *rel ? "/" : "", names[i]);
		if (!first)
			putchar(0x1e);
		first = 0;
		put_escaped(child);
		if (lstat(full(child), &st) < 0) {
			printf(" ? 0 0 0 %s", strerrorname_np(errno));
			free(names[i]);
			continue;
		}
		printf(" %c %o %lu %lld ", type_of(st.st_mode), st.st_mode & 07777,
		       (unsigned long)st.st_nlink, (long long)st.st_size);
		if (S_ISREG(st.st_mode)) {
			int fd = open(full(child), O_RDONLY | O_NOFOLLOW);
			long long size;
			uint32_t crc;
			if (fd < 0 || file_digest(fd, &size, &crc) < 0)
				printf("%s", strerrorname_np(errno));
			else
				printf("%lld:%08x", size, crc);
			if (fd >= 0)
				close(fd);
		} else if (S_ISLNK(st.st_mode)) {
			char target[4096];
			ssize_t len = readlink(full(child), target, sizeof(target) - 1);
			target[len < 0 ? 0 : len] = 0;
			put_escaped(target);
		} else {
			putchar('-');
		}
		if (S_ISDIR(st.st_mode))
			tree_walk(child);
		free(names[i]);
	}
	free(names);
}

static int remove_all(const char *rel)
{
	size_t n, i;
	char **names = names_of(full(rel), &n);
	int err = 0;
	if (!names)
		return -1;
	for (i = 0; i < n; i++) {
		char child[8192];
		struct stat st;
		snprintf(child, sizeof(child), "%s%s%s", rel, *rel ? "/" : "", names[i]);
		if (lstat(full(child), &st) == 0 && S_ISDIR(st.st_mode)) {
			if (remove_all(child) < 0 || rmdir(full(child)) < 0)
				err = -1;
		} else if (unlink(full(child)) < 0) {
			err = -1;
		}
		free(names[i]);
	}
	free(names);
	return err;
}

static int op(char **f, int nf)
{
	const char *o = f[0];
	int fd;
	if (!strcmp(o, "create") && nf == 3) {
		fd = open(full(f[1]), O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW, strtol(f[2], NULL, 8));
		if (fd < 0)
			return fail();
		close(fd);
	} else if (!strcmp(o, "mkdir") && nf == 3) {
		if (mkdir(full(f[1]), strtol(f[2], NULL, 8)) < 0)
			return fail();
	} else if (!strcmp(o, "write") && nf == 5) {
		long long off = atoll(f[2]), len = atoll(f[3]), seed = atoll(f[4]), i;
		ssize_t done;
		long long size;
		uint32_t crc;
		fd = open(full(f[1]), O_RDWR | O_NOFOLLOW);
		if (fd < 0)
			return fail();
		grow(len + 1);
		for (i = 0; i < len; i++)
			buf[i] = (char)(((seed * 31 + off + i) % 251) + 1);
		done = pwrite(fd, buf, len, off);
		if (done < 0)
			return close_fail(fd);
		/* read the whole file back at once: a write that does not stick is caught here */
		if (lseek(fd, 0, SEEK_SET) < 0 || file_digest(fd, &size, &crc) < 0)
			return close_fail(fd);
		close(fd);
		printf("ok\t%zd %lld:%08x\n", done, size, crc);
		return 0;
	} else if (!strcmp(o, "truncate") && nf == 3) {
		long long size;
		uint32_t crc;
		fd = open(full(f[1]), O_RDWR | O_NOFOLLOW);
		if (fd < 0)
			return fail();
		if (ftruncate(fd, atoll(f[2])) < 0 || file_digest(fd, &size, &crc) < 0)
			return close_fail(fd);
		close(fd);
		printf("ok\t%lld:%08x\n", size, crc);
		return 0;
	} else if (!strcmp(o, "read") && nf == 2) {
		long long size;
		uint32_t crc;
		fd = open(full(f[1]), O_RDONLY | O_NOFOLLOW);
		if (fd < 0)
			return fail();
		if (file_digest(fd, &size, &crc) < 0)
			return close_fail(fd);
		close(fd);
		printf("ok\t%lld:%08x\n", size, crc);
		return 0;
	} else if (!strcmp(o, "stat") && nf == 2) {
		struct stat st;
		if (lstat(full(f[1]), &st) < 0)
			return fail();
		printf("ok\t%c %o %lu %lld\n", type_of(st.st_mode), st.st_mode & 07777,
		       (unsigned long)st.st_nlink, (long long)st.st_size);
		return 0;
	} else if (!strcmp(o, "listdir") && nf == 2) {
		size_t n, i;
		char **names = names_of(full(f[1]), &n);
		if (!names)
			return fail();
		printf("ok\t");
		for (i = 0; i < n; i++) {
			if (i)
				putchar('/');
			put_escaped(names[i]);
			free(names[i]);
		}
		free(names);
		putchar('\n');
		return 0;
	} else if (!strcmp(o, "unlink") && nf == 2) {
		if (unlink(full(f[1])) < 0)
			return fail();
	} else if (!strcmp(o, "rmdir") && nf == 2) {
		if (rmdir(full(f[1])) < 0)
			return fail();
	} else if (!strcmp(o, "rename") && nf == 3) {
		if (rename(full(f[1]), full(f[2])) < 0)
			return fail();
	} else if (!strcmp(o, "link") && nf == 3) {
		if (link(full(f[1]), full(f[2])) < 0)
			return fail();
	} else if (!strcmp(o, "symlink") && nf == 3) {
		if (symlink(f[1], full(f[2])) < 0)
			return fail();
	} else if (!strcmp(o, "readlink") && nf == 2) {
		char target[4096];
		ssize_t len = readlink(full(f[1]), target, sizeof(target) - 1);
		if (len < 0)
			return fail();
		target[len] = 0;
		printf("ok\t");
		put_escaped(target);
		putchar('\n');
		return 0;
	} else if ((!strcmp(o, "fsync") || !strcmp(o, "fdatasync")) && nf == 2) {
		int r;
		fd = open(full(f[1]), O_RDONLY | O_NOFOLLOW);
		if (fd < 0)
			return fail();
		r = o[1] == 's' ? fsync(fd) : fdatasync(fd);
		if (r < 0)
			return close_fail(fd);
		close(fd);
	} else if (!strcmp(o, "sync") && nf == 1) {
		sync();
	} else if (!strcmp(o, "chmod") && nf == 3) {
		if (chmod(full(f[1]), strtol(f[2], NULL, 8)) < 0)
			return fail();
	} else if (!strcmp(o, "tree") && nf == 1) {
		printf("ok\t");
		first = 1;
		tree_walk("");
		putchar('\n');
		return 0;
	} else if (!strcmp(o, "reset") && nf == 1) {
		if (remove_all("") < 0)
			return fail();
	} else if (!strcmp(o, "rmtree") && nf == 2) {
		struct stat st;
		if (lstat(full(f[1]), &st) < 0)
			return fail();
		if (S_ISDIR(st.st_mode) ? remove_all(f[1]) < 0 || rmdir(full(f[1])) < 0 : unlink(full(f[1])) < 0)
			return fail();
	} else if (!strcmp(o, "sh") && nf == 2) {
		char out[2048], sink[4096];
		size_t len = 0, i;
		int status;
		FILE *p;
		fflush(stdout);
		p = popen(f[1], "r");
		if (!p)
			return fail();
		while (!feof(p) && len < sizeof(out) - 1) {
			size_t n = fread(out + len, 1, sizeof(out) - 1 - len, p);
			if (!n)
				break;
			len += n;
		}
		while (fread(sink, 1, sizeof(sink), p) > 0)
			;	/* the rest is not reported, but the command must not block on a full pipe */
		status = pclose(p);
		for (i = 0; i < len; i++)
			if (out[i] == '\n' || out[i] == '\t')
				out[i] = ' ';
		out[len] = 0;
		printf("ok\t%d %s\n", WIFEXITED(status) ? WEXITSTATUS(status) : 128, out);
		return 0;
	} else if (!strcmp(o, "dropcaches") && nf == 1) {
		fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
		if (fd < 0 || write(fd, "3\n", 2) < 0)
			return fail();
		close(fd);
	} else if (!strcmp(o, "kmsg") && nf == 2) {
		fd = open("/dev/kmsg", O_WRONLY);
		if (fd < 0 || write(fd, f[1], strlen(f[1])) < 0)
			return fail();
		close(fd);
	} else {
		printf("EBADRQC\t%s\n", o);
		return 0;
	}
	printf("ok\t\n");
	return 0;
}

int main(int argc, char **argv)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	if (argc != 2) {
		fprintf(stderr, "usage: fsexec ROOT < batch\n");
		return 2;
	}
	root = argv[1];
	umask(0);
	crc_init();
	grow(1 << 20);
	while ((len = getline(&line, &cap, stdin)) > 0) {
		char *f[8];
		int nf = 0;
		char *s = line, *tab;
		if (line[len - 1] == '\n')
			line[--len] = 0;
		while (nf < 8) {
			f[nf++] = s;
			tab = strchr(s, '\t');
			if (!tab)
				break;
			*tab = 0;
			s = tab + 1;
		}
		errno = 0;
		op(f, nf);
		fflush(stdout);
	}
	free(line);
	return 0;
}
