/*
 * fsprobe.c - the disk's own price of one durable message commit, as
 * mxgate's queue pays it (STYLE rule 20): create a temp file (O_EXCL), write
 * SIZE bytes, fsync it, rename it into place, fsync the directory.
 *
 *   fsprobe DIR [COUNT [SIZE]]     (default 200 commits of 4096 bytes)
 *
 * Prints one JSON object: commits, the per-commit time p50/p95/p99, and the
 * rate one writer could reach (1/p50) without group commit.  Files are
 * removed afterwards.  Bounded: COUNT <= 100000 and a 60-second deadline.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int count = argc > 2 ? atoi(argv[2]) : 200;
	int size = argc > 3 ? atoi(argv[3]) : 4096;
	char tmp[4096], dst[4096];
	double *t;
	char *buf;
	int dfd, n = 0;

	if (argc < 2 || count < 1 || count > 100000 || size < 1 || size > (64 << 20)) {
		fprintf(stderr, "usage: fsprobe DIR [COUNT [SIZE]]\n");
		return 2;
	}
	t = calloc((size_t)count, sizeof(*t));
	buf = malloc((size_t)size);
	dfd = open(argv[1], O_RDONLY | O_DIRECTORY);
	if (!t || !buf || dfd < 0) {
		fprintf(stderr, "fsprobe: %s: %s\n", argv[1], strerror(errno));
		return 2;
	}
	memset(buf, 'x', (size_t)size);
	double deadline = now() + 60;
	for (int i = 0; i < count && now() < deadline; i++) {
		snprintf(tmp, sizeof(tmp), "%s/tmp.%d", argv[1], i);
		snprintf(dst, sizeof(dst), "%s/msg.%d", argv[1], i);
		double t0 = now();
		int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0 || write(fd, buf, (size_t)size) != size || fsync(fd) < 0 || close(fd) < 0 ||
		    rename(tmp, dst) < 0 || fsync(dfd) < 0) {
			fprintf(stderr, "fsprobe: %s: %s\n", tmp, strerror(errno));
			return 1;
		}
		t[n++] = now() - t0;
	}
	for (int i = 0; i < n; i++) {
		snprintf(dst, sizeof(dst), "%s/msg.%d", argv[1], i);
		unlink(dst);
	}
	qsort(t, (size_t)n, sizeof(double), cmp);
	double p50 = t[n / 2];
	printf("{\"commits\": %d, \"size\": %d, \"p50_ms\": %.3f, \"p95_ms\": %.3f, "
	       "\"p99_ms\": %.3f, \"commits_per_s_one_writer\": %.1f}\n",
	       n, size, p50 * 1e3, t[(int)(0.95 * (n - 1))] * 1e3, t[(int)(0.99 * (n - 1))] * 1e3,
	       p50 > 0 ? 1.0 / p50 : 0.0);
	close(dfd);
	free(t);
	free(buf);
	return 0;
}
