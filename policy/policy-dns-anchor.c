/*
 * policy-dns-anchor.c - which DNSSEC trust anchor the resolver uses
 * ([dns] trust_anchor_file), NIST SP 800-177 rec. 4-2/4-7: validation is on
 * by default wherever the root trust anchor is installed.
 *
 *   auto (default)  [dns] root_anchor_file (Debian dns-root-data's
 *                   /usr/share/dns/root.key) seeds an RFC 5011
 *                   auto-trust-anchor file in the queue directory, which
 *                   libunbound keeps up to date across root KSK rollovers
 *                   (it rewrites the file, so it must live somewhere the
 *                   unprivileged user can write: the queue directory).  No
 *                   root anchor on the machine: validation off, and
 *                   `mxgate status` / the start-up log say so.
 *   none            validation off.
 *   PATH            a static trust anchor file (ub_ctx_add_ta_file).
 *
 * Ownership: the strings of a struct policy_dns_anchor are owned by it;
 * release with policy_dns_anchor_clear().
 * Diagnostics: errors into err; the decision in desc (one line).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "policy-internal.h"

#define ANCHOR_MAX (1024 * 1024)

/* anchor_seed - copy src to dst (temp file, fsync, rename, fsync dir) unless
 * dst exists already: it then carries libunbound's RFC 5011 state. */
static int anchor_seed(const char *src, const char *dir, const char *dst, char *err, size_t errlen)
{
	size_t len = 0;
	char *data = NULL, *tmp = NULL;
	int fd = -1, rc = -1;

	if (access(dst, F_OK) == 0)
		return 0;
	data = util_read_file(src, ANCHOR_MAX, &len);
	if (data == NULL) {
		snprintf(err, errlen, "cannot read root_anchor_file %s: %s", src, strerror(errno));
		goto done;
	}
	if (util_mkdir_p(dir, 0700) < 0) {
		snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
		goto done;
	}
	tmp = util_xasprintf("%s.tmp", dst);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || util_write_all(fd, data, len) < 0 || fsync(fd) < 0) {
		snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
		goto done;
	}
	close(fd);
	fd = -1;
	if (rename(tmp, dst) < 0) {
		snprintf(err, errlen, "cannot rename %s: %s", tmp, strerror(errno));
		goto done;
	}
	(void)util_fsync_dir(dir);
	rc = 0;
done:
	if (fd >= 0)
		close(fd);
	if (rc < 0 && tmp != NULL)
		unlink(tmp);
	free(tmp);
	free(data);
	return rc;
}

/* policy_dns_anchor_setup - decide the trust anchor (see the file header). */
int policy_dns_anchor_setup(const struct config *cfg, struct policy_dns_anchor *a, char *err,
                            size_t errlen)
{
	const char *ta = cfg->dns_trust_anchor_file;
	const char *root = cfg->dns_root_anchor_file;

	memset(a, 0, sizeof(*a));
	if (ta == NULL || strcmp(ta, "none") == 0) {
		a->desc = util_xstrdup("off (trust_anchor_file = none)");
		return 0;
	}
	if (strcmp(ta, "auto") != 0) {
		a->mode = POLICY_DNS_TA_FILE;
		a->path = util_xstrdup(ta);
		a->desc = util_xasprintf("on (trust_anchor_file %s)", ta);
		return 0;
	}
	if (root == NULL || root[0] == 0 || access(root, R_OK) < 0) {
		a->desc = util_xasprintf("off (auto: no root trust anchor at %s - install "
		                         "dns-root-data, or set trust_anchor_file)",
		                         root != NULL && root[0] ? root : "(none)");
		return 0;
	}
	a->mode = POLICY_DNS_TA_AUTR;
	a->path = util_xasprintf("%s/root.key.autr", cfg->queue_dir);
	if (anchor_seed(root, cfg->queue_dir, a->path, err, errlen) < 0) {
		policy_dns_anchor_clear(a);
		return -1;
	}
	a->desc = util_xasprintf("on (auto: %s, RFC 5011 state in %s)", root, a->path);
	return 0;
}

/* policy_dns_anchor_clear - NULL-safe. */
void policy_dns_anchor_clear(struct policy_dns_anchor *a)
{
	if (a == NULL)
		return;
	free(a->path);
	free(a->desc);
	memset(a, 0, sizeof(*a));
}
