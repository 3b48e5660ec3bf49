/*
 * test_queue_sched.c - the delivery scheduler against the real store in a
 * mkdtemp() folder and a scripted fake deliverer (queue_deliver_ops):
 * per-recipient outcomes, retries with the backoff schedule, partial
 * delivery remembered across attempts and across a restart, bounces and
 * expiry producing DSNs (grouped per attempt, never to the null sender),
 * the delay warning, max_deliveries (global and per route: a route at its
 * limit does not hold back the others), the postmaster operations
 * (list/show/hold/release/flush/delete), quarantined messages (never
 * offered; refused by the queue operations; listed, released into active/
 * with the release stamp, deleted by the quarantine ones), and envelopes
 * that cannot be read
 * (kept and retried; a pending hold waits) or parsed (moved to corrupt/).
 * The backoff table itself is in test_queue_dsn.c.  Retry steps are 1 s, so
 * the whole file runs in ~25 s.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "queue.h"

#define BODY "Subject: test\r\nFrom: <s@example.org>\r\n\r\nhello\r\n"
#define MAXO 8

/* Scripted outcome of one recipient, per offer (the last one repeats). */
struct script {
	const char *addr;
	enum queue_outcome outs[MAXO];
	size_t nouts;
};

/* One offered delivery, answered from a fresh loop turn. */
struct offer {
	struct fake *fk;
	struct queue_delivery *d;
	size_t idx[8];
	enum queue_outcome out[8];
	size_t n;
	bool held_route; /* counted in route_in_flight */
};

struct fake {
	const struct script *scripts;
	size_t nscripts;
	int offers[8]; /* per script entry */
	int dsn_offers;
	char dsn_text[8][8192]; /* DSN bodies seen */
	int in_flight, max_in_flight;
	bool hold_answers;      /* keep deliveries pending (max_deliveries test) */
	const char *hold_route; /* ... only those of this route (NULL: all) */
	int route_in_flight, route_max_in_flight; /* of hold_route */
	struct offer *held[32];
	size_t nheld;
};

struct fixture {
	char dir[64];
	struct event_base *base;
	struct queue_store *qs;
	struct queue_sched *s;
	struct config cfg;
	struct config_route routes[3]; /* default, org (example.org), outbound; the
	                                * per-destination test: slow, default, outbound */
	char *org_domains[1];
	int64_t schedule[2];
	struct fake fk;
	int injected;
};

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/mxsched-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->base = event_base_new();
	char err[256];
	f->qs = queue_store_open(f->dir, false, f->base, err, sizeof(err));
	assert_non_null(f->qs);
	f->schedule[0] = 1;
	f->schedule[1] = 2;
	f->cfg.hostname = "mx.test";
	f->cfg.retry_schedule = f->schedule;
	f->cfg.nretry = 2;
	f->cfg.max_queue_lifetime = 3600;
	f->cfg.max_deliveries = 10;
	/* The senders of the DSN cases are at example.org, which has an inbound
	 * route of its own: a DSN routed like inbound mail would take it. */
	f->routes[0].name = "default";
	f->routes[0].type = CONFIG_ROUTE_SMTP;
	f->routes[1].name = "org";
	f->routes[1].type = CONFIG_ROUTE_SMTP;
	f->org_domains[0] = "example.org";
	f->routes[1].domains.v = f->org_domains;
	f->routes[1].domains.n = 1;
	f->routes[2].name = "outbound";
	f->routes[2].role = CONFIG_ROLE_OUTBOUND;
	f->routes[2].type = CONFIG_ROUTE_MX;
	f->cfg.routes = f->routes;
	f->cfg.nroutes = 3;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	queue_sched_free(f->s);
	for (size_t i = 0; i < f->fk.nheld; i++)
		free(f->fk.held[i]);
	queue_store_close(f->qs);
	event_base_free(f->base);
	nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* answer_cb - give the scripted outcomes back to the scheduler. */
static void answer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct offer *o = arg;
	for (size_t i = 0; i < o->n; i++) {
		const char *reply = o->out[i] == QUEUE_OUT_DONE     ? "250 2.0.0 ok"
		                    : o->out[i] == QUEUE_OUT_BOUNCE ? "550 5.1.1 unknown user"
		                                                    : "451 4.3.0 try later";
		queue_delivery_result(o->d, o->idx[i], o->out[i], reply);
	}
	o->fk->in_flight--;
	if (o->held_route)
		o->fk->route_in_flight--;
	queue_delivery_done(o->d, NULL);
	free(o);
}

/* fake_start - queue_deliver_ops.start: look up each recipient's script. */
static void fake_start(void *ctx, struct queue_delivery *d, const struct queue_envelope *env,
                       const size_t *idx, size_t nidx, const char *msg_path,
                       const struct config_route *route)
{
	struct fixture *f = ctx;
	struct fake *fk = &f->fk;
	struct offer *o = calloc(1, sizeof(*o));
	o->fk = fk;
	o->d = d;
	/* DSNs leave through the outbound route, everything else by domain */
	if (env->is_dsn)
		assert_string_equal(route->name, "outbound");
	else
		assert_true(strcmp(route->name, "default") == 0 || strcmp(route->name, "slow") == 0);
	if (env->sender[0] == '\0' && env->is_dsn) {
		int fd = open(msg_path, O_RDONLY);
		assert_true(fd >= 0);
		ssize_t n = read(fd, fk->dsn_text[fk->dsn_offers % 8], 8191);
		assert_true(n > 0);
		fk->dsn_text[fk->dsn_offers % 8][n] = '\0';
		close(fd);
		fk->dsn_offers++;
	}
	for (size_t i = 0; i < nidx; i++) {
		o->idx[i] = idx[i];
		o->out[i] = QUEUE_OUT_DONE;
		for (size_t k = 0; k < fk->nscripts; k++) {
			if (strcmp(fk->scripts[k].addr, env->rcpts[idx[i]].addr) != 0)
				continue;
			int nth = fk->offers[k]++;
			size_t j = (size_t)nth < fk->scripts[k].nouts ? (size_t)nth
			                                              : fk->scripts[k].nouts - 1;
			o->out[i] = fk->scripts[k].outs[j];
		}
	}
	o->n = nidx;
	fk->in_flight++;
	if (fk->in_flight > fk->max_in_flight)
		fk->max_in_flight = fk->in_flight;
	if (fk->hold_route != NULL && strcmp(route->name, fk->hold_route) == 0) {
		o->held_route = true;
		if (++fk->route_in_flight > fk->route_max_in_flight)
			fk->route_max_in_flight = fk->route_in_flight;
	}
	if (fk->hold_answers && (fk->hold_route == NULL || o->held_route)) {
		fk->held[fk->nheld++] = o;
		return;
	}
	event_base_once(f->base, -1, EV_TIMEOUT, answer_cb, o, NULL);
}

static const struct queue_deliver_ops fake_ops = {.start = fake_start};

static char g_id[UTIL_QID_LEN + 1];

static void inject_cb(uint64_t cookie, int status, int err, const char *qid, void *arg)
{
	struct fixture *f = arg;
	assert_int_equal(status, 0);
	memcpy(g_id, qid, sizeof(g_id)); /* the last injected message */
	f->injected++;
}

/* inject - a message from sender to rcpts through the store. */
static void inject(struct fixture *f, const char *sender, const char *const *rcpts)
{
	struct queue_envelope *env = queue_envelope_new();
	env->sender = strdup(sender);
	for (size_t i = 0; rcpts[i]; i++)
		queue_envelope_add_rcpt(env, rcpts[i]);
	env->client_addr = strdup("192.0.2.1");
	env->helo = strdup("client.example");
	env->prepend = strdup("Received: from client.example\r\n");
	env->arrival = util_now_us() / 1000000;
	int before = f->injected;
	queue_inject(f->qs, env, BODY, strlen(BODY), inject_cb, 0, f);
	while (f->injected == before)
		event_base_loop(f->base, EVLOOP_ONCE);
}

/* run_until - loop until pred holds or `seconds` pass; returns pred. */
static bool run_until(struct fixture *f, bool (*pred)(struct fixture *), double seconds)
{
	int64_t end = util_mono_ms() + (int64_t)(seconds * 1000);
	struct timeval tick = {0, 20000};
	while (!pred(f) && util_mono_ms() < end) {
		event_base_loopexit(f->base, &tick);
		event_base_dispatch(f->base);
	}
	return pred(f);
}

static bool queue_empty(struct fixture *f)
{
	return queue_sched_count(f->s) == 0 && f->fk.in_flight == 0;
}

static void start_sched(struct fixture *f)
{
	f->s = queue_sched_new(f->qs, f->base, &f->cfg, &fake_ops, f);
	assert_non_null(f->s);
}

/* count_in - substrings in text. */
static int count_in(const char *text, const char *needle)
{
	int n = 0;
	for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

struct sched_case {
	const char *name;
	const char *sender;
	const char *rcpts[4];
	struct script scripts[4];
	size_t nscripts;
	int64_t lifetime, delay_warning;
	int want_offers[4]; /* per script; -1 = at least 2 */
	int want_dsns;
	const char *dsn_has[5]; /* substrings of the first DSN (NULL-terminated) */
	int dsn_final_rcpts;    /* Final-Recipient fields in the first DSN */
};

static const struct sched_case cases[] = {
    {"sent",
     "s@example.org",
     {"a@x.test"},
     {{"a@x.test", {QUEUE_OUT_DONE}, 1}},
     1,
     3600,
     0,
     {1},
     0,
     {NULL},
     0},
    {"bounce",
     "s@example.org",
     {"a@x.test"},
     {{"a@x.test", {QUEUE_OUT_BOUNCE}, 1}},
     1,
     3600,
     0,
     {1},
     1,
     {"Action: failed\r\nStatus: 5.1.1", "Final-Recipient: rfc822; a@x.test",
      "Diagnostic-Code: smtp; 550 5.1.1 unknown user", "To: <s@example.org>"},
     1},
    {"partial",
     "s@example.org",
     {"a@x.test", "b@x.test"},
     {{"a@x.test", {QUEUE_OUT_DONE}, 1}, {"b@x.test", {QUEUE_OUT_BOUNCE}, 1}},
     2,
     3600,
     0,
     {1, 1},
     1,
     {"Final-Recipient: rfc822; b@x.test"},
     1},
    {"grouped bounce",
     "s@example.org",
     {"a@x.test", "b@x.test"},
     {{"a@x.test", {QUEUE_OUT_BOUNCE}, 1}, {"b@x.test", {QUEUE_OUT_BOUNCE}, 1}},
     2,
     3600,
     0,
     {1, 1},
     1,
     {"Final-Recipient: rfc822; a@x.test", "Final-Recipient: rfc822; b@x.test"},
     2},
    {"defer then sent, done not resent",
     "s@example.org",
     {"a@x.test", "b@x.test"},
     {{"a@x.test", {QUEUE_OUT_DEFER, QUEUE_OUT_DONE}, 2}, {"b@x.test", {QUEUE_OUT_DONE}, 1}},
     2,
     3600,
     0,
     {2, 1},
     0,
     {NULL},
     0},
    {"null sender never bounced",
     "",
     {"a@x.test"},
     {{"a@x.test", {QUEUE_OUT_BOUNCE}, 1}},
     1,
     3600,
     0,
     {1},
     0,
     {NULL},
     0},
    {"expiry",
     "s@example.org",
     {"a@x.test"},
     {{"a@x.test", {QUEUE_OUT_DEFER}, 1}},
     1,
     2,
     0,
     {-1},
     1,
     {"Action: failed\r\nStatus: 4.4.7", "451 4.3.0 try later"},
     1},
    {"delay warning once",
     "s@example.org",
     {"a@x.test"},
     {{"a@x.test", {QUEUE_OUT_DEFER, QUEUE_OUT_DEFER, QUEUE_OUT_DONE}, 3}},
     1,
     3600,
     1,
     {3},
     1,
     {"Action: delayed", "Delayed Mail"},
     1},
};

static void test_outcomes(void **state)
{
	struct fixture *f = *state;
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		const struct sched_case *tc = &cases[c];
		queue_sched_free(f->s);
		memset(&f->fk, 0, sizeof(f->fk));
		f->fk.scripts = tc->scripts;
		f->fk.nscripts = tc->nscripts;
		f->cfg.max_queue_lifetime = tc->lifetime;
		f->cfg.delay_warning_time = tc->delay_warning;
		start_sched(f);
		inject(f, tc->sender, tc->rcpts);
		if (!run_until(f, queue_empty, 8))
			fail_msg("case %s: queue not empty (count=%zu)", tc->name,
			         queue_sched_count(f->s));
		for (size_t k = 0; k < tc->nscripts; k++) {
			if (tc->want_offers[k] < 0)
				assert_true(f->fk.offers[k] >= 2);
			else if (f->fk.offers[k] != tc->want_offers[k])
				fail_msg("case %s: %s offered %d times, want %d", tc->name,
				         tc->scripts[k].addr, f->fk.offers[k], tc->want_offers[k]);
		}
		if (f->fk.dsn_offers != tc->want_dsns)
			fail_msg("case %s: %d DSNs, want %d", tc->name, f->fk.dsn_offers,
			         tc->want_dsns);
		for (size_t k = 0; tc->want_dsns && tc->dsn_has[k]; k++)
			if (strstr(f->fk.dsn_text[0], tc->dsn_has[k]) == NULL)
				fail_msg("case %s: DSN lacks [%s]:\n%s", tc->name, tc->dsn_has[k],
				         f->fk.dsn_text[0]);
		if (tc->want_dsns)
			assert_int_equal(count_in(f->fk.dsn_text[0], "Final-Recipient:"),
			                 tc->dsn_final_rcpts);
	}
}

static bool first_attempt_recorded(struct fixture *f)
{
	struct queue_envelope *env = NULL;
	enum queue_state st;
	if (queue_env_load(f->qs, g_id, &env, &st) != 0)
		return false;
	bool ok = st == QUEUE_DEFERRED && env->rcpts[0].state == QUEUE_RCPT_DONE;
	queue_envelope_free(env);
	return ok && f->fk.in_flight == 0;
}

static void test_restart_remembers_done(void **state)
{
	struct fixture *f = *state;
	static const struct script s1[] = {{"a@x.test", {QUEUE_OUT_DONE}, 1},
	                                   {"b@x.test", {QUEUE_OUT_DEFER}, 1}};
	f->fk.scripts = s1;
	f->fk.nscripts = 2;
	f->schedule[0] = 3600; /* no retry before the "restart" */
	start_sched(f);
	inject(f, "s@example.org", (const char *[]){"a@x.test", "b@x.test", NULL});
	assert_true(run_until(f, first_attempt_recorded, 5));
	/* restart: a new scheduler scans the store */
	queue_sched_free(f->s);
	static const struct script s2[] = {{"a@x.test", {QUEUE_OUT_DONE}, 1},
	                                   {"b@x.test", {QUEUE_OUT_DONE}, 1}};
	memset(&f->fk, 0, sizeof(f->fk));
	f->fk.scripts = s2;
	f->fk.nscripts = 2;
	f->schedule[0] = 1;
	start_sched(f);
	assert_int_equal(queue_sched_count(f->s), 1);
	char err[128];
	assert_int_equal(queue_sched_flush(f->s, NULL, err, sizeof(err)), 0);
	assert_true(run_until(f, queue_empty, 5));
	assert_int_equal(f->fk.offers[0], 0); /* a's 250 was recorded: never again */
	assert_int_equal(f->fk.offers[1], 1);
}

static bool all_held(struct fixture *f)
{
	return f->fk.nheld == 5 || (f->fk.in_flight == 2 && f->fk.nheld == 2);
}

static void test_max_deliveries(void **state)
{
	struct fixture *f = *state;
	f->cfg.max_deliveries = 2;
	f->fk.hold_answers = true;
	start_sched(f);
	for (int i = 0; i < 5; i++)
		inject(f, "s@example.org", (const char *[]){"a@x.test", NULL});
	run_until(f, all_held, 0.5);
	assert_int_equal(f->fk.in_flight, 2);
	f->fk.hold_answers = false;
	for (size_t round = 0; round < 10 && !queue_empty(f); round++) {
		size_t n = f->fk.nheld;
		f->fk.nheld = 0;
		for (size_t i = 0; i < n; i++)
			answer_cb(-1, 0, f->fk.held[i]);
		run_until(f, queue_empty, 0.3);
	}
	assert_true(queue_empty(f));
	assert_int_equal(f->fk.max_in_flight, 2);
}

static bool slow_held_rest_done(struct fixture *f)
{
	return f->fk.nheld == 2 && queue_sched_count(f->s) == 5 && f->fk.in_flight == 2;
}

/* A route at its max_deliveries (a slow or dead destination) holds only its
 * own slots: the default route's messages are delivered meanwhile, although
 * the slow route's messages came first and are due first. */
static void test_route_max_deliveries(void **state)
{
	struct fixture *f = *state;
	f->routes[0].name = "slow";
	f->routes[0].type = CONFIG_ROUTE_SMTP;
	util_strlist_add(&f->routes[0].domains, "slow.test");
	f->routes[0].max_deliveries = 2;
	f->routes[1].name = "default";
	f->routes[1].type = CONFIG_ROUTE_SMTP;
	f->routes[1].domains.n = 0; /* the fixture's org route becomes the default */
	f->routes[1].max_connections = 10;
	f->cfg.max_deliveries = 3;
	f->fk.hold_answers = true;
	f->fk.hold_route = "slow";
	start_sched(f);
	for (int i = 0; i < 5; i++)
		inject(f, "s@example.org", (const char *[]){"a@slow.test", NULL});
	for (int i = 0; i < 4; i++)
		inject(f, "s@example.org", (const char *[]){"b@x.test", NULL});
	bool ok = run_until(f, slow_held_rest_done, 3.0);
	if (!ok)
		fail_msg("held=%zu count=%zu in_flight=%d", f->fk.nheld, queue_sched_count(f->s),
		         f->fk.in_flight);
	/* the parked ones show as waiting in the queue, not lost */
	struct util_buf b;
	util_buf_init(&b);
	queue_sched_list(f->s, &b);
	assert_int_equal(count_in(b.data, "to=<a@slow.test> pending"), 5);
	util_buf_free(&b);
	f->fk.hold_answers = false;
	for (size_t round = 0; round < 10 && !queue_empty(f); round++) {
		size_t n = f->fk.nheld;
		f->fk.nheld = 0;
		for (size_t i = 0; i < n; i++)
			answer_cb(-1, 0, f->fk.held[i]);
		run_until(f, queue_empty, 0.3);
	}
	assert_true(queue_empty(f));
	assert_int_equal(f->fk.route_max_in_flight, 2);
	util_strlist_free(&f->routes[0].domains);
}

static bool one_deferred(struct fixture *f)
{
	struct util_buf b;
	util_buf_init(&b);
	queue_sched_list(f->s, &b);
	bool ok = b.data && strstr(b.data, " deferred ") != NULL;
	util_buf_free(&b);
	return ok && f->fk.in_flight == 0;
}

static bool offered_twice(struct fixture *f)
{
	return f->fk.offers[0] >= 2 && f->fk.in_flight == 0;
}

static void test_postmaster_ops(void **state)
{
	struct fixture *f = *state;
	static const struct script s[] = {{"a@x.test", {QUEUE_OUT_DEFER}, 1}};
	f->fk.scripts = s;
	f->fk.nscripts = 1;
	f->schedule[0] = f->schedule[1] = 3600;
	start_sched(f);
	inject(f, "s@example.org", (const char *[]){"a@x.test", NULL});
	assert_true(run_until(f, one_deferred, 5));
	char err[256];
	struct util_buf b;

	util_buf_init(&b);
	assert_int_equal(queue_sched_list(f->s, &b), 0);
	assert_non_null(strstr(b.data, g_id));
	assert_non_null(strstr(b.data, "from=<s@example.org>"));
	assert_non_null(strstr(b.data, "to=<a@x.test> pending (451 4.3.0 try later)"));
	assert_non_null(strstr(b.data, "attempts=1"));
	assert_non_null(strstr(b.data, "-- 1 message in queue"));
	util_buf_free(&b);

	util_buf_init(&b);
	assert_int_equal(queue_sched_show(f->s, g_id, &b, err, sizeof(err)), 0);
	assert_non_null(strstr(b.data, "sender: <s@example.org>"));
	assert_non_null(strstr(b.data, "recipient: <a@x.test> pending"));
	assert_non_null(strstr(b.data, "Received: from client.example\n"));
	assert_non_null(strstr(b.data, "Subject: test\n"));
	assert_null(strstr(b.data, "hello")); /* headers only */
	util_buf_free(&b);

	/* errors */
	assert_int_equal(queue_sched_show(f->s, "../../etc/passwd", &b, err, sizeof(err)), -1);
	assert_string_equal(err, "invalid queue id");
	assert_int_equal(queue_sched_hold(f->s, "0000000000000000", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "no such message"));
	assert_int_equal(queue_sched_release(f->s, g_id, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not on hold"));

	/* hold: moved to hold/, flush refuses, release makes it due now */
	assert_int_equal(queue_sched_hold(f->s, g_id, err, sizeof(err)), 0);
	run_until(f, queue_empty, 0.3);
	struct queue_envelope *env = NULL;
	enum queue_state st;
	assert_int_equal(queue_env_load(f->qs, g_id, &env, &st), 0);
	assert_int_equal(st, QUEUE_HOLD);
	queue_envelope_free(env);
	assert_int_equal(queue_sched_flush(f->s, g_id, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "on hold"));
	assert_int_equal(f->fk.offers[0], 1);
	assert_int_equal(queue_sched_release(f->s, g_id, err, sizeof(err)), 0);
	assert_true(run_until(f, offered_twice, 3));

	/* flush: a third attempt right away despite the 1 h schedule */
	assert_int_equal(queue_sched_flush(f->s, g_id, err, sizeof(err)), 0);
	run_until(f, queue_empty, 0.5);
	assert_int_equal(f->fk.offers[0], 3);

	/* delete: gone without a DSN */
	assert_int_equal(queue_sched_delete(f->s, g_id, err, sizeof(err)), 0);
	assert_true(run_until(f, queue_empty, 3));
	assert_int_equal(f->fk.dsn_offers, 0);
	assert_int_equal(queue_env_load(f->qs, g_id, &env, &st), -1);
	assert_int_equal(queue_sched_oldest(f->s), 0);
}

/* ------------------------------------------------------------ unreadable envelopes
 *
 * A read error (here: a directory in place of the envelope, which read(2)
 * answers with EISDIR as a failing disk answers EIO) must not drop the
 * message: it stays in the index and in `queue list`, is retried with
 * backoff, and is delivered once the file is back.  An envelope that reads
 * but does not parse goes to corrupt/ with its message, and is counted. */

#define ENV_ERRORS "mxgate_queue_envelope_errors_total"

enum read_fault { FAULT_DIR, FAULT_GARBAGE };

struct read_fault_case {
	const char *name;
	bool at_scan; /* fault before start-up, else between attempts */
	enum read_fault fault;
	const char *folder; /* where the envelope is when the fault hits */
};

static double g_metric_base;
static const char *g_metric_label;
static char g_corrupt[256];

static bool path_exists(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0;
}

/* set_aside_done - the set-aside job finished: g_corrupt names a file and
 * the move was counted. */
static bool set_aside_done(struct fixture *f)
{
	return path_exists(g_corrupt) && f->fk.in_flight == 0 &&
	       util_metrics_value(ENV_ERRORS, "corrupt") > g_metric_base;
}

/* fault_seen - the scheduler met the fault: counted it, or (the old
 * behaviour) dropped the message or set it aside. */
static bool fault_seen(struct fixture *f)
{
	return f->fk.in_flight == 0 &&
	       (util_metrics_value(ENV_ERRORS, g_metric_label) > g_metric_base ||
	        queue_sched_count(f->s) == 0 || path_exists(g_corrupt));
}

/* path_in - "<dir>/<sub>/<name><suffix>". */
static const char *path_in(struct fixture *f, const char *sub, const char *name, const char *suffix)
{
	static char p[2][256];
	static int k;
	k ^= 1;
	snprintf(p[k], sizeof(p[k]), "%s/%s/%s%s", f->dir, sub, name, suffix);
	return p[k];
}

static void test_unreadable_envelope(void **state)
{
	static const struct read_fault_case rcases[] = {
	    {"read error between attempts", false, FAULT_DIR, "deferred"},
	    {"read error at start-up", true, FAULT_DIR, "active"},
	    {"unparsable between attempts", false, FAULT_GARBAGE, "deferred"},
	    {"unparsable at start-up", true, FAULT_GARBAGE, "active"},
	};
	static const struct script defer_then_done[] = {
	    {"a@x.test", {QUEUE_OUT_DEFER, QUEUE_OUT_DONE}, 2}};
	static const struct script done[] = {{"a@x.test", {QUEUE_OUT_DONE}, 1}};
	struct fixture *f = *state;

	assert_int_equal(util_metrics_define(ENV_ERRORS, UTIL_METRIC_COUNTER, "envelope errors",
	                                     "error", NULL, 0),
	                 0);
	for (size_t c = 0; c < sizeof(rcases) / sizeof(rcases[0]); c++) {
		const struct read_fault_case *tc = &rcases[c];
		char env_path[256], saved[256], *corrupt = g_corrupt;
		struct util_buf b;

		queue_sched_free(f->s);
		f->s = NULL;
		memset(&f->fk, 0, sizeof(f->fk));
		f->fk.scripts = tc->at_scan ? done : defer_then_done;
		f->fk.nscripts = 1;
		f->schedule[0] = 1;
		f->schedule[1] = 1;
		if (!tc->at_scan) {
			start_sched(f);
			inject(f, "s@example.org", (const char *[]){"a@x.test", NULL});
			assert_true(run_until(f, one_deferred, 5));
		} else {
			inject(f, "s@example.org", (const char *[]){"a@x.test", NULL});
		}
		snprintf(env_path, sizeof(env_path), "%s", path_in(f, tc->folder, g_id, ""));
		snprintf(saved, sizeof(saved), "%s", path_in(f, ".", g_id, ".saved"));
		snprintf(g_corrupt, sizeof(g_corrupt), "%s", path_in(f, "corrupt", tc->folder, ""));
		snprintf(g_corrupt + strlen(g_corrupt), sizeof(g_corrupt) - strlen(g_corrupt),
		         "-%s", g_id);
		assert_int_equal(rename(env_path, saved), 0);
		if (tc->fault == FAULT_DIR) {
			assert_int_equal(mkdir(env_path, 0700), 0);
		} else {
			FILE *fp = fopen(env_path, "w");
			assert_non_null(fp);
			fputs("this is not an envelope\n", fp);
			fclose(fp);
		}
		g_metric_label = tc->fault == FAULT_DIR ? "read" : "corrupt";
		g_metric_base = util_metrics_value(ENV_ERRORS, g_metric_label);
		if (tc->at_scan)
			start_sched(f);
		if (!run_until(f, fault_seen, 5))
			fail_msg("case %s: the fault went unnoticed", tc->name);

		if (tc->fault == FAULT_GARBAGE) {
			/* set aside with its message (by the I/O thread), forgotten,
			 * never offered */
			strcat(g_corrupt, ".msg");
			run_until(f, set_aside_done, 5);
			g_corrupt[strlen(g_corrupt) - 4] = '\0';
			if (queue_sched_count(f->s) != 0)
				fail_msg("case %s: still indexed", tc->name);
			if (!path_exists(corrupt))
				fail_msg("case %s: %s missing", tc->name, corrupt);
			strcat(g_corrupt, ".msg");
			if (!path_exists(corrupt) || path_exists(path_in(f, "msg", g_id, "")))
				fail_msg("case %s: message not moved to %s", tc->name, corrupt);
			assert_false(path_exists(env_path));
			unlink(saved);
			if (util_metrics_value(ENV_ERRORS, "corrupt") != g_metric_base + 1)
				fail_msg("case %s: corrupt envelope not counted", tc->name);
			g_corrupt[0] = '\0';
			continue;
		}
		/* still queued and listed, left in place, not set aside */
		if (queue_sched_count(f->s) != 1)
			fail_msg("case %s: count=%zu, want 1 (dropped?)", tc->name,
			         queue_sched_count(f->s));
		util_buf_init(&b);
		assert_int_equal(queue_sched_list(f->s, &b), 0);
		if (strstr(b.data, g_id) == NULL ||
		    strstr(b.data, "read_error=(Is a directory)") == NULL)
			fail_msg("case %s: list lacks the message:\n%s", tc->name, b.data);
		util_buf_free(&b);
		assert_false(path_exists(corrupt));
		if (util_metrics_value(ENV_ERRORS, "read") <= g_metric_base)
			fail_msg("case %s: read error not counted", tc->name);
		/* the disk recovers: delivered at a retry, nothing lost */
		assert_int_equal(rmdir(env_path), 0);
		assert_int_equal(rename(saved, env_path), 0);
		if (!run_until(f, queue_empty, 8))
			fail_msg("case %s: not delivered after the envelope came back", tc->name);
		if (f->fk.offers[0] != (tc->at_scan ? 1 : 2))
			fail_msg("case %s: offered %d times", tc->name, f->fk.offers[0]);
	}
}

/* in_hold - the envelope of g_id is in hold/ and nothing is in flight. */
static bool in_hold(struct fixture *f)
{
	struct queue_envelope *env = NULL;
	enum queue_state st;
	if (queue_env_load(f->qs, g_id, &env, &st) != 0)
		return false;
	queue_envelope_free(env);
	return st == QUEUE_HOLD && f->fk.in_flight == 0;
}

/* A hold asked for while the envelope cannot be read waits for it, and is
 * never turned into a delivery attempt. */
static void test_hold_waits_for_unreadable_envelope(void **state)
{
	struct fixture *f = *state;
	static const struct script s1[] = {{"a@x.test", {QUEUE_OUT_DEFER}, 1}};
	char env_path[256], saved[256], err[256];
	struct util_buf b;

	f->fk.scripts = s1;
	f->fk.nscripts = 1;
	f->schedule[0] = f->schedule[1] = 3600;
	start_sched(f);
	inject(f, "s@example.org", (const char *[]){"a@x.test", NULL});
	assert_true(run_until(f, one_deferred, 5));
	snprintf(env_path, sizeof(env_path), "%s", path_in(f, "deferred", g_id, ""));
	snprintf(saved, sizeof(saved), "%s", path_in(f, ".", g_id, ".saved"));
	assert_int_equal(rename(env_path, saved), 0);
	assert_int_equal(mkdir(env_path, 0700), 0);

	assert_int_equal(queue_sched_hold(f->s, g_id, err, sizeof(err)), 0);
	assert_int_equal(queue_sched_count(f->s), 1);
	util_buf_init(&b);
	assert_int_equal(queue_sched_list(f->s, &b), 0);
	if (strstr(b.data, " hold ") == NULL || strstr(b.data, "read_error=") == NULL)
		fail_msg("list:\n%s", b.data);
	util_buf_free(&b);

	assert_int_equal(rmdir(env_path), 0);
	assert_int_equal(rename(saved, env_path), 0);
	if (!run_until(f, in_hold, 5))
		fail_msg("the hold was not applied once the envelope was readable");
	assert_int_equal(f->fk.offers[0], 1); /* held, not delivered */
	assert_int_equal(queue_sched_count(f->s), 1);
	run_until(f, queue_empty, 1.5); /* a while longer: still no attempt */
	assert_int_equal(f->fk.offers[0], 1);
}

/* ------------------------------------------------------------ quarantine */

/* quarantine - commit a message from sender to rcpt into quarantine/ (as
 * the SMTP server does for a quarantine verdict); its id in g_id. */
static void quarantine(struct fixture *f, const char *rcpt, const char *reason)
{
	struct queue_envelope *env = queue_envelope_new();
	env->sender = strdup("s@example.org");
	queue_envelope_add_rcpt(env, rcpt);
	env->prepend = strdup("Received: from client.example\r\n");
	env->quarantine_reason = strdup(reason);
	env->quarantine_verdict = strdup("virus=Eicar-Test-Signature");
	struct queue_spool *sp = queue_spool_new(f->qs);
	assert_non_null(sp);
	assert_int_equal(queue_spool_write(sp, BODY, strlen(BODY)), 0);
	int before = f->injected;
	queue_commit_quarantined(f->qs, sp, env, inject_cb, 0, f);
	while (f->injected == before)
		event_base_loop(f->base, EVLOOP_ONCE);
}

static char g_q1[UTIL_QID_LEN + 1], g_q2[UTIL_QID_LEN + 1];

/* q1_deferred - the released g_q1 was offered once and is in deferred/. */
static bool q1_deferred(struct fixture *f)
{
	struct queue_envelope *env = NULL;
	enum queue_state st;
	if (f->fk.offers[0] < 1 || f->fk.in_flight != 0 ||
	    queue_env_load(f->qs, g_q1, &env, &st) != 0)
		return false;
	queue_envelope_free(env);
	return st == QUEUE_DEFERRED;
}

static bool c_deferred(struct fixture *f)
{
	return f->fk.offers[2] == 1 && f->fk.in_flight == 0;
}

static bool q2_gone(struct fixture *f)
{
	return queue_sched_count(f->s) == 2 && !queue_sched_is_quarantined(f->s, g_q2);
}

/* A quarantined message waits for a person, not for the downstream: it is
 * not "queued mail" for mxgate_queue_oldest_age_seconds (the quarantine has
 * its own gauge), or that alert would fire for the whole retention time. */
static void test_quarantine_not_oldest(void **state)
{
	struct fixture *f = *state;

	start_sched(f);
	quarantine(f, "a@x.test", "virus");
	run_until(f, queue_empty, 0.3);
	assert_int_equal(queue_sched_count(f->s), 1);
	assert_int_equal(queue_sched_oldest(f->s), 0);
}

/* Quarantined messages are indexed but never offered (not at commit, not
 * after a restart, not by a flush of the whole queue); the `queue`
 * operations refuse them with a hint; the quarantine operations list, show,
 * release (into active/, stamped, then delivered as usual) and delete them,
 * and refuse anything else. */
static void test_quarantine_ops(void **state)
{
	struct fixture *f = *state;
	static const struct script s[] = {{"a@x.test", {QUEUE_OUT_DEFER}, 1},
	                                  {"b@x.test", {QUEUE_OUT_DEFER}, 1},
	                                  {"c@x.test", {QUEUE_OUT_DEFER}, 1}};
	char err[256];
	struct util_buf b;
	struct queue_envelope *env = NULL;
	enum queue_state st;

	f->fk.scripts = s;
	f->fk.nscripts = 3;
	f->schedule[0] = f->schedule[1] = 3600;
	start_sched(f);
	quarantine(f, "a@x.test", "virus");
	memcpy(g_q1, g_id, sizeof(g_q1));
	quarantine(f, "b@x.test", "spam");
	memcpy(g_q2, g_id, sizeof(g_q2));
	/* and one held by hand, which the quarantine commands must not touch */
	inject(f, "s@example.org", (const char *[]){"c@x.test", NULL});
	char held[UTIL_QID_LEN + 1];
	memcpy(held, g_id, sizeof(held));
	assert_true(run_until(f, c_deferred, 5));
	assert_int_equal(queue_sched_hold(f->s, held, err, sizeof(err)), 0);
	run_until(f, queue_empty, 0.5);
	assert_int_equal(queue_sched_flush(f->s, NULL, err, sizeof(err)), 0);
	run_until(f, queue_empty, 0.5);
	assert_int_equal(f->fk.offers[0] + f->fk.offers[1], 0);
	assert_int_equal(f->fk.offers[2], 1);
	assert_true(queue_sched_is_quarantined(f->s, g_q1));
	assert_false(queue_sched_is_quarantined(f->s, held));

	/* a restart finds them in quarantine/ again, still not delivered */
	queue_sched_free(f->s);
	start_sched(f);
	run_until(f, queue_empty, 0.5);
	assert_int_equal(queue_sched_count(f->s), 3);
	assert_int_equal(queue_sched_count_state(f->s, QUEUE_QUARANTINE), 2);
	assert_int_equal(f->fk.offers[0], 0);

	util_buf_init(&b);
	assert_int_equal(queue_sched_list(f->s, &b), 0);
	if (count_in(b.data, " quarantine age=") != 2 || count_in(b.data, " hold age=") != 1)
		fail_msg("list:\n%s", b.data);
	util_buf_free(&b);
	util_buf_init(&b);
	assert_int_equal(queue_sched_quarantine_list(f->s, "reason=spam", &b, err, sizeof(err)), 0);
	if (strstr(b.data, g_q2) == NULL || strstr(b.data, g_q1) != NULL ||
	    strstr(b.data, "-- 1 quarantined message\n") == NULL)
		fail_msg("quarantine list:\n%s", b.data);
	util_buf_free(&b);
	util_buf_init(&b);
	assert_int_equal(queue_sched_show(f->s, g_q1, &b, err, sizeof(err)), 0);
	if (strstr(b.data, "state: quarantine\n") == NULL ||
	    strstr(b.data, "quarantine: reason=virus verdict=(virus=Eicar-Test-Signature)\n") ==
	        NULL)
		fail_msg("show:\n%s", b.data);
	util_buf_free(&b);

	/* the queue operations refuse, naming the command to use */
	static const char *const hints[] = {"release", "delete", "release"};
	int rcs[3];
	rcs[0] = queue_sched_release_by(f->s, g_q1, "root", err, sizeof(err));
	assert_non_null(strstr(err, hints[0]));
	rcs[1] = queue_sched_delete(f->s, g_q1, err, sizeof(err));
	assert_non_null(strstr(err, "`mxgate quarantine delete "));
	rcs[2] = queue_sched_flush(f->s, g_q1, err, sizeof(err));
	assert_non_null(strstr(err, "in quarantine"));
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(rcs[i], -1);
	assert_int_equal(queue_sched_hold(f->s, g_q1, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "in quarantine"));
	/* ... and the quarantine operations refuse what is not quarantined */
	assert_int_equal(queue_sched_quarantine_release(f->s, held, "root", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not in quarantine"));
	assert_int_equal(queue_sched_quarantine_delete(f->s, held, "root", err, sizeof(err)), -1);
	assert_int_equal(
	    queue_sched_quarantine_delete(f->s, "0000000000000001", "root", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not in quarantine"));
	run_until(f, queue_empty, 0.3);
	assert_int_equal(queue_sched_count_state(f->s, QUEUE_QUARANTINE), 2);
	assert_int_equal(f->fk.offers[0], 0);

	/* release: into active/, stamped, offered like any message */
	assert_int_equal(queue_sched_quarantine_release(f->s, g_q1, "alice", err, sizeof(err)), 0);
	if (!run_until(f, q1_deferred, 5))
		fail_msg("the released message was not delivered");
	assert_int_equal(queue_env_load(f->qs, g_q1, &env, &st), 0);
	if (strstr(env->prepend, "X-Mxgate-Released: by=alice; at=") == NULL)
		fail_msg("prepend: %s", env->prepend);
	assert_non_null(strstr(env->prepend, "Received: from client.example\r\n"));
	queue_envelope_free(env);
	assert_false(queue_sched_is_quarantined(f->s, g_q1));

	/* delete: gone, files too; the held one is untouched */
	assert_int_equal(queue_sched_quarantine_delete(f->s, g_q2, "bob", err, sizeof(err)), 0);
	assert_true(run_until(f, q2_gone, 3));
	assert_int_equal(queue_env_load(f->qs, g_q2, &env, &st), -1);
	assert_false(path_exists(path_in(f, "msg", g_q2, "")));
	assert_int_equal(queue_env_load(f->qs, held, &env, &st), 0);
	assert_int_equal(st, QUEUE_HOLD);
	queue_envelope_free(env);
	assert_int_equal(f->fk.offers[1], 0);
	assert_int_equal(f->fk.offers[2], 1);
	assert_int_equal(f->fk.dsn_offers, 0);
}

int main(void)
{
	evthread_use_pthreads();
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_outcomes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_restart_remembers_done, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_max_deliveries, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_route_max_deliveries, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_postmaster_ops, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unreadable_envelope, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hold_waits_for_unreadable_envelope, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_quarantine_ops, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_quarantine_not_oldest, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
