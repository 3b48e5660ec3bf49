/*
 * queue-envelope.c - the queue envelope: construction, deep copy, and the
 * versioned text format stored in active/, deferred/, hold/ and quarantine/.
 *
 * Format (docs/queue-format.md is the reference): one "key: value" line per
 * field, LF-terminated, "version: 1" first and "end: ok" last, so a truncated
 * file never parses.  Values are escaped (\\ \r \n \xHH) so no CR, LF or
 * control byte can break a line; addresses are written in angle brackets so
 * the null sender "<>" is visible.  One table (env_fields) drives both the
 * writer and the reader of the scalar fields.
 *
 * Ownership: queue_envelope_new/dup/parse return an envelope the caller frees
 * with queue_envelope_free(); it owns every string in it.  The serializer
 * returns a malloc'd buffer the caller frees with free().
 *
 * Diagnostics: nothing here logs.  queue_envelope_parse returns NULL and one
 * line such as "line 7: unknown key \"colour\"" in err; it is total over
 * arbitrary bytes (fuzzed) and allocates at most O(len) after checking len
 * against QUEUE_ENVELOPE_MAX.
 */
#include "queue.h"

#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ENV_VERSION 4 /* newest version read and written */

/* Kinds of scalar fields. */
enum env_kind {
	ENV_STR_OPT, /* char *, key omitted when NULL */
	ENV_ADDR,    /* char *, required, written as <addr> ("" = <>) */
	ENV_I64,     /* int64_t >= 0 */
	ENV_INT,     /* int >= 0 */
	ENV_BOOL,    /* bool as 0 / 1 */
	ENV_US_OPT,  /* int 0..999999, key omitted when 0 */
};

struct env_field {
	const char *key;
	enum env_kind kind;
	size_t off; /* offsetof(struct queue_envelope, ...) */
};

/* The scalar fields in the order they are written.  "version", "id",
 * "prepend", "rcpt", "reply" and "end" are handled apart. */
static const struct env_field env_fields[] = {
    {"arrival", ENV_I64, offsetof(struct queue_envelope, arrival)},
    {"arrival-us", ENV_US_OPT, offsetof(struct queue_envelope, arrival_us)},
    {"size", ENV_I64, offsetof(struct queue_envelope, size)},
    {"sender", ENV_ADDR, offsetof(struct queue_envelope, sender)},
    {"client-addr", ENV_STR_OPT, offsetof(struct queue_envelope, client_addr)},
    {"client-name", ENV_STR_OPT, offsetof(struct queue_envelope, client_name)},
    {"helo", ENV_STR_OPT, offsetof(struct queue_envelope, helo)},
    {"tls", ENV_STR_OPT, offsetof(struct queue_envelope, tls)},
    {"smtputf8", ENV_BOOL, offsetof(struct queue_envelope, smtputf8)},
    {"eightbit", ENV_BOOL, offsetof(struct queue_envelope, eightbit)},
    {"is-dsn", ENV_BOOL, offsetof(struct queue_envelope, is_dsn)},
    {"attempts", ENV_INT, offsetof(struct queue_envelope, attempts)},
    {"next-attempt", ENV_I64, offsetof(struct queue_envelope, next_attempt)},
    {"delay-warned", ENV_BOOL, offsetof(struct queue_envelope, delay_warned)},
    {"last-error", ENV_STR_OPT, offsetof(struct queue_envelope, last_error)},
    {"spf", ENV_STR_OPT, offsetof(struct queue_envelope, spf)},
    {"dmarc", ENV_STR_OPT, offsetof(struct queue_envelope, dmarc)},
    {"quarantine-reason", ENV_STR_OPT, offsetof(struct queue_envelope, quarantine_reason)},
    {"quarantine-verdict", ENV_STR_OPT, offsetof(struct queue_envelope, quarantine_verdict)},
};
#define ENV_NFIELDS (sizeof(env_fields) / sizeof(env_fields[0]))

static const char *const rcpt_state_names[] = {"pending", "done", "failed"};

/* ------------------------------------------------------------ construction */

/* queue_envelope_new - an empty envelope (all strings NULL, numbers 0). */
struct queue_envelope *queue_envelope_new(void)
{
	return util_xcalloc(1, sizeof(struct queue_envelope));
}

/* queue_envelope_free - free env and everything it owns; NULL is a no-op. */
void queue_envelope_free(struct queue_envelope *env)
{
	size_t i;

	if (env == NULL)
		return;
	for (i = 0; i < env->nrcpts; i++) {
		free(env->rcpts[i].addr);
		free(env->rcpts[i].last_reply);
	}
	free(env->rcpts);
	free(env->sender);
	free(env->client_addr);
	free(env->client_name);
	free(env->helo);
	free(env->tls);
	free(env->prepend);
	free(env->last_error);
	free(env->spf);
	free(env->dmarc);
	free(env->quarantine_reason);
	free(env->quarantine_verdict);
	free(env);
}

/* env_strdup - util_xstrdup that keeps NULL. */
static char *env_strdup(const char *s)
{
	return s == NULL ? NULL : util_xstrdup(s);
}

/* queue_envelope_dup - deep copy; the caller frees it with queue_envelope_free(). */
struct queue_envelope *queue_envelope_dup(const struct queue_envelope *env)
{
	struct queue_envelope *c;
	size_t i;

	c = queue_envelope_new();
	*c = *env;
	c->sender = env_strdup(env->sender);
	c->client_addr = env_strdup(env->client_addr);
	c->client_name = env_strdup(env->client_name);
	c->helo = env_strdup(env->helo);
	c->tls = env_strdup(env->tls);
	c->prepend = env_strdup(env->prepend);
	c->last_error = env_strdup(env->last_error);
	c->spf = env_strdup(env->spf);
	c->dmarc = env_strdup(env->dmarc);
	c->quarantine_reason = env_strdup(env->quarantine_reason);
	c->quarantine_verdict = env_strdup(env->quarantine_verdict);
	c->rcpts = NULL;
	if (env->nrcpts > 0) {
		c->rcpts = util_xcalloc(env->nrcpts, sizeof(*c->rcpts));
		for (i = 0; i < env->nrcpts; i++) {
			c->rcpts[i].addr = env_strdup(env->rcpts[i].addr);
			c->rcpts[i].state = env->rcpts[i].state;
			c->rcpts[i].last_reply = env_strdup(env->rcpts[i].last_reply);
		}
	}
	return c;
}

/* queue_envelope_add_rcpt - append a pending recipient (addr is copied). */
void queue_envelope_add_rcpt(struct queue_envelope *env, const char *addr)
{
	struct queue_rcpt *r;

	env->rcpts = util_xrealloc(env->rcpts, (env->nrcpts + 1) * sizeof(*env->rcpts));
	r = &env->rcpts[env->nrcpts++];
	r->addr = util_xstrdup(addr);
	r->state = QUEUE_RCPT_PENDING;
	r->last_reply = NULL;
}

/* ------------------------------------------------------------ writer */

/* env_escape - append n bytes of s with \\, \r, \n and \xHH escapes. */
static void env_escape(struct util_buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t i;
	size_t run = 0;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char e[4];
		size_t elen;

		if (c == '\\') {
			e[0] = '\\', e[1] = '\\', elen = 2;
		} else if (c == '\r') {
			e[0] = '\\', e[1] = 'r', elen = 2;
		} else if (c == '\n') {
			e[0] = '\\', e[1] = 'n', elen = 2;
		} else if ((c < 0x20 && c != '\t') || c == 0x7f) {
			e[0] = '\\', e[1] = 'x', e[2] = hex[c >> 4], e[3] = hex[c & 15], elen = 4;
		} else {
			continue;
		}
		util_buf_add(b, s + run, i - run);
		util_buf_add(b, e, elen);
		run = i + 1;
	}
	util_buf_add(b, s + run, n - run);
}

/* env_put - append "key: " + escaped value + LF. */
static void env_put(struct util_buf *b, const char *key, const char *val)
{
	util_buf_adds(b, key);
	util_buf_add(b, ": ", 2);
	env_escape(b, val, strlen(val));
	util_buf_add(b, "\n", 1);
}

/* env_put_field - append one scalar field of env per its table entry. */
static void env_put_field(struct util_buf *b, const struct queue_envelope *env,
                          const struct env_field *f)
{
	const char *base = (const char *)env;
	const char *s;

	switch (f->kind) {
	case ENV_STR_OPT:
		memcpy(&s, base + f->off, sizeof(s));
		if (s != NULL)
			env_put(b, f->key, s);
		break;
	case ENV_ADDR:
		memcpy(&s, base + f->off, sizeof(s));
		util_buf_printf(b, "%s: <", f->key);
		if (s != NULL)
			env_escape(b, s, strlen(s));
		util_buf_add(b, ">\n", 2);
		break;
	case ENV_I64: {
		int64_t v;

		memcpy(&v, base + f->off, sizeof(v));
		util_buf_printf(b, "%s: %lld\n", f->key, (long long)(v < 0 ? 0 : v));
		break;
	}
	case ENV_INT: {
		int v;

		memcpy(&v, base + f->off, sizeof(v));
		util_buf_printf(b, "%s: %d\n", f->key, v < 0 ? 0 : v);
		break;
	}
	case ENV_BOOL: {
		bool v;

		memcpy(&v, base + f->off, sizeof(v));
		util_buf_printf(b, "%s: %d\n", f->key, v ? 1 : 0);
		break;
	}
	case ENV_US_OPT: {
		int v;

		memcpy(&v, base + f->off, sizeof(v));
		if (v > 0 && v < 1000000)
			util_buf_printf(b, "%s: %d\n", f->key, v);
		break;
	}
	}
}

/* Envelope size guard: the replies of the downstream (one per recipient,
 * plus last-error) are the only part that grows after acceptance.  When the
 * text would not fit QUEUE_ENVELOPE_MAX - which the reader refuses, so the
 * message would land in corrupt/ at the next start - they are shortened to
 * ENV_REPLY_SHORT bytes, and if even that is too much, left out. */
#define ENV_REPLY_SHORT 160

/* env_put_capped - "key: value" with value cut at cap bytes (not inside a
 * UTF-8 sequence) and "..." appended when cut; cap 0 = leave it out. */
static void env_put_capped(struct util_buf *b, const char *key, const char *val, size_t cap)
{
	size_t n = strlen(val);

	if (n <= cap) {
		env_put(b, key, val);
		return;
	}
	if (cap == 0)
		return;
	while (n > cap || (n > 0 && ((unsigned char)val[n] & 0xC0) == 0x80))
		n--;
	util_buf_adds(b, key);
	util_buf_add(b, ": ", 2);
	env_escape(b, val, n);
	util_buf_add(b, "...\n", 4);
}

/* env_version - the lowest format version that can carry env. */
static int env_version(const struct queue_envelope *env)
{
	if (env->arrival_us > 0 && env->arrival_us < 1000000)
		return 4;
	if (env->quarantine_reason != NULL || env->quarantine_verdict != NULL)
		return 3;
	return env->spf != NULL || env->dmarc != NULL ? 2 : 1;
}

/* env_serialize - the text of env, replies cut at reply_cap bytes. */
static char *env_serialize(const struct queue_envelope *env, size_t reply_cap, size_t *len)
{
	struct util_buf b;
	size_t i;

	util_buf_init(&b);
	/* Version 2 added the optional "spf" and "dmarc" keys, version 3
	 * "quarantine-reason" and "quarantine-verdict", version 4
	 * "arrival-us"; an envelope is written
	 * with the lowest version that has its keys, so one without them stays
	 * readable by older builds. */
	util_buf_printf(&b, "version: %d\n", env_version(env));
	util_buf_add(&b, "id: ", 4);
	env_escape(&b, env->id, strnlen(env->id, sizeof(env->id)));
	util_buf_add(&b, "\n", 1);
	for (i = 0; i < ENV_NFIELDS; i++) {
		const struct env_field *f = &env_fields[i];

		if (f->off == offsetof(struct queue_envelope, last_error)) {
			if (env->last_error != NULL)
				env_put_capped(&b, f->key, env->last_error,
				               reply_cap == 0 ? ENV_REPLY_SHORT : reply_cap);
			continue;
		}
		env_put_field(&b, env, f);
	}
	/* The header block, one physical line per "prepend:" line; each value
	 * keeps its own (escaped) line end so the block round-trips byte for
	 * byte even when it is not CRLF-terminated. */
	if (env->prepend != NULL) {
		const char *p = env->prepend;

		while (*p != '\0') {
			const char *nl = strchr(p, '\n');
			size_t n = nl != NULL ? (size_t)(nl - p) + 1 : strlen(p);

			util_buf_add(&b, "prepend: ", 9);
			env_escape(&b, p, n);
			util_buf_add(&b, "\n", 1);
			p += n;
		}
	}
	for (i = 0; i < env->nrcpts; i++) {
		const struct queue_rcpt *r = &env->rcpts[i];
		unsigned st = (unsigned)r->state;

		util_buf_printf(&b, "rcpt: %s <",
		                st <= QUEUE_RCPT_FAILED ? rcpt_state_names[st] : "pending");
		if (r->addr != NULL)
			env_escape(&b, r->addr, strlen(r->addr));
		util_buf_add(&b, ">\n", 2);
		if (r->last_reply != NULL)
			env_put_capped(&b, "reply", r->last_reply, reply_cap);
	}
	util_buf_adds(&b, "end: ok\n");
	*len = b.len;
	return b.data;
}

/* queue_envelope_serialize - the text of env (version 1 to 4: the
 * lowest that has its keys); caller frees.
 * Never longer than QUEUE_ENVELOPE_MAX when the addresses and the header
 * block fit (the server caps those): replies are shortened first. */
char *queue_envelope_serialize(const struct queue_envelope *env, size_t *len)
{
	static const size_t caps[] = {SIZE_MAX, ENV_REPLY_SHORT, 0};
	size_t n = 0;
	char *text = NULL;

	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
		free(text);
		text = env_serialize(env, caps[i], &n);
		if (n <= QUEUE_ENVELOPE_MAX)
			break;
	}
	if (len != NULL)
		*len = n;
	return text;
}

/* ------------------------------------------------------------ reader */

/* Parser state for one call of queue_envelope_parse. */
struct env_parser {
	struct queue_envelope *env;
	unsigned line;
	char *err;
	size_t errlen;
	uint32_t seen;      /* bit i: env_fields[i] seen; bit 31: id */
	bool last_was_rcpt; /* a "reply" may follow */
	struct util_buf prepend;
	bool has_prepend;
};

#define SEEN_ID (1u << 31)

/* env_fail - format "line N: msg" into the caller's err; returns -1. */
static int env_fail(struct env_parser *ps, const char *fmt, ...) UTIL_PRINTF(2, 3);
static int env_fail(struct env_parser *ps, const char *fmt, ...)
{
	char msg[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (ps->err != NULL && ps->errlen > 0) {
		if (ps->line > 0)
			snprintf(ps->err, ps->errlen, "line %u: %s", ps->line, msg);
		else
			snprintf(ps->err, ps->errlen, "%s", msg);
	}
	return -1;
}

/* env_hexval - value of one hex digit, or -1. */
static int env_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* env_unescape - decode v[0..n) into a new NUL-terminated string. */
static int env_unescape(struct env_parser *ps, const char *v, size_t n, char **out)
{
	char *s = util_xmalloc(n + 1);
	size_t i;
	size_t o = 0;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];

		if (c == '\\') {
			int hi, lo;

			if (i + 1 >= n)
				goto bad_escape;
			c = (unsigned char)v[++i];
			if (c == '\\') {
				s[o++] = '\\';
			} else if (c == 'r') {
				s[o++] = '\r';
			} else if (c == 'n') {
				s[o++] = '\n';
			} else if (c == 'x' && i + 2 < n && (hi = env_hexval(v[i + 1])) >= 0 &&
			           (lo = env_hexval(v[i + 2])) >= 0) {
				if (hi == 0 && lo == 0) {
					free(s);
					return env_fail(ps, "escaped NUL byte in value");
				}
				s[o++] = (char)(hi * 16 + lo);
				i += 2;
			} else {
				goto bad_escape;
			}
		} else if (c == 0) {
			free(s);
			return env_fail(ps, "NUL byte");
		} else if ((c < 0x20 && c != '\t') || c == 0x7f) {
			free(s);
			return env_fail(ps, "unescaped control character 0x%02x", c);
		} else {
			s[o++] = (char)c;
		}
	}
	s[o] = '\0';
	*out = s;
	return 0;
bad_escape:
	free(s);
	return env_fail(ps, "bad escape sequence");
}

/* env_parse_uint - strict decimal in [0, max]: no sign, no leading zero. */
static int env_parse_uint(struct env_parser *ps, const char *key, const char *v, size_t n,
                          int64_t max, int64_t *out)
{
	int64_t x = 0;
	size_t i;

	if (n == 0 || (n > 1 && v[0] == '0'))
		return env_fail(ps, "%s: not a canonical decimal number", key);
	for (i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return env_fail(ps, "%s: not a decimal number", key);
		if (x > (max - (v[i] - '0')) / 10)
			return env_fail(ps, "%s: number out of range", key);
		x = x * 10 + (v[i] - '0');
	}
	*out = x;
	return 0;
}

/* env_parse_addr - "<escaped>" into a new string ("<>" = ""). */
static int env_parse_addr(struct env_parser *ps, const char *key, const char *v, size_t n,
                          char **out)
{
	if (n < 2 || v[0] != '<' || v[n - 1] != '>')
		return env_fail(ps, "%s: address must be written <addr>", key);
	return env_unescape(ps, v + 1, n - 2, out);
}

/* env_set_field - decode the value of table field f into the envelope. */
static int env_set_field(struct env_parser *ps, const struct env_field *f, const char *v, size_t n)
{
	char *base = (char *)ps->env;
	char *s = NULL;
	int64_t x = 0;

	switch (f->kind) {
	case ENV_STR_OPT:
		if (env_unescape(ps, v, n, &s) < 0)
			return -1;
		memcpy(base + f->off, &s, sizeof(s));
		return 0;
	case ENV_ADDR:
		if (env_parse_addr(ps, f->key, v, n, &s) < 0)
			return -1;
		memcpy(base + f->off, &s, sizeof(s));
		return 0;
	case ENV_I64:
		if (env_parse_uint(ps, f->key, v, n, INT64_MAX, &x) < 0)
			return -1;
		memcpy(base + f->off, &x, sizeof(x));
		return 0;
	case ENV_INT: {
		int i;

		if (env_parse_uint(ps, f->key, v, n, INT_MAX, &x) < 0)
			return -1;
		i = (int)x;
		memcpy(base + f->off, &i, sizeof(i));
		return 0;
	}
	case ENV_BOOL: {
		bool b;

		if (n != 1 || (v[0] != '0' && v[0] != '1'))
			return env_fail(ps, "%s: expected 0 or 1", f->key);
		b = v[0] == '1';
		memcpy(base + f->off, &b, sizeof(b));
		return 0;
	}
	case ENV_US_OPT: {
		int i;

		if (env_parse_uint(ps, f->key, v, n, 999999, &x) < 0)
			return -1;
		i = (int)x;
		memcpy(base + f->off, &i, sizeof(i));
		return 0;
	}
	}
	return env_fail(ps, "%s: internal error", f->key);
}

/* env_parse_rcpt - "STATE <addr>" into a new recipient. */
static int env_parse_rcpt(struct env_parser *ps, const char *v, size_t n)
{
	struct queue_envelope *env = ps->env;
	const char *sp = memchr(v, ' ', n);
	size_t wlen;
	unsigned st;
	char *addr = NULL;

	if (sp == NULL)
		return env_fail(ps, "rcpt: expected \"STATE <addr>\"");
	wlen = (size_t)(sp - v);
	for (st = 0; st <= QUEUE_RCPT_FAILED; st++)
		if (strlen(rcpt_state_names[st]) == wlen &&
		    memcmp(rcpt_state_names[st], v, wlen) == 0)
			break;
	if (st > QUEUE_RCPT_FAILED)
		return env_fail(ps, "rcpt: unknown state \"%.*s\"", (int)(wlen > 20 ? 20 : wlen),
		                v);
	if (env_parse_addr(ps, "rcpt", sp + 1, n - wlen - 1, &addr) < 0)
		return -1;
	env->rcpts = util_xrealloc(env->rcpts, (env->nrcpts + 1) * sizeof(*env->rcpts));
	env->rcpts[env->nrcpts].addr = addr;
	env->rcpts[env->nrcpts].state = (enum queue_rcpt_state)st;
	env->rcpts[env->nrcpts].last_reply = NULL;
	env->nrcpts++;
	return 0;
}

/* env_parse_line - one "key: value" line (without its LF); 1 on "end". */
static int env_parse_line(struct env_parser *ps, const char *l, size_t n)
{
	const char *colon = memchr(l, ':', n);
	const char *v;
	size_t klen, vlen, i;
	bool was_rcpt = ps->last_was_rcpt;

	ps->last_was_rcpt = false;
	if (colon == NULL)
		return env_fail(ps, "expected \"key: value\"");
	klen = (size_t)(colon - l);
	for (i = 0; i < klen; i++)
		if (!((l[i] >= 'a' && l[i] <= 'z') || (l[i] >= '0' && l[i] <= '9') || l[i] == '-'))
			return env_fail(ps, "bad character in key");
	if (klen == 0)
		return env_fail(ps, "empty key");
	v = colon + 1;
	vlen = n - klen - 1;
	if (vlen > 0) {
		if (v[0] != ' ')
			return env_fail(ps, "expected \": \" after key");
		v++, vlen--;
	}
#define KEY_IS(k) (klen == sizeof(k) - 1 && memcmp(l, k, klen) == 0)
	if (KEY_IS("version"))
		return env_fail(ps, "duplicate \"version\"");
	if (KEY_IS("end")) {
		if (vlen != 2 || memcmp(v, "ok", 2) != 0)
			return env_fail(ps, "end: expected \"ok\"");
		return 1;
	}
	if (KEY_IS("id")) {
		if (ps->seen & SEEN_ID)
			return env_fail(ps, "duplicate \"id\"");
		ps->seen |= SEEN_ID;
		if (vlen != UTIL_QID_LEN)
			return env_fail(ps, "id: not a queue id");
		memcpy(ps->env->id, v, vlen);
		ps->env->id[vlen] = '\0';
		if (!util_qid_is_valid(ps->env->id))
			return env_fail(ps, "id: not a queue id");
		return 0;
	}
	if (KEY_IS("prepend")) {
		char *s;

		if (env_unescape(ps, v, vlen, &s) < 0)
			return -1;
		util_buf_adds(&ps->prepend, s);
		ps->has_prepend = true;
		free(s);
		return 0;
	}
	if (KEY_IS("rcpt")) {
		if (env_parse_rcpt(ps, v, vlen) < 0)
			return -1;
		ps->last_was_rcpt = true;
		return 0;
	}
	if (KEY_IS("reply")) {
		if (!was_rcpt)
			return env_fail(ps, "\"reply\" must follow a \"rcpt\" line");
		return env_unescape(ps, v, vlen, &ps->env->rcpts[ps->env->nrcpts - 1].last_reply);
	}
#undef KEY_IS
	for (i = 0; i < ENV_NFIELDS; i++) {
		const struct env_field *f = &env_fields[i];

		if (strlen(f->key) != klen || memcmp(f->key, l, klen) != 0)
			continue;
		if (ps->seen & (1u << i))
			return env_fail(ps, "duplicate \"%s\"", f->key);
		ps->seen |= 1u << i;
		return env_set_field(ps, f, v, vlen);
	}
	return env_fail(ps, "unknown key \"%.*s\"", (int)(klen > 40 ? 40 : klen), l);
}

/* env_check_version - the first line must be "version: N", 1 <= N <= ENV_VERSION. */
static int env_check_version(struct env_parser *ps, const char *l, size_t n)
{
	static const char pfx[] = "version: ";
	int64_t v = 0;

	if (n < sizeof(pfx) - 1 || memcmp(l, pfx, sizeof(pfx) - 1) != 0)
		return env_fail(ps, "not an envelope (first line must be \"version: N\")");
	if (env_parse_uint(ps, "version", l + sizeof(pfx) - 1, n - (sizeof(pfx) - 1), INT_MAX, &v) <
	    0)
		return -1;
	if (v < 1 || v > ENV_VERSION)
		return env_fail(ps, "unsupported envelope version %lld (this build reads 1..%d)",
		                (long long)v, ENV_VERSION);
	return 0;
}

/* queue_envelope_parse - the envelope in text[0..len), or NULL + err. */
struct queue_envelope *queue_envelope_parse(const char *text, size_t len, char *err, size_t errlen)
{
	struct env_parser ps;
	size_t pos = 0;
	size_t i;
	int rc = -1;
	int r;
	bool ended = false;

	memset(&ps, 0, sizeof(ps));
	ps.err = err;
	ps.errlen = errlen;
	util_buf_init(&ps.prepend);
	ps.env = queue_envelope_new();
	if (len > QUEUE_ENVELOPE_MAX) {
		env_fail(&ps, "envelope too large (%zu bytes, max %d)", len, QUEUE_ENVELOPE_MAX);
		goto done;
	}
	if (len == 0) {
		env_fail(&ps, "empty envelope");
		goto done;
	}
	while (pos < len) {
		const char *l = text + pos;
		const char *nl = memchr(l, '\n', len - pos);
		size_t n;

		ps.line++;
		if (ended) {
			env_fail(&ps, "data after \"end\"");
			goto done;
		}
		if (nl == NULL) {
			env_fail(&ps, "truncated (no newline at end of line)");
			goto done;
		}
		n = (size_t)(nl - l);
		pos += n + 1;
		r = ps.line == 1 ? env_check_version(&ps, l, n) : env_parse_line(&ps, l, n);
		if (r < 0)
			goto done;
		if (r == 1)
			ended = true;
	}
	ps.line = 0;
	if (!ended) {
		env_fail(&ps, "truncated (no \"end\" line)");
		goto done;
	}
	if (!(ps.seen & SEEN_ID)) {
		env_fail(&ps, "missing key \"id\"");
		goto done;
	}
	for (i = 0; i < ENV_NFIELDS; i++) {
		if (env_fields[i].kind != ENV_STR_OPT && env_fields[i].kind != ENV_US_OPT &&
		    !(ps.seen & (1u << i))) {
			env_fail(&ps, "missing key \"%s\"", env_fields[i].key);
			goto done;
		}
	}
	if (ps.has_prepend) {
		ps.env->prepend = ps.prepend.data;
		ps.prepend.data = NULL;
	}
	rc = 0;
done:
	util_buf_free(&ps.prepend);
	if (rc < 0) {
		queue_envelope_free(ps.env);
		return NULL;
	}
	return ps.env;
}
