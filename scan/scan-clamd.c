/*
 * scan-clamd.c - asynchronous clamd client on the libevent loop: each scan
 * streams the spooled message to clamd with INSTREAM (clamd(8)): the
 * command "zINSTREAM\0", then chunks of <4-byte big-endian length><data>,
 * then a zero-length chunk; clamd answers one NUL-terminated line
 * (scan-reply.c).
 *
 * Connections are pooled: a connection opens an IDSESSION ("zIDSESSION\0")
 * so clamd keeps it open between commands, and carries one scan at a time
 * (replies are then unambiguous; clamd numbers them "N: ..." and we check
 * N).  At most [clamav] max_connections are open; more scans wait in FIFO
 * order.  clamd closes an idle session after its IdleTimeout: an idle
 * connection that sees EOF is dropped, and a scan whose reused connection
 * dies before any reply is retried once on a fresh one.  An "OK" that
 * arrives before the end of the stream was queued is no scan of this
 * message (a failure, "protocol"); a connection that delivered more than
 * one answer is not reused.
 *
 * The message is read from the spool file with pread() in 64 KiB chunks
 * straight into the socket's output buffer and refilled from the write
 * callback when the buffer drains below 64 KiB: never more than ~192 KiB of
 * a message in memory, whatever its size.  A deadline ([clamav] timeout)
 * covers waiting for a connection, connecting, sending and the reply.
 *
 * Ownership: a job owns the spool descriptor it was given and closes it;
 * the client owns its connections and jobs.  Callbacks run from the loop,
 * never from inside scan_clamd_start(), never after scan_clamd_free().
 *
 * Diagnostics: "clamd socket=... error=..." (warn) when a connection fails;
 * the caller logs each scan's outcome.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "scan.h"

#define CLAMD_CHUNK     (64 * 1024)
#define CLAMD_LOW_WATER (64 * 1024) /* refill below this */
#define CLAMD_MAX_REPLY 4096
#define CLAMD_ADDR_MAX  128

struct clamd_job;

enum clamd_conn_state { CONN_CONNECTING = 0, CONN_IDLE, CONN_BUSY };

struct clamd_conn {
	struct scan_clamd *c;
	struct bufferevent *bev;   /* owned */
	char addr[CLAMD_ADDR_MAX]; /* the [clamav] socket it was opened for */
	enum clamd_conn_state st;
	bool reused;           /* completed a scan before: may be stale */
	unsigned long next_id; /* IDSESSION request counter */
	struct clamd_job *job; /* borrowed; the scan it carries */
	struct clamd_conn *next, *prev;
};

struct clamd_job {
	struct scan_clamd *c;
	scan_done_fn cb;
	void *arg;
	uint64_t cookie;
	int fd; /* owned; the spool, read-only */
	int64_t len, off;
	char addr[CLAMD_ADDR_MAX];
	int max_conns;
	struct event *timer;     /* owned; deadline, or a deferred result */
	struct clamd_conn *conn; /* borrowed; NULL while waiting */
	bool retried;
	bool sent_all;
	bool has_result; /* deferred result in `result` */
	struct scan_result result;
	unsigned long id;              /* the reply number expected */
	struct clamd_job *next, *prev; /* c->jobs, FIFO */
};

struct scan_clamd {
	struct event_base *base;
	struct clamd_conn *conns; /* owned */
	size_t nconns;
	struct clamd_job *jobs; /* owned; waiting and running, oldest first */
	struct clamd_job *jobs_tail;
	size_t njobs;
};

static void pump(struct scan_clamd *c);
static void conn_free(struct clamd_conn *k);
static void defer_result(struct clamd_job *j, const char *why);

/* scan_clamd_new - an empty client; nothing connects until a scan starts. */
struct scan_clamd *scan_clamd_new(struct event_base *base)
{
	struct scan_clamd *c = util_xcalloc(1, sizeof(*c));
	c->base = base;
	return c;
}

/* scan_clamd_pending - see scan.h. */
size_t scan_clamd_pending(const struct scan_clamd *c)
{
	return c ? c->njobs : 0;
}

/* job_free - take a job off the client's list and free it; its
 * connection (if any) is left to the caller. */
static void job_free(struct clamd_job *j)
{
	struct scan_clamd *c = j->c;
	if (j->prev)
		j->prev->next = j->next;
	else
		c->jobs = j->next;
	if (j->next)
		j->next->prev = j->prev;
	else
		c->jobs_tail = j->prev;
	c->njobs--;
	if (j->conn)
		j->conn->job = NULL;
	if (j->fd >= 0)
		close(j->fd);
	if (j->timer)
		event_free(j->timer);
	free(j);
}

/* job_finish - report the outcome and forget the job.  The connection, if
 * any, must already be idle or freed. */
static void job_finish(struct clamd_job *j, const struct scan_result *r)
{
	struct scan_result res = *r;
	scan_done_fn cb = j->cb;
	void *arg = j->arg;
	uint64_t cookie = j->cookie;
	struct scan_clamd *c = j->c;
	job_free(j);
	cb(cookie, &res, arg);
	pump(c);
}

/* job_fail - the scan did not happen: why. */
static void job_fail(struct clamd_job *j, const char *why)
{
	struct scan_result r = {.status = SCAN_FAILED};
	snprintf(r.name, sizeof(r.name), "%s", why);
	struct clamd_conn *k = j->conn;
	j->conn = NULL;
	if (k) {
		k->job = NULL;
		conn_free(k); /* a reply may still be on its way: never reuse */
	}
	job_finish(j, &r);
}

/* conn_free - close a connection and unlink it. */
static void conn_free(struct clamd_conn *k)
{
	struct scan_clamd *c = k->c;
	if (k->prev)
		k->prev->next = k->next;
	else
		c->conns = k->next;
	if (k->next)
		k->next->prev = k->prev;
	c->nconns--;
	if (k->job)
		k->job->conn = NULL;
	bufferevent_free(k->bev); /* BEV_OPT_CLOSE_ON_FREE */
	free(k);
}

/* fill - keep the output buffer above the low-water mark with chunks read
 * from the spool; the zero-length chunk ends the stream.  -1 on a read
 * error. */
static int fill(struct clamd_conn *k)
{
	struct clamd_job *j = k->job;
	struct evbuffer *out = bufferevent_get_output(k->bev);
	while (!j->sent_all && evbuffer_get_length(out) < CLAMD_LOW_WATER * 2) {
		int64_t left = j->len - j->off;
		size_t want = left > CLAMD_CHUNK ? CLAMD_CHUNK : (size_t)left;
		ssize_t n = 0;
		if (want > 0) {
			struct evbuffer_iovec v;
			if (evbuffer_reserve_space(out, (ev_ssize_t)(want + 4), &v, 1) < 1)
				return -1;
			char *p = v.iov_base;
			do
				n = pread(j->fd, p + 4, want, (off_t)j->off);
			while (n < 0 && errno == EINTR);
			if (n < 0)
				return -1;
			if (n > 0) {
				uint32_t be = htonl((uint32_t)n);
				memcpy(p, &be, 4);
				v.iov_len = (size_t)n + 4;
				if (evbuffer_commit_space(out, &v, 1) < 0)
					return -1;
				j->off += n;
			}
		}
		if (n == 0 || j->off >= j->len) {
			static const char end[4] = {0, 0, 0, 0};
			evbuffer_add(out, end, 4);
			j->sent_all = true;
		}
	}
	return 0;
}

/* conn_start_job - send the command and the first chunks. */
static void conn_start_job(struct clamd_conn *k)
{
	struct clamd_job *j = k->job;
	k->st = CONN_BUSY;
	j->off = 0;
	j->sent_all = false;
	j->id = ++k->next_id;
	evbuffer_add(bufferevent_get_output(k->bev), "zINSTREAM", 10); /* with its NUL */
	if (fill(k) < 0)
		defer_result(j, "spool_read"); /* may run inside scan_clamd_start() */
}

/* conn_lost - the connection died or misbehaved while carrying job j (may
 * be NULL): retry once on a fresh connection when a reused one was stale. */
static void conn_lost(struct clamd_conn *k, const char *why)
{
	struct clamd_job *j = k->job;
	bool stale = k->reused && k->st != CONN_CONNECTING;
	struct scan_clamd *c = k->c;
	if (!j) {
		conn_free(k);
		pump(c);
		return;
	}
	if (stale && !j->retried && strcmp(why, "protocol") != 0) {
		j->retried = true;
		k->job = NULL;
		j->conn = NULL;
		conn_free(k);
		pump(c);
		return;
	}
	job_fail(j, why);
}

/* read_cb - clamd's reply lines. */
static void read_cb(struct bufferevent *bev, void *arg)
{
	struct clamd_conn *k = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	for (;;) {
		struct evbuffer_ptr nul = evbuffer_search(in, "", 1, NULL);
		if (nul.pos < 0) {
			/* n-commands end with '\n'; we send z-commands only */
			if (evbuffer_get_length(in) > CLAMD_MAX_REPLY)
				conn_lost(k, "protocol");
			return;
		}
		if ((size_t)nul.pos > CLAMD_MAX_REPLY) {
			conn_lost(k, "protocol");
			return;
		}
		char line[CLAMD_MAX_REPLY + 1];
		size_t n = (size_t)nul.pos;
		evbuffer_remove(in, line, n + 1);
		struct clamd_job *j = k->job;
		struct scan_result r;
		unsigned long id;
		if (!j || k->st != CONN_BUSY || scan_clamd_parse_reply(line, n, &id, &r) < 0 ||
		    (id != 0 && id != j->id)) {
			util_log_warn("clamd socket=%s error=\"unexpected reply\" reply=\"%.*s\"",
			              k->addr, (int)(n > 200 ? 200 : n), line);
			conn_lost(k, "protocol");
			return;
		}
		if (r.status == SCAN_FAILED) {
			/* clamd ends the session after an error */
			job_fail(j, r.name);
			return;
		}
		if (r.status == SCAN_CLEAN && !j->sent_all) {
			/* "OK" before clamd can have read the whole stream (it
			 * answers after the zero-length chunk, which was queued
			 * before it could be written): not a scan of this message
			 * - taking it for clean was a silent pass (red team) */
			util_log_warn("clamd socket=%s error=\"answer before the end of the stream\"",
			              k->addr);
			job_fail(j, "protocol");
			return;
		}
		if (!j->sent_all || evbuffer_get_length(in) > 0) {
			/* an answer before the end of the stream, or more than
			 * one answer: not reusable (what follows would be taken
			 * for the next scan's answer) */
			k->job = NULL;
			j->conn = NULL;
			conn_free(k);
		} else {
			k->job = NULL;
			j->conn = NULL;
			k->st = CONN_IDLE;
			k->reused = true;
		}
		job_finish(j, &r);
		return;
	}
}

/* write_cb - the output drained below the low-water mark: refill. */
static void write_cb(struct bufferevent *bev, void *arg)
{
	struct clamd_conn *k = arg;
	if (k->st == CONN_BUSY && k->job && !k->job->sent_all && fill(k) < 0)
		job_fail(k->job, "spool_read");
}

/* event_cb - connected, or the connection failed / closed. */
static void event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct clamd_conn *k = arg;
	if (what & BEV_EVENT_CONNECTED) {
		evbuffer_add(bufferevent_get_output(bev), "zIDSESSION", 11);
		if (k->job)
			conn_start_job(k);
		else
			k->st = CONN_IDLE;
		return;
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		int e = EVUTIL_SOCKET_ERROR();
		if (what & BEV_EVENT_ERROR)
			util_log_warn("clamd socket=%s error=\"%s\"", k->addr,
			              evutil_socket_error_to_string(e));
		else if (k->job)
			util_log_warn("clamd socket=%s error=\"connection closed\"", k->addr);
		conn_lost(k, k->st == CONN_CONNECTING ? "unavailable" : "connection_lost");
	}
}

/* conn_new - open a connection for job j.  NULL when it failed at once. */
static struct clamd_conn *conn_new(struct scan_clamd *c, struct clamd_job *j)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	const char *a = j->addr;
	memset(&ss, 0, sizeof(ss));
	if (strncmp(a, "unix:", 5) == 0)
		a += 5;
	if (a[0] == '/') {
		struct sockaddr_un *un = (struct sockaddr_un *)&ss;
		un->sun_family = AF_UNIX;
		if (strlen(a) >= sizeof(un->sun_path))
			return NULL;
		strcpy(un->sun_path, a);
		sl = sizeof(*un);
	} else {
		char host[256], err[128];
		int port = 0;
		struct util_addr ua;
		if (util_hostport_parse(a, 0, host, sizeof(host), &port, err, sizeof(err)) < 0 ||
		    util_addr_parse_numeric(host, port, &ua) < 0)
			return NULL;
		memcpy(&ss, &ua.ss, ua.len);
		sl = ua.len;
	}
	struct bufferevent *bev = bufferevent_socket_new(c->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (!bev)
		return NULL;
	struct clamd_conn *k = util_xcalloc(1, sizeof(*k));
	k->c = c;
	k->bev = bev;
	snprintf(k->addr, sizeof(k->addr), "%s", j->addr);
	k->st = CONN_CONNECTING;
	k->next = c->conns;
	if (c->conns)
		c->conns->prev = k;
	c->conns = k;
	c->nconns++;
	bufferevent_setcb(bev, read_cb, write_cb, event_cb, k);
	bufferevent_setwatermark(bev, EV_WRITE, CLAMD_LOW_WATER, 0);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	k->job = j;
	j->conn = k;
	if (bufferevent_socket_connect(bev, (struct sockaddr *)&ss, (int)sl) < 0) {
		int e = EVUTIL_SOCKET_ERROR();
		util_log_warn("clamd socket=%s error=\"%s\"", k->addr,
		              evutil_socket_error_to_string(e));
		k->job = NULL;
		j->conn = NULL;
		conn_free(k);
		return NULL;
	}
	return k;
}

/* defer_result - deliver r from the loop (never from the caller's stack). */
static void defer_result(struct clamd_job *j, const char *why)
{
	j->has_result = true;
	j->result.status = SCAN_FAILED;
	snprintf(j->result.name, sizeof(j->result.name), "%s", why);
	struct timeval now = {0, 0};
	evtimer_add(j->timer, &now);
}

/* pump - give waiting jobs a connection: an idle one for the same socket,
 * or a new one while under the limit.  Idle connections to a socket no
 * longer configured (reload) are closed. */
static void pump(struct scan_clamd *c)
{
	if (!c)
		return;
	for (struct clamd_job *j = c->jobs; j; j = j->next) {
		if (j->conn || j->has_result)
			continue;
		struct clamd_conn *idle = NULL, *k = c->conns;
		while (k) {
			struct clamd_conn *nx = k->next;
			if (k->st == CONN_IDLE && !k->job) {
				if (strcmp(k->addr, j->addr) == 0) {
					if (!idle)
						idle = k;
				} else {
					conn_free(k);
				}
			}
			k = nx;
		}
		if (idle) {
			idle->job = j;
			j->conn = idle;
			conn_start_job(idle);
			continue;
		}
		if (c->nconns >= (size_t)j->max_conns)
			break; /* FIFO: the oldest waits first */
		if (!conn_new(c, j))
			defer_result(j, "unavailable");
	}
}

/* timer_cb - the deadline passed, or a deferred result is due. */
static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct clamd_job *j = arg;
	if (j->has_result) {
		struct scan_result r = j->result;
		struct clamd_conn *k = j->conn;
		if (k) {
			k->job = NULL;
			j->conn = NULL;
			conn_free(k);
		}
		job_finish(j, &r);
		return;
	}
	if (j->conn)
		util_log_warn("clamd socket=%s error=\"no answer within the deadline\"", j->addr);
	job_fail(j, "timeout");
}

/* scan_clamd_start - see scan.h. */
int scan_clamd_start(struct scan_clamd *c, const struct config *cfg, int fd, int64_t len,
                     scan_done_fn cb, uint64_t cookie, void *arg)
{
	if (!cfg->clamav_socket || strlen(cfg->clamav_socket) >= CLAMD_ADDR_MAX) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	struct clamd_job *j = util_xcalloc(1, sizeof(*j));
	j->c = c;
	j->cb = cb;
	j->arg = arg;
	j->cookie = cookie;
	j->fd = fd;
	j->len = len;
	j->max_conns = cfg->clamav_max_connections > 0 ? cfg->clamav_max_connections : 1;
	snprintf(j->addr, sizeof(j->addr), "%s", cfg->clamav_socket);
	j->timer = evtimer_new(c->base, timer_cb, j);
	if (!j->timer) {
		if (fd >= 0)
			close(fd);
		free(j);
		return -1;
	}
	struct timeval tv = {cfg->clamav_timeout > 0 ? cfg->clamav_timeout : 30, 0};
	evtimer_add(j->timer, &tv);
	j->prev = c->jobs_tail;
	if (c->jobs_tail)
		c->jobs_tail->next = j;
	else
		c->jobs = j;
	c->jobs_tail = j;
	c->njobs++;
	if (fd < 0)
		defer_result(j, "spool_read");
	else
		pump(c);
	return 0;
}

/* scan_clamd_free - see scan.h. */
void scan_clamd_free(struct scan_clamd *c)
{
	if (!c)
		return;
	while (c->conns)
		conn_free(c->conns);
	while (c->jobs)
		job_free(c->jobs);
	free(c);
}
