/*
 * util-file.c - small file-system helpers for the queue and the config:
 * directory fsync, mkdir -p, full writes and whole-file reads.
 *
 * Ownership: util_read_file returns a malloc'd buffer the caller frees with
 * free(); every descriptor opened here is closed before returning.
 * Diagnostics: -1 / NULL with errno set (EFBIG for a file over max,
 * ENOTDIR when a path component exists and is not a directory).
 */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* util_fsync_dir - make a rename or unlink in path durable. */
int util_fsync_dir(const char *path)
{
	int fd;
	int rc = -1;
	int saved;

	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd == -1)
		return -1;
	if (fsync(fd) == 0)
		rc = 0;
	saved = errno;
	close(fd);
	errno = saved;
	return rc;
}

/* file_mkdir_one - mkdir that accepts an existing directory. */
static int file_mkdir_one(const char *path, int mode)
{
	struct stat st;

	if (mkdir(path, (mode_t)mode) == 0)
		return 0;
	if (errno != EEXIST)
		return -1;
	if (stat(path, &st) == -1)
		return -1;
	if (!S_ISDIR(st.st_mode)) {
		errno = ENOTDIR;
		return -1;
	}
	return 0;
}

/* util_mkdir_p - create path and every missing parent with mode. */
int util_mkdir_p(const char *path, int mode)
{
	char tmp[PATH_MAX];
	size_t len;
	size_t i;

	if (path == NULL || path[0] == '\0') {
		errno = ENOENT;
		return -1;
	}
	len = strlen(path);
	if (len >= sizeof(tmp)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(tmp, path, len + 1);
	for (i = 1; i < len; i++) {
		if (tmp[i] != '/' || tmp[i - 1] == '/')
			continue;
		tmp[i] = '\0';
		if (file_mkdir_one(tmp, mode) == -1)
			return -1;
		tmp[i] = '/';
	}
	return file_mkdir_one(tmp, mode);
}

/* util_write_all - write all n bytes, retrying on EINTR and short writes. */
int util_write_all(int fd, const void *p, size_t n)
{
	const char *s = p;

	while (n > 0) {
		ssize_t w = write(fd, s, n);

		if (w == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (w == 0) {
			errno = EIO;
			return -1;
		}
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

/* util_read_file - read a whole file of at most max bytes, NUL-terminated. */
char *util_read_file(const char *path, size_t max, size_t *len_out)
{
	char *data = NULL;
	size_t len = 0;
	size_t cap;
	int fd;
	int saved;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return NULL;
	cap = max < 4096 ? max + 1 : 4096;
	data = util_xmalloc(cap + 1);
	for (;;) {
		ssize_t r;

		if (len == cap) {
			if (len > max) {
				errno = EFBIG;
				goto err;
			}
			cap = cap > max / 2 ? max + 1 : cap * 2;
			data = util_xrealloc(data, cap + 1);
		}
		r = read(fd, data + len, cap - len);
		if (r == -1) {
			if (errno == EINTR)
				continue;
			goto err;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	if (len > max) {
		errno = EFBIG;
		goto err;
	}
	close(fd);
	data[len] = '\0';
	if (len_out != NULL)
		*len_out = len;
	return data;
err:
	saved = errno;
	free(data);
	close(fd);
	errno = saved;
	return NULL;
}
