/*
 * gw-logcmd.c - `mxgate log`: the whole story of a message from the log
 * file - its session (connect, TLS, verdicts, the queued line), every
 * delivery attempt, the DSN it caused and that DSN's own deliveries.
 *
 *   mxgate log [QUEUE-ID] [--from ADDR] [--to ADDR] [--since TIME]
 *              [--file LOG|-] [-c FILE]
 *
 * The log is the [log] file of the config (or --file; "-" reads stdin, e.g.
 * `journalctl -u mxgate -o cat | mxgate log ID --file -`).  Text and JSON
 * lines are both understood (a text line is turned into the JSON members
 * by util_log_json_line, so both take one path).
 *
 * Selection: a message is picked when a line with its queue id matches
 * every criterion given (the id; from = ADDR; ADDR among to/rcpt).  Its
 * story is every line with its queue id, every line of the session (same
 * pid and session id) that queued it - except lines of the session's other
 * messages - and, recursively, the story of each DSN it caused (dsn_id=).
 * --since prints only lines not older than TIME (an ISO 8601 UTC prefix such
 * as 2026-12-02T18 or "2026-12-02 18:30", or a duration 90s, 30m, 2h, 1d),
 * and picks only messages with a matching line in that window.
 * Three passes over the file: pick the messages, follow their sessions and
 * DSNs, print their lines as they are, one story after the other (a blank
 * line between stories), in log order.
 *
 * Exit: 0 when something was printed, 1 when nothing matched, 2 on usage
 * or when the log cannot be read.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "gw.h"

#define LC_ID 64  /* session ids, queue ids, pids: short tokens */
#define LC_TS 40

/* one parsed log line: what selection needs */
struct lc_rec {
	char ts[LC_TS];
	char pid[LC_ID];
	char session[LC_ID];
	char qid[LC_ID];
	char dsn[LC_ID];
	char *from;
	char **to; /* to= and rcpt= addresses */
	size_t nto;
};

/* a message in some story: root is the index of the picked message */
struct lc_msg {
	char qid[LC_ID];
	size_t root;
};

/* a session that queued a message of a story */
struct lc_sess {
	char pid[LC_ID];
	char session[LC_ID];
	size_t root;
};

struct lc_state {
	const char *qid, *from, *to, *since;
	struct lc_msg *msgs;
	size_t nmsgs;
	struct lc_sess *sess;
	size_t nsess;
	size_t nroots;
};

static void lc_rec_clear(struct lc_rec *r)
{
	free(r->from);
	for (size_t i = 0; i < r->nto; i++)
		free(r->to[i]);
	free(r->to);
	memset(r, 0, sizeof(*r));
}

/* lc_addr - address without angle brackets, into a new string. */
static char *lc_addr(const char *v)
{
	size_t n = strlen(v);

	if (n >= 2 && v[0] == '<' && v[n - 1] == '>')
		return util_xstrndup(v + 1, n - 2);
	return util_xstrdup(v);
}

static void lc_copy(char *dst, const char *v)
{
	snprintf(dst, LC_ID, "%s", v);
}

static void lc_member(void *ctx, const char *key, const char *val)
{
	struct lc_rec *r = ctx;

	if (strcmp(key, "ts") == 0)
		snprintf(r->ts, sizeof(r->ts), "%s", val);
	else if (strcmp(key, "pid") == 0)
		lc_copy(r->pid, val);
	else if (strcmp(key, "session") == 0)
		lc_copy(r->session, val);
	else if (strcmp(key, "queue_id") == 0 && r->qid[0] == '\0')
		lc_copy(r->qid, val);
	else if (strcmp(key, "dsn_id") == 0)
		lc_copy(r->dsn, val);
	else if (strcmp(key, "from") == 0 && r->from == NULL)
		r->from = lc_addr(val);
	else if (strcmp(key, "to") == 0 || strcmp(key, "rcpt") == 0) {
		r->to = util_xrealloc(r->to, (r->nto + 1) * sizeof(*r->to));
		r->to[r->nto++] = lc_addr(val);
	}
}

/* lc_parse - one line (no newline) into r; -1 when it is not a log line. */
static int lc_parse(const char *line, size_t len, struct lc_rec *r)
{
	memset(r, 0, sizeof(*r));
	if (len > 0 && line[0] == '{')
		return util_json_flat_parse(line, len, lc_member, r) == 0 && r->ts[0] ? 0 : -1;

	/* "TS mxgate[PID]: LEVEL message" */
	const char *sp = memchr(line, ' ', len);
	const char *end = line + len;
	if (sp == NULL || sp - line >= LC_TS || end - sp < 10 || strncmp(sp, " mxgate[", 8) != 0)
		return -1;
	const char *pid = sp + 8;
	const char *close = memchr(pid, ']', (size_t)(end - pid));
	if (close == NULL || close - pid >= LC_ID || end - close < 3 || close[1] != ':')
		return -1;
	const char *lvl = close + 3;
	const char *msg = memchr(lvl, ' ', (size_t)(end - lvl));
	msg = msg != NULL ? msg + 1 : end;

	char *m = util_xstrndup(msg, (size_t)(end - msg));
	char *json = util_xmalloc(16384);
	char ts[LC_TS], p[LC_ID];
	snprintf(ts, sizeof(ts), "%.*s", (int)(sp - line), line);
	snprintf(p, sizeof(p), "%.*s", (int)(close - pid), pid);
	size_t n = util_log_json_line(json, 16384, ts, "info", 0, m);
	int rc = util_json_flat_parse(json, n, lc_member, r);
	lc_copy(r->pid, p); /* the JSON said 0 */
	free(json);
	free(m);
	return rc;
}

/* lc_since_ok - the line is not older than --since. */
static bool lc_since_ok(const struct lc_state *st, const struct lc_rec *r)
{
	return st->since == NULL || strncmp(r->ts, st->since, strlen(st->since)) >= 0;
}

static struct lc_msg *lc_find_msg(struct lc_state *st, const char *qid)
{
	for (size_t i = 0; i < st->nmsgs; i++)
		if (strcmp(st->msgs[i].qid, qid) == 0)
			return &st->msgs[i];
	return NULL;
}

static struct lc_sess *lc_find_sess(struct lc_state *st, const char *pid, const char *session)
{
	for (size_t i = 0; i < st->nsess; i++)
		if (strcmp(st->sess[i].session, session) == 0 && strcmp(st->sess[i].pid, pid) == 0)
			return &st->sess[i];
	return NULL;
}

static void lc_add_msg(struct lc_state *st, const char *qid, size_t root)
{
	if (lc_find_msg(st, qid) != NULL)
		return;
	st->msgs = util_xrealloc(st->msgs, (st->nmsgs + 1) * sizeof(*st->msgs));
	lc_copy(st->msgs[st->nmsgs].qid, qid);
	st->msgs[st->nmsgs++].root = root;
}

/* lc_picks - the line selects its message (module comment). */
static bool lc_picks(const struct lc_state *st, const struct lc_rec *r)
{
	if (r->qid[0] == '\0')
		return false;
	if (st->qid != NULL && strcasecmp(st->qid, r->qid) != 0)
		return false;
	if (st->from != NULL && (r->from == NULL || strcasecmp(st->from, r->from) != 0))
		return false;
	if (st->to != NULL) {
		size_t i;
		if (r->dsn[0] != '\0')
			return false; /* its to= is the DSN's recipient */
		for (i = 0; i < r->nto; i++)
			if (strcasecmp(st->to, r->to[i]) == 0)
				break;
		if (i == r->nto)
			return false;
	}
	return true;
}

/* lc_pick - pass 1: the messages picked by a line in the --since window. */
static void lc_pick(struct lc_state *st, const struct lc_rec *r)
{
	if (lc_since_ok(st, r) && lc_picks(st, r) && lc_find_msg(st, r->qid) == NULL)
		lc_add_msg(st, r->qid, st->nroots++);
}

/* lc_follow - pass 2: the sessions that queued picked messages and the DSNs
 * they caused, from any line (a session that queued a message before the
 * window still shows its later lines). */
static void lc_follow(struct lc_state *st, const struct lc_rec *r)
{
	struct lc_msg *m;

	if (r->qid[0] == '\0' || (m = lc_find_msg(st, r->qid)) == NULL)
		return;
	size_t root = m->root;
	if (r->session[0] != '\0' && lc_find_sess(st, r->pid, r->session) == NULL) {
		st->sess = util_xrealloc(st->sess, (st->nsess + 1) * sizeof(*st->sess));
		lc_copy(st->sess[st->nsess].pid, r->pid);
		lc_copy(st->sess[st->nsess].session, r->session);
		st->sess[st->nsess++].root = root;
	}
	if (r->dsn[0] != '\0')
		lc_add_msg(st, r->dsn, root);
}

/* lc_story - pass 3: the story the line belongs to, or -1. */
static long lc_story(struct lc_state *st, const struct lc_rec *r)
{
	if (r->qid[0] != '\0') {
		struct lc_msg *m = lc_find_msg(st, r->qid);
		if (m != NULL)
			return (long)m->root;
		return -1; /* another message, even in a session we follow */
	}
	if (r->session[0] != '\0') {
		struct lc_sess *s = lc_find_sess(st, r->pid, r->session);
		if (s != NULL)
			return (long)s->root;
	}
	return -1;
}

/* lc_since - --since as a timestamp prefix; NULL when it is not one. */
static char *lc_since(const char *arg)
{
	char *end;
	unsigned long long n = strtoull(arg, &end, 10);

	if (end != arg && isdigit((unsigned char)arg[0]) && (end - arg) < 4) {
		unsigned long long mul = 1;
		if (*end == 'm')
			mul = 60;
		else if (*end == 'h')
			mul = 3600;
		else if (*end == 'd')
			mul = 86400;
		else if (*end != 's' && *end != '\0')
			return NULL;
		if (*end != '\0' && end[1] != '\0')
			return NULL;
		time_t t = time(NULL) - (time_t)(n * mul);
		struct tm tm;
		char buf[32];
		gmtime_r(&t, &tm);
		strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
		return util_xstrdup(buf);
	}
	/* ISO 8601 prefix: 2026-12-02[T| ]HH[:MM[:SS[.mmm]]][Z] */
	char *s = util_xstrdup(arg);
	size_t n2 = strlen(s);
	if (n2 > 0 && s[n2 - 1] == 'Z')
		s[--n2] = '\0';
	if (n2 > 10 && s[10] == ' ')
		s[10] = 'T';
	static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddd";
	if (n2 < 4 || n2 > sizeof(shape) - 1)
		goto bad;
	for (size_t i = 0; i < n2; i++)
		if (shape[i] == 'd' ? !isdigit((unsigned char)s[i]) : s[i] != shape[i])
			goto bad;
	return s;
bad:
	free(s);
	return NULL;
}

/* lc_usage - synopsis; exit code 2. */
static int lc_usage(const char *why)
{
	if (why != NULL)
		fprintf(stderr, "mxgate log: %s\n", why);
	fprintf(stderr, "usage: mxgate log [QUEUE-ID] [--from ADDR] [--to ADDR] [--since TIME] "
	                "[--file LOG|-] [-c FILE]\n");
	return 2;
}

/* lc_open - the log: --file, "-" (stdin, copied so it can be read twice),
 * or the config's [log] file. */
static FILE *lc_open(const char *file, const char *conf, char *name, size_t namelen)
{
	if (file == NULL) {
		/* like status: a file with an error elsewhere still names its log */
		struct config_diags diags = {0};
		struct config *cfg = config_load(conf, &diags);
		const char *shown = conf != NULL ? conf : "(embedded default)";
		size_t errors = config_diags_errors(&diags);

		config_diags_free(&diags);
		if (cfg != NULL) {
			snprintf(name, namelen, "%s", cfg->log_file != NULL ? cfg->log_file : "");
			config_free(cfg);
		} else if (config_peek_log_file(conf, name, namelen) < 0) {
			fprintf(stderr, "mxgate log: cannot read %s (%s); name the log with --file\n",
			        shown, strerror(errno));
			return NULL;
		} else {
			fprintf(stderr,
			        "mxgate: note: %s has %zu error%s (see `mxgate check-config`); "
			        "reading its [log] file anyway\n",
			        shown, errors, errors == 1 ? "" : "s");
		}
		if (name[0] == '\0') {
			fprintf(stderr,
			        "mxgate log: %s logs to stderr (no [log] file): name the log with "
			        "--file, e.g. journalctl -u mxgate -o cat | mxgate log ID --file -\n",
			        shown);
			return NULL;
		}
	} else {
		snprintf(name, namelen, "%s", file);
	}
	if (strcmp(name, "-") != 0) {
		FILE *f = fopen(name, "r");
		if (f == NULL)
			fprintf(stderr, "mxgate log: %s: %s\n", name, strerror(errno));
		return f;
	}
	FILE *t = tmpfile();
	char buf[65536];
	size_t n;
	if (t == NULL) {
		fprintf(stderr, "mxgate log: temporary file: %s\n", strerror(errno));
		return NULL;
	}
	while ((n = fread(buf, 1, sizeof(buf), stdin)) > 0)
		if (fwrite(buf, 1, n, t) != n) {
			fprintf(stderr, "mxgate log: temporary file: %s\n", strerror(errno));
			fclose(t);
			return NULL;
		}
	rewind(t);
	return t;
}

/* gw_cmd_log - `mxgate log` (module comment). */
int gw_cmd_log(int argc, char **argv)
{
	struct lc_state st = {0};
	const char *file = NULL, *conf = NULL;
	char *since = NULL, *line = NULL;
	size_t cap = 0;
	ssize_t len;
	char name[4096];
	struct util_buf *out = NULL;
	FILE *f;
	int rc = 2;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		bool has = i + 1 < argc;
		if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) && has)
			conf = argv[++i];
		else if (strcmp(a, "--file") == 0 && has)
			file = argv[++i];
		else if (strcmp(a, "--from") == 0 && has)
			st.from = argv[++i];
		else if (strcmp(a, "--to") == 0 && has)
			st.to = argv[++i];
		else if (strcmp(a, "--since") == 0 && has) {
			free(since);
			since = lc_since(argv[++i]);
			if (since == NULL)
				return lc_usage("--since takes 2026-12-02T18:30 (UTC) or 90s, 30m, 2h, 1d");
		} else if (a[0] != '-' && st.qid == NULL)
			st.qid = a;
		else {
			free(since);
			return lc_usage(NULL);
		}
	}
	st.since = since;
	/* addresses may be given as <a@b> */
	char *from = st.from ? lc_addr(st.from) : NULL, *to = st.to ? lc_addr(st.to) : NULL;
	st.from = from;
	st.to = to;
	if (st.qid == NULL && st.from == NULL && st.to == NULL) {
		rc = lc_usage("give a QUEUE-ID, --from or --to");
		goto cleanup;
	}
	f = lc_open(file, file == NULL ? gw_config_path(conf) : conf, name, sizeof(name));
	if (f == NULL)
		goto cleanup;

	for (int pass = 1; pass <= 3; pass++) {
		rewind(f);
		if (pass == 3)
			out = util_xcalloc(st.nroots ? st.nroots : 1, sizeof(*out));
		while ((len = getline(&line, &cap, f)) >= 0) {
			struct lc_rec r;
			long story;

			while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
				line[--len] = '\0';
			if (lc_parse(line, (size_t)len, &r) < 0) {
				lc_rec_clear(&r);
				continue;
			}
			if (pass == 1)
				lc_pick(&st, &r);
			else if (pass == 2)
				lc_follow(&st, &r);
			else if (lc_since_ok(&st, &r)) {
				if ((story = lc_story(&st, &r)) >= 0) {
					util_buf_add(&out[story], line, (size_t)len);
					util_buf_add(&out[story], "\n", 1);
				}
			}
			lc_rec_clear(&r);
		}
		if (ferror(f)) {
			fprintf(stderr, "mxgate log: %s: %s\n", name, strerror(errno));
			fclose(f);
			goto cleanup;
		}
	}
	fclose(f);

	rc = 1;
	for (size_t i = 0; i < st.nroots; i++) {
		if (out[i].len == 0)
			continue;
		if (rc == 0)
			fputc('\n', stdout);
		fwrite(out[i].data, 1, out[i].len, stdout);
		rc = 0;
	}
	if (rc == 1)
		fprintf(stderr, "mxgate log: no message in %s matches\n", name);
cleanup:
	if (out != NULL) {
		for (size_t i = 0; i < (st.nroots ? st.nroots : 1); i++)
			util_buf_free(&out[i]);
		free(out);
	}
	free(line);
	free(since);
	free(from);
	free(to);
	free(st.msgs);
	free(st.sess);
	return rc;
}
