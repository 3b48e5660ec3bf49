/*
 * policy.h - authentication and verdicts at the point of ingress: SPF
 * (libspf2), DKIM (libopendkim), DMARC (libopendmarc), DNSBL and the spam
 * score, plus the Authentication-Results / Received-SPF / spam headers.
 *
 * policy/ knows nothing of SMTP: it takes facts (client address, HELO, MAIL
 * FROM, header fields, body bytes) and returns results; smtp/ turns results
 * into replies and headers.
 *
 * Threads: all functions are called on the event-loop thread.  Everything
 * that can wait (DNS, library calls that do DNS) runs on the policy worker
 * pool; completion callbacks run on the loop thread and carry the caller's
 * 64-bit cookie (a session id), never a raw pointer that may be gone.
 *
 * Ownership: policy_msg_free() may be called while a job is in flight: the
 * message is then freed by the pool when the job ends and the callback is
 * not called.
 */
#ifndef MX_POLICY_H
#define MX_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#include "config.h"
#include "util.h"

struct policy_ctx;
struct policy_msg;

/* ------------------------------------------------------------ resolver */

/* The one DNS resolver of mxgate (libunbound): forwarders "addr[@port]" from
 * [dns] forwarders (full recursion when none), optional DNSSEC validation
 * with [dns] trust_anchor_file (default auto: on where the root anchor is
 * installed, policy-dns-anchor.c), a cache, per-query timeouts.  It makes
 * "test." and "invalid." transparent local zones (libunbound 1.17 ignores
 * `nodefault` given through ub_ctx_set_option: every *.test name stays
 * NXDOMAIN) and sets `do-not-query-localhost: no`, so test zones on
 * 127.0.0.1 work.
 * Loop-side queries use libunbound's async API watched through ub_fd();
 * worker threads may use the synchronous calls, each bounded by [dns]
 * timeout (then TEMPFAIL).  base is required for the async calls.
 * policy_dns_free: pending async queries are dropped without their
 * callback; free every policy context using d first. */
struct policy_dns;
struct policy_dns *policy_dns_new(const struct config *cfg, struct event_base *base,
				  char *err, size_t errlen);
void policy_dns_free(struct policy_dns *d);

enum policy_dns_status { POLICY_DNS_OK = 0, POLICY_DNS_NXDOMAIN, POLICY_DNS_NODATA,
			 POLICY_DNS_TEMPFAIL, POLICY_DNS_BOGUS };
/* Async, loop thread.  cb runs later on the loop thread (never inside the
 * call).  addrs/hosts are borrowed for the duration of the callback. */
typedef void (*policy_dns_addrs_cb)(void *arg, enum policy_dns_status st,
				    const struct util_addr *addrs, size_t n);
void policy_dns_resolve_host(struct policy_dns *d, const char *name, int port,
			     policy_dns_addrs_cb cb, void *arg);
/* A records only (no AAAA, names never parsed as numbers): DNSBL queries. */
void policy_dns_resolve_a(struct policy_dns *d, const char *name, policy_dns_addrs_cb cb,
			  void *arg);
/* MX hosts sorted by preference (RFC 5321 5.1: implicit MX = the domain
 * itself when there is no MX record; "." as the only MX, the null MX of
 * RFC 7505 -> NODATA; MX records none of which names a usable host name ->
 * OK with n == 0, a malformed answer the caller treats as temporary).  secure: the
 * MX answer (or its validated denial, for the implicit MX) was DNSSEC-
 * validated - the precondition of DANE (RFC 7672 2.2.1). */
typedef void (*policy_dns_mx_cb)(void *arg, enum policy_dns_status st, bool secure,
				 const char *const *hosts, size_t n);
void policy_dns_resolve_mx(struct policy_dns *d, const char *domain, policy_dns_mx_cb cb,
			   void *arg);
/* TLSA records of _PORT._tcp.HOST (RFC 6698 / RFC 7672).  secure: DNSSEC-
 * validated; data borrowed for the callback. */
struct policy_tlsa {
	uint8_t usage, selector, mtype;
	const unsigned char *data;
	size_t len;
};
typedef void (*policy_dns_tlsa_cb)(void *arg, enum policy_dns_status st, bool secure,
				   const struct policy_tlsa *recs, size_t n);
void policy_dns_resolve_tlsa(struct policy_dns *d, const char *host, int port,
			     policy_dns_tlsa_cb cb, void *arg);
/* TXT records of name, each record's strings joined (async, loop thread;
 * texts borrowed for the callback). */
typedef void (*policy_dns_txt_cb)(void *arg, enum policy_dns_status st,
				  const char *const *texts, size_t n);
void policy_dns_resolve_txt(struct policy_dns *d, const char *name, policy_dns_txt_cb cb,
			    void *arg);
/* policy_dns_status_str - "ok", "nxdomain", "nodata", "tempfail", "bogus". */
const char *policy_dns_status_str(enum policy_dns_status st);
/* policy_dns_is_validating - a trust anchor is configured (DNSSEC on). */
bool policy_dns_is_validating(const struct policy_dns *d);
/* policy_dns_dnssec_status - one line for `mxgate status` and the start-up
 * log: "on (auto: /usr/share/dns/root.key, ...)" or "off (...)".  Borrowed. */
const char *policy_dns_dnssec_status(const struct policy_dns *d);
/* Reverse lookup: the first PTR name of addr (not yet forward-confirmed). */
typedef void (*policy_dns_name_cb)(void *arg, enum policy_dns_status st, const char *name);
void policy_dns_resolve_ptr(struct policy_dns *d, const struct util_addr *addr,
			    policy_dns_name_cb cb, void *arg);
/* policy_dns_confirmed_names - any thread but the loop's: the
 * forward-confirmed reverse name (FCrDNS: the first PTR name, LDH only,
 * whose A or AAAA records include the address) of each numeric address
 * ips[i], all looked up at once and all within budget_ms (the PTR queries
 * within its first half, the confirmations in the rest).  names[i] is a
 * new string (caller frees) or NULL: no PTR, not confirmed, not an
 * address, or not answered in time.  On a context of its own, so a batch
 * of lookups that never answer cannot stall the workers' queries. */
void policy_dns_confirmed_names(struct policy_dns *d, const char *const *ips, size_t n,
				int budget_ms, char **names);
/* Synchronous (worker threads only): TXT records joined per record; returns
 * status, sets *secure when DNSSEC validated the answer.  Caller frees the
 * list with util_strlist_free(). */
enum policy_dns_status policy_dns_txt_sync(struct policy_dns *d, const char *name,
					   struct util_strlist *out, bool *secure);

/* ------------------------------------------------------------ MTA-STS (RFC 8461)
 * The pure parts a sending MTA needs (policy-mtasts.c): the _mta-sts TXT
 * record, the policy file, MX pattern matching.  Fetching and caching are
 * the deliverer's (smtp/). */
#define POLICY_MTASTS_MAX 65536 /* largest policy body read */
enum policy_mtasts_mode { POLICY_MTASTS_NONE = 0, POLICY_MTASTS_TESTING, POLICY_MTASTS_ENFORCE };
struct policy_mtasts {
	enum policy_mtasts_mode mode;
	int64_t max_age;   /* seconds, capped at one year */
	char **mx;         /* owned patterns: "mx.example.com", "*.example.net" */
	size_t nmx;
};
/* policy_mtasts_parse - 0, or -1 with one line in err (out is then empty).
 * Clear out with policy_mtasts_clear(). */
int policy_mtasts_parse(const char *text, size_t len, struct policy_mtasts *out, char *err,
			size_t errlen);
void policy_mtasts_clear(struct policy_mtasts *p);
void policy_mtasts_copy(struct policy_mtasts *dst, const struct policy_mtasts *src);
bool policy_mtasts_mx_matches(const struct policy_mtasts *p, const char *host);
/* policy_mtasts_txt - "v=STSv1; id=..." -> 0 and the id; -1 otherwise. */
int policy_mtasts_txt(const char *txt, char *id, size_t idlen);

/* ------------------------------------------------------------ DNSBL / DNSWL */

/* Lookups of a client address in every [dnsbl] site and [spam] dnsbl_zones
 * zone, in parallel on the loop (libunbound async), answers cached for
 * [dnsbl] cache_ttl.  A timeout or server failure is "no data" (fail open),
 * counted in `failed`; so is an answer in 127.255.255.0/24. */
struct policy_dnsbl;
struct policy_dnsbl_result {
	int score;                     /* sum of the weights of the sites listing the client */
	char blocked_by[254];          /* the listing site of highest weight, "" when none */
	struct util_strlist listed;    /* "zone=127.0.0.2" per listing site (logs) */
	struct util_strlist tag_zones; /* positive-weight listing sites' zones */
	struct util_strlist spam_zones;/* [spam] dnsbl_zones listing the client */
	int failed;                    /* zones that gave no answer (timeout, SERVFAIL) */
	int cached;                    /* zones answered from the cache */
	bool allowlisted;              /* a negative-weight (DNSWL) site lists the client */
};
/* cb runs later on the loop thread (never inside policy_dnsbl_check); r is
 * borrowed for the call.  cookie is the caller's (a session id). */
typedef void (*policy_dnsbl_cb)(void *arg, uint64_t cookie, const struct policy_dnsbl_result *r);
/* policy_dnsbl_new - base and dns borrowed; free with policy_dnsbl_free,
 * which drops checks in flight without their callback (free it before dns). */
struct policy_dnsbl *policy_dnsbl_new(struct event_base *base, struct policy_dns *dns);
void policy_dnsbl_free(struct policy_dnsbl *b);
/* policy_dnsbl_wanted - the config names any zone to look up. */
bool policy_dnsbl_wanted(const struct config *cfg);
/* policy_dnsbl_check - start the lookups for client (cfg is only read
 * during the call: what the check needs is copied). */
void policy_dnsbl_check(struct policy_dnsbl *b, const struct config *cfg,
			const struct util_addr *client, policy_dnsbl_cb cb, void *arg,
			uint64_t cookie);
/* policy_dnsbl_reverse - RFC 5782 2.1/2.4 query prefix: "2.0.0.127" or the
 * 32 nibbles of an IPv6 address; "" for other families. */
void policy_dnsbl_reverse(const struct util_addr *a, char *out, size_t outlen);

/* policy_new - worker pool, PSL, the resolver (borrowed).  cfg is borrowed and must outlive the context (reload makes a
 * new context).  NULL + message in err on failure (e.g. unreadable
 * psl_file with dmarc = yes).
 * policy_free - joins the workers; free every policy_msg of this context
 * first (a message freed while its job runs is released here at the
 * latest). */
struct policy_ctx *policy_new(const struct config *cfg, struct event_base *base,
			      struct policy_dns *dns, char *err, size_t errlen);
void policy_free(struct policy_ctx *pc);
/* policy_retire - the owner lets go of pc (a reload replaced it and no
 * session uses it any more) without blocking the loop: pc is freed - workers
 * joined, completion pipe closed, libraries closed - from a deferred event
 * once its last message is gone (a message abandoned while its job runs goes
 * when that job ends), and then done(arg) runs there (the owner frees the
 * config pc borrowed).  No new message may be made from pc after this call.
 * policy_free() still works on a retiring context (exit): it frees at once
 * and done is not called.  Loop thread. */
void policy_retire(struct policy_ctx *pc, void (*done)(void *arg), void *arg);

/* policy_drop_header - true when an incoming header field must be removed
 * before the message is queued, because a downstream could take it for one
 * of ours: an Authentication-Results whose authserv-id is ours (RFC 8601 5:
 * any case, quoted or not, after comments and folding, with a trailing dot)
 * or that cannot be parsed at all; an ARC-Authentication-Results claiming
 * our id, or unparseable and mentioning it (other ARC sets stay intact);
 * every Received-SPF (we are the SPF judge, RFC 7208 9.1); every field
 * named X-Spam* and the configured spam header names.  Pure; usable without
 * a context given the config. */
bool policy_drop_header(const struct config *cfg, const struct util_hdr_field *f);

/* policy_ar_authserv_id - the authserv-id of an Authentication-Results
 * value v[0..n) (arc: an ARC-Authentication-Results value, "i=N;" first)
 * into out: quoted-pairs resolved, white space and control characters
 * inside quotes dropped, trailing dots removed.  0 when the value
 * parses as far as the first ";"; -1 when it does not (unclosed comment or
 * quote, no ";", junk after the id, an encoded word, a quoted id holding a
 * special such as ';', an id longer than outlen - 1).  Pure. */
int policy_ar_authserv_id(const char *v, size_t n, bool arc, char *out, size_t outlen);

/* policy_arc_selector_record - the TXT text to publish at
 * [arc] selector._domainkey.domain: "v=DKIM1; k=rsa|ed25519; p=..." made
 * from [arc] key_file.  Caller frees; NULL + message in err. */
char *policy_arc_selector_record(const struct config *cfg, char *err, size_t errlen);

enum policy_action {
	POLICY_ACCEPT = 0,     /* queue */
	POLICY_QUARANTINE,     /* queue, marked as spam */
	POLICY_REJECT,         /* 550 with reply; nothing queued */
	POLICY_TEMPFAIL,       /* 451 with reply */
};

/* Which of mxgate's own verdicts made a POLICY_QUARANTINE (issue 13): each
 * kind has its own configured action ([spam] dmarc_quarantine_action,
 * score_action, [dnsbl] tag_action), which smtp/ applies. */
enum policy_kind {
	POLICY_KIND_DMARC = 1u << 0, /* DMARC failure, disposition quarantine */
	POLICY_KIND_SCORE = 1u << 1, /* score at or above [spam] threshold */
	POLICY_KIND_DNSBL = 1u << 2, /* listed at [dnsbl] tag_threshold, tag_action not deliver */
};

typedef void (*policy_cb)(uint64_t cookie, void *arg);

/* One message.  mail_from is "" for the null sender. */
struct policy_msg *policy_msg_new(struct policy_ctx *pc, const struct util_addr *client,
				  const char *helo, const char *mail_from);
void policy_msg_free(struct policy_msg *pm);
/* policy_msg_set_dnsbl - the DNSBL zones listing the client, from the
 * lookups made at connect (policy_dnsbl_check): the score uses them instead
 * of asking again from a worker.  zones is copied.  Ignored once
 * policy_msg_finish was called (the worker then asks the zones itself). */
void policy_msg_set_dnsbl(struct policy_msg *pm, const struct util_strlist *zones);

/* SPF: started at MAIL FROM.  cb runs when the result is known, always
 * later on the loop thread (never inside the call), also when SPF is
 * disabled.  A full worker queue gives policy_spf_reply() =
 * "451 4.3.2 System busy, try again later". */
void policy_spf_start(struct policy_msg *pm, policy_cb cb, uint64_t cookie, void *arg);
bool policy_spf_done(const struct policy_msg *pm);
/* policy_spf_reply - after SPF: NULL to go on, or a reply such as
 * "550 5.7.23 SPF fail: ..." / "451 4.7.24 SPF temporary error" when the
 * config says to refuse (spf_reject_fail / spf_temperror_defer).  Borrowed. */
const char *policy_spf_reply(const struct policy_msg *pm);

/* Message content, streamed while DATA arrives (feeds the DKIM verifier).
 * Each call gets one complete raw header field (with its CRLF) or a chunk
 * of body bytes (CRLF line endings, dot-unstuffed).  0/-1.  No DKIM
 * library call happens here: header fields are saved (DKIM-Signature fields
 * beyond dkim_max_signatures only counted) and body chunks appended to an
 * anonymous file, both fed to libopendkim by the verdict job's worker. */
int policy_msg_header(struct policy_msg *pm, const char *field, size_t len);
/* policy_msg_header_field - the same for a field the caller has parsed
 * already (util_hdr_next; f->raw is the whole field with its CRLF), so the
 * loop does not parse every field twice. */
void policy_msg_header_field(struct policy_msg *pm, const struct util_hdr_field *f);
int policy_msg_eoh(struct policy_msg *pm);
int policy_msg_body(struct policy_msg *pm, const char *p, size_t n);
/* policy_msg_wants_body - after eoh: DKIM needs the body (a signature was
 * seen and the verifier works); false = no body need be passed at all. */
bool policy_msg_wants_body(const struct policy_msg *pm);
/* policy_msg_body_fd - instead of policy_msg_body chunks: the body is the
 * bytes [off, end) of fd (the spool file, which may be longer: a recycled
 * file is only cut to length at the commit), read and hashed by a worker
 * during policy_msg_finish, so the event loop never does DKIM body
 * canonicalisation and hashing.  Takes ownership of fd (closed with pm);
 * those bytes must not change until finish's callback has run. */
void policy_msg_body_fd(struct policy_msg *pm, int fd, int64_t off, int64_t end);

/* policy_msg_finish - end of data: DKIM key lookups, DMARC, DNSBL, score.
 * cb runs when the verdict is ready (later, on the loop thread).  May be
 * called before SPF's callback: the verdict job then starts when SPF ends.
 * A full worker queue gives TEMPFAIL "451 4.3.2 ...". */
void policy_msg_finish(struct policy_msg *pm, policy_cb cb, uint64_t cookie, void *arg);

/* The verdict, valid after finish's callback (borrowed). */
struct policy_verdict {
	enum policy_action action;
	const char *reply;     /* SMTP reply for REJECT/TEMPFAIL, e.g. "550 5.7.1 ..." */
	const char *headers;   /* header fields to prepend (CRLF): Authentication-Results,
	                          Received-SPF, spam headers */
	const char *summary;   /* key=value fields for the log line:
	                          "spf=pass dkim=pass dmarc=pass score=0.0 action=accept" */
	double score;
	unsigned kinds;        /* enum policy_kind bits: why the action is QUARANTINE (0 else) */
	const char *spf;       /* SPF result word ("pass", "fail", ...), NULL = not evaluated */
	const char *dmarc;     /* DMARC result word, NULL = not evaluated */
};
const struct policy_verdict *policy_msg_verdict(const struct policy_msg *pm);
/* ARC seal of a message the caller edits after the verdict (banner,
 * subject tag): the seal must cover the bytes the downstream receives.
 * policy_msg_seal_later - before the header block: the verdict job does not
 * seal; it keeps what the seal needs (key reference, instance, cv, our
 * A-R, the older sets) for policy_msg_seal_take.  Without it the verdict
 * job seals and the ARC set is at the top of the verdict headers. */
void policy_msg_seal_later(struct policy_msg *pm);
/* policy_msg_seal_take - after finish's callback (loop): the pending seal,
 * owned by the caller, or NULL when none is due (ARC sealing off, message
 * refused, or it cannot be sealed: logged and counted then). */
struct policy_seal;
struct policy_seal *policy_msg_seal_take(struct policy_msg *pm);
/* policy_seal_run - worker: seal the message as delivered: the header
 * fields of prepend (what is sent in front of the spool, without the ARC
 * set) then those of the spool fd [0, size), and the spool's body.  0, or
 * -1 (logged; not sealed).  Counted in mxgate_arc_seals_total.  Needs no
 * message, context or config: the seal holds copies. */
int policy_seal_run(struct policy_seal *ps, const char *prepend, int fd, int64_t size);
/* policy_seal_fields - after a successful run: the ARC set (ARC-Seal,
 * ARC-Message-Signature, ARC-Authentication-Results, CRLF each), borrowed;
 * NULL otherwise. */
const char *policy_seal_fields(const struct policy_seal *ps);
void policy_seal_free(struct policy_seal *ps);
/* policy_msg_spf_pass_for - SPF passed for MAIL FROM and its domain is one of
 * domains or under one of them (after finish's callback or SPF's). */
bool policy_msg_spf_pass_for(const struct policy_msg *pm, const struct util_strlist *domains);
/* policy_msg_spf_pass - SPF is known and passed for MAIL FROM (not only
 * for the HELO name): the envelope sender is authorised by its domain. */
bool policy_msg_spf_pass(const struct policy_msg *pm);
/* policy_msg_dmarc_reject_dkim_pass - DMARC passed for a From: domain that
 * publishes p=reject, and a DKIM signature of its organizational domain
 * passed (after finish's callback). */
bool policy_msg_dmarc_reject_dkim_pass(const struct policy_msg *pm);

/* ------------------------------------------------------------ DMARC facts
 * What an aggregate report (RFC 9990) needs to know of one evaluation
 * (policy-facts.c).  Strings are borrowed from pm (valid until
 * policy_msg_free) or held in the struct's own buffers; "" / NULL = not
 * known (the tags np, t, psd and the discovery method come from the record
 * text when the evaluator does not give them). */
#define POLICY_FACTS_MAX_DKIM 8
/* fo= options (RFC 9989 4.7, RFC 9991 2): when the Domain Owner wants a
 * failure report.  0: every mechanism failed to give an aligned pass; 1:
 * any did; d: a DKIM signature failed to verify; s: SPF failed. */
#define POLICY_DMARC_FO_0 0x1u
#define POLICY_DMARC_FO_1 0x2u
#define POLICY_DMARC_FO_D 0x4u
#define POLICY_DMARC_FO_S 0x8u
#define POLICY_DMARC_RUF_MAX 512 /* ruf= value kept, bytes with the NUL */
struct policy_dmarc_facts {
	char ip[46];               /* source IP */
	const char *header_from;   /* RFC5322.From domain */
	const char *envelope_from; /* RFC5321.MailFrom domain; "" null sender */
	const char *dmarc;         /* pass fail none temperror permerror */
	const char *spf_domain, *spf_result, *spf_scope; /* scope: mfrom | helo */
	size_t ndkim;
	struct {
		const char *domain, *selector, *result;
	} dkim[POLICY_FACTS_MAX_DKIM];
	bool dkim_aligned, spf_aligned; /* an aligned pass (policy_evaluated) */
	/* policy published; "" = tag absent or unknown */
	const char *record_domain; /* where the record was found; NULL: none */
	char p[12], sp[12], np[12], adkim[2], aspf[2], t[2], psd[2];
	int pct;                   /* -1 absent */
	const char *discovery;     /* "psl" | "treewalk" | NULL unknown */
	const char *disposition;   /* none quarantine reject: what DMARC made us do */
	const char *override;      /* NULL, local_policy, trusted_forwarder, sampled_out */
	const char *override_comment; /* borrowed, NULL */
	/* failure reporting (RFC 9991): the record's ruf value (NULL: none)
	 * and fo options (POLICY_DMARC_FO_*) */
	const char *ruf;
	unsigned fo;
};
/* policy_msg_dmarc_facts - after finish's callback: 0 and f filled, or -1
 * when DMARC was not evaluated or there is no single From: domain (nothing
 * anyone could be sent a report about).  Pure. */
int policy_msg_dmarc_facts(const struct policy_msg *pm, struct policy_dmarc_facts *f);
/* policy_org_domain - organizational domain of name (the PSL when a policy
 * context loaded it, else the last two labels), lower-case.  Any thread. */
void policy_org_domain(const char *name, char *out, size_t outlen);

#endif
