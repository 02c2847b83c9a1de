// SPDX-License-Identifier: GPL-2.0
/*
 * vexctl - guest-side client for the vexfsref vector ioctls.
 *
 * add and gen create FILE when missing.
 *
 *   vexctl add FILE [--dim D] [--format text|f32] [--start-id N]
 *       vectors on stdin: text (D numbers per line, spaces or commas) or raw
 *       little-endian float32; ids start-id, start-id+1, ... (default: the
 *       current count).  --dim defaults to the file's dimension.
 *   vexctl gen FILE --count N --dim D --seed S [--start-id N] [--batch B]
 *       add N generated vectors (see "Generator" below) in batches
 *   vexctl search FILE --k K [--metric l2|cosine|dot] [--dim D]
 *                      [--query "x,y,..." | --seed S]
 *       query from --query, from the generator (--seed: the first vector of
 *       "gen --count 1 --seed S"), or one text line on stdin
 *   vexctl stats FILE            vexctl clear FILE         vexctl delete FILE --id ID
 *   vexctl abuse FILE
 *       send malformed requests; print what the kernel answered for each
 * Output is one JSON object on stdout; errors go to stderr with exit status 1.
 * Values are passed to the kernel unchecked (k=0 reaches the kernel), so
 * the kernel's validation can be tested through this tool.
 *
 * Generator (reproduce on the host with refmod/vexgen.py): splitmix64 with
 * state = seed; each value takes one output x and is ((x >> 40) - 2^23) / 2^23,
 * exactly representable as float32, in [-1, 1).  Vector i (id start_id + i)
 * takes dim consecutive values.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "../vexfs_ref_ioctl.h"

static const char *prog = "vexctl";

static void die(const char *what, int err)
{
	fprintf(stderr, "%s: %s: %s\n", prog, what, strerror(err));
	exit(1);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: vexctl add FILE [--dim D] [--format text|f32] [--start-id N]\n"
		"       vexctl gen FILE --count N --dim D --seed S [--start-id N] [--batch B]\n"
		"       vexctl search FILE --k K [--metric l2|cosine|dot] [--dim D] [--query CSV | --seed S]\n"
		"       vexctl stats FILE | clear FILE | delete FILE --id ID | abuse FILE\n");
	exit(2);
}

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static float gen_value(uint64_t *state)
{
	return (float)((int64_t)(splitmix64(state) >> 40) - (1 << 23)) / (float)(1 << 23);
}

static const char *errname(int e)
{
	switch (e) {
	case -1: return "skipped";
	case 0: return "ok";
	case EINVAL: return "EINVAL";
	case EFAULT: return "EFAULT";
	case E2BIG: return "E2BIG";
	case ENOTTY: return "ENOTTY";
	case EBADF: return "EBADF";
	case ENOSPC: return "ENOSPC";
	case ENOENT: return "ENOENT";
	case ENOMEM: return "ENOMEM";
	case EROFS: return "EROFS";
	default: return "other";
	}
}

struct opts {
	unsigned long long count, seed, start_id, id;
	unsigned int dim, k, batch;
	int have_seed, have_start, have_k, have_id;
	const char *metric, *format, *query;
};

static void get_stats(int fd, struct vexfs_ref_stats *st)
{
	if (ioctl(fd, VEXFS_REF_IOC_STATS, st) < 0)
		die("stats", errno);
}

static int open_file(const char *path, int flags)
{
	int fd = open(path, flags, 0644);

	if (fd < 0)
		die(path, errno);
	return fd;
}

static void add_batches(int fd, const float *data, uint64_t n, unsigned int dim,
			uint64_t first_id, unsigned int batch)
{
	uint64_t *ids = malloc(sizeof(uint64_t) * batch);
	uint64_t done = 0;

	if (!ids)
		die("malloc", ENOMEM);
	while (done < n) {
		unsigned int m = n - done < batch ? n - done : batch;
		struct vexfs_ref_add req = {
			.dim = dim, .count = m,
			.ids = (uintptr_t)ids, .data = (uintptr_t)(data + done * dim),
		};

		for (unsigned int i = 0; i < m; i++)
			ids[i] = first_id + done + i;
		if (ioctl(fd, VEXFS_REF_IOC_ADD, &req) < 0)
			die("add", errno);
		done += m;
	}
	free(ids);
}

static unsigned int default_batch(unsigned int dim)
{
	unsigned int b = (8u << 20) / (dim ? dim * 4 : 4);

	if (b > 16384)
		b = 16384;
	return b ? b : 1;
}

/* Parse floats (spaces/commas/newlines) from @text into a growing array. */
static float *parse_floats(char *text, size_t *np)
{
	size_t n = 0, cap = 1024;
	float *v = malloc(cap * sizeof(float));
	char *p = text, *end;

	if (!v)
		die("malloc", ENOMEM);
	for (;;) {
		while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n' || *p == '\r')
			p++;
		if (!*p)
			break;
		errno = 0;
		float f = strtof(p, &end);
		if (end == p) {
			fprintf(stderr, "%s: bad number near \"%.20s\"\n", prog, p);
			exit(1);
		}
		if (n == cap) {
			cap *= 2;
			v = realloc(v, cap * sizeof(float));
			if (!v)
				die("realloc", ENOMEM);
		}
		v[n++] = f;
		p = end;
	}
	*np = n;
	return v;
}

static char *read_all(int fd, size_t *lenp)
{
	size_t len = 0, cap = 1 << 16;
	char *buf = malloc(cap + 1);
	ssize_t r;

	if (!buf)
		die("malloc", ENOMEM);
	while ((r = read(fd, buf + len, cap - len)) > 0) {
		len += r;
		if (len == cap) {
			cap *= 2;
			buf = realloc(buf, cap + 1);
			if (!buf)
				die("realloc", ENOMEM);
		}
	}
	if (r < 0)
		die("stdin", errno);
	buf[len] = 0;
	*lenp = len;
	return buf;
}

static int cmd_add(const char *path, struct opts *o)
{
	int fd = open_file(path, O_RDWR | O_CREAT);
	struct vexfs_ref_stats st;
	size_t len, nvals;
	char *buf;
	float *data;
	uint64_t n;

	get_stats(fd, &st);
	if (!o->dim)
		o->dim = st.dim;
	if (!o->dim) {
		fprintf(stderr, "%s: add: --dim is required for an empty file\n", prog);
		return 1;
	}
	buf = read_all(0, &len);
	if (!strcmp(o->format, "f32")) {
		if (len % (4ull * o->dim)) {
			fprintf(stderr, "%s: add: %zu bytes is not a multiple of dim*4\n", prog, len);
			return 1;
		}
		data = (float *)buf;
		nvals = len / 4;
	} else if (!strcmp(o->format, "text")) {
		data = parse_floats(buf, &nvals);
		if (nvals % o->dim) {
			fprintf(stderr, "%s: add: %zu numbers is not a multiple of dim %u\n",
				prog, nvals, o->dim);
			return 1;
		}
	} else {
		usage();
		return 2;
	}
	n = nvals / o->dim;
	if (n)
		add_batches(fd, data, n, o->dim, o->have_start ? o->start_id : st.count,
			    o->batch ? o->batch : default_batch(o->dim));
	get_stats(fd, &st);
	printf("{\"added\": %llu, \"count\": %llu, \"dim\": %u}\n", (unsigned long long)n,
	       (unsigned long long)st.count, st.dim);
	return 0;
}

static int cmd_gen(const char *path, struct opts *o)
{
	int fd = open_file(path, O_RDWR | O_CREAT);
	unsigned int batch = o->batch ? o->batch : default_batch(o->dim);
	struct vexfs_ref_stats st;
	uint64_t state = o->seed, done = 0, first;
	struct timespec t0, t1;
	float *data;

	if (!o->dim || !o->have_seed) {
		fprintf(stderr, "%s: gen needs --count, --dim and --seed\n", prog);
		return 2;
	}
	get_stats(fd, &st);
	first = o->have_start ? o->start_id : st.count;
	data = malloc((size_t)batch * o->dim * sizeof(float));
	if (!data)
		die("malloc", ENOMEM);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (done < o->count) {
		unsigned int m = o->count - done < batch ? o->count - done : batch;

		for (size_t i = 0; i < (size_t)m * o->dim; i++)
			data[i] = gen_value(&state);
		add_batches(fd, data, m, o->dim, first + done, batch);
		done += m;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	get_stats(fd, &st);
	printf("{\"added\": %llu, \"count\": %llu, \"dim\": %u, \"seconds\": %.3f}\n",
	       (unsigned long long)done, (unsigned long long)st.count, st.dim,
	       (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
	return 0;
}

static int cmd_search(const char *path, struct opts *o)
{
	int fd = open_file(path, O_RDONLY);
	struct vexfs_ref_search req = { 0 };
	struct vexfs_ref_result *res;
	struct vexfs_ref_stats st;
	unsigned int metric;
	float *query;
	size_t nq = 0;

	if (!strcmp(o->metric, "l2"))
		metric = VEXFS_REF_METRIC_L2;
	else if (!strcmp(o->metric, "cosine"))
		metric = VEXFS_REF_METRIC_COSINE;
	else if (!strcmp(o->metric, "dot"))
		metric = VEXFS_REF_METRIC_DOT;
	else
		usage();
	get_stats(fd, &st);
	if (!o->dim)
		o->dim = st.dim;
	if (o->have_seed) {
		uint64_t state = o->seed;

		if (!o->dim) {
			fprintf(stderr, "%s: search: --dim needed (file is empty)\n", prog);
			return 1;
		}
		query = malloc(o->dim * sizeof(float));
		for (unsigned int i = 0; i < o->dim; i++)
			query[i] = gen_value(&state);
		nq = o->dim;
	} else {
		char *text;
		size_t len;

		if (o->query)
			text = strdup(o->query);
		else
			text = read_all(0, &len);
		query = parse_floats(text, &nq);
		if (!o->dim)
			o->dim = nq;
	}
	res = calloc(o->k ? o->k : 1, sizeof(*res));
	if (!res)
		die("calloc", ENOMEM);
	req.dim = o->dim;
	req.k = o->k;
	req.metric = metric;
	req.query = (uintptr_t)query;
	req.results = (uintptr_t)res;
	if (nq < o->dim) {
		fprintf(stderr, "%s: search: query has %zu values, dim is %u\n", prog, nq, o->dim);
		return 1;
	}
	if (ioctl(fd, VEXFS_REF_IOC_SEARCH, &req) < 0)
		die("search", errno);
	printf("{\"metric\": \"%s\", \"k\": %u, \"found\": %u, \"results\": [", o->metric,
	       o->k, req.found);
	for (unsigned int i = 0; i < req.found; i++)
		printf("%s{\"id\": %llu, \"score\": %.17g}", i ? ", " : "",
		       (unsigned long long)res[i].id, res[i].score);
	printf("]}\n");
	return 0;
}

static int cmd_stats(const char *path)
{
	int fd = open_file(path, O_RDONLY);
	struct vexfs_ref_stats st;

	get_stats(fd, &st);
	printf("{\"count\": %llu, \"dim\": %u, \"bytes\": %llu}\n",
	       (unsigned long long)st.count, st.dim, (unsigned long long)st.bytes);
	return 0;
}

static int cmd_clear(const char *path)
{
	int fd = open_file(path, O_RDWR);

	if (ioctl(fd, VEXFS_REF_IOC_CLEAR) < 0)
		die("clear", errno);
	printf("{\"cleared\": true}\n");
	return 0;
}

static int cmd_delete(const char *path, struct opts *o)
{
	int fd = open_file(path, O_RDWR);
	struct vexfs_ref_delete req = { .id = o->id };

	if (!o->have_id)
		usage();
	if (ioctl(fd, VEXFS_REF_IOC_DELETE, &req) < 0)
		die("delete", errno);
	printf("{\"deleted\": %llu}\n", (unsigned long long)req.deleted);
	return 0;
}

static int try_ioctl(int fd, unsigned long cmd, void *arg)
{
	return ioctl(fd, cmd, arg) < 0 ? errno : 0;
}

/* Malformed requests; the kernel must refuse every one without harm. */
static int cmd_abuse(const char *path)
{
	int fd = open_file(path, O_RDWR), rofd = open_file(path, O_RDONLY);
	struct vexfs_ref_stats st;
	unsigned int dim;
	float *q;
	struct vexfs_ref_result res[4];
	uint64_t ids[2] = { 1, 2 };
	float *nan_data;
	struct vexfs_ref_search s;
	struct vexfs_ref_add a;
	int first = 1;

	get_stats(fd, &st);
	dim = st.dim ? st.dim : 2;
	q = calloc(VEXFS_REF_MAX_DIM + 1, sizeof(float));
	nan_data = calloc(dim, sizeof(float));
	if (!q || !nan_data)
		die("calloc", ENOMEM);
	nan_data[dim - 1] = __builtin_nanf("");
	printf("{");
#define CASE(name, expr) do { \
		int e_ = (expr); \
		printf("%s\"%s\": \"%s\"", first ? "" : ", ", name, errname(e_)); \
		first = 0; \
	} while (0)
#define SEARCH(...) (s = (struct vexfs_ref_search){ .dim = dim, .k = 1, .metric = 0, \
		.query = (uintptr_t)q, .results = (uintptr_t)res, __VA_ARGS__ }, \
		try_ioctl(fd, VEXFS_REF_IOC_SEARCH, &s))
#define ADD(...) (a = (struct vexfs_ref_add){ .dim = dim, .count = 1, \
		.ids = (uintptr_t)ids, .data = (uintptr_t)q, __VA_ARGS__ }, \
		try_ioctl(fd, VEXFS_REF_IOC_ADD, &a))
	CASE("search_k0", SEARCH(.k = 0));
	CASE("search_dim0", SEARCH(.dim = 0));
	CASE("search_dim_too_big", SEARCH(.dim = VEXFS_REF_MAX_DIM + 1));
	CASE("search_wrong_dim", st.count ? SEARCH(.dim = dim + 1) : -1);
	CASE("search_k_too_big", SEARCH(.k = VEXFS_REF_MAX_K + 1));
	CASE("search_bad_metric", SEARCH(.metric = 7));
	CASE("search_null_query", SEARCH(.query = 0));
	CASE("search_null_results", SEARCH(.results = 0));
	CASE("search_bad_query_ptr", SEARCH(.query = 16));
	CASE("search_bad_results_ptr", st.count ? SEARCH(.results = 16) : -1);
	CASE("search_null_arg", try_ioctl(fd, VEXFS_REF_IOC_SEARCH, NULL));
	CASE("add_count0", ADD(.count = 0));
	CASE("add_dim0", ADD(.dim = 0));
	CASE("add_dim_too_big", ADD(.dim = VEXFS_REF_MAX_DIM + 1));
	CASE("add_count_too_big", ADD(.count = VEXFS_REF_MAX_BATCH + 1));
	CASE("add_wrong_dim", st.count ? ADD(.dim = dim + 1) : -1);
	CASE("add_null_ids", ADD(.ids = 0));
	CASE("add_null_data", ADD(.data = 0));
	CASE("add_bad_data_ptr", ADD(.data = 16));
	CASE("add_nan", ADD(.data = (uintptr_t)nan_data));
	CASE("add_readonly_fd", (a = (struct vexfs_ref_add){ .dim = dim, .count = 1,
		.ids = (uintptr_t)ids, .data = (uintptr_t)q },
		try_ioctl(rofd, VEXFS_REF_IOC_ADD, &a)));
	CASE("clear_readonly_fd", try_ioctl(rofd, VEXFS_REF_IOC_CLEAR, NULL));
	CASE("unknown_ioctl", try_ioctl(fd, _IO(VEXFS_REF_IOC_MAGIC, 99), NULL));
	printf("}\n");
	get_stats(fd, &st);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "dim", required_argument, NULL, 'd' },
		{ "count", required_argument, NULL, 'n' },
		{ "seed", required_argument, NULL, 's' },
		{ "start-id", required_argument, NULL, 'i' },
		{ "batch", required_argument, NULL, 'b' },
		{ "k", required_argument, NULL, 'k' },
		{ "metric", required_argument, NULL, 'm' },
		{ "format", required_argument, NULL, 'f' },
		{ "query", required_argument, NULL, 'q' },
		{ "id", required_argument, NULL, 'I' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .metric = "l2", .format = "text" };
	const char *cmd, *path;
	int c;

	if (argc < 3)
		usage();
	cmd = argv[1];
	path = argv[2];
	optind = 3;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': o.dim = strtoul(optarg, NULL, 0); break;
		case 'n': o.count = strtoull(optarg, NULL, 0); break;
		case 's': o.seed = strtoull(optarg, NULL, 0); o.have_seed = 1; break;
		case 'i': o.start_id = strtoull(optarg, NULL, 0); o.have_start = 1; break;
		case 'b': o.batch = strtoul(optarg, NULL, 0); break;
		case 'k': o.k = strtoul(optarg, NULL, 0); o.have_k = 1; break;
		case 'm': o.metric = optarg; break;
		case 'f': o.format = optarg; break;
		case 'q': o.query = optarg; break;
		case 'I': o.id = strtoull(optarg, NULL, 0); o.have_id = 1; break;
		default: usage();
		}
	}
	if (optind != argc)
		usage();
	if (!strcmp(cmd, "add"))
		return cmd_add(path, &o);
	if (!strcmp(cmd, "gen"))
		return cmd_gen(path, &o);
	if (!strcmp(cmd, "search")) {
		if (!o.have_k)
			usage();
		return cmd_search(path, &o);
	}
	if (!strcmp(cmd, "stats"))
		return cmd_stats(path);
	if (!strcmp(cmd, "clear"))
		return cmd_clear(path);
	if (!strcmp(cmd, "delete"))
		return cmd_delete(path, &o);
	if (!strcmp(cmd, "abuse"))
		return cmd_abuse(path);
	usage();
	return 2;
}
