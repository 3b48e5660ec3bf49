/*
 * test_policy_live.c - policy/ end to end against a real DNS server on
 * loopback, without the SMTP server: tests/integration/dnsserver.py
 * ("fixture" mode) writes zones, a DKIM key, signed messages and a DNSSEC
 * trust anchor, runs unbound on 127.0.0.1, and we drive policy_* on a real
 * libevent loop with real worker threads.
 *
 * Skipped (not failed) when /usr/bin/python3 or /usr/sbin/unbound is missing.
 */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "policy-internal.h"
#include "policy-test-helpers.h"

static struct {
	char dir[64];
	pid_t pid;
	int to_child;
	int port;
	char fwd[64];
	char ta[128];
	struct config *cfg;
	struct event_base *base;
	struct policy_dns *dns;
	struct policy_ctx *pc;
	int callbacks;
	int body_mode; /* 0: policy_msg_body chunks; 1: policy_msg_body_fd; 2: an unreadable fd */
} L;

/* live_cfg - the config used by every case: the documented defaults (from
 * the config table) plus the fixture's resolver; config_free() it. */
static struct config *live_cfg(bool dnssec)
{
	char extra[512];

	snprintf(extra, sizeof(extra),
	         "[dns]\nforwarders = %s\ntimeout = 2s\ncache_size = 1000\n%s%s%s"
	         "[auth]\npolicy_workers = 2\n"
	         "[spam]\ndnsbl_zones = bl.test\n",
	         L.fwd, "trust_anchor_file = ", dnssec ? L.ta : "none", "\n");
	return policy_test_config(extra);
}

/* setup - start the fixture DNS server and the policy context. */
static int setup(void **state)
{
	const char *src = getenv("MXGATE_SOURCE_DIR");
	char script[512], err[256], line[32];
	int in[2], out[2];
	ssize_t n;

	if (access("/usr/bin/python3", X_OK) != 0 || access("/usr/sbin/unbound", X_OK) != 0)
		return 0;
	snprintf(script, sizeof(script), "%s/tests/integration/dnsserver.py", src ? src : "..");
	snprintf(L.dir, sizeof(L.dir), "/tmp/mxg-live-XXXXXX");
	if (mkdtemp(L.dir) == NULL || pipe(in) < 0 || pipe(out) < 0)
		return -1;
	L.pid = fork();
	if (L.pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		close(in[1]);
		close(out[0]);
		execl("/usr/bin/python3", "python3", script, "fixture", L.dir, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	L.to_child = in[1];
	n = read(out[0], line, sizeof(line) - 1);
	close(out[0]);
	if (n <= 0)
		return -1;
	line[n] = 0;
	L.port = atoi(line);
	snprintf(L.fwd, sizeof(L.fwd), "127.0.0.1@%d", L.port);
	snprintf(L.ta, sizeof(L.ta), "%s/trust-anchor", L.dir);
	L.cfg = live_cfg(true);
	if (getenv("MXGATE_TEST_DEBUG") != NULL)
		util_log_init(UTIL_LOG_DEBUG, UTIL_LOG_TEXT, NULL);
	L.base = event_base_new();
	L.dns = policy_dns_new(L.cfg, L.base, err, sizeof(err));
	if (L.dns == NULL) {
		fprintf(stderr, "policy_dns_new: %s\n", err);
		return -1;
	}
	L.pc = policy_new(L.cfg, L.base, L.dns, err, sizeof(err));
	if (L.pc == NULL) {
		fprintf(stderr, "policy_new: %s\n", err);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	policy_free(L.pc);
	policy_dns_free(L.dns);
	if (L.base != NULL)
		event_base_free(L.base);
	config_free(L.cfg);
	if (L.pid > 0) {
		close(L.to_child);
		waitpid(L.pid, NULL, 0);
		snprintf(cmd, sizeof(cmd), "rm -rf %s", L.dir);
		if (system(cmd) != 0)
			return -1;
	}
	return 0;
}

/* on_done - policy callback: count and leave the loop. */
static void on_done(uint64_t cookie, void *arg)
{
	assert_int_equal(cookie, 42);
	L.callbacks++;
	event_base_loopbreak(L.base);
}

/* feed - one .eml (or a literal message) into pm: headers, eoh, body in
 * small chunks. */
static void feed(struct policy_msg *pm, const char *file, const char *literal)
{
	char path[256];
	size_t len = 0, pos = 0;
	char *m;
	struct util_hdr_field f;

	if (file != NULL) {
		snprintf(path, sizeof(path), "%s/%s", L.dir, file);
		m = util_read_file(path, 1 << 20, &len);
		assert_non_null(m);
	} else {
		m = util_xstrdup(literal);
		len = strlen(m);
	}
	while (util_hdr_next(m, len, &pos, &f) == 1)
		assert_int_equal(policy_msg_header(pm, f.raw, f.raw_len), 0);
	assert_int_equal(policy_msg_eoh(pm), 0);
	pos += 2; /* empty line */
	if (L.body_mode == 0) {
		while (pos < len) {
			size_t c = len - pos < 7 ? len - pos : 7;
			policy_msg_body(pm, m + pos, c);
			pos += c;
		}
	} else if (policy_msg_wants_body(pm)) {
		/* as the server does it: the whole message in a file, the body
		 * read back by the worker from its offset */
		char tmp[128];
		int fd;

		snprintf(tmp, sizeof(tmp), "%s/body-XXXXXX", L.dir);
		fd = mkstemp(tmp);
		assert_true(fd >= 0);
		assert_int_equal(util_write_all(fd, m, len), 0);
		/* stale bytes after the message, as in a recycled spool file that
		 * is only cut to length at the commit: never part of the body */
		assert_int_equal(util_write_all(fd, "stale bytes\r\n", 13), 0);
		close(fd);
		fd = open(L.body_mode == 1 ? tmp : L.dir, O_RDONLY | O_CLOEXEC);
		assert_true(fd >= 0);
		unlink(tmp);
		policy_msg_body_fd(pm, fd, (int64_t)pos, (int64_t)len);
	}
	free(m);
}

/* run_msg - SPF at "MAIL FROM", content, finish; returns the message. */
static struct policy_msg *run_msg(const char *ip, const char *helo, const char *from,
                                  const char *file, const char *literal)
{
	struct util_addr a;
	struct policy_msg *pm;

	util_addr_parse_numeric(ip, 25, &a);
	pm = policy_msg_new(L.pc, &a, helo, from);
	L.callbacks = 0;
	policy_spf_start(pm, on_done, 42, NULL);
	assert_int_equal(L.callbacks, 0); /* never inside the call */
	event_base_dispatch(L.base);
	assert_true(policy_spf_done(pm));
	feed(pm, file, literal);
	policy_msg_finish(pm, on_done, 42, NULL);
	event_base_dispatch(L.base);
	assert_int_equal(L.callbacks, 2);
	return pm;
}

#define SKIP_IF_NO_SERVER()                                                                        \
	do {                                                                                       \
		if (L.pc == NULL)                                                                  \
			skip();                                                                    \
	} while (0)
#define HAS(hay, needle)                                                                           \
	do {                                                                                       \
		if (strstr((hay), (needle)) == NULL)                                               \
			fail_msg("missing \"%s\" in:\n%s", (needle), (hay));                       \
	} while (0)

static void test_pass_all(void **state)
{
	struct policy_msg *pm;
	const struct policy_verdict *v;

	SKIP_IF_NO_SERVER();
	pm = run_msg("127.0.0.1", "client.live.test", "alice@live.test", "signed.eml", NULL);
	v = policy_msg_verdict(pm);
	HAS(v->headers, "spf=pass (mx.example.test: domain of alice@live.test designates "
	                "127.0.0.1 as permitted sender) smtp.mailfrom=alice@live.test");
	HAS(v->headers, "dkim=pass (2048-bit key) header.d=live.test header.s=sel "
	                "header.i=@live.test header.b=");
	HAS(v->headers, "dmarc=pass (p=reject");
	HAS(v->headers, "header.from=live.test policy.dmarc=reject");
	HAS(v->headers, "Received-SPF: pass");
	HAS(v->headers, "tests=DNSBL_bl.test");
	assert_int_equal(v->action, POLICY_ACCEPT);
	assert_string_equal(v->summary, "spf=pass dkim=pass dmarc=pass dnsbl=bl.test score=4.0 "
	                                "action=accept");
	policy_msg_free(pm);
}

static void test_fail_reject(void **state)
{
	struct policy_msg *pm;
	const struct policy_verdict *v;

	SKIP_IF_NO_SERVER();
	pm = run_msg("127.0.0.1", "x.fail.test", "bob@fail.test", NULL,
	             "From: bob@fail.test\r\nSubject: x\r\n\r\nbody\r\n");
	v = policy_msg_verdict(pm);
	HAS(v->headers, "spf=fail");
	HAS(v->headers, "dkim=none");
	HAS(v->headers, "dmarc=fail");
	assert_int_equal(v->action, POLICY_REJECT);
	assert_true(strncmp(v->reply, "550 5.7.1 ", 10) == 0);
	policy_msg_free(pm);
}

static void test_dkim_body_modified(void **state)
{
	struct policy_msg *pm;
	const struct policy_verdict *v;

	SKIP_IF_NO_SERVER();
	pm = run_msg("127.0.0.1", "client.live.test", "alice@live.test", "tampered.eml", NULL);
	v = policy_msg_verdict(pm);
	HAS(v->headers, "dkim=fail (body hash did not verify) header.d=live.test");
	HAS(v->headers, "dmarc=pass"); /* SPF aligned */
	policy_msg_free(pm);
}

/* The same two messages with the body read back from a file by the worker
 * (what the server does), and a body that cannot be read: temperror, never
 * fail. */
static void test_body_from_file(void **state)
{
	struct policy_msg *pm;
	const struct policy_verdict *v;

	SKIP_IF_NO_SERVER();
	L.body_mode = 1;
	test_pass_all(state);
	test_dkim_body_modified(state);
	L.body_mode = 2; /* a directory: every read fails with EISDIR */
	pm = run_msg("127.0.0.1", "client.live.test", "alice@live.test", "signed.eml", NULL);
	L.body_mode = 0;
	v = policy_msg_verdict(pm);
	HAS(v->headers, "dkim=temperror (the message could not be read back: Is a directory)");
	policy_msg_free(pm);
}

static void test_temperror_and_dnssec(void **state)
{
	struct policy_msg *pm;
	const struct policy_verdict *v;
	int64_t t0 = util_mono_ms();

	SKIP_IF_NO_SERVER();
	pm = run_msg("127.0.0.1", "h.slow.test", "x@slow.test", NULL,
	             "From: x@live.test\r\n\r\nb\r\n");
	v = policy_msg_verdict(pm);
	HAS(v->headers, "spf=temperror");
	assert_true(util_mono_ms() - t0 < 8000);
	policy_msg_free(pm);

	pm = run_msg("127.0.0.1", "h.signed.test", "a@signed.test", NULL,
	             "From: a@signed.test\r\n\r\nb\r\n");
	v = policy_msg_verdict(pm);
	HAS(v->headers, "spf=pass (");
	HAS(v->headers, "; dnssec=secure) smtp.mailfrom=a@signed.test");
	policy_msg_free(pm);
}

static void test_free_in_flight(void **state)
{
	struct util_addr a;
	struct policy_msg *pm;
	struct timeval tv = {3, 0};

	SKIP_IF_NO_SERVER();
	util_addr_parse_numeric("127.0.0.1", 25, &a);
	pm = policy_msg_new(L.pc, &a, "h.slow.test", "y@slow.test");
	L.callbacks = 0;
	policy_spf_start(pm, on_done, 42, NULL);
	policy_msg_free(pm); /* the pool frees it at job end */
	event_base_loopexit(L.base, &tv);
	event_base_dispatch(L.base);
	assert_int_equal(L.callbacks, 0);
}

static pthread_mutex_t block_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t block_cv = PTHREAD_COND_INITIALIZER;
static bool block_open;
static bool block_started;   /* the worker holds the first blocking job */
static int block_done;
static bool busy_spf, busy_fin;

/* block_work - a worker job that holds its thread until released. */
static void block_work(struct policy_msg *pm)
{
	pthread_mutex_lock(&block_mu);
	block_started = true;
	pthread_cond_broadcast(&block_cv);
	while (!block_open)
		pthread_cond_wait(&block_cv, &block_mu);
	pthread_mutex_unlock(&block_mu);
}

/* block_done_cb - loop: one blocking job finished. */
static void block_done_cb(struct policy_msg *pm)
{
	block_done++;
}

/* on_busy_spf - SPF callback of the queue-full test. */
static void on_busy_spf(uint64_t cookie, void *arg)
{
	const char *r = policy_spf_reply(arg);

	busy_spf = r != NULL && strcmp(r, "451 4.3.2 System busy, try again later") == 0;
	event_base_loopbreak(L.base);
}

/* on_busy_fin - verdict callback of the queue-full test. */
static void on_busy_fin(uint64_t cookie, void *arg)
{
	const struct policy_verdict *v = policy_msg_verdict(arg);

	busy_fin = v->action == POLICY_TEMPFAIL && strncmp(v->reply, "451 4.3.2 ", 10) == 0;
	event_base_loopbreak(L.base);
}

static void test_queue_full(void **state)
{
	struct config *cfg;
	struct policy_ctx *pc;
	struct util_addr a;
	struct policy_msg *filler[80], *m1, *m2;
	struct timeval tv = {5, 0};
	char err[256];
	int nfill = 0;

	SKIP_IF_NO_SERVER();
	cfg = live_cfg(false);
	cfg->policy_workers = 1; /* queue bound: max(32 x 1, 2 x 1, 64) = 64 jobs */
	cfg->max_connections = 1;
	pc = policy_new(cfg, L.base, L.dns, err, sizeof(err));
	assert_non_null(pc);
	util_addr_parse_numeric("127.0.0.1", 25, &a);
	/* one job holds the only worker, the queue fills up behind it */
	for (;;) {
		filler[nfill] = policy_msg_new(pc, &a, "h.pass.test", "f@live.test");
		if (policy_pool_submit(pc->pool, filler[nfill], block_work, block_done_cb) < 0) {
			policy_msg_free(filler[nfill]);
			break;
		}
		if (nfill == 0) {
			/* Wait until the worker has taken this job, so the
			 * queue bound is all that is left (no race with the
			 * worker's dequeue). */
			pthread_mutex_lock(&block_mu);
			while (!block_started)
				pthread_cond_wait(&block_cv, &block_mu);
			pthread_mutex_unlock(&block_mu);
		}
		nfill++;
		assert_true(nfill < 80);
	}
	assert_true(nfill >= 64);
	m1 = policy_msg_new(pc, &a, "h.live.test", "a@live.test");
	policy_spf_start(m1, on_busy_spf, 42, m1);
	event_base_dispatch(L.base);
	assert_true(busy_spf);
	m2 = policy_msg_new(pc, &a, "h.live.test", "a@live.test");
	policy_msg_finish(m2, on_busy_fin, 42, m2);
	event_base_dispatch(L.base);
	assert_true(busy_fin);
	/* release the worker; the queued jobs run and complete on the loop */
	pthread_mutex_lock(&block_mu);
	block_open = true;
	pthread_cond_broadcast(&block_cv);
	pthread_mutex_unlock(&block_mu);
	event_base_loopexit(L.base, &tv);
	while (block_done < nfill && event_base_loop(L.base, EVLOOP_ONCE) == 0)
		;
	assert_int_equal(block_done, nfill);
	for (int i = 0; i < nfill; i++)
		policy_msg_free(filler[i]);
	policy_msg_free(m1);
	policy_msg_free(m2);
	policy_free(pc);
	config_free(cfg);
}

static int mx_n;
static char mx_first[64];
static enum policy_dns_status mx_st, host_st;
static size_t host_n;

/* on_mx - async MX callback. */
static void on_mx(void *arg, enum policy_dns_status st, bool secure, const char *const *hosts,
                  size_t n)
{
	mx_st = st;
	mx_n = (int)n;
	if (n > 0)
		snprintf(mx_first, sizeof(mx_first), "%s", hosts[0]);
	event_base_loopbreak(L.base);
}

/* on_host - async address callback. */
static void on_host(void *arg, enum policy_dns_status st, const struct util_addr *a, size_t n)
{
	host_st = st;
	host_n = n;
	if (n > 0)
		assert_int_equal(util_addr_port(&a[0]), 2525);
	event_base_loopbreak(L.base);
}

static char ptr_name[64];
static enum policy_dns_status ptr_st;

/* on_ptr - async PTR callback. */
static void on_ptr(void *arg, enum policy_dns_status st, const char *name)
{
	ptr_st = st;
	snprintf(ptr_name, sizeof(ptr_name), "%s", name ? name : "");
	event_base_loopbreak(L.base);
}

static void test_async_resolver(void **state)
{
	struct util_addr pa;

	SKIP_IF_NO_SERVER();
	policy_dns_resolve_mx(L.dns, "live.test", on_mx, NULL);
	event_base_dispatch(L.base);
	assert_int_equal(mx_st, POLICY_DNS_OK);
	assert_int_equal(mx_n, 2);
	assert_string_equal(mx_first, "mx1.live.test");

	policy_dns_resolve_mx(L.dns, "fail.test", on_mx, NULL); /* implicit MX */
	event_base_dispatch(L.base);
	assert_int_equal(mx_st, POLICY_DNS_OK);
	assert_int_equal(mx_n, 1);
	assert_string_equal(mx_first, "fail.test");

	policy_dns_resolve_host(L.dns, "mx1.live.test", 2525, on_host, NULL);
	event_base_dispatch(L.base);
	assert_int_equal(host_st, POLICY_DNS_OK);
	assert_int_equal(host_n, 2);

	policy_dns_resolve_host(L.dns, "nothing.live.test", 25, on_host, NULL);
	event_base_dispatch(L.base);
	assert_int_equal(host_st, POLICY_DNS_NXDOMAIN);

	util_addr_parse_numeric("127.0.0.1", 25, &pa);
	policy_dns_resolve_ptr(L.dns, &pa, on_ptr, NULL);
	event_base_dispatch(L.base);
	assert_int_equal(ptr_st, POLICY_DNS_OK);
	assert_string_equal(ptr_name, "localhost");
	util_addr_parse_numeric("127.0.0.5", 25, &pa);
	policy_dns_resolve_ptr(L.dns, &pa, on_ptr, NULL);
	event_base_dispatch(L.base);
	assert_int_equal(ptr_st, POLICY_DNS_NXDOMAIN);

	policy_dns_resolve_host(L.dns, "127.0.0.9", 2525, on_host, NULL);
	event_base_dispatch(L.base);
	assert_int_equal(host_st, POLICY_DNS_OK);
	assert_int_equal(host_n, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pass_all),           cmocka_unit_test(test_fail_reject),
	    cmocka_unit_test(test_dkim_body_modified), cmocka_unit_test(test_temperror_and_dnssec),
	    cmocka_unit_test(test_free_in_flight),     cmocka_unit_test(test_async_resolver),
	    cmocka_unit_test(test_queue_full),        cmocka_unit_test(test_body_from_file),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
