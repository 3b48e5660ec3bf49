/*
 * policy-internal.h - what the files of policy/ share and nobody else sees:
 * the context and message structs, the worker pool, the synchronous DNS
 * query used by the SPF/DKIM/DMARC/DNSBL evaluators, and the pure
 * formatting helpers the unit tests reach.
 *
 * Threads: a struct policy_msg is touched by one thread at a time.  The loop
 * thread owns it except while a job runs on a worker (msg->busy); the SPF job
 * writes only msg->spf, so header/body streaming may continue meanwhile.
 */
#ifndef MX_POLICY_INTERNAL_H
#define MX_POLICY_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"

/* ------------------------------------------------------------ DNS (sync) */

/* One answer of policy_dns_query_sync: rdata of every record (wire format,
 * domain names uncompressed), owned. */
struct policy_dns_answer {
	enum policy_dns_status status;
	bool secure; /* DNSSEC validated */
	bool servfail; /* TEMPFAIL from an answer with RCODE 2 (not a timeout) */
	int ttl;
	size_t n;
	unsigned char **data;
	size_t *len;
};
/* policy_dns_query_sync - worker threads: one query, bounded by the [dns]
 * timeout.  Free the answer with policy_dns_answer_free(). */
void policy_dns_query_sync(struct policy_dns *d, const char *name, int rrtype,
                           struct policy_dns_answer *ans);
void policy_dns_answer_free(struct policy_dns_answer *ans);
int policy_dns_name_from_wire(const unsigned char *p, size_t len, char *out, size_t outlen);
/* policy_dns_name_ok - a name the DNS can hold: labels of 1..63 octets, at
 * most 253 octets (a final dot allowed).  Pure. */
bool policy_dns_name_ok(const char *name);

/* The DNSSEC trust anchor ([dns] trust_anchor_file: auto | none | PATH),
 * policy-dns-anchor.c. */
enum policy_dns_ta { POLICY_DNS_TA_NONE = 0, POLICY_DNS_TA_FILE, POLICY_DNS_TA_AUTR };
struct policy_dns_anchor {
	enum policy_dns_ta mode;
	char *path; /* owned: the file handed to libunbound */
	char *desc; /* owned: "on (...)" / "off (...)" for status and logs */
};
/* policy_dns_anchor_setup - decide; auto seeds QUEUE_DIR/root.key.autr from
 * [dns] root_anchor_file when that is readable and the file is missing.
 * 0, or -1 with err (a release with policy_dns_anchor_clear() either way). */
int policy_dns_anchor_setup(const struct config *cfg, struct policy_dns_anchor *a, char *err,
                            size_t errlen);
void policy_dns_anchor_clear(struct policy_dns_anchor *a);

/* ------------------------------------------------------------ worker pool */

/* policy-pool.c: the policy's rules (busy/freed messages) over util_pool. */
typedef void (*policy_pool_fn)(struct policy_msg *pm);
/* policy_pool_new - nthreads workers, queue bounded to qmax jobs. */
struct util_pool *policy_pool_new(struct event_base *base, int nthreads, size_t qmax, char *err,
                                  size_t errlen);
void policy_pool_free(struct util_pool *p);
/* policy_pool_submit - run work(pm) on a worker (NULL: no work), then
 * done(pm) on the loop thread unless pm was freed meanwhile.  -1 when the
 * queue is full (nothing queued). */
int policy_pool_submit(struct util_pool *p, struct policy_msg *pm, policy_pool_fn work,
                       policy_pool_fn done);
/* policy_pool_cancel - loop thread: pm's job, if still queued, will not run;
 * its completion comes (and frees pm when pm->freed) without the work. */
void policy_pool_cancel(struct util_pool *p, struct policy_msg *pm);

/* ------------------------------------------------------------ results */

enum policy_spf_result {
	POLICY_SPF_NONE = 0,
	POLICY_SPF_NEUTRAL,
	POLICY_SPF_PASS,
	POLICY_SPF_FAIL,
	POLICY_SPF_SOFTFAIL,
	POLICY_SPF_TEMPERROR,
	POLICY_SPF_PERMERROR
};
const char *policy_spf_result_str(enum policy_spf_result r);

struct policy_spf_outcome {
	bool evaluated;
	enum policy_spf_result result;
	bool helo_identity; /* the identity checked is postmaster@HELO */
	char *identity;     /* mailbox checked */
	char *domain;       /* its domain */
	char *comment;      /* human explanation */
	bool secure;        /* every DNS answer used was DNSSEC-secure */
};

/* One DKIM signature outcome (RFC 8601 2.7.1 result words). */
struct policy_dkim_sig {
	const char *result;  /* static: pass fail neutral policy temperror permerror */
	char *d, *s, *i, *b; /* b: first 8 characters (RFC 6008) */
	char *comment;
	bool secure;
};

enum policy_dmarc_result {
	POLICY_DMARC_NONE = 0,
	POLICY_DMARC_PASS,
	POLICY_DMARC_FAIL,
	POLICY_DMARC_TEMPERROR,
	POLICY_DMARC_PERMERROR
};
struct policy_dmarc_outcome {
	bool evaluated;
	enum policy_dmarc_result result;
	char policy;         /* 'n' 'q' 'r' or 0: policy.dmarc, the p/sp/np that applies */
	char applied;        /* policy after t=y: 'n' 'q' 'r' */
	bool testing;        /* the record has t=y */
	char *record_domain; /* where the policy record was found (tree walk) */
	char record_p;       /* its p= ('n' 'q' 'r'), 0 when no record was used */
	char *header_from;
	char *org_domain;
	char *comment;
	char *exempt; /* NULL or why enforcement was skipped */
	bool secure;
	bool from_error; /* zero or several From addresses */
	char *from_error_text;
	char *record;        /* the record used, canonical tags (reports, policy-facts.c) */
	char *ruf;           /* its ruf= value (RFC 9991 failure reports), NULL = none */
	unsigned fo;         /* its fo= options, POLICY_DMARC_FO_* */
};

struct policy_ctx {
	const struct config *cfg; /* borrowed */
	struct event_base *base;  /* borrowed */
	struct policy_dns *dns;   /* borrowed */
	struct util_pool *pool; /* owned; policy-pool.c */
	void *dkim_lib;   /* DKIM_LIB * */
	void *arc;        /* struct arc_ctx * (policy-arc.c): the sealing key */
	bool dmarc_ready; /* PSL loaded */
	size_t nmsgs;     /* messages alive (policy_msg_new .. policy_msg_destroy) */
	/* policy_retire: freed from retire_ev once nmsgs is 0, then retire_done */
	struct event *retire_ev;
	void (*retire_done)(void *arg);
	void *retire_arg;
};

/* From: header facts gathered while headers stream. */
struct policy_from {
	int fields;   /* number of From: header fields */
	int addrs;    /* number of addresses over all of them */
	bool bad;     /* a From: field did not parse */
	char *domain; /* domain of the (first) address, lower-case */
};

struct policy_msg {
	struct policy_ctx *pc;
	struct util_addr client;
	char *helo;
	char *mail_from;
	/* the MAIL FROM domain with U-labels as A-labels (RFC 8616 4), for
	 * the report store; "" for the null sender or one that does not
	 * convert */
	char *mail_domain;

	/* loop-thread state */
	bool busy, freed;
	policy_pool_fn pool_work, pool_done; /* the job in flight (policy-pool.c) */
	bool spf_started, spf_done, finish_pending, finished;
	policy_cb spf_cb, fin_cb;
	uint64_t spf_cookie, fin_cookie;
	void *spf_arg, *fin_arg;
	bool queue_full;

	struct policy_spf_outcome spf;
	char *spf_reply;

	/* DKIM */
	void *dkim; /* DKIM * (fed on the worker, policy_dkim_eval) */
	bool dkim_nosig, dkim_broken;
	/* The header fields saved for the worker (raw, with CRLF), the
	 * DKIM-Signature fields among them capped at dkim_max_signatures:
	 * libopendkim never sees a field on the loop thread.  Freed once fed. */
	struct util_buf dkim_hdrs;
	int dkim_sigs_kept, dkim_sigs_skipped;
	int dkim_fields;    /* saved fields other than DKIM-Signature */
	bool dkim_too_many; /* over DKIM_MAX_FIELDS: signatures named, not verified */
	int body_fd;      /* policy_msg_body_fd: the body, read by the worker; -1 */
	int64_t body_off, body_end; /* the body is [body_off, body_end) of body_fd */
	int body_err;     /* errno of a failed read of body_fd, 0 */
	struct policy_dkim_sig *sigs;
	size_t nsigs;
	void *keys; /* struct dkim_keys *, worker only */
	void *strict; /* struct dkim_strict * (policy-dkim.c), worker only */

	struct policy_from from;
	struct policy_dmarc_outcome dmarc;
	void *arc; /* struct arc_msg * (policy-arc.c), NULL when ARC is off */
	bool seal_later; /* policy_msg_seal_later: the verdict job does not seal */
	struct util_strlist dnsbl_hits;
	bool dnsbl_known;   /* dnsbl_hits came from the connect-time lookups */
	bool rdns_checked, no_rdns;

	struct policy_verdict verdict;
	char *v_reply, *v_headers, *v_summary;
};

/* policy_msg_destroy - really free (loop thread, or the pool). */
void policy_msg_destroy(struct policy_msg *pm);

/* per-check entry points (worker thread unless noted) */
void policy_spf_lib_init(void);
void policy_spf_eval(struct policy_msg *pm);
void policy_spf_outcome_free(struct policy_spf_outcome *o);
/* Macro values (RFC 7208 7.2) of one evaluation step, all borrowed; NULL:
 * unknown.  i is the dotted form (IPv6: 32 nibbles). */
struct policy_spf_macro_ctx {
	const char *s, *l, *o, *d, *i, *h, *v;
};
/* policy_spf_check_record - strict RFC 7208 (4.5, 4.6, 12) check of one
 * record of len bytes; 0 and the normalized record for libspf2 in *out
 * (caller frees), or -1 and the reason in err (policy-spf-check.c).  mc
 * (may be NULL) lets the normalization use the macro values. */
int policy_spf_check_record(const char *rec, size_t len, const struct policy_spf_macro_ctx *mc,
                            char **out, char *err, size_t errlen);
/* policy_spf_name_ok - name can be looked up: labels of 1..63 octets,
 * at most 253 octets, at least two labels (a trailing dot is allowed), no
 * octet over 0x7f (RFC 8616 4: U-labels are converted before; a name that
 * still has one came from a UTF-8 local-part in %{s} / %{l}). */
bool policy_spf_name_ok(const char *name);

/* Internationalised domain names (RFC 8616), policy-idn.c; pure, every
 * string returned is new (caller frees). */
bool policy_idn_is_ascii(const char *s);
/* policy_idn_alabels - dom as lower-case A-labels (IDNA2008 with UTS #46
 * non-transitional mapping, NFC; LDH or "_" labels of 1..63 octets, at
 * most 253 octets); NULL if it is not such a domain name. */
char *policy_idn_alabels(const char *dom);
/* policy_idn_lookup_name - the form of an SMTP domain (MAIL FROM, HELO) to
 * look up: an ASCII name as it is (the caller validates it), one with
 * U-labels as policy_idn_alabels() (RFC 8616 4); NULL if that fails. */
char *policy_idn_lookup_name(const char *dom);
/* policy_idn_header_name - name for a header field, ASCII only: as
 * policy_idn_lookup_name(), else with each non-ASCII octet as '?'. */
char *policy_idn_header_name(const char *name);
/* policy_idn_header_addr - local@domain for a header field, ASCII only:
 * the domain by policy_idn_header_name(), a non-ASCII local-part left out
 * ("@domain", RFC 8601 2.2); "" stays "". */
char *policy_idn_header_addr(const char *addr);
/* policy_spf_compute_reply - loop thread: malloc'd reply or NULL. */
char *policy_spf_compute_reply(const struct config *cfg, const struct policy_spf_outcome *o);

int policy_dkim_lib_init(struct policy_ctx *pc, char *err, size_t errlen);
void policy_dkim_lib_free(struct policy_ctx *pc);
int policy_dkim_msg_begin(struct policy_msg *pm);                          /* loop */
void policy_dkim_header(struct policy_msg *pm, const struct util_hdr_field *f); /* loop */
void policy_dkim_eoh(struct policy_msg *pm);                               /* loop */
void policy_dkim_body(struct policy_msg *pm, const char *p, size_t n);     /* loop */
bool policy_dkim_wants_body(const struct policy_msg *pm);                 /* loop */
void policy_dkim_eval(struct policy_msg *pm);                              /* worker */
void policy_dkim_msg_free(struct policy_msg *pm);

/* ------------------------------------------------------------ DKIM, mxgate's layer
 * (policy-dkim-strict.c): pure helpers around libopendkim. */
struct policy_dkim_tag {
	const char *name, *value; /* borrowed from the parsed text */
	size_t name_len, value_len;
};
struct policy_dkim_tags {
	struct policy_dkim_tag *v; /* owned array; free with policy_dkim_tags_free() */
	size_t n;
};
/* policy_dkim_tags_parse - RFC 6376 3.2 tag-list (a DKIM-Signature value or
 * a key record) into out.  0, or -1 with the reason in err: a syntax error
 * (out holds the tags before it) or a repeated tag name (the whole list is
 * invalid; out still holds every tag).  Free out in both cases. */
int policy_dkim_tags_parse(const char *s, size_t len, struct policy_dkim_tags *out, char *err,
                           size_t errlen);
void policy_dkim_tags_free(struct policy_dkim_tags *t);
const struct policy_dkim_tag *policy_dkim_tags_get(const struct policy_dkim_tags *t,
                                                   const char *name);
/* policy_dkim_hlist_count - occurrences of a field name in an h= value. */
int policy_dkim_hlist_count(const char *h, size_t hlen, const char *name);
/* policy_dkim_key_alg_check - 0 when the key record's k= (default rsa) is
 * the key type of a=, else -1 and the reason (RFC 6376 3.6.1). */
int policy_dkim_key_alg_check(const struct policy_dkim_tags *key, const char *a, size_t alen,
                              char *err, size_t errlen);
/* Header fields a message has at most once (RFC 5322 3.6, RFC 2045). */
#define POLICY_DKIM_NSINGLE 14
int policy_dkim_single_use_index(const char *name, size_t len);
const char *policy_dkim_single_use_name(int i);
/* Canonical body lengths (RFC 6376 3.4.3 simple, 3.4.4 relaxed), counted
 * while the body streams; zero-initialise. */
struct policy_dkim_bodylen {
	int64_t simple, relaxed;   /* committed lengths */
	int64_t s_pend, r_pend;    /* empty lines not yet known to be trailing */
	int64_t s_line, r_line;    /* the current line so far */
	bool cr, r_wsp;
};
void policy_dkim_bodylen_feed(struct policy_dkim_bodylen *b, const char *p, size_t n);
void policy_dkim_bodylen_end(struct policy_dkim_bodylen *b, int64_t *simple, int64_t *relaxed);

int policy_dmarc_lib_init(struct policy_ctx *pc, char *err, size_t errlen);
void policy_dmarc_lib_free(struct policy_ctx *pc);
void policy_dmarc_eval(struct policy_msg *pm);
void policy_dmarc_outcome_free(struct policy_dmarc_outcome *o);

/* policy_from_parse - policy-from.c: the mailboxes of one From: field
 * value, a strict RFC 5322 3.6.2 mailbox-list (comments, quoted strings,
 * obsolete forms; no groups); domain of the first mailbox (malloc'd, lower-case, may
 * be UTF-8) into *domain when domain != NULL.  Returns the count, -1 when
 * the value is not such a list. */
int policy_from_parse(const char *value, size_t len, char **domain);

/* policy_dmarc_tag - the value of one tag of a DMARC record, lower-case,
 * into out (at most outlen - 1 bytes); "" when absent.  Pure
 * (policy-facts.c; fuzzed by tests/fuzz/fuzz_dmarc_tags.c). */
void policy_dmarc_tag(const char *rec, const char *name, char *out, size_t outlen);

/* policy_org_domain - organizational domain of name (PSL when loaded, else
 * the last two labels), lower-case, into out.  Any thread. */
void policy_org_domain(const char *name, char *out, size_t outlen);

void policy_dnsbl_eval(struct policy_msg *pm);
/* policy_dnsbl_cache_get - the cached A answer for query name at now_ms
 * (monotonic): its addresses (at most max) into a, their count, or -1 when
 * not cached or expired.  policy_dnsbl_cache_put - remember an answer from
 * now_ms for ttl_ms.  What policy_dnsbl_check reads and its answers store
 * ([dnsbl] cache_ttl), with the time passed in (tests drive it). */
int policy_dnsbl_cache_get(struct policy_dnsbl *b, const char *name, int64_t now_ms,
			   uint8_t (*a)[4], size_t max);
void policy_dnsbl_cache_put(struct policy_dnsbl *b, const char *name, const uint8_t (*a)[4],
			    size_t n, int64_t ttl_ms, int64_t now_ms);

/* verdict */
void policy_verdict_build(struct policy_msg *pm);
void policy_verdict_tempfail(struct policy_msg *pm, const char *reply);
/* policy_score - the spam score and the contributing rules (appended to
 * rules as rule names when rules != NULL). */
double policy_score(const struct config *cfg, const struct policy_msg *pm,
                    struct util_strlist *rules);
/* policy_ar_format - the Authentication-Results field (with CRLF). */
char *policy_ar_format(const struct config *cfg, const struct policy_msg *pm);
char *policy_received_spf_format(const struct config *cfg, const struct policy_msg *pm);

#endif
