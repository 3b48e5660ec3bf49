/*
 * gw-httpguard.c - deadlines and a connection cap for an evhttp listener
 * (the metrics endpoint and the report dashboard, issues 15 and 16).
 *
 * evhttp's own timeout is per read: a client that drips one byte (of a
 * request line, a header or a TLS ClientHello) every few seconds renews it
 * forever, and evhttp has no connection limit.  The guard counts each
 * connection from the listener's bevcb (gw_http_guard_track, which takes a
 * reference on the bufferevent), and a timer on the listener's base shuts
 * down the socket of a connection that has not had a request answered
 * within timeout_ms of its accept or of its last answer, and at once of a
 * connection over the cap; evhttp then sees the end and frees it.  A
 * bufferevent evhttp has freed has its callbacks cleared: the next sweep
 * drops our reference ("reaps").  Works the same for plain and TLS
 * bufferevents (the deadline covers the handshake too).
 *
 * Threads: everything runs on the thread of the listener's base.
 * Ownership: the guard owns its timer, its list and one reference per
 * tracked bufferevent; free it after evhttp_free().
 * Diagnostics: each connection closed is counted in the metric named at
 * creation ({reason} = request_timeout | max_connections) and logged at
 * info; reaching the cap is logged once at warn until it is halved.
 */
#include "gw.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>

struct guard_conn {
	struct bufferevent *bev;
	int64_t since_ms; /* accepted, or last request answered */
	bool over_cap;    /* one connection too many: close at once */
	bool shut;        /* shutdown() done, waiting for evhttp to free it */
	struct guard_conn *next;
};

struct gw_http_guard {
	const char *name;   /* "metrics", "admin" (log lines) */
	const char *metric; /* counter of the connections closed */
	struct guard_conn *conns;
	size_t nconns; /* connections evhttp still has */
	struct event *sweep;
	int timeout_ms;
	size_t max_conns;
	bool capped; /* the cap was reached and logged */
};

/* guard_reap - forget the connections evhttp has freed (bufferevent_free
 * cleared their callbacks) and drop our reference. */
static void guard_reap(struct gw_http_guard *g)
{
	struct guard_conn **pp = &g->conns;

	while (*pp) {
		struct guard_conn *c = *pp;
		bufferevent_data_cb rcb = NULL;
		bufferevent_event_cb ecb = NULL;

		bufferevent_getcb(c->bev, &rcb, NULL, &ecb, NULL);
		if (rcb == NULL && ecb == NULL) {
			*pp = c->next;
			bufferevent_decref(c->bev);
			free(c);
			g->nconns--;
		} else {
			pp = &c->next;
		}
	}
	if (g->nconns < g->max_conns / 2)
		g->capped = false;
}

/* guard_sweep_cb - reap; shut down the connections past their deadline or
 * over the cap. */
static void guard_sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	struct gw_http_guard *g = arg;
	int64_t now = util_mono_ms();

	(void)fd;
	(void)what;
	guard_reap(g);
	for (struct guard_conn *c = g->conns; c; c = c->next) {
		if (c->shut || (!c->over_cap && now - c->since_ms < g->timeout_ms))
			continue;
		const char *why = c->over_cap ? "max_connections" : "request_timeout";
		evutil_socket_t s = bufferevent_getfd(c->bev);

		util_metrics_inc(g->metric, why);
		util_log_info("- %s connection closed reason=%s", g->name, why);
		if (s >= 0)
			shutdown(s, SHUT_RDWR);
		c->shut = true;
	}
}

/* gw_http_guard_new - see gw.h. */
struct gw_http_guard *gw_http_guard_new(struct event_base *base, const char *name,
                                        const char *metric, int timeout_ms, size_t max_conns)
{
	struct gw_http_guard *g = util_xcalloc(1, sizeof(*g));
	struct timeval tick = {1, 0};

	g->name = name;
	g->metric = metric;
	g->timeout_ms = timeout_ms;
	g->max_conns = max_conns;
	g->sweep = event_new(base, -1, EV_PERSIST, guard_sweep_cb, g);
	if (g->sweep == NULL || event_add(g->sweep, &tick) < 0) {
		gw_http_guard_free(g);
		return NULL;
	}
	return g;
}

/* gw_http_guard_track - see gw.h. */
struct bufferevent *gw_http_guard_track(struct gw_http_guard *g, struct bufferevent *bev)
{
	if (bev == NULL)
		return NULL;
	guard_reap(g);
	struct guard_conn *c = util_xcalloc(1, sizeof(*c));
	bufferevent_incref(bev);
	c->bev = bev;
	c->since_ms = util_mono_ms();
	c->over_cap = g->nconns >= g->max_conns;
	c->next = g->conns;
	g->conns = c;
	g->nconns++;
	if (c->over_cap) {
		if (!g->capped)
			util_log_warn("- %s: %zu connections open, the most allowed: further ones "
			              "are closed at once",
			              g->name, g->max_conns);
		g->capped = true;
		event_active(g->sweep, EV_TIMEOUT, 0); /* after evhttp has set its fd */
	}
	return bev;
}

/* gw_http_guard_answered - see gw.h. */
void gw_http_guard_answered(struct gw_http_guard *g, struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;

	for (struct guard_conn *c = g->conns; c && bev; c = c->next)
		if (c->bev == bev)
			c->since_ms = util_mono_ms();
}

/* gw_http_guard_free - see gw.h. */
void gw_http_guard_free(struct gw_http_guard *g)
{
	if (g == NULL)
		return;
	while (g->conns) {
		struct guard_conn *c = g->conns;
		g->conns = c->next;
		bufferevent_decref(c->bev);
		free(c);
	}
	if (g->sweep)
		event_free(g->sweep);
	free(g);
}
