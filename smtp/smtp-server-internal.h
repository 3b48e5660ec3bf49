/*
 * smtp-server-internal.h - what smtp-server.c (listeners, limits, TLS
 * context, session registry), smtp-session.c (the command state machine) and
 * smtp-session-data.c (DATA into the spool, verdict, commit) share.
 */
#ifndef MX_SMTP_SERVER_INTERNAL_H
#define MX_SMTP_SERVER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

#include "smtp-internal.h"
#include "smtp-verify-internal.h"
#include "smtp.h"

/* Session states (STYLE rule 15).  Flags that are not states live apart. */
enum smtp_state {
	SMTP_STATE_PROXY = 0,    /* waiting for the PROXY header of a trusted peer */
	SMTP_STATE_HELO,         /* banner sent; HELO/EHLO needed */
	SMTP_STATE_READY,        /* after HELO/EHLO, no transaction */
	SMTP_STATE_MAIL,         /* MAIL accepted */
	SMTP_STATE_RCPT,         /* at least one RCPT accepted */
	SMTP_STATE_DATA,         /* reading message data */
	SMTP_STATE_TLS,          /* STARTTLS handshake in progress */
	SMTP_STATE_CLOSING,      /* last reply queued; close once flushed */
};

/* Why the session is not reading commands right now. */
enum smtp_wait {
	SMTP_WAIT_NONE = 0,
	SMTP_WAIT_SPF,           /* RCPT waits for the SPF verdict */
	SMTP_WAIT_VERIFY,        /* RCPT waits for the recipient-verification probe */
	SMTP_WAIT_RDNS,          /* end of DATA waits for the client's rDNS name */
	SMTP_WAIT_VERDICT,       /* end of DATA waits for the policy verdict */
	SMTP_WAIT_COMMIT,        /* end of DATA waits for the durable commit */
};

struct smtp_listener {
	struct evconnlistener *lev;
	struct util_addr addr;
	char name[80];           /* "127.0.0.1:2525" */
	bool opened_now;         /* bound by the sync in progress (closed if it fails) */
	struct smtp_listener *next;
};

/* Per-IP connection counter (chained hash). */
struct smtp_ipcount {
	uint8_t key[17];         /* family byte + 16 address bytes */
	int count;
	struct smtp_ipcount *next;
};

#define SMTP_HASH_BUCKETS 4096

/* A reverse-DNS lookup in flight (PTR, then forward confirmation). */
struct smtp_rdns {
	struct smtp_server *srv;
	uint64_t sid;                    /* the session it is for */
	struct util_addr client;
	char name[256];
	struct smtp_rdns *next, *prev;
};

struct smtp_session;

/* A config and its policy context, counted by the sessions that use them
 * (a session keeps the pair it started with across reloads). */
struct smtp_gen {
	const struct config *cfg;        /* borrowed */
	struct policy_ctx *policy;       /* borrowed; NULL = no checks */
	size_t refs;                     /* sessions using the pair */
	struct smtp_gen *next;           /* srv->retired */
};

struct smtp_server {
	struct event_base *base;
	const struct config *cfg;        /* borrowed; for new sessions (= gen->cfg) */
	struct policy_ctx *policy;       /* borrowed; NULL = no checks (= gen->policy) */
	struct smtp_gen *gen;            /* owned; the pair new sessions get */
	struct smtp_gen *retired;        /* owned; replaced pairs still in use */
	struct event *retire_ev;         /* deferred hand-back of unused pairs */
	smtp_server_retire_fn retire_fn;
	void *retire_arg;
	struct queue_store *qs;          /* borrowed */
	struct reports_store *reports;   /* borrowed; NULL = DMARC not recorded */
	struct policy_dns *dns;          /* borrowed; NULL = no reverse DNS */
	struct smtp_rdns *rdns;          /* owned; lookups in flight */
	struct smtp_verifier *verifier;  /* owned; recipient verification (callout) */
	SSL_CTX *tls;                    /* owned; NULL when no certificate */
	struct smtp_listener *listeners; /* owned */
	struct smtp_session *sessions[SMTP_HASH_BUCKETS]; /* by id */
	struct smtp_ipcount *ipcounts[SMTP_HASH_BUCKETS];
	size_t nsessions;
	bool accepting;
	bool accept_paused;              /* listeners disabled: out of descriptors */
	struct event *accept_resume;     /* owned; re-enables them (smtp-server.c) */
};

struct smtp_tx {
	struct smtp_path mail;           /* MAIL FROM with its parameters */
	bool smtputf8;
	bool body_8bitmime;
	struct util_strlist rcpts;
	uint32_t *rcpt_slots;            /* hash index of rcpts (index + 1, 0 = free) */
	size_t rcpt_nslots;              /* 0 or a power of two > 2 x rcpts.n */
	size_t rcpt_bytes;               /* sum of the accepted addresses' lengths */
	struct queue_spool *spool;       /* owned; NULL until DATA */
	struct smtp_data_parser dp;
	struct smtp_hdrsplit hs;         /* header/body split (smtp-hdrsplit.c) */
	bool body_started;               /* the first body byte was written */
	int64_t body_off;                /* where the body starts in the spool */
	int write_errno;                 /* first spool write error */
	struct policy_msg *pm;           /* owned; NULL without policy */
	int64_t data_start_ms;
};

struct smtp_session {
	uint64_t id;
	struct smtp_server *srv;
	const struct config *cfg;        /* the config the session started with (gen->cfg) */
	struct policy_ctx *policy;       /* gen->policy */
	struct smtp_gen *gen;            /* counted reference (smtp_server_gen_get) */
	struct bufferevent *bev;         /* owned (plain, or TLS filter over plain) */
	struct event *free_ev;           /* deferred free (STYLE rule 12) */
	struct util_addr peer;           /* TCP peer */
	struct util_addr client;         /* real client (PROXY header applied) */
	char client_str[INET6_ADDRSTRLEN];
	enum smtp_state state;
	enum smtp_wait wait;
	bool esmtp;
	bool tls_active;
	bool ipcounted;                  /* holds a slot in srv->ipcounts */
	bool discarding;                 /* skipping the rest of an over-long line */
	bool first_line;                 /* no command processed yet */
	bool dead;                       /* peer gone: free without flushing */
	bool peer_eof;                   /* client closed; commands still buffered */
	int64_t close_deadline;          /* monotonic ms; give up flushing then */
	int64_t line_deadline;           /* monotonic ms; the partial command line (or
	                                    PROXY header) must be complete by then;
	                                    0 = none pending (slowloris defence) */
	char helo[256];
	char rdns[256];                  /* forward-confirmed reverse DNS name, or "" */
	bool rdns_pending;               /* lookup in flight */
	char tls_desc[128];              /* "TLSv1.3 TLS_AES_256_GCM_SHA384" */
	int errors;
	char *pending_line;              /* RCPT line suspended on SPF or a probe; owned */
	char verify_addr[SMTP_MAX_PATH + 1]; /* the RCPT address a probe answers */
	enum smtp_verify_result verify_result; /* its answer; PENDING = none yet */
	struct smtp_tx *tx;              /* owned; NULL outside a transaction */
	struct smtp_session *hnext;      /* registry chain */
};

/* smtp-server.c */
struct smtp_session *smtp_server_find(struct smtp_server *srv, uint64_t id);
void smtp_server_register(struct smtp_server *srv, struct smtp_session *s);
void smtp_server_unregister(struct smtp_server *srv, struct smtp_session *s);
/* smtp_server_gen_get - a counted reference to the current config/policy
 * pair for a new session; smtp_server_gen_put gives it back (session
 * teardown) - a replaced pair whose count drops to 0 is handed to the
 * retire callback from a deferred event. */
struct smtp_gen *smtp_server_gen_get(struct smtp_server *srv);
void smtp_server_gen_put(struct smtp_server *srv, struct smtp_gen *g);
/* smtp_server_ip_acquire - count the client's connection; 0, or -1 when the
 * per-IP limit is reached (not counted then). */
int smtp_server_ip_acquire(struct smtp_server *srv, struct smtp_session *s);
void smtp_server_ip_release(struct smtp_server *srv, struct smtp_session *s);

/* smtp_server_rdns_start - look up the session's client name (FCrDNS);
 * the result lands in s->rdns when it arrives, never blocking the session. */
void smtp_server_rdns_start(struct smtp_server *srv, struct smtp_session *s);

/* smtp-session.c */
void smtp_session_start(struct smtp_server *srv, evutil_socket_t fd, const struct sockaddr *sa,
			int salen);
void smtp_session_reply(struct smtp_session *s, const char *fmt, ...) UTIL_PRINTF(2, 3);
/* smtp_session_close - queue the final reply (may be NULL) and free the
 * session once the output is flushed. */
void smtp_session_close(struct smtp_session *s, const char *reply);
/* smtp_session_destroy - free now (server teardown only). */
void smtp_session_destroy(struct smtp_session *s);
/* smtp_session_resume - re-enable reading and process buffered input. */
void smtp_session_resume(struct smtp_session *s);
void smtp_session_count_error(struct smtp_session *s);
/* smtp_session_verify_done - the verifier's callback (arg = the server). */
void smtp_session_verify_done(void *arg, uint64_t sid, const char *addr,
                              enum smtp_verify_result r);
void smtp_tx_free(struct smtp_tx *tx);
void smtp_session_set_timeout(struct smtp_session *s, int seconds);

/* smtp-session-data.c */
/* smtp_data_begin - DATA accepted: open the spool, answer 354. */
void smtp_data_begin(struct smtp_session *s);
/* smtp_data_read - feed buffered input to the DATA parser; returns true when
 * the end of data was reached (the session then waits or replied). */
bool smtp_data_read(struct smtp_session *s, struct evbuffer *in);
/* smtp_data_judge - message complete and clean: rDNS, verdict, commit. */
void smtp_data_judge(struct smtp_session *s);

#endif
