/*
 * test_queue_dsn.c - RFC 3464 DSN composition (queue_dsn_compose): the
 * output is parsed back into its MIME structure and checked field by field:
 * top-level headers, the three parts of multipart/report, the per-message
 * and per-recipient delivery-status fields, the attached header block,
 * CRLF-only line endings, line lengths, and sanitising of hostile
 * diagnostic text that could otherwise break the structure.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue.h"

#define ORIG_HEADERS                                                                               \
	"Received: from a.example by mx.test\r\nSubject: hello\r\nFrom: <s@example.org>\r\n"

/* A parsed MIME part: its header block and its body. */
struct part {
	char *headers;
	char *body;
};

struct parsed {
	char *top_headers;
	char boundary[128];
	struct part parts[8];
	size_t nparts;
};

/* split_hb - header block and body of an entity (CRLF CRLF separated). */
static void split_hb(const char *s, size_t len, char **h, char **b)
{
	const char *sep = strstr(s, "\r\n\r\n");
	assert_non_null(sep);
	assert_true((size_t)(sep - s) < len);
	*h = strndup(s, (size_t)(sep - s) + 2);
	*b = strndup(sep + 4, len - (size_t)(sep - s) - 4);
}

/* parse_dsn - top headers, boundary, parts. */
static void parse_dsn(const char *msg, size_t len, struct parsed *p)
{
	memset(p, 0, sizeof(*p));
	char *body;
	split_hb(msg, len, &p->top_headers, &body);
	const char *b = strstr(p->top_headers, "boundary=\"");
	assert_non_null(b);
	b += 10;
	size_t bl = strcspn(b, "\"");
	assert_true(bl > 0 && bl < sizeof(p->boundary));
	memcpy(p->boundary, b, bl);
	char delim[160], close[160];
	snprintf(delim, sizeof(delim), "\r\n--%s\r\n", p->boundary);
	snprintf(close, sizeof(close), "\r\n--%s--\r\n", p->boundary);
	/* the preamble ends before the first delimiter (RFC 2046 5.1.1) */
	char *cur = strstr(body, delim);
	assert_non_null(cur);
	char *end = strstr(body, close);
	assert_non_null(end);
	assert_string_equal(end + strlen(close), "");
	while (cur != NULL && cur < end) {
		char *start = cur + strlen(delim);
		char *next = strstr(start, delim);
		char *stop = (next && next < end) ? next : end;
		assert_true(p->nparts < 8);
		split_hb(start, (size_t)(stop - start), &p->parts[p->nparts].headers,
		         &p->parts[p->nparts].body);
		p->nparts++;
		cur = (next && next < end) ? next : NULL;
	}
	free(body);
}

static void parsed_free(struct parsed *p)
{
	free(p->top_headers);
	for (size_t i = 0; i < p->nparts; i++) {
		free(p->parts[i].headers);
		free(p->parts[i].body);
	}
}

/* check_lines - CRLF only, no line over 998 octets (RFC 5322 2.1.1). */
static void check_lines(const char *msg, size_t len)
{
	size_t line = 0;
	for (size_t i = 0; i < len; i++) {
		if (msg[i] == '\n')
			assert_true(i > 0 && msg[i - 1] == '\r');
		if (msg[i] == '\r')
			assert_true(i + 1 < len && msg[i + 1] == '\n');
		line = msg[i] == '\n' ? 0 : line + 1;
		assert_true(line <= 998);
	}
}

static struct queue_envelope *make_env(const char *sender)
{
	struct queue_envelope *env = queue_envelope_new();
	snprintf(env->id, sizeof(env->id), "0123456789ABCDEF");
	env->sender = strdup(sender);
	queue_envelope_add_rcpt(env, "u1@example.com");
	queue_envelope_add_rcpt(env, "u2@example.com");
	env->arrival = 1700000000;
	return env;
}

struct dsn_case {
	const char *name;
	const char *action;
	struct queue_dsn_rcpt rcpts[3];
	size_t nrcpts;
	const char *expect_in_status[6]; /* substrings of the delivery-status part */
	const char *subject;
};

static const struct dsn_case cases[] = {
    {"one failed",
     "failed",
     {{"u1@example.com", "5.1.1", "smtp; 550 5.1.1 <u1@example.com>: user unknown"}},
     1,
     {"Reporting-MTA: dns; mx.test\r\n", "Arrival-Date: ",
      "Final-Recipient: rfc822; u1@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n",
      "Diagnostic-Code: smtp; 550 5.1.1 <u1@example.com>: user unknown\r\n", NULL},
     "Undelivered Mail Returned to Sender"},
    {"two failed grouped",
     "failed",
     {{"u1@example.com", "5.7.1", "smtp; 554 5.7.1 rejected"},
      {"u2@example.com", "4.4.7", "smtp; 451 4.3.0 try later (message expired in queue)"}},
     2,
     {"Final-Recipient: rfc822; u1@example.com\r\nAction: failed\r\nStatus: 5.7.1\r\n",
      "Final-Recipient: rfc822; u2@example.com\r\nAction: failed\r\nStatus: 4.4.7\r\n", NULL},
     "Undelivered Mail Returned to Sender"},
    {"delayed",
     "delayed",
     {{"u2@example.com", "4.4.1", "x-mxgate; 4.4.1 connect refused"}},
     1,
     {"Action: delayed\r\nStatus: 4.4.1\r\n", "Diagnostic-Code: x-mxgate; 4.4.1 connect refused",
      NULL},
     "Delayed Mail (still being retried)"},
    {"hostile diagnostic",
     "failed",
     {{"u1@example.com", "5.0.0", "smtp; 550 evil\r\n\r\n--fake\r\nContent-Type: text/html"}},
     1,
     {"Diagnostic-Code: smtp; 550 evil    --fake  Content-Type: text/html\r\n", NULL},
     "Undelivered Mail Returned to Sender"},
    {"utf-8 recipient",
     "failed",
     {{"j\xc3\xb6rg@example.com", "5.1.1", NULL}},
     1,
     {"Final-Recipient: utf-8; j\xc3\xb6rg@example.com\r\n", NULL},
     "Undelivered Mail Returned to Sender"},
};

static void test_dsn_structure(void **state)
{
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		const struct dsn_case *tc = &cases[c];
		struct queue_envelope *env = make_env("sender@example.org");
		size_t len = 0;
		char *msg = queue_dsn_compose("mx.test", "MAILER-DAEMON@mx.test", env, tc->action,
		                              tc->rcpts, tc->nrcpts, ORIG_HEADERS,
		                              strlen(ORIG_HEADERS), 1700000600, &len);
		assert_non_null(msg);
		assert_int_equal(strlen(msg), len);
		check_lines(msg, len);
		struct parsed p;
		parse_dsn(msg, len, &p);
		/* top level */
		assert_non_null(strstr(p.top_headers,
		                       "From: Mail Delivery System <MAILER-DAEMON@mx.test>\r\n"));
		assert_non_null(strstr(p.top_headers, "To: <sender@example.org>\r\n"));
		assert_non_null(strstr(p.top_headers, tc->subject));
		assert_non_null(strstr(p.top_headers, "Auto-Submitted: auto-replied\r\n"));
		assert_non_null(strstr(p.top_headers, "MIME-Version: 1.0\r\n"));
		assert_non_null(strstr(
		    p.top_headers, "Content-Type: multipart/report; report-type=delivery-status;"));
		assert_non_null(strstr(p.top_headers, "Date: "));
		/* three parts in the RFC 3462 order */
		assert_int_equal(p.nparts, 3);
		assert_non_null(strstr(p.parts[0].headers, "Content-Type: text/plain"));
		assert_non_null(
		    strstr(p.parts[1].headers, "Content-Type: message/delivery-status"));
		assert_non_null(strstr(p.parts[2].headers, "Content-Type: text/rfc822-headers"));
		/* the human part names every recipient */
		for (size_t r = 0; r < tc->nrcpts; r++)
			assert_non_null(strstr(p.parts[0].body, tc->rcpts[r].addr));
		/* machine part: every expected field; one block per recipient */
		for (size_t k = 0; tc->expect_in_status[k]; k++) {
			if (strstr(p.parts[1].body, tc->expect_in_status[k]) == NULL)
				fail_msg("case %s: missing [%s] in\n%s", tc->name,
				         tc->expect_in_status[k], p.parts[1].body);
		}
		size_t nfinal = 0;
		for (const char *s = p.parts[1].body; (s = strstr(s, "Final-Recipient:")); s++)
			nfinal++;
		assert_int_equal(nfinal, tc->nrcpts);
		/* per-message fields come first, then a blank line per recipient block */
		assert_true(strncmp(p.parts[1].body, "Reporting-MTA: dns; mx.test\r\n", 29) == 0);
		/* original headers attached as they were */
		assert_non_null(strstr(p.parts[2].body, ORIG_HEADERS));
		parsed_free(&p);
		free(msg);
		queue_envelope_free(env);
	}
}

static void test_dsn_no_headers(void **state)
{
	struct queue_envelope *env = make_env("s@example.org");
	struct queue_dsn_rcpt r = {"u1@example.com", "5.0.0", NULL};
	size_t len;
	char *msg = queue_dsn_compose("mx.test", "postmaster@mx.test", env, "failed", &r, 1, NULL,
	                              0, 1700000600, &len);
	check_lines(msg, len);
	struct parsed p;
	parse_dsn(msg, len, &p);
	assert_int_equal(p.nparts, 3);
	assert_null(strstr(p.parts[1].body, "Diagnostic-Code"));
	parsed_free(&p);
	free(msg);
	queue_envelope_free(env);
}

/* issue 11: the attached header block is the sender's text; a line that
 * is our boundary must not end the part early (RFC 2046 5.1.1) */
static void test_dsn_boundary_not_in_headers(void **state)
{
	static const char *const hostile[] = {
	    "Subject: x\r\n--0123456789ABCDEF.1700000600/mxgate-dsn\r\n"
	    "Content-Type: text/html\r\n\r\n<a href=x>click</a>\r\n",
	    "Subject: x\r\n--0123456789ABCDEF.1700000600/mxgate-dsn\r\n"
	    "--0123456789ABCDEF.1700000600.1/mxgate-dsn\r\nX: y\r\n",
	};
	for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
		struct queue_envelope *env = make_env("s@example.org");
		struct queue_dsn_rcpt r = {"u1@example.com", "5.0.0", "smtp; 550 no"};
		size_t len;
		char *msg = queue_dsn_compose("mx.test", "postmaster@mx.test", env, "failed", &r, 1,
		                              hostile[i], strlen(hostile[i]), 1700000600, &len);
		struct parsed p;
		parse_dsn(msg, len, &p);
		assert_int_equal(p.nparts, 3);
		assert_null(strstr(hostile[i], p.boundary));
		assert_non_null(strstr(p.parts[2].body, hostile[i]));
		parsed_free(&p);
		free(msg);
		queue_envelope_free(env);
	}
}

/* red team: header lines up to [limits] max_line_length are accepted and
 * relayed, but a DSN carrying one over 998 octets (RFC 5322 2.1.1) is
 * refused by the sender's MX - and a bounce cannot bounce: the sender
 * never hears of the failure.  Long lines in the attached block are
 * folded; nothing of them is lost. */
static void test_dsn_long_header_lines_folded(void **state)
{
	size_t n = 5000;
	char *h = malloc(n + 64);
	assert_non_null(h);
	int k = snprintf(h, n + 64, "Subject: x\r\nReferences: ");
	for (size_t i = 0; i < n; i++)
		h[k + i] = (char)('a' + i % 26);
	strcpy(h + k + n, "\r\nX-Last: y\r\n");
	struct queue_envelope *env = make_env("s@example.org");
	struct queue_dsn_rcpt r = {"u1@example.com", "5.0.0", "smtp; 550 no"};
	size_t len;
	char *msg = queue_dsn_compose("mx.test", "postmaster@mx.test", env, "failed", &r, 1, h,
	                              strlen(h), 1700000600, &len);
	check_lines(msg, len);
	struct parsed p;
	parse_dsn(msg, len, &p);
	assert_int_equal(p.nparts, 3);
	/* unfolded (every CRLF SP removed: the input has none), the block is
	 * what the sender wrote */
	char *unf = malloc(strlen(p.parts[2].body) + 1);
	size_t o = 0;
	for (const char *q = p.parts[2].body; *q; q++) {
		if (q[0] == '\r' && q[1] == '\n' && q[2] == ' ') {
			q += 2;
			continue;
		}
		unf[o++] = *q;
	}
	unf[o] = 0;
	assert_non_null(strstr(unf, h));
	free(unf);
	parsed_free(&p);
	free(msg);
	free(h);
	queue_envelope_free(env);
}

struct backoff_case {
	int64_t schedule[6];
	size_t n;
	int attempt;
	int64_t want;
};

static const struct backoff_case backoff_cases[] = {
    {{60, 300, 900, 1800, 3600}, 5, 1, 60},
    {{60, 300, 900, 1800, 3600}, 5, 2, 300},
    {{60, 300, 900, 1800, 3600}, 5, 3, 900},
    {{60, 300, 900, 1800, 3600}, 5, 5, 3600},
    {{60, 300, 900, 1800, 3600}, 5, 6, 3600}, /* the last step repeats */
    {{60, 300, 900, 1800, 3600}, 5, 1000, 3600},
    {{60, 300, 900, 1800, 3600}, 5, 0, 60}, /* nonsense attempt: first step */
    {{60, 300, 900, 1800, 3600}, 5, -3, 60},
    {{1, 2}, 2, 1, 1}, /* test configs: seconds */
    {{1, 2}, 2, 2, 2},
    {{1, 2}, 2, 9, 2},
    {{0}, 0, 1, 60}, /* no schedule: the default */
    {{0}, 0, 4, 1800},
    {{0}, 0, 7, 3600},
    {{0, -5}, 2, 1, 1}, /* never zero or negative */
    {{0, -5}, 2, 2, 1},
};

static void test_backoff(void **state)
{
	for (size_t i = 0; i < sizeof(backoff_cases) / sizeof(backoff_cases[0]); i++) {
		const struct backoff_case *c = &backoff_cases[i];
		int64_t got = queue_backoff(c->n ? c->schedule : NULL, c->n, c->attempt);
		if (got != c->want)
			fail_msg("case %zu: attempt %d -> %lld, want %lld", i, c->attempt,
			         (long long)got, (long long)c->want);
	}
}

/* test_headers_cut - the DSN header cap cuts between whole fields only. */
static void test_headers_cut(void **state)
{
	static const struct {
		const char *h;
		size_t max;
		size_t want; /* bytes kept */
	} cut_cases[] = {
	    {"A: 1\r\nB: 2\r\n", 100, 12},              /* fits: all */
	    {"A: 1\r\nB: 2\r\n", 12, 12},               /* exactly */
	    {"A: 1\r\nB: 2\r\n", 11, 6},                /* second field cut away */
	    {"A: 1\r\nB: 2\r\n", 6, 6},
	    {"A: 1\r\nB: 2\r\n", 5, 0},                 /* not even the first */
	    {"A: 1\r\n folded\r\nB: 2\r\n", 14, 0},   /* never inside a folded field */
	    {"A: 1\r\n folded\r\nB: 2\r\n", 15, 15},
	    {"A: 1\r\n folded\r\nB: 2\r\n", 20, 15},
	    {"A: 1\r\n\tx\r\n\ty\r\nC: 3\r\n", 19, 14},
	    {"", 10, 0},
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cut_cases) / sizeof(cut_cases[0]); i++) {
		size_t got = queue_dsn_headers_cut(cut_cases[i].h, strlen(cut_cases[i].h), cut_cases[i].max);
		if (got != cut_cases[i].want)
			fail_msg("case %zu: cut %zu, want %zu", i, got, cut_cases[i].want);
	}
}

/* test_suppress_reason - which ingress verdicts forbid a DSN. */
static void test_suppress_reason(void **state)
{
	static const struct {
		const char *spf, *dmarc, *want;
	} sup_cases[] = {
	    {NULL, NULL, NULL},          {"pass", "pass", NULL},       {"softfail", "none", NULL},
	    {"fail", NULL, "spf_fail"},  {"fail", "pass", "spf_fail"}, {"pass", "fail", "dmarc_fail"},
	    {NULL, "fail", "dmarc_fail"}, {"temperror", "temperror", NULL},
	};
	(void)state;
	for (size_t i = 0; i < sizeof(sup_cases) / sizeof(sup_cases[0]); i++) {
		struct queue_envelope env = {.sender = "a@b.example"};
		env.spf = (char *)sup_cases[i].spf;
		env.dmarc = (char *)sup_cases[i].dmarc;
		const char *got = queue_dsn_suppress_reason(&env);
		if ((got == NULL) != (sup_cases[i].want == NULL) ||
		    (got != NULL && strcmp(got, sup_cases[i].want) != 0))
			fail_msg("case %zu: got %s, want %s", i, got ? got : "NULL",
			         sup_cases[i].want ? sup_cases[i].want : "NULL");
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_dsn_structure),
	    cmocka_unit_test(test_dsn_no_headers),
	    cmocka_unit_test(test_dsn_boundary_not_in_headers),
	    cmocka_unit_test(test_dsn_long_header_lines_folded),
	    cmocka_unit_test(test_backoff),
	    cmocka_unit_test(test_headers_cut),
	    cmocka_unit_test(test_suppress_reason),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
