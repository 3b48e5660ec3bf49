/*
 * smtp.h - the SMTP server (ESMTP receiver: sessions, STARTTLS, PROXY,
 * access control, DATA into the queue) and the SMTP deliverer (client side:
 * relays queued mail to the downstream routes).
 *
 * Threads: loop thread only.  Ownership: *_free() frees what *_new() made;
 * configs, stores and policy contexts passed in are borrowed.
 */
#ifndef MX_SMTP_H
#define MX_SMTP_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>

#include "config.h"
#include "policy.h"
#include "queue.h"
#include "reports.h"

/* ------------------------------------------------------------ server */

struct smtp_server;

/* smtp_server_new - policy may be NULL (no SPF/DKIM/DMARC); dns (for the
 * client's forward-confirmed reverse DNS name) may be NULL.  Binds every
 * [server] listen address; NULL + message in err on failure. */
struct smtp_server *smtp_server_new(struct event_base *base, const struct config *cfg,
				    struct queue_store *qs, struct policy_ctx *policy,
				    struct policy_dns *dns, char *err, size_t errlen);
/* smtp_server_reload - new sessions use cfg/policy (borrowed); sessions
 * that started earlier keep theirs: each config/policy pair is counted by
 * the sessions using it, and when the last session of a replaced pair ends
 * the retire callback gets it (below).
 * listeners are added/removed to match cfg; the TLS certificate is re-read.
 * 0, or -1 with a message in err (then nothing changed). */
int smtp_server_reload(struct smtp_server *srv, const struct config *cfg,
		       struct policy_ctx *policy, char *err, size_t errlen);
/* smtp_server_tls_ctx_new - a server TLS context from [tls] (cert_file
 * chain, key_file, min_version - never below TLS 1.2 -, ciphers); caller
 * frees with SSL_CTX_free().  NULL with err empty when no cert_file is set,
 * NULL with a message in err when the files do not load. */
struct ssl_ctx_st *smtp_server_tls_ctx_new(const struct config *cfg, char *err, size_t errlen);
/* smtp_server_retire_fn - a config/policy pair (policy may be NULL) that a
 * reload replaced and that no session uses any more; from then on the
 * callee owns both.  Called from a deferred event on the loop, never inside
 * a session callback; from smtp_server_free() for pairs still waiting.
 * Without a callback the server forgets such pairs (the caller keeps them). */
typedef void (*smtp_server_retire_fn)(void *arg, const struct config *cfg,
				      struct policy_ctx *policy);
void smtp_server_set_retire(struct smtp_server *srv, smtp_server_retire_fn fn, void *arg);
/* smtp_server_set_reports - every DMARC verdict from now on is recorded in
 * rs (borrowed; NULL = none); the caller frees rs after the server. */
void smtp_server_set_reports(struct smtp_server *srv, struct reports_store *rs);
/* smtp_server_set_ingest - messages to report addresses are handed to ri
 * once durable (borrowed; NULL = none; freed by the caller after the server). */
void smtp_server_set_ingest(struct smtp_server *srv, struct reports_ingest *ri);
/* smtp_server_set_failure - DMARC failure reports (RFC 9991): the header
 * blocks are kept until the verdict and failing messages submitted. */
void smtp_server_set_failure(struct smtp_server *srv, struct reports_failure *fr);
/* smtp_server_generations - config/policy pairs the server still holds
 * (the current one + replaced ones some session still uses). */
size_t smtp_server_generations(const struct smtp_server *srv);
/* smtp_server_stop_accepting - close the listeners (SIGTERM). */
void smtp_server_stop_accepting(struct smtp_server *srv);
/* smtp_server_shutdown_sessions - 421 to sessions not in DATA and not
 * waiting for a verdict or commit (those finish their transaction first). */
void smtp_server_shutdown_sessions(struct smtp_server *srv);
size_t smtp_server_session_count(const struct smtp_server *srv);
void smtp_server_free(struct smtp_server *srv);

/* ------------------------------------------------------------ deliverer */

struct smtp_deliverer;

/* smtp_deliverer_new - dns resolves route host names and MX (borrowed). */
struct smtp_deliverer *smtp_deliverer_new(struct event_base *base, const struct config *cfg,
					  struct policy_dns *dns, char *err, size_t errlen);
void smtp_deliverer_set_config(struct smtp_deliverer *d, const struct config *cfg);
/* smtp_deliverer_forget_dead - every destination known to be down may be
 * tried again at once (postmaster flush, like Postfix's postqueue -f). */
void smtp_deliverer_forget_dead(struct smtp_deliverer *d);
void smtp_deliverer_free(struct smtp_deliverer *d);
/* The scheduler's view of the deliverer (ctx = the smtp_deliverer). */
extern const struct queue_deliver_ops smtp_deliver_ops;

#endif
