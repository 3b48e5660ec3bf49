/*
 * smtp-server-internal.h - what smtp-server.c (listeners, limits, TLS
 * context, session registry), smtp-session.c (the command state machine) and
 * smtp-session-data.c (DATA into the spool, verdict, commit) share.
 */
#ifndef MX_SMTP_SERVER_INTERNAL_H
#define MX_SMTP_SERVER_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

#include "scan.h"
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
	SMTP_WAIT_SCAN,          /* end of DATA waits for the virus scan (scan/) */
	SMTP_WAIT_COMMIT,        /* end of DATA waits for the durable commit */
	SMTP_WAIT_DNSBL,         /* RCPT waits for the DNSBL lookups */
	SMTP_WAIT_GREET,         /* the banner is held (greet_holds) */
	SMTP_WAIT_STATE,         /* MAIL/RCPT waits for the shared rate counts ([state]) */
	SMTP_WAIT_GREYLIST,      /* end of DATA waits for the shared greylist ([state]) */
};

/* Why the banner is held (struct smtp_session greet_holds). */
enum {
	SMTP_HOLD_DNSBL = 1 << 0,  /* [dnsbl] decide_at = connect: lookups running */
	SMTP_HOLD_DELAY = 1 << 1,  /* [pregreet] greet_delay running */
	SMTP_HOLD_STATE = 1 << 2,  /* connection rates asked of the shared store ([state]) */
};

/* The rate-limit answer for the command in progress (smtp-ratelimit.c). */
enum smtp_rl_ans {
	SMTP_RL_NONE = 0,          /* not asked yet (reset for each new command line) */
	SMTP_RL_PENDING,           /* asked of the shared store */
	SMTP_RL_PASS,
	SMTP_RL_OVER,              /* over a rate: the reply is in rl_line */
};

/* Where the session's DNSBL lookups are (smtp-dnsbl.c). */
enum smtp_dnsbl_state { SMTP_DNSBL_NONE = 0, SMTP_DNSBL_PENDING, SMTP_DNSBL_DONE };

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

struct smtp_pass;   /* a pregreet pass-cache entry (smtp-pregreet.c) */

/* A reverse-DNS lookup in flight (PTR, then forward confirmation). */
struct smtp_rdns {
	struct smtp_server *srv;
	uint64_t sid;                    /* the session it is for */
	struct util_addr client;
	char name[256];
	struct smtp_rdns *next, *prev;
};

struct smtp_session;

/* Rate-limit counters (smtp-ratelimit.c): an interface so a shared store
 * (Redis/Valkey for a fleet) can replace the in-process one. */
struct smtp_rl_store;
struct smtp_redis;
struct smtp_rl_store_ops {
	const char *name;                /* "memory" - for logs and metrics */
	/* hit - add by (>= 0) to key at now (wall-clock seconds); returns the
	 * count since key's window began (a window starts at the first hit and
	 * lasts window seconds: INCRBY, then EXPIRE when new) with the seconds
	 * left in it in *left; by 0 only reads it (0, left 0 for a key not
	 * counted yet: nothing is created); -1 when the store cannot count
	 * (the caller lets the event through). */
	int64_t (*hit)(struct smtp_rl_store *st, const char *key, int64_t window, int64_t by,
		       int64_t now, int64_t *left);
	void (*free)(struct smtp_rl_store *st);
};
struct smtp_rl_store {
	const struct smtp_rl_store_ops *ops;
};

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
	struct reports_ingest *ingest;   /* borrowed; NULL = reports mailed to us not parsed */
	struct reports_failure *failrep; /* borrowed; NULL = no failure reports (RFC 9991) */
	struct policy_dns *dns;          /* borrowed; NULL = no reverse DNS */
	struct smtp_rdns *rdns;          /* owned; lookups in flight */
	struct smtp_verifier *verifier;  /* owned; recipient verification (callout) */
	struct policy_dnsbl *dnsbl;      /* owned; DNSBL lookups and their cache; NULL w/o dns */
	struct smtp_rl_store *rl;        /* owned; rate-limit counters */
	struct smtp_redis *redis;        /* owned; [state] redis, or NULL (in-process) */
	struct smtp_greylist *greylist;  /* owned; triplets and allowlisted networks */
	struct scan_clamd *clamd;        /* owned; clamd connection pool (scan/) */
	struct scan_rspamd *rspamd;      /* owned; rspamd connection pool (scan/) */
	struct util_pool *content_pool;  /* owned; content workers ([server] content_workers) */
	SSL_CTX *tls;                    /* owned; NULL when no certificate */
	struct smtp_listener *listeners; /* owned */
	struct smtp_session *sessions[SMTP_HASH_BUCKETS]; /* by id */
	struct smtp_ipcount *ipcounts[SMTP_HASH_BUCKETS];
	struct util_ttlmap *passes;      /* owned; pregreet pass cache (smtp-pregreet.c) */
	char *pass_file;                 /* owned; [pregreet] pass_cache_file at start, or NULL */
	size_t nsessions;
	bool accepting;
	bool stress;                     /* stress mode (smtp-defence.c) */
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
	struct util_strlist rl_domains;  /* recipient domains this message was checked for
	                                    ([ratelimit] messages_per_domain, once each) */
	bool rl_sender_counted;          /* checked for its sender (messages_per_sender) */
	struct queue_spool *spool;       /* owned; NULL until DATA */
	struct smtp_data_parser dp;
	struct smtp_hdrsplit hs;         /* header/body split (smtp-hdrsplit.c) */
	bool body_started;               /* the first body byte was written */
	int64_t body_off;                /* where the body starts in the spool */
	int write_errno;                 /* first spool write error */
	struct policy_msg *pm;           /* owned; NULL without policy */
	char *scan_headers;              /* owned; X-Virus-Scan / X-Spam-* fields to prepend, or NULL */
	int scan_stage;                  /* next inspection step (smtp-session-scan.c) */
	bool spam_replaced;              /* rspamd's verdict replaces the policy's spam headers */
	bool own_flag;                   /* one of mxgate's own verdicts (DMARC quarantine, DNSBL,
	                                    score, virus, attachment) tagged or quarantined the
	                                    message: X-Spam-Flag YES whatever rspamd says */
	char *subject;                   /* owned; the Subject fields (raw, in order), held back from
	                                    the spool when they may be tagged (smtp-session-scan.c),
	                                    or NULL */
	bool subject_held;               /* tx->subject was held (it goes into the prepend) */
	bool subject_tag;                /* put [rspamd] subject_tag on it (any verdict's tag) */
	bool score_deferred;             /* mxgate's score verdict waits for rspamd: acted on
	                                    only when rspamd cannot be asked */
	bool warn_subject;               /* put [warning] subject_tag on it (smtp-session-warn.c) */
	const char *warn_why;            /* static; "external"/"failing" when warned, or NULL */
	bool from_seen;                  /* the first From field was looked at */
	char from_domain[256];           /* its address's domain, lower case ("" = none) */
	char *quarantine;                /* owned; why the message is quarantined ("virus",
	                                    "spam", "policy", "attachment"), or NULL: committed
	                                    into the queue's quarantine/, not delivered */
	char *quarantine_verdict;        /* owned; the verdict in words, for the envelope
	                                    ("virus=NAME", ...), or NULL */
	int64_t data_start_ms;
	char message_id[200];            /* first Message-ID field, for the log ("" = none) */
	char *ingest_rcpt;               /* owned; a report address among rcpts (issue 15), or NULL */
	struct queue_pin *ingest_pin;    /* owned; pinned read descriptor of the spool (queue.h),
	                                    set with ingest_rcpt */
	struct util_buf fr_hdrs;         /* the header block as received, for a failure report
	                                    (RFC 9991; only when srv->failrep), at most 64 KiB */
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
	bool netcounted;                 /* holds a network slot there too */
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
	int junk;                        /* NOOP/RSET/VRFY/HELP since the last queued message */
	int transactions;                /* MAIL commands accepted */
	bool expired;                    /* max_session_time passed mid-transaction */
	bool stress_timeout;             /* the stress command timeout is armed */
	struct event *life_ev;           /* owned; max_session_time (smtp-defence.c) */
	bool greeted;                    /* the 220 banner was sent */
	int greet_holds;                 /* SMTP_HOLD_* still holding the banner */
	enum smtp_rl_ans rl_ans;         /* rate-limit answer for this command line */
	char rl_line[400];               /* its 421/451 when SMTP_RL_OVER */
	bool pregreet;                   /* the pregreet tests apply (not pass-cached) */
	bool cont_sent;                  /* the "220-" continuation line went out */
	bool passed;                     /* passed the pregreet tests (cached) */
	struct event *greet_ev;          /* owned; greet_delay timer */
	enum smtp_dnsbl_state dnsbl_state;
	int dnsbl_score;                 /* weighted [dnsbl] score */
	bool dnswl;                      /* a negative-weight site lists the client */
	char dnsbl_blocked_by[254];      /* the listing site named in a 554 */
	struct util_strlist dnsbl_zones; /* owned; zones for the spam score */
	char *pending_line;              /* RCPT line suspended on SPF or a probe; owned */
	char verify_addr[SMTP_MAX_PATH + 1]; /* the RCPT address a probe answers */
	enum smtp_verify_result verify_result; /* its answer; PENDING = none yet */
	struct smtp_tx *tx;              /* owned; NULL outside a transaction */
	struct smtp_job *content_job;    /* borrowed; queued or running, until its done */
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
 * per-IP limit is reached, -2 when [ratelimit] max_connections_per_net is
 * (not counted then). */
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
/* smtp_session_reply_error - an error reply that counts toward max_errors. */
void smtp_session_reply_error(struct smtp_session *s, const char *line);
/* smtp_cmd_mail, smtp_cmd_rcpt - MAIL FROM and RCPT TO (smtp-session-env.c);
 * line is the command line as received (for a command run again after a
 * wait). */
void smtp_cmd_mail(struct smtp_session *s, const struct smtp_cmd *c, const char *line);
void smtp_cmd_rcpt(struct smtp_session *s, const struct smtp_cmd *c, const char *line);
/* smtp_session_verify_done - the verifier's callback (arg = the server). */
void smtp_session_verify_done(void *arg, uint64_t sid, const char *addr,
                              enum smtp_verify_result r);
void smtp_tx_free(struct smtp_tx *tx);
void smtp_session_set_timeout(struct smtp_session *s, int seconds);

/* smtp-defence.c - sessions that hold slots without sending mail */
/* smtp_defence_start - arm the session's lifetime timer (0, -1 out of memory). */
int smtp_defence_start(struct smtp_session *s);
/* smtp_defence_end - free what smtp_defence_start armed (teardown). */
void smtp_defence_end(struct smtp_session *s);
/* smtp_defence_command_timeout - (re)arm the idle timeout between commands:
 * command_timeout, or stress_command_timeout in stress mode. */
void smtp_defence_command_timeout(struct smtp_session *s);
/* smtp_defence_data_timeout - (re)arm the timeout between two reads of a
 * message: data_timeout, at most stress_command_timeout in stress mode. */
void smtp_defence_data_timeout(struct smtp_session *s);
/* smtp_defence_junk - count a NOOP/RSET/VRFY/HELP; true when that was one
 * too many (421 queued, session closing: do not answer the command). */
bool smtp_defence_junk(struct smtp_session *s);
/* smtp_defence_new_tx - a MAIL command; true when the session is over
 * max_transactions (421 queued, session closing). */
bool smtp_defence_new_tx(struct smtp_session *s);
/* smtp_defence_expired - max_session_time passed during a transaction; true
 * when it did (421 queued, session closing).  Called before each command. */
bool smtp_defence_expired(struct smtp_session *s);
/* smtp_defence_queued - a message was queued: the junk count starts again. */
void smtp_defence_queued(struct smtp_session *s);
/* smtp_defence_stress_update - after the session count changed: enter or
 * leave stress mode (logged, counted; idle sessions get the short timeout). */
void smtp_defence_stress_update(struct smtp_server *srv);

/* smtp-dnsbl.c - DNSBL/DNSWL decisions */
/* smtp_dnsbl_start - at accept; true when the banner must wait. */
bool smtp_dnsbl_start(struct smtp_session *s);
/* smtp_dnsbl_rcpt_wait - RCPT must wait for lookups still running. */
bool smtp_dnsbl_rcpt_wait(const struct smtp_session *s);
/* smtp_dnsbl_rejects - the score reached [dnsbl] reject_threshold. */
bool smtp_dnsbl_rejects(const struct smtp_session *s);
/* smtp_dnsbl_reply - "554 5.7.1 Service unavailable; client [IP] blocked
 * using ZONE" into buf (returned). */
const char *smtp_dnsbl_reply(const struct smtp_session *s, char *buf, size_t len);
/* smtp_dnsbl_refuse - 554 and close (the banner waited for the lookups). */
void smtp_dnsbl_refuse(struct smtp_session *s);
/* smtp_dnsbl_to_policy - hand the listing zones to the transaction's score. */
void smtp_dnsbl_to_policy(struct smtp_session *s);
/* smtp_session_banner - the 220 greeting (once). */
void smtp_session_banner(struct smtp_session *s);
/* smtp_session_greet_release - hold (SMTP_HOLD_*) is over: refuse a client
 * the DNSBL blocks, send "220-" while the delay still runs, or the banner
 * when nothing holds it any more. */
void smtp_session_greet_release(struct smtp_session *s, int hold);

/* smtp-pregreet.c - postscreen-style tests and the pass cache */
void smtp_server_ip_key(const struct util_addr *a, uint8_t key[17]);
size_t smtp_server_ip_hash(const uint8_t key[17]);
/* smtp_pregreet_start - at accept; SMTP_HOLD_DELAY when the banner waits. */
int smtp_pregreet_start(struct smtp_session *s);
void smtp_pregreet_continuation(struct smtp_session *s);
void smtp_pregreet_end(struct smtp_session *s);
/* smtp_pregreet_early - input while the banner is held: true = refused. */
bool smtp_pregreet_early(struct smtp_session *s, struct evbuffer *in);
/* smtp_pregreet_line - a command line before dispatch: true = refused. */
bool smtp_pregreet_line(struct smtp_session *s, const char *line, size_t len, struct evbuffer *in);
/* smtp_pregreet_passed - a's pass is live at now (wall-clock seconds);
 * smtp_pregreet_pass_add - a passed at now: remembered for cfg's pass_ttl. */
bool smtp_pregreet_passed(struct smtp_server *srv, const struct util_addr *a, int64_t now);
void smtp_pregreet_pass_add(struct smtp_server *srv, const struct config *cfg,
			    const struct util_addr *a, int64_t now);
/* smtp_pregreet_free - save the pass cache ([pregreet] pass_cache_file),
 * then free it. */
void smtp_pregreet_free(struct smtp_server *srv);
/* smtp_pregreet_load - read the pass cache file (start-up); a missing file
 * is an empty cache. */
void smtp_pregreet_load(struct smtp_server *srv);
/* smtp_pregreet_cache_parse - the pass-cache file image: calls take(arg,
 * key, expires) for every well-formed "EXPIRES ADDRESS" line after the
 * "mxgate-pregreet-pass 1" first line (nothing without it); bad lines are
 * skipped.  Returns the number of entries taken (at most max). */
size_t smtp_pregreet_cache_parse(const char *text, size_t len, size_t max,
				 void (*take)(void *arg, const uint8_t key[17], int64_t expires),
				 void *arg);

/* smtp-ratelimit.c */
struct smtp_rl_store *smtp_rl_memory_new(size_t max_keys);
void smtp_rl_store_free(struct smtp_rl_store *st);
/* smtp_rl_net_key - the slot key of the client's network (/24, /64). */
void smtp_rl_net_key(const struct config *cfg, const struct util_addr *a, uint8_t key[17]);
/* smtp_rl_connect - true with a 421 in reply when over a connection rate;
 * false with s->rl_ans == SMTP_RL_PENDING when the banner must wait. */
bool smtp_rl_connect(struct smtp_session *s, char *reply, size_t replylen);
/* smtp_rl_mail / smtp_rl_rcpt - true when answered (451 queued: over a
 * rate) or suspended for the shared store (SMTP_WAIT_STATE, line kept). */
bool smtp_rl_mail(struct smtp_session *s, const char *sender, const char *line);
bool smtp_rl_rcpt(struct smtp_session *s, const char *addr, const char *line);
/* smtp_rl_accepted - the message was accepted (250 after DATA): count it
 * for messages_per_sender and messages_per_domain. */
void smtp_rl_accepted(struct smtp_session *s);
/* smtp_rl_wants_spf - RCPT waits for SPF before it is counted: a
 * per-sender limit is shared only by a sender SPF passed for. */
bool smtp_rl_wants_spf(const struct smtp_session *s);

/* smtp_rl_net_str - "192.0.2.0/24" of the session's client;
 * smtp_rl_net_format - the same for any address. */
void smtp_rl_net_str(const struct smtp_session *s, char *out, size_t len);
void smtp_rl_net_format(const struct config *cfg, const struct util_addr *a, char *out,
			size_t len);

/* smtp-greylist.c */
struct smtp_greylist;
struct smtp_greylist *smtp_greylist_new(size_t max);
void smtp_greylist_free(struct smtp_greylist *g);
/* smtp_greylist_decide - the in-process decision at now: the seconds to
 * wait (0: passes), result[i] "new"/"early"/"retried"/NULL per recipient,
 * *allowlisted when the network skipped it (smtp_greylist_check logs). */
int64_t smtp_greylist_decide(struct smtp_greylist *g, const struct config *cfg, const char *net,
			     const char *sender, const struct util_strlist *rcpts, int64_t now,
			     const char **result, bool *allowlisted);
/* smtp_greylist_check - end of DATA, the message judged acceptable:
 * SMTP_GREY_LISTED with the 451 in reply, SMTP_GREY_PASS, or
 * SMTP_GREY_PENDING when [state] redis was asked (SMTP_WAIT_GREYLIST; the
 * answer goes to smtp_data_greylisted). */
enum { SMTP_GREY_PASS = 0, SMTP_GREY_LISTED, SMTP_GREY_PENDING };
int smtp_greylist_check(struct smtp_session *s, char *reply, size_t replylen);
/* smtp_data_greylisted - the answer: refuse with reply, or (NULL) go on. */
void smtp_data_greylisted(struct smtp_session *s, const char *reply, bool async);

/* smtp-session-data.c */
/* smtp_data_begin - DATA accepted: open the spool, answer 354. */
void smtp_data_begin(struct smtp_session *s);
/* smtp_data_read - feed buffered input to the DATA parser; returns true when
 * the end of data was reached (the session then waits or replied). */
bool smtp_data_read(struct smtp_session *s, struct evbuffer *in);
/* smtp_data_judge - message complete and clean: rDNS, verdict, commit. */
void smtp_data_judge(struct smtp_session *s);
/* smtp_data_refuse - answer reply for the whole message, log, count reason
 * and end the transaction (the caller resumes the session when async). */
void smtp_data_refuse(struct smtp_session *s, const char *reply, const char *reason);
/* smtp_data_commit - after every content edit: the prepend, our ARC seal
 * when the verdict job left it to the session (smtp_seal_start), then
 * spool + envelope to the queue; 250 when durable.  async as for
 * smtp_scan_start (a refusal then resumes the session). */
void smtp_data_commit(struct smtp_session *s, bool async);
/* smtp_data_commit_prepend - spool + envelope with prepend (owned, taken)
 * to the queue; 250 when durable. */
void smtp_data_commit_prepend(struct smtp_session *s, char *prepend);
/* smtp_data_policy_act - apply the configured action of each of the
 * policy verdict kinds (enum policy_kind bits) that fired: the strongest
 * wins (reject > quarantine > tag > deliver).  -1 when the message was
 * refused (the session is resumed when async), else 0. */
int smtp_data_policy_act(struct smtp_session *s, unsigned kinds, bool async);
/* smtp_data_quarantine - the message is to be quarantined for reason
 * ("virus", ...) with verdict (words, may be NULL); replaces an earlier one. */
void smtp_data_quarantine(struct smtp_session *s, const char *reason, const char *verdict);

/* smtp-session-scan.c */
/* smtp_scan_start - after the policy verdict: the virus scan ([clamav]),
 * then the spam check ([rspamd]), then the commit; each may wait, none
 * blocks.  async: called from a callback (a refusal then resumes). */
void smtp_scan_start(struct smtp_session *s, bool async);
/* smtp_attach_start - the attachment policy ([attachments],
 * smtp-session-attach.c): 0 when a check was started (the session waits in
 * SMTP_WAIT_SCAN and smtp_scan_continue() follows) or the message was
 * refused (content workers busy: 451), -1 when there is none to do (off,
 * too large, could not start).  async as for smtp_scan_start. */
int smtp_attach_start(struct smtp_session *s, bool async);
/* smtp_scan_continue - from a completion: the next inspection step. */
void smtp_scan_continue(struct smtp_session *s);
/* Content jobs (attachment policy, warning banner, ARC seal) run on the
 * server's bounded pool of content workers (srv->content_pool, util_pool).
 * Every job struct starts with this header, so the pool can free jobs
 * whose completion never ran (shutdown), and a session that goes away
 * can call its job off (smtp_content_abandon). */
struct smtp_job {
	void (*free)(void *job); /* releases the whole job */
	atomic_bool cancelled;   /* the session is gone: work may stop early */
	/* set by smtp_content_submit: */
	struct smtp_server *srv;
	uint64_t sid;            /* the session that waits for it */
	util_pool_fn done;       /* the job's own completion */
};
/* smtp_content_submit - queue job for s (work on a worker, done on the
 * loop, which finds the session by id; s->content_job names the job until
 * then); 0, or -1 when the queue is full. */
int smtp_content_submit(struct smtp_session *s, util_pool_fn work, util_pool_fn done,
                        struct smtp_job *job);
/* smtp_content_abandon - session teardown: its content job, if any, is
 * called off - taken from the queue unrun, or told to stop (job->cancelled)
 * if a worker has it; its completion still comes (and finds no session). */
void smtp_content_abandon(struct smtp_session *s);
/* smtp_content_busy - the content queue is full: 451 4.3.2 for the whole
 * message (nothing queued, the client retries), logged and counted
 * (mxgate_messages_rejected_total{reason="content_busy"}); resumes the
 * session when async. */
void smtp_content_busy(struct smtp_session *s, const char *what, bool async);
/* smtp_warn_start - after the inspections: the external-sender warning
 * ([warning], smtp-session-warn.c; the body rewrite runs on a thread), then
 * the commit.  async as for smtp_scan_start. */
void smtp_warn_start(struct smtp_session *s, bool async);
/* smtp_scan_may_edit - can this config edit a message after the verdict
 * (banner, subject tags)?  Then the ARC seal waits for the final message
 * (policy_msg_seal_later). */
bool smtp_scan_may_edit(const struct config *cfg);
/* smtp_seal_start - our ARC set over the message as it will be delivered
 * (prepend: what goes in front of the spool, owned and taken; the set is
 * put at arc_at), computed on a content worker (smtp-session-seal.c),
 * then smtp_data_commit_prepend.  Takes ps.  Content queue full: 451 4.3.2
 * (smtp_content_busy, async as there). */
void smtp_seal_start(struct smtp_session *s, struct policy_seal *ps, char *prepend,
                     size_t arc_at, bool async);
/* smtp_scan_hold_subject - split-time hook: true when field f is the
 * Subject and must be held back from the spool (it may be tagged). */
bool smtp_scan_hold_subject(struct smtp_session *s, const struct util_hdr_field *f);
/* smtp_scan_subject - append the held Subject, tagged when decided. */
void smtp_scan_subject(struct smtp_session *s, struct util_buf *b);
/* smtp_scan_policy_headers - append the policy's header fields (headers,
 * or NULL: none), without its spam headers when rspamd's verdict replaces
 * them; flagged (YES) when tx->own_flag. */
void smtp_scan_policy_headers(struct smtp_session *s, struct util_buf *b, const char *headers);

#endif
