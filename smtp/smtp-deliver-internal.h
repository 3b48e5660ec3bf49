/*
 * smtp-deliver-internal.h - the deliverer's pools, connections and jobs,
 * shared by smtp-deliver.c (SMTP routes) and smtp-deliver-dir.c (directory
 * routes).  Not for use outside smtp/.
 *
 * Ownership: the deliverer owns pools; a pool owns its connections and its
 * waiting jobs; a connection owns its SMTP client and the job it carries.
 */
#ifndef MX_SMTP_DELIVER_INTERNAL_H
#define MX_SMTP_DELIVER_INTERNAL_H

#include <pthread.h>

#include "smtp-client-internal.h"
#include "smtp-mtasts.h"
#include "smtp.h"

struct deliver_dir_job;

struct smtp_deliverer {
	struct event_base *base;
	const struct config *cfg; /* borrowed; replaced on reload */
	struct policy_dns *dns;   /* borrowed; NULL = numeric hosts only */
	struct deliver_pool *pools;
	struct event *kick;               /* deferred pump of every pool */
	struct deliver_dir_job *dir_jobs; /* directory writes in flight */
	struct smtp_client **quitting;    /* sent QUIT, not gone yet */
	struct smtp_mtasts *mtasts;       /* MTA-STS policy cache; NULL without dns */
	size_t nquitting;
};

/* One attempt for a group of recipients (the scheduler's queue_delivery). */
struct deliver_job {
	struct smtp_deliverer *dl;
	struct queue_delivery *d;
	const struct queue_envelope *env; /* borrowed until queue_delivery_done */
	const size_t *idx;
	size_t nidx;
	const char *msg_path;
	int64_t started_ms;       /* handed to the deliverer (mono ms) */
	int64_t sent_ms;          /* handed to a ready connection (0: never) */
	double queued_s;          /* arrival to started_ms, seconds */
	char route[64];           /* route name, for logs and metrics (a copy: reloads) */
	struct deliver_job *next; /* pool wait list */
};

/* One outgoing connection (set-up: failing over through the targets). */
struct deliver_conn {
	struct deliver_pool *pool;
	struct smtp_client *cl;  /* NULL once quit/freed */
	struct deliver_job *job; /* message being sent, or NULL */
	struct smtp_client_tx tx;
	unsigned msgs; /* messages carried so far */
	bool ready;    /* set-up done (or given up); false with job set: carrying
	                  a message that failed over (tx.failover) to the next host */
	bool reached;  /* a host of this connection took part in a transaction */
	bool dns_pending, orphan;
	struct event *idle_timer;
	const struct config_host *targets; /* hosts to try (pool's, or owned_targets) */
	struct config_host *owned_targets; /* MX hosts */
	size_t ntargets, target;           /* next target to resolve */
	struct util_addr *addrs;           /* resolved so far, in order */
	char **names;                      /* host name of each address */
	size_t naddrs, next_addr;
	bool plain_retry; /* tls = may: the last address again, without STARTTLS */
	/* tls = dane (RFC 7672): the TLSA records of the target whose addresses
	 * are being tried, and the TLS level they give it */
	bool mx_secure;                /* the MX answer was DNSSEC-validated */
	size_t tlsa_for;               /* target + 1 the TLSA state is for; 0 none */
	enum config_tls_policy host_tls; /* dane (usable TLSA), encrypt, or may */
	struct policy_tlsa *tlsa;      /* owned, data owned too */
	size_t ntlsa;
	struct policy_mtasts *sts;     /* owned copy of the domain's MTA-STS policy, or NULL */
	char *last_error;
	bool permanent; /* last_error is a routing fact (NXDOMAIN, null MX) */
	struct deliver_conn *next;
};

/* Connections to one route (one route + domain for MX routes). */
struct deliver_pool {
	struct smtp_deliverer *dl;
	char *key;    /* "route" or "route/domain" (lower case) */
	char *name;   /* route name */
	char *domain; /* MX routes */
	enum config_route_type type;
	enum config_tls_policy tls;
	struct config_host *hosts; /* copy of the route's hosts */
	size_t nhosts;
	int max_connections, msgs_per_connection;
	int dead_after, dead_time; /* see [route] dead_after / dead_time */
	int failures;              /* consecutive connections that reached no host */
	int64_t dead_until_ms;     /* > 0: down (util_mono_ms) until then, then probed */
	char *dead_error;          /* why it is down */
	int mx_port;  /* MX routes */
	int mta_sts_port;      /* tls = dane: MTA-STS policy server port */
	char *mta_sts_ca_file; /* tls = dane: CAs for MTA-STS, NULL = system */
	SSL_CTX *sts_ctx;      /* tls = dane: verifying context for MTA-STS enforce (lazy) */
	int connect_timeout, greeting_timeout, command_timeout, data_timeout;
	SSL_CTX *ssl_ctx;
	char *auth_user, *auth_password;
	char *setup_error; /* route unusable (bad CA file, auth_file mode) */
	bool retired;      /* replaced by a reload */
	struct deliver_conn *conns;
	int nconns;
	struct deliver_job *wait_head, *wait_tail;
	size_t nwait;
	struct deliver_pool *next;
};

/* smtp_deliver_job_report - per-recipient results (tx may be NULL: then every
 * recipient is deferred with error) to the scheduler, logged; ends the job's
 * delivery (the caller frees j). */
void smtp_deliver_job_report(struct deliver_job *j, const struct smtp_client_tx *tx,
                             const char *relay, const char *tls, const char *error);
void smtp_deliver_free_targets(struct deliver_conn *cn);
/* smtp_deliver_dir_start - write the message into dir on a worker thread;
 * takes j. */
void smtp_deliver_dir_start(struct smtp_deliverer *dl, struct deliver_job *j, const char *dir);
/* smtp_deliver_dir_shutdown - wait for every directory write and report it
 * with error (deliverer free). */
void smtp_deliver_dir_shutdown(struct smtp_deliverer *dl, const char *error);

#endif
