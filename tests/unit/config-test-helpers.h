/*
 * config-test-helpers.h - what the config unit tests share: a temporary
 * directory with certificate, key, auth and recipients files, a loader that
 * expands @DIR@ in config text, and a minimal valid configuration (GOOD).
 *
 * Ownership: strings returned by expand() / read_all() / dump_string() are
 * freed by the caller with free(); the directory is removed by
 * group_teardown().
 *
 * Diagnostics: none; the tests print what they got when a check fails.
 */
#ifndef MX_CONFIG_TEST_HELPERS_H
#define MX_CONFIG_TEST_HELPERS_H

/* cmocka.h needs these first; keep clang-format from sorting it above them. */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config-internal.h"
#include "config.h"

#define UNUSED_FN __attribute__((unused))

static char tmpdir[] = "/tmp/mxgate-test-config-XXXXXX";

/* ------------------------------------------------------------ helpers */

/* expand - text with every @DIR@ replaced by the temporary directory. */
UNUSED_FN static char *expand(const char *text)
{
	struct util_buf b;
	const char *p;

	util_buf_init(&b);
	while ((p = strstr(text, "@DIR@")) != NULL) {
		util_buf_add(&b, text, (size_t)(p - text));
		util_buf_adds(&b, tmpdir);
		text = p + 5;
	}
	util_buf_adds(&b, text);
	return b.data;
}

/* write_file - create path (under tmpdir when relative) with content and mode. */
UNUSED_FN static void write_file(const char *name, const char *content, mode_t mode)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(content, f);
	fclose(f);
	assert_int_equal(chmod(path, mode), 0);
}

/* load - parse expanded text as "t.conf". */
UNUSED_FN static struct config *load(const char *text, struct config_diags *d)
{
	char *t = expand(text);
	struct config *cfg = config_load_string(t, "t.conf", d);

	free(t);
	return cfg;
}

/* find_diag - first diagnostic whose message contains sub. */
UNUSED_FN static const struct config_diag *find_diag(const struct config_diags *d, const char *sub)
{
	size_t i;

	for (i = 0; i < d->n; i++) {
		if (strstr(d->v[i].msg, sub) != NULL)
			return &d->v[i];
	}
	return NULL;
}

/* read_all - a whole file into a malloc'd string, or NULL. */
UNUSED_FN static char *read_all(const char *path)
{
	size_t len;

	return util_read_file(path, 16 * 1024 * 1024, &len);
}

/* rm_entry - nftw callback removing one entry. */
UNUSED_FN static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* group_setup - temporary directory with the files the cases point at. */
UNUSED_FN static int group_setup(void **state)
{
	(void)state;
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	write_file("cert.pem", "-----BEGIN CERTIFICATE-----\n", 0644);
	write_file("key.pem", "-----BEGIN PRIVATE KEY-----\n", 0600);
	write_file("fullchain.pem", "-----BEGIN CERTIFICATE-----\n", 0644);
	write_file("privkey.pem", "-----BEGIN PRIVATE KEY-----\n", 0600);
	write_file("ca.pem", "-----BEGIN CERTIFICATE-----\n", 0644);
	write_file("auth", "relay-user:s3cret pass\n", 0600);
	write_file("auth-loose", "relay-user:s3cret\n", 0644);
	write_file("auth-bad", "no colon here\n", 0600);
	write_file("recipients",
	           "# postmaster list\nAlice@Example.com\nnot-an-address\n\n"
	           "bob@example.com  # trailing comment\ncarol@other.example\n",
	           0644);
	return 0;
}

/* group_teardown - remove the temporary directory. */
UNUSED_FN static int group_teardown(void **state)
{
	(void)state;
	return nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* A valid base: 7 lines, then the default route on lines 8-10. */
#define BASE                                                                                       \
	"[server]\n"                                                                               \
	"hostname = mx.example.com\n"                                                              \
	"listen = 127.0.0.1:2525\n"                                                                \
	"[domains]\n"                                                                              \
	"accepted_domains = example.com\n"                                                         \
	"[queue]\n"                                                                                \
	"directory = @DIR@/queue\n"
#define ROUTE                                                                                      \
	"[route default]\n"                                                                        \
	"type = directory\n"                                                                       \
	"directory = @DIR@/mailbox\n"
#define GOOD BASE ROUTE /* 10 lines; additions start at line 11 */

/* source_path - MXGATE_SOURCE_DIR/rel (".." from the build dir otherwise). */
UNUSED_FN static void source_path(char *out, size_t outlen, const char *rel)
{
	const char *src = getenv("MXGATE_SOURCE_DIR");

	snprintf(out, outlen, "%s/%s", src != NULL ? src : "..", rel);
}

/* dump_string - config_dump() into a malloc'd string. */
UNUSED_FN static char *dump_string(const struct config *cfg)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	config_dump(cfg, f);
	fclose(f);
	return buf;
}

#endif
