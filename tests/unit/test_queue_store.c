/*
 * test_queue_store.c - the on-disk queue store against a real directory
 * under /tmp: commit + reopen + scan, crash leftovers (spools, orphans, tmp
 * envelopes) removed at open, group commit of many concurrent commits, write
 * and rename failures leaving nothing behind, state changes, removal,
 * corrupt and duplicate envelopes moved to corrupt/, close with pending jobs,
 * removed files recycled through free/ without old bytes showing through,
 * and never reused before the fsync that made their removal durable (an
 * interposed fsync() probes the pool right before each directory fsync),
 * quarantined messages committed into quarantine/ and those an older build
 * quarantined into hold/ moved there by the start-up scan, and a pinned
 * file (the report ingester's descriptor) never recycled.
 * Each test gets its own mkdtemp() directory, removed at teardown.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <event2/event.h>

#include "queue.h"

#define BODY "Subject: test\r\n\r\nhello\r\n"

struct fixture {
	char dir[64];
	struct event_base *base;
	struct queue_store *qs;
	/* commit results */
	int ncommits;
	int status[64];
	int err[64];
	char qid[64][UTIL_QID_LEN + 1];
	uint64_t cookie[64];
	int nhooked;
	char hooked[64][UTIL_QID_LEN + 1];
	enum queue_state hooked_st[64];
	/* update/remove results */
	int ndone;
	int done_status[16];
	/* scan results */
	int nscanned;
	char scanned[64][UTIL_QID_LEN + 1];
	enum queue_state scanned_st[64];
	size_t scanned_rcpts[64];
};

/* ------------------------------------------------------------ helpers */

/* rm_one - nftw callback removing one entry. */
static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/mxq-test-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->base = event_base_new();
	assert_non_null(f->base);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	queue_store_close(f->qs);
	event_base_free(f->base);
	nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* on_commit - the scheduler's hook: record the id. */
static void on_commit(const struct queue_envelope *env, enum queue_state st, void *arg)
{
	struct fixture *f = arg;

	f->hooked_st[f->nhooked] = st;
	snprintf(f->hooked[f->nhooked++], UTIL_QID_LEN + 1, "%s", env->id);
}

/* open_store - (re)open the store of the fixture. */
static void open_store(struct fixture *f, bool fsync)
{
	char err[256] = "";

	queue_store_close(f->qs);
	f->qs = queue_store_open(f->dir, fsync, f->base, err, sizeof(err));
	if (f->qs == NULL)
		fail_msg("open: %s", err);
	queue_store_on_commit(f->qs, on_commit, f);
}

static void commit_cb(uint64_t cookie, int status, int err, const char *qid, void *arg)
{
	struct fixture *f = arg;
	int i = f->ncommits++;

	f->status[i] = status;
	f->err[i] = err;
	f->cookie[i] = cookie;
	snprintf(f->qid[i], sizeof(f->qid[i]), "%s", qid);
}

static void done_cb(int status, void *arg)
{
	struct fixture *f = arg;

	f->done_status[f->ndone++] = status;
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	*(bool *)arg = true;
}

/* run_until - run the loop until *counter reaches want (10 s at most). */
static void run_until(struct fixture *f, int *counter, int want)
{
	struct timeval tv = {10, 0};
	bool expired = false;
	struct event *t = evtimer_new(f->base, timeout_cb, &expired);

	evtimer_add(t, &tv);
	while (*counter < want && !expired)
		event_base_loop(f->base, EVLOOP_ONCE);
	event_free(t);
	if (*counter < want)
		fail_msg("timed out: %d of %d callbacks", *counter, want);
}

/* make_env - an envelope with one recipient. */
static struct queue_envelope *make_env(const char *rcpt)
{
	struct queue_envelope *env = queue_envelope_new();

	env->sender = strdup("sender@example.org");
	env->client_addr = strdup("192.0.2.1");
	env->helo = strdup("mail.example.org");
	env->prepend = strdup("Received: from mail.example.org\r\n\tby mx.test\r\n");
	queue_envelope_add_rcpt(env, rcpt);
	return env;
}

/* start_commit - spool BODY and submit its commit; returns the id. */
static void start_commit(struct fixture *f, char id[UTIL_QID_LEN + 1], uint64_t cookie)
{
	struct queue_spool *sp = queue_spool_new(f->qs);

	assert_non_null(sp);
	snprintf(id, UTIL_QID_LEN + 1, "%s", queue_spool_id(sp));
	assert_true(util_qid_is_valid(id));
	assert_int_equal(queue_spool_write(sp, BODY, 10), 0);
	assert_int_equal(queue_spool_write(sp, &BODY[10], strlen(BODY) - 10), 0);
	assert_int_equal(queue_spool_size(sp), strlen(BODY));
	queue_commit(f->qs, sp, make_env("rcpt@example.com"), commit_cb, cookie, f);
}

/* commit_one - commit one message and wait for it. */
static void commit_one(struct fixture *f, char id[UTIL_QID_LEN + 1])
{
	int want = f->ncommits + 1;

	start_commit(f, id, 42);
	run_until(f, &f->ncommits, want);
	assert_int_equal(f->status[want - 1], 0);
	assert_string_equal(f->qid[want - 1], id);
}

/* path_of - "<dir>/<sub>/<name>". */
static const char *path_of(struct fixture *f, const char *sub, const char *name)
{
	static char p[256];

	snprintf(p, sizeof(p), "%s/%s/%s", f->dir, sub, name);
	return p;
}

static bool exists(struct fixture *f, const char *sub, const char *name)
{
	struct stat st;

	return stat(path_of(f, sub, name), &st) == 0;
}

/* count - entries in a sub-folder. */
static int count(struct fixture *f, const char *sub)
{
	char p[256];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(p, sizeof(p), "%s/%s", f->dir, sub);
	d = opendir(p);
	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

/* put_file - write a file by hand (crash leftovers, corrupt envelopes). */
static void put_file(struct fixture *f, const char *sub, const char *name, const char *text)
{
	FILE *fp = fopen(path_of(f, sub, name), "w");

	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static void scan_cb(const struct queue_envelope *env, enum queue_state st, void *arg)
{
	struct fixture *f = arg;

	snprintf(f->scanned[f->nscanned], UTIL_QID_LEN + 1, "%s", env->id);
	f->scanned_st[f->nscanned] = st;
	f->scanned_rcpts[f->nscanned] = env->nrcpts;
	f->nscanned++;
}

static void scan(struct fixture *f)
{
	f->nscanned = 0;
	assert_int_equal(queue_store_scan(f->qs, scan_cb, NULL, f), 0);
}

/* ------------------------------------------------------------ tests */

static void test_commit_then_reopen_scan(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope *env = NULL;
	enum queue_state st;
	char id[UTIL_QID_LEN + 1];
	char path[256], want[256];
	char buf[256];
	int fd;
	ssize_t n;

	open_store(f, true);
	commit_one(f, id);
	assert_int_equal(f->nhooked, 1);
	assert_string_equal(f->hooked[0], id);
	assert_int_equal(f->cookie[0], 42);
	assert_true(exists(f, "msg", id));
	assert_true(exists(f, "active", id));
	assert_int_equal(count(f, "incoming"), 0);

	queue_msg_path(f->qs, id, path, sizeof(path));
	snprintf(want, sizeof(want), "%s/msg/%s", f->dir, id);
	assert_string_equal(path, want);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	n = read(fd, buf, sizeof(buf));
	close(fd);
	assert_int_equal(n, strlen(BODY));
	assert_memory_equal(buf, BODY, strlen(BODY));

	open_store(f, true); /* "restart" */
	scan(f);
	assert_int_equal(f->nscanned, 1);
	assert_string_equal(f->scanned[0], id);
	assert_int_equal(f->scanned_st[0], QUEUE_ACTIVE);

	assert_int_equal(queue_env_load(f->qs, id, &env, &st), 0);
	assert_int_equal(st, QUEUE_ACTIVE);
	assert_string_equal(env->id, id);
	assert_int_equal(env->size, strlen(BODY));
	assert_true(env->arrival > 0);
	assert_string_equal(env->sender, "sender@example.org");
	assert_string_equal(env->rcpts[0].addr, "rcpt@example.com");
	assert_string_equal(env->prepend, "Received: from mail.example.org\r\n\tby mx.test\r\n");
	queue_envelope_free(env);

	assert_int_equal(queue_env_load(f->qs, "0000000000000000", &env, &st), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(queue_env_load(f->qs, "../active/x", &env, &st), -1);
	assert_int_equal(errno, EINVAL);
	assert_string_equal(queue_store_dir(f->qs), f->dir);
}

/* quarantine (issue 13): committed straight into quarantine/, durable,
 * the verdict in the envelope, scanned back as quarantined after a restart,
 * never in active/ or hold/. */
static void test_commit_quarantined(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope *env = make_env("rcpt@example.com");
	enum queue_state st;
	char id[UTIL_QID_LEN + 1];

	open_store(f, true);
	struct queue_spool *sp = queue_spool_new(f->qs);
	assert_non_null(sp);
	snprintf(id, sizeof(id), "%s", queue_spool_id(sp));
	assert_int_equal(queue_spool_write(sp, BODY, strlen(BODY)), 0);
	env->quarantine_reason = strdup("virus");
	env->quarantine_verdict = strdup("virus=Eicar-Test-Signature");
	queue_commit_quarantined(f->qs, sp, env, commit_cb, 7, f);
	run_until(f, &f->ncommits, 1);
	assert_int_equal(f->status[0], 0);
	assert_int_equal(f->nhooked, 1);
	assert_int_equal(f->hooked_st[0], QUEUE_QUARANTINE);
	assert_true(exists(f, "msg", id));
	assert_true(exists(f, "quarantine", id));
	assert_false(exists(f, "hold", id));
	assert_false(exists(f, "active", id));
	assert_int_equal(count(f, "incoming"), 0);

	open_store(f, true); /* "restart" */
	scan(f);
	assert_int_equal(f->nscanned, 1);
	assert_string_equal(f->scanned[0], id);
	assert_int_equal(f->scanned_st[0], QUEUE_QUARANTINE);
	env = NULL;
	assert_int_equal(queue_env_load(f->qs, id, &env, &st), 0);
	assert_int_equal(st, QUEUE_QUARANTINE);
	assert_string_equal(env->quarantine_reason, "virus");
	assert_string_equal(env->quarantine_verdict, "virus=Eicar-Test-Signature");
	queue_envelope_free(env);
}

/* A queue written by the previous layout: quarantined messages sat in hold/
 * with only the X-Mxgate-Quarantine field in their prepend.  The start-up
 * scan moves exactly those to quarantine/ (once: a second start finds
 * nothing to move); a held message, and a quarantined one that was released
 * and then held by hand, stay in hold/; a released one in deferred/ stays. */
struct legacy_case {
	const char *id;
	const char *folder;  /* where the old build left it */
	const char *prepend; /* escaped as in the file */
	enum queue_state want;
	const char *want_folder;
};

static void test_legacy_quarantine_migrated(void **state)
{
	static const struct legacy_case cases[] = {
	    {"0000000000000A01", "hold",
	     "Received: from x\\r\\nX-Mxgate-Quarantine: reason=virus; by=mx.test; at=Mon\\r\\n",
	     QUEUE_QUARANTINE, "quarantine"},
	    {"0000000000000A02", "hold", "Received: from x\\r\\n", QUEUE_HOLD, "hold"},
	    {"0000000000000A03", "hold",
	     ("X-Mxgate-Quarantine: reason=spam; by=mx.test; at=Mon\\r\\n"
	      "X-Mxgate-Released: by=root; at=Tue\\r\\n"),
	     QUEUE_HOLD, "hold"},
	    {"0000000000000A04", "deferred",
	     ("X-Mxgate-Quarantine: reason=spam; by=mx.test; at=Mon\\r\\n"
	      "X-Mxgate-Released: by=root; at=Tue\\r\\n"),
	     QUEUE_DEFERRED, "deferred"},
	    {"0000000000000A05", "hold",
	     "x-mxgate-quarantine: reason=policy; by=mx.test; at=Mon\\r\\n", QUEUE_QUARANTINE,
	     "quarantine"},
	};
	struct fixture *f = *state;
	size_t n = sizeof(cases) / sizeof(cases[0]);
	char text[1024];
	char reason[64];

	open_store(f, true);
	queue_store_close(f->qs);
	f->qs = NULL;
	for (size_t i = 0; i < n; i++) {
		snprintf(
		    text, sizeof(text),
		    "version: 1\nid: %s\narrival: 1764057344\nsize: %zu\nsender: <s@example.org>\n"
		    "smtputf8: 0\neightbit: 0\nis-dsn: 0\nattempts: 0\nnext-attempt: 0\n"
		    "delay-warned: 0\nprepend: %s\nrcpt: pending <r@example.com>\nend: ok\n",
		    cases[i].id, strlen(BODY), cases[i].prepend);
		put_file(f, cases[i].folder, cases[i].id, text);
		put_file(f, "msg", cases[i].id, BODY);
	}
	for (int round = 0; round < 2; round++) {
		open_store(f, true);
		scan(f);
		assert_int_equal(f->nscanned, (int)n);
		for (size_t i = 0; i < n; i++) {
			const struct legacy_case *c = &cases[i];
			struct queue_envelope *env = NULL;
			enum queue_state st;

			assert_string_equal(f->scanned[i], c->id);
			if (f->scanned_st[i] != c->want)
				fail_msg("round %d case %zu: state %d, want %d", round, i,
				         (int)f->scanned_st[i], (int)c->want);
			assert_true(exists(f, c->want_folder, c->id));
			assert_true(exists(f, "msg", c->id));
			if (strcmp(c->folder, c->want_folder) != 0)
				assert_false(exists(f, c->folder, c->id));
			assert_int_equal(queue_env_load(f->qs, c->id, &env, &st), 0);
			assert_int_equal(st, c->want);
			/* the reason of a migrated one comes from its prepend */
			if (c->want == QUEUE_QUARANTINE)
				assert_string_not_equal(
				    queue_envelope_quarantine_reason(env, reason, sizeof(reason)),
				    "-");
			queue_envelope_free(env);
		}
	}
	assert_int_equal(count(f, "corrupt"), 0);
}

static void test_uncommitted_spool_gone(void **state)
{
	struct fixture *f = *state;
	struct queue_store *first;
	struct queue_spool *sp, *sp2;
	char name[64];

	open_store(f, true);
	first = f->qs;
	sp = queue_spool_new(first);
	assert_non_null(sp);
	assert_int_equal(queue_spool_write(sp, BODY, strlen(BODY)), 0);
	snprintf(name, sizeof(name), "%s.msg", queue_spool_id(sp));
	assert_true(exists(f, "incoming", name));

	/* a second process start on the same folder = restart after a crash */
	f->qs = NULL;
	open_store(f, true);
	assert_false(exists(f, "incoming", name));
	assert_int_equal(count(f, "incoming"), 0);
	assert_int_equal(count(f, "msg"), 0);
	scan(f);
	assert_int_equal(f->nscanned, 0);
	queue_spool_abort(sp); /* already gone: no error */
	queue_store_close(first);

	/* abort removes the file */
	sp2 = queue_spool_new(f->qs);
	assert_non_null(sp2);
	assert_int_equal(count(f, "incoming"), 1);
	queue_spool_abort(sp2);
	assert_int_equal(count(f, "incoming"), 0);
	queue_spool_abort(NULL);
}

static void test_orphans_and_tmp_removed(void **state)
{
	struct fixture *f = *state;
	char id[UTIL_QID_LEN + 1];

	open_store(f, true);
	commit_one(f, id);
	queue_store_close(f->qs);
	f->qs = NULL;
	put_file(f, "msg", "00000000000000AA", BODY);            /* orphan */
	put_file(f, "msg", "00000000000000BB", BODY);            /* has an envelope in hold */
	put_file(f, "hold", "00000000000000BB", "version: 1\n"); /* (corrupt, but present) */
	put_file(f, "msg", "README", "not ours");                /* not an id: left alone */
	put_file(f, "active", "00000000000000CC.tmp", "half");
	put_file(f, "deferred", "00000000000000DD.tmp", "half");
	put_file(f, "hold", "00000000000000EE.tmp", "");
	put_file(f, "incoming", "00000000000000FF.msg", BODY);

	open_store(f, true);
	assert_false(exists(f, "msg", "00000000000000AA"));
	assert_true(exists(f, "msg", "00000000000000BB"));
	assert_true(exists(f, "msg", "README"));
	assert_true(exists(f, "msg", id));
	assert_false(exists(f, "active", "00000000000000CC.tmp"));
	assert_false(exists(f, "deferred", "00000000000000DD.tmp"));
	assert_false(exists(f, "hold", "00000000000000EE.tmp"));
	assert_int_equal(count(f, "incoming"), 0);
	assert_true(exists(f, "active", id));
}

static void test_concurrent_commits(void **state)
{
	struct fixture *f = *state;
	char ids[50][UTIL_QID_LEN + 1];
	int i, k;

	open_store(f, true);
	for (i = 0; i < 50; i++)
		start_commit(f, ids[i], (uint64_t)i);
	run_until(f, &f->ncommits, 50);
	for (i = 0; i < 50; i++) {
		assert_int_equal(f->status[i], 0);
		assert_int_equal(f->err[i], 0);
		/* FIFO: completions come back in submission order */
		assert_int_equal(f->cookie[i], i);
		assert_string_equal(f->qid[i], ids[i]);
		for (k = 0; k < i; k++)
			assert_string_not_equal(ids[k], ids[i]);
	}
	assert_int_equal(f->nhooked, 50);
	assert_int_equal(count(f, "active"), 50);
	assert_int_equal(count(f, "msg"), 50);
	assert_int_equal(count(f, "incoming"), 0);

	open_store(f, true);
	scan(f);
	assert_int_equal(f->nscanned, 50);
	for (i = 0; i < 50; i++) {
		assert_string_equal(f->scanned[i], ids[i]); /* oldest first */
		assert_int_equal(f->scanned_rcpts[i], 1);
	}
}

static void test_write_error_leaves_nothing(void **state)
{
	struct fixture *f = *state;
	static char big[16384];
	struct rlimit old, lim;
	struct queue_spool *sp;
	void (*oldsig)(int);
	char name[64];

	open_store(f, true);
	memset(big, 'x', sizeof(big));
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 4096;
	oldsig = signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);

	sp = queue_spool_new(f->qs);
	assert_non_null(sp);
	snprintf(name, sizeof(name), "%s.msg", queue_spool_id(sp));
	errno = 0;
	assert_int_equal(queue_spool_write(sp, big, sizeof(big)), -1);
	assert_int_equal(errno, EFBIG);
	errno = 0;
	assert_int_equal(queue_spool_write(sp, "x", 1), -1); /* sticky */
	assert_int_equal(errno, EFBIG);
	queue_commit(f->qs, sp, make_env("a@b.example"), commit_cb, 1, f);
	run_until(f, &f->ncommits, 1);
	assert_int_equal(f->status[0], -1);
	assert_int_equal(f->err[0], EFBIG);

	/* the same from the I/O thread: an injected message over the limit */
	queue_inject(f->qs, make_env("a@b.example"), big, sizeof(big), commit_cb, 2, f);
	run_until(f, &f->ncommits, 2);
	assert_int_equal(f->status[1], -1);
	assert_int_equal(f->err[1], EFBIG);

	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, oldsig);
	assert_int_equal(f->nhooked, 0);
	assert_int_equal(count(f, "incoming"), 0);
	assert_int_equal(count(f, "msg"), 0);
	assert_int_equal(count(f, "active"), 0);

	/* a small inject works */
	queue_inject(f->qs, make_env("a@b.example"), BODY, strlen(BODY), commit_cb, 3, f);
	run_until(f, &f->ncommits, 3);
	assert_int_equal(f->status[2], 0);
	assert_true(exists(f, "msg", f->qid[2]));
	assert_true(exists(f, "active", f->qid[2]));
	assert_int_equal(f->nhooked, 1);
}

/* spool_blocked - a spooled message whose active/ID.tmp someone else
 * already holds, so its commit must fail with EEXIST; id and tmp (the
 * blocking file's name) are filled in. */
static struct queue_spool *spool_blocked(struct fixture *f, char id[UTIL_QID_LEN + 1],
                                         char tmp[64])
{
	struct queue_spool *sp = queue_spool_new(f->qs);

	assert_non_null(sp);
	snprintf(id, UTIL_QID_LEN + 1, "%s", queue_spool_id(sp));
	assert_int_equal(queue_spool_write(sp, BODY, strlen(BODY)), 0);
	snprintf(tmp, 64, "%s.tmp", id);
	put_file(f, "active", tmp, "someone else's");
	return sp;
}

static void test_commit_failure_undone(void **state)
{
	struct fixture *f = *state;
	struct queue_spool *sp;
	char id[UTIL_QID_LEN + 1], tmp[64];

	open_store(f, true);
	/* something already holds active/ID.tmp: the O_EXCL create fails after
	 * the message was renamed into msg/ - which must be undone */
	sp = spool_blocked(f, id, tmp);
	queue_commit(f->qs, sp, make_env("a@b.example"), commit_cb, 1, f);
	run_until(f, &f->ncommits, 1);
	assert_int_equal(f->status[0], -1);
	assert_int_equal(f->err[0], EEXIST);
	assert_string_equal(f->qid[0], id);
	assert_int_equal(f->nhooked, 0);
	assert_false(exists(f, "msg", id));
	assert_false(exists(f, "active", id));
	assert_true(exists(f, "active", tmp)); /* not ours: untouched */
	assert_int_equal(count(f, "incoming"), 0);
}

static void test_update_and_remove(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope *env = NULL;
	enum queue_state st;
	char id[UTIL_QID_LEN + 1];

	open_store(f, true);
	commit_one(f, id);
	assert_int_equal(queue_env_load(f->qs, id, &env, &st), 0);
	assert_int_equal(st, QUEUE_ACTIVE);

	/* active -> deferred */
	env->attempts = 1;
	env->next_attempt = 2000000000;
	env->rcpts[0].last_reply = strdup("451 4.3.0 try later");
	env->last_error = strdup("451 4.3.0 try later");
	queue_env_update(f->qs, env, QUEUE_ACTIVE, QUEUE_DEFERRED, done_cb, f);
	run_until(f, &f->ndone, 1);
	assert_int_equal(f->done_status[0], 0);
	assert_false(exists(f, "active", id));
	assert_true(exists(f, "deferred", id));

	/* in place, then deferred -> hold */
	env->attempts = 2;
	queue_env_update(f->qs, env, QUEUE_DEFERRED, QUEUE_DEFERRED, done_cb, f);
	env->attempts = 3;
	queue_env_update(f->qs, env, QUEUE_DEFERRED, QUEUE_HOLD, done_cb, f);
	queue_envelope_free(env); /* serialised at the call */
	run_until(f, &f->ndone, 3);
	assert_int_equal(f->done_status[1], 0);
	assert_int_equal(f->done_status[2], 0);
	assert_false(exists(f, "deferred", id));
	assert_true(exists(f, "hold", id));
	assert_int_equal(queue_env_load(f->qs, id, &env, &st), 0);
	assert_int_equal(st, QUEUE_HOLD);
	assert_int_equal(env->attempts, 3);
	assert_string_equal(env->rcpts[0].last_reply, "451 4.3.0 try later");

	/* hold -> active and remove, queued back to back: same-id order kept */
	queue_env_update(f->qs, env, QUEUE_HOLD, QUEUE_ACTIVE, done_cb, f);
	queue_msg_remove(f->qs, id, QUEUE_ACTIVE, done_cb, f);
	queue_envelope_free(env);
	run_until(f, &f->ndone, 5);
	assert_int_equal(f->done_status[3], 0);
	assert_int_equal(f->done_status[4], 0);
	assert_false(exists(f, "hold", id));
	assert_false(exists(f, "active", id));
	assert_false(exists(f, "msg", id));

	/* removing it again fails (no envelope) */
	queue_msg_remove(f->qs, id, QUEUE_ACTIVE, done_cb, f);
	queue_msg_remove(f->qs, "not-an-id", QUEUE_ACTIVE, done_cb, f);
	run_until(f, &f->ndone, 7);
	assert_int_equal(f->done_status[5], -1);
	assert_int_equal(f->done_status[6], -1);

	open_store(f, true);
	scan(f);
	assert_int_equal(f->nscanned, 0);
}

static void test_corrupt_moved_aside(void **state)
{
	struct fixture *f = *state;
	char id[UTIL_QID_LEN + 1];
	char other[UTIL_QID_LEN + 1];
	char from[256];

	open_store(f, true);
	commit_one(f, id);
	commit_one(f, other);
	queue_store_close(f->qs);
	f->qs = NULL;
	put_file(f, "active", "00000000000000AA", "version: 1\nid: 00000000000000AA\n");
	put_file(f, "msg", "00000000000000AA", BODY);
	put_file(f, "deferred", "junk name", "x");
	/* a valid envelope under the wrong name: moved aside too */
	snprintf(from, sizeof(from), "%s", path_of(f, "active", other));
	assert_int_equal(rename(from, path_of(f, "hold", "00000000000000BB")), 0);

	open_store(f, true);
	scan(f);
	assert_int_equal(f->nscanned, 1);
	assert_string_equal(f->scanned[0], id);
	assert_false(exists(f, "active", "00000000000000AA"));
	assert_false(exists(f, "msg", "00000000000000AA"));
	assert_true(exists(f, "corrupt", "active-00000000000000AA"));
	assert_true(exists(f, "corrupt", "active-00000000000000AA.msg"));
	assert_true(exists(f, "corrupt", "deferred-junk name"));
	assert_true(exists(f, "corrupt", "hold-00000000000000BB"));
	/* msg/<other> lost its envelope to the misnamed file: an orphan at open */
	assert_false(exists(f, "msg", other));

	/* the same name again does not overwrite the first */
	put_file(f, "active", "00000000000000AA", "garbage\n");
	scan(f);
	assert_true(exists(f, "corrupt", "active-00000000000000AA.1"));
	assert_true(exists(f, "corrupt", "active-00000000000000AA"));
}

static void test_duplicate_newer_wins(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope *env = NULL;
	struct timespec ts[2];
	enum queue_state st;
	char id[UTIL_QID_LEN + 1];
	char cmd[512];

	open_store(f, true);
	commit_one(f, id);
	queue_store_close(f->qs);
	f->qs = NULL;
	/* a crash between "rename into deferred/" and "unlink active/" */
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s/deferred/%s'", path_of(f, "active", id), f->dir,
	         id);
	assert_int_equal(system(cmd), 0);
	ts[0].tv_sec = ts[1].tv_sec = 1000000000;
	ts[0].tv_nsec = ts[1].tv_nsec = 0;
	assert_int_equal(utimensat(AT_FDCWD, path_of(f, "active", id), ts, 0), 0);

	open_store(f, true);
	scan(f);
	assert_int_equal(f->nscanned, 1);
	assert_int_equal(f->scanned_st[0], QUEUE_DEFERRED);
	assert_false(exists(f, "active", id));
	assert_true(exists(f, "deferred", id));
	assert_true(exists(f, "msg", id));
	{
		char cname[64];

		snprintf(cname, sizeof(cname), "active-%s", id);
		assert_true(exists(f, "corrupt", cname));
	}
	assert_int_equal(queue_env_load(f->qs, id, &env, &st), 0);
	assert_int_equal(st, QUEUE_DEFERRED);
	queue_envelope_free(env);
}

/* resubmit_cb - a commit callback that queues more work during close. */
static void resubmit_cb(uint64_t cookie, int status, int err, const char *qid, void *arg)
{
	struct fixture *f = arg;

	commit_cb(cookie, status, err, qid, arg);
	if (cookie == 1)
		queue_msg_remove(f->qs, qid, QUEUE_ACTIVE, done_cb, f);
}

static void test_close_finishes_pending(void **state)
{
	struct fixture *f = *state;
	struct queue_spool *sp;
	char id[UTIL_QID_LEN + 1];

	open_store(f, false); /* also covers fsync off */
	sp = queue_spool_new(f->qs);
	assert_non_null(sp);
	snprintf(id, sizeof(id), "%s", queue_spool_id(sp));
	assert_int_equal(queue_spool_write(sp, BODY, strlen(BODY)), 0);
	queue_commit(f->qs, sp, make_env("a@b.example"), resubmit_cb, 1, f);
	queue_store_close(f->qs); /* loop never ran */
	f->qs = NULL;
	assert_int_equal(f->ncommits, 1);
	assert_int_equal(f->status[0], 0);
	assert_int_equal(f->nhooked, 1);
	/* the remove submitted from the callback during close is refused */
	assert_int_equal(f->ndone, 1);
	assert_int_equal(f->done_status[0], -1);

	open_store(f, true);
	scan(f);
	assert_int_equal(f->nscanned, 1);
	assert_string_equal(f->scanned[0], id);
}

static void test_dispatch_returns_when_idle(void **state)
{
	struct fixture *f = *state;
	char id[UTIL_QID_LEN + 1];

	open_store(f, true);
	assert_int_equal(event_base_dispatch(f->base), 1); /* nothing watched */
	start_commit(f, id, 7);
	/* the completion event is watched only while the job is in flight:
	 * dispatch runs until the callback, then finds nothing left and returns */
	assert_true(event_base_dispatch(f->base) >= 0);
	assert_int_equal(f->ncommits, 1);
	assert_int_equal(f->status[0], 0);
	assert_int_equal(event_base_dispatch(f->base), 1);
}

/* file_size - st_size of <sub>/<name>, -1 when missing. */
static long long file_size(struct fixture *f, const char *sub, const char *name)
{
	struct stat st;

	return stat(path_of(f, sub, name), &st) == 0 ? (long long)st.st_size : -1;
}

/* commit_body - spool body, commit it, wait; returns the id. */
static void commit_body(struct fixture *f, char id[UTIL_QID_LEN + 1], const char *body, size_t len)
{
	struct queue_spool *sp = queue_spool_new(f->qs);
	int want = f->ncommits + 1;

	assert_non_null(sp);
	snprintf(id, UTIL_QID_LEN + 1, "%s", queue_spool_id(sp));
	assert_int_equal(queue_spool_write(sp, body, len), 0);
	queue_commit(f->qs, sp, make_env("rcpt@example.com"), commit_cb, 9, f);
	run_until(f, &f->ncommits, want);
	assert_int_equal(f->status[want - 1], 0);
}

/* remove_one - remove an active message and wait. */
static void remove_one(struct fixture *f, const char *id)
{
	int want = f->ndone + 1;

	queue_msg_remove(f->qs, id, QUEUE_ACTIVE, done_cb, f);
	run_until(f, &f->ndone, want);
	assert_int_equal(f->done_status[want - 1], 0);
}

static void test_removed_files_recycled(void **state)
{
	struct fixture *f = *state;
	static char big[20000];
	struct queue_envelope *env = NULL;
	struct queue_spool *sp;
	enum queue_state st;
	char id[UTIL_QID_LEN + 1], id2[UTIL_QID_LEN + 1], tmp[64], backup[256];
	char got[sizeof(BODY) + 16];
	FILE *fp;
	size_t n;

	open_store(f, true);
	assert_int_equal(count(f, "free"), 0);
	memset(big, 'B', sizeof(big));
	commit_body(f, id, big, sizeof(big));
	remove_one(f, id);
	/* the message and its envelope went to free/, not away */
	assert_false(exists(f, "msg", id));
	assert_false(exists(f, "active", id));
	assert_int_equal(count(f, "free"), 2);
	assert_int_equal(queue_pool_size(f->qs), 2);

	/* the next message reuses both files: nothing of the old one shows */
	commit_body(f, id2, BODY, strlen(BODY));
	assert_int_equal(count(f, "free"), 0);
	assert_int_equal(file_size(f, "msg", id2), (long long)strlen(BODY));
	fp = fopen(path_of(f, "msg", id2), "rb");
	assert_non_null(fp);
	n = fread(got, 1, sizeof(got), fp);
	fclose(fp);
	assert_int_equal(n, strlen(BODY));
	assert_memory_equal(got, BODY, n);
	assert_int_equal(queue_env_load(f->qs, id2, &env, &st), 0);
	assert_int_equal(env->size, (int64_t)strlen(BODY));
	assert_int_equal(env->nrcpts, 1);

	/* an update in place recycles the old envelope too */
	env->attempts = 1;
	queue_env_update(f->qs, env, QUEUE_ACTIVE, QUEUE_ACTIVE, done_cb, f);
	run_until(f, &f->ndone, f->ndone + 1);
	assert_int_equal(f->done_status[f->ndone - 1], 0);
	queue_envelope_free(env);
	assert_int_equal(count(f, "free"), 1);
	assert_int_equal(queue_env_load(f->qs, id2, &env, &st), 0);
	assert_int_equal(env->attempts, 1);
	queue_envelope_free(env);

	/* a pooled file never replaces an existing name: EEXIST as with O_EXCL,
	 * and the free file stays in the pool */
	sp = queue_spool_new(f->qs);
	assert_non_null(sp);
	snprintf(id, sizeof(id), "%s", queue_spool_id(sp));
	assert_int_equal(count(f, "free"), 0); /* the spool took it */
	queue_spool_abort(sp);                 /* and gave it back */
	assert_int_equal(count(f, "free"), 1);
	assert_int_equal(count(f, "incoming"), 0);
	sp = spool_blocked(f, id, tmp);
	remove_one(f, id2); /* two more free files */
	assert_int_equal(count(f, "free"), 2);
	queue_commit(f->qs, sp, make_env("a@b.example"), commit_cb, 1, f);
	run_until(f, &f->ncommits, f->ncommits + 1);
	assert_int_equal(f->status[f->ncommits - 1], -1);
	assert_int_equal(f->err[f->ncommits - 1], EEXIST);
	assert_false(exists(f, "msg", id));
	assert_int_equal(file_size(f, "active", tmp), (long long)strlen("someone else's"));
	assert_int_equal(count(f, "free"), 2);
	assert_int_equal(queue_pool_size(f->qs), 2);
	unlink(path_of(f, "active", tmp));

	/* a restart keeps the pool; a file too big to keep is unlinked */
	fp = fopen(path_of(f, "free", "huge"), "w");
	assert_non_null(fp);
	assert_int_equal(ftruncate(fileno(fp), 5 << 20), 0);
	fclose(fp);
	open_store(f, true);
	assert_int_equal(queue_pool_size(f->qs), 2);
	assert_false(exists(f, "free", "huge"));
	scan(f);
	assert_int_equal(f->nscanned, 0); /* free/ is never read as queue data */
	commit_body(f, id, BODY, strlen(BODY));
	assert_int_equal(queue_pool_size(f->qs), 0);
	assert_int_equal(file_size(f, "msg", id), (long long)strlen(BODY));

	/* a purge (a postmaster's delete) unlinks instead of recycling */
	queue_msg_purge(f->qs, id, QUEUE_ACTIVE, done_cb, f);
	run_until(f, &f->ndone, f->ndone + 1);
	assert_int_equal(f->done_status[f->ndone - 1], 0);
	assert_false(exists(f, "msg", id));
	assert_false(exists(f, "active", id));
	assert_int_equal(count(f, "free"), 0);
	assert_int_equal(queue_pool_size(f->qs), 0);

	/* a message file with another hard link (a backup) is never recycled:
	 * reusing it would overwrite the backup */
	commit_body(f, id, big, sizeof(big));
	snprintf(backup, sizeof(backup), "%s", path_of(f, ".", "backup"));
	assert_int_equal(link(path_of(f, "msg", id), backup), 0);
	remove_one(f, id);
	assert_int_equal(count(f, "free"), 1); /* the envelope only */
	commit_body(f, id2, BODY, strlen(BODY));
	assert_int_equal(file_size(f, ".", "backup"), (long long)sizeof(big));
	unlink(backup);
}

/* The report ingester's race (issue 15): it holds a read descriptor of a
 * report's spool file and copies it whenever its backlog lets it - maybe
 * after the message was delivered and removed.  Removed files are recycled
 * for the next message, so without the pin the descriptor would read the
 * next message's bytes (another sender's mail in the report store).  Each
 * case: pin, commit, maybe remove, then the next messages reuse what the
 * pool holds; the pinned descriptor must still read the first message. */
static const struct pin_case {
	const char *name;
	bool remove;  /* the pinned message is delivered (removed) */
	bool abort;   /* the pinned spool is aborted instead of committed */
	int pins;     /* pinned this many times (counted) */
	bool unpin;   /* released before the removal: recycled as usual */
} pin_cases[] = {
    {"removed while pinned", true, false, 1, false},
    {"pinned twice", true, false, 2, false},
    {"aborted while pinned", false, true, 1, false},
    {"queued while pinned", false, false, 1, false},
    {"unpinned first", true, false, 1, true},
};

static void test_pinned_file_not_recycled(void **state)
{
	struct fixture *f = *state;
	static char report[20000], other[20000];

	memset(report, 'R', sizeof(report));
	memset(other, 'X', sizeof(other));
	open_store(f, true);
	for (size_t c = 0; c < sizeof(pin_cases) / sizeof(pin_cases[0]); c++) {
		const struct pin_case *pc = &pin_cases[c];
		struct queue_pin *pin[2] = {NULL, NULL};
		char id[UTIL_QID_LEN + 1], id2[UTIL_QID_LEN + 1], id3[UTIL_QID_LEN + 1];
		static char got[sizeof(report) + 1];
		struct queue_spool *sp = queue_spool_new(f->qs);
		size_t pooled;

		print_message("case: %s\n", pc->name);
		assert_non_null(sp);
		snprintf(id, sizeof(id), "%s", queue_spool_id(sp));
		assert_int_equal(queue_spool_write(sp, report, sizeof(report)), 0);
		for (int i = 0; i < pc->pins; i++) {
			pin[i] = queue_spool_pin(sp);
			assert_non_null(pin[i]);
		}
		pooled = queue_pool_size(f->qs);
		if (pc->abort) {
			queue_spool_abort(sp);
			assert_int_equal(queue_pool_size(f->qs), pooled); /* unlinked */
		} else {
			int want = f->ncommits + 1;

			queue_commit(f->qs, sp, make_env("dmarc-reports@example.com"), commit_cb, 9,
			             f);
			run_until(f, &f->ncommits, want);
			assert_int_equal(f->status[want - 1], 0);
		}
		if (pc->unpin)
			for (int i = 0; i < pc->pins; i++) {
				queue_pin_free(pin[i]);
				pin[i] = NULL;
			}
		if (pc->remove) {
			pooled = queue_pool_size(f->qs);
			remove_one(f, id);
			/* the envelope is recycled; the message file only when
			 * nobody holds it */
			assert_int_equal(queue_pool_size(f->qs), pooled + (pc->unpin ? 2 : 1));
		}
		/* the next messages take whatever the pool holds */
		commit_body(f, id2, other, sizeof(other));
		commit_body(f, id3, other, sizeof(other));
		if (pin[0] != NULL) {
			for (int i = 0; i < pc->pins; i++) {
				ssize_t n = pread(queue_pin_fd(pin[i]), got, sizeof(got), 0);

				assert_int_equal(n, (ssize_t)sizeof(report));
				assert_memory_equal(got, report, sizeof(report));
			}
		}
		for (int i = 0; i < pc->pins; i++)
			queue_pin_free(pin[i]);
		remove_one(f, id2);
		remove_one(f, id3);
		if (!pc->remove && !pc->abort)
			remove_one(f, id);
	}
	/* every pin released: removed files are recycled again */
	assert_true(queue_pool_size(f->qs) >= 2);
	queue_pin_free(NULL);
}

/* ------------------------------------------------------------ reuse vs. crash
 *
 * A file that left a state folder may be reused only once the fsync of that
 * folder made its removal durable: before, a crash can bring the envelope's
 * name back over whatever the reuser wrote.  This test binary interposes
 * fsync() (the executable's definition wins over libc's for the statically
 * linked store): right before every directory fsync - the last moment a
 * crash would still leave the old directory - a probe takes a file from the
 * pool as a new spool would and writes other bytes into it.  The envelope's
 * old inode, held open by the test, must still hold the old envelope. */

#define PROBE_BYTES "X-Probe: another message's bytes\r\n"

static struct {
	struct queue_store *qs; /* NULL = fsync is not probed */
	int held_fd;            /* the old envelope's inode */
	char want[4096];        /* its content before the job */
	size_t want_len;
	int probes;
	bool clobbered;
} g_probe;

/* probe_reuse - what a concurrent spool would do now (I/O thread). */
static void probe_reuse(void)
{
	struct queue_spool *sp = queue_spool_new(g_probe.qs);
	char got[sizeof(g_probe.want)];
	ssize_t n;

	if (sp == NULL)
		return;
	(void)queue_spool_write(sp, PROBE_BYTES, strlen(PROBE_BYTES));
	queue_spool_abort(sp);
	g_probe.probes++;
	n = pread(g_probe.held_fd, got, sizeof(got), 0);
	if (n != (ssize_t)g_probe.want_len || memcmp(got, g_probe.want, g_probe.want_len) != 0)
		g_probe.clobbered = true;
}

/* fsync - the real one, after a probe when fd is a directory. */
int fsync(int fd)
{
	struct stat st;

	if (g_probe.qs != NULL && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode))
		probe_reuse();
	return (int)syscall(SYS_fsync, fd);
}

struct reuse_case {
	const char *name;
	bool remove;         /* a removal, not an update */
	enum queue_state to; /* update: the new state (from is active) */
	const char *to_dir;
};

static void test_retired_envelope_not_reused_before_fsync(void **state)
{
	static const struct reuse_case cases[] = {
	    {"update in place", false, QUEUE_ACTIVE, "active"},
	    {"update to another folder", false, QUEUE_DEFERRED, "deferred"},
	    {"removal", true, QUEUE_ACTIVE, NULL},
	};
	struct fixture *f = *state;
	size_t i;

	open_store(f, true);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct reuse_case *c = &cases[i];
		struct queue_envelope *env = NULL;
		enum queue_state st;
		char id[UTIL_QID_LEN + 1];
		ssize_t n;

		commit_body(f, id, BODY, strlen(BODY));
		assert_int_equal(queue_env_load(f->qs, id, &env, &st), 0);
		g_probe.held_fd = open(path_of(f, "active", id), O_RDONLY);
		assert_true(g_probe.held_fd >= 0);
		n = read(g_probe.held_fd, g_probe.want, sizeof(g_probe.want));
		assert_true(n > 0 && n < (ssize_t)sizeof(g_probe.want));
		g_probe.want_len = (size_t)n;
		g_probe.probes = 0;
		g_probe.clobbered = false;
		g_probe.qs = f->qs;
		env->attempts = 7;
		if (c->remove)
			queue_msg_remove(f->qs, id, QUEUE_ACTIVE, done_cb, f);
		else
			queue_env_update(f->qs, env, QUEUE_ACTIVE, c->to, done_cb, f);
		queue_envelope_free(env);
		run_until(f, &f->ndone, f->ndone + 1);
		g_probe.qs = NULL;
		close(g_probe.held_fd);
		assert_int_equal(f->done_status[f->ndone - 1], 0);
		if (g_probe.probes == 0)
			fail_msg("%s: no directory fsync was probed", c->name);
		if (g_probe.clobbered)
			fail_msg("%s: the old envelope was reused before its folder's fsync",
			         c->name);
		/* and still recycled once durable */
		assert_true(queue_pool_size(f->qs) >= 1);
		if (!c->remove) {
			assert_int_equal(queue_env_load(f->qs, id, &env, &st), 0);
			assert_int_equal(st, c->to);
			assert_int_equal(env->attempts, 7);
			queue_envelope_free(env);
			assert_false(c->to != QUEUE_ACTIVE && exists(f, "active", id));
			assert_true(exists(f, c->to_dir, id));
		} else {
			assert_false(exists(f, "active", id));
		}
	}
}

static void test_open_errors(void **state)
{
	struct fixture *f = *state;
	char err[256] = "";
	struct queue_store *qs;

	put_file(f, ".", "afile", "x");
	qs = queue_store_open(path_of(f, ".", "afile"), true, f->base, err, sizeof(err));
	assert_null(qs);
	assert_non_null(strstr(err, "afile"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_commit_then_reopen_scan, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_commit_quarantined, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_legacy_quarantine_migrated, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_uncommitted_spool_gone, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_orphans_and_tmp_removed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_concurrent_commits, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_write_error_leaves_nothing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_commit_failure_undone, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_update_and_remove, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_corrupt_moved_aside, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_duplicate_newer_wins, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_finishes_pending, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dispatch_returns_when_idle, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_removed_files_recycled, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pinned_file_not_recycled, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_retired_envelope_not_reused_before_fsync, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
	};

	util_log_init(UTIL_LOG_WARN, UTIL_LOG_TEXT, NULL);
	return cmocka_run_group_tests(tests, 0, NULL);
}
