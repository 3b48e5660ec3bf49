/*
 * policy-arc.c - ARC (RFC 8617) for one message: verification of the
 * incoming chain, the trusted-forwarder override of a DMARC failure, and
 * mxgate's own seal (ARC-Authentication-Results, ARC-Message-Signature,
 * ARC-Seal) over the message as it is delivered.
 *
 * Where things run:
 *  - loop: every header field is copied (bounded by max_header_size, like
 *    the header block itself); at the end of the header block the ARC sets
 *    are grouped (policy-arc-parse.c) and the body canonicalisers set up:
 *    one for the newest incoming AMS (its c= and l=), one relaxed for our
 *    seal (unless deferred).  No DNS, no signing here.
 *  - worker, policy_arc_eval(): the body is read back from the spool (like
 *    DKIM's), the newest AMS and every AS are verified with keys fetched
 *    through mxgate's resolver (RFC 8617 5.2), then - DMARC being known -
 *    the trusted-forwarder override.
 *  - worker, policy_arc_seal(): after the verdict headers are built, the
 *    ARC set is made from our Authentication-Results and prepended to them.
 *    The AMS signs header fields of the kept header block, so what the
 *    downstream receives - our prepended fields, then the spool - verifies
 *    unchanged.  When the session may still edit the message (banner,
 *    subject tags: policy_msg_seal_later), only what the seal needs is
 *    kept (struct policy_seal, owning its copies and a key reference) and
 *  - content worker, policy_seal_run(): the session's final prepend and
 *    spool are hashed and signed, after every edit, before the commit.
 *
 * Crypto (OpenSSL 3 EVP, rsa-sha256 and ed25519-sha256) is in
 * policy-arc-crypto.c, parsing and canonicalisation in policy-arc-parse.c.
 *
 * Ownership: struct arc_msg belongs to the message (policy_arc_msg_free);
 * the sealing key to the context (a deferred seal holds a reference).
 * Diagnostics: the outcome and its reason go into the A-R comment and the
 * log summary; the override is logged.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "policy-arc.h"
#include "policy-internal.h"

/* Header fields our AMS signs when present (RFC 6376 5.4.1 list; never
 * one mxgate removes; Subject as delivered: re-emitted, maybe tagged). */
static const char *const arc_sign_names[] = {
    "from",           "to",           "cc",           "subject",
    "date",           "message-id",   "reply-to",     "in-reply-to",
    "references",     "mime-version", "content-type", "content-transfer-encoding",
    "dkim-signature", "list-id",
};

struct arc_ctx {
	EVP_PKEY *key; /* sealing key, NULL when not sealing */
	const char *alg;
};

struct arc_field {
	size_t off, len;
	bool kept; /* reaches the downstream (not dropped) */
};

struct arc_msg {
	struct util_buf hdr; /* every header field, raw, concatenated */
	struct arc_field *f;
	size_t nf, capf;
	bool too_many;
	struct policy_arc_chain chain;
	bool parsed;
	struct policy_arc_body *vbody, *sbody;
	bool body_fed;
	bool evaluated;
	enum policy_arc_result result;
	char *why;
	char *sealer;  /* d= of the newest AS of a passing chain */
	bool key_temp; /* a key lookup failed temporarily */
	char *defer;   /* 451 reply: a trusted sealer's key was unreachable */
	struct policy_seal *later; /* the deferred seal, until policy_msg_seal_take */
};

/* arc_fetch_key - s._domainkey.d through our resolver. */
static EVP_PKEY *arc_fetch_key(struct policy_msg *pm, const char *s, const char *d,
                               const char **why)
{
	struct util_strlist txt = {0};
	bool secure = false;
	char *name = util_xasprintf("%s._domainkey.%s", s, d);
	/* no DNS name (a label over 63 octets, ...): the seal's own error,
	 * never a temporary one - else a forged seal claiming a trusted
	 * sealer's d= turned a DMARC reject into 451 (red team finding) */
	enum policy_dns_status st = policy_dns_name_ok(name)
	                                ? policy_dns_txt_sync(pm->pc->dns, name, &txt, &secure)
	                                : POLICY_DNS_NXDOMAIN;
	EVP_PKEY *k = NULL;

	free(name);
	if (st == POLICY_DNS_OK && txt.n > 0)
		k = policy_arc_parse_key(txt.v[0], pm->pc->cfg->dkim_min_rsa_bits, why);
	else
		*why = st == POLICY_DNS_TEMPFAIL ? "key lookup failed"
		       : st == POLICY_DNS_BOGUS  ? "key lookup failed DNSSEC validation"
		                                 : "no key for signature";
	/* A bogus answer is a temporary error like a timeout, never a verdict
	 * (docs/architecture.md "DNSSEC"): the chain is unverified, not known
	 * bad, so a trusted sealer's chain defers a DMARC reject (451) */
	if ((st == POLICY_DNS_TEMPFAIL || st == POLICY_DNS_BOGUS) && pm->arc != NULL)
		((struct arc_msg *)pm->arc)->key_temp = true;
	if (k == NULL)
		util_log_debug("arc key=%s._domainkey.%s status=%s why=\"%s\"", s, d,
		               policy_dns_status_str(st), *why);
	util_strlist_free(&txt);
	return k;
}

/* arc_field_name_is - raw field's name equals name (case-insensitive). */
static bool arc_field_name_is(const char *raw, size_t len, const char *name, size_t nl)
{
	const char *colon = memchr(raw, ':', len);
	const char *e = colon;

	if (colon == NULL)
		return false;
	while (e > raw && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	return (size_t)(e - raw) == nl && strncasecmp(raw, name, nl) == 0;
}

/* A header block and its fields: the message's as received (struct
 * arc_msg), or the final one a deferred seal signs (policy_seal_run). */
struct arc_hdrs {
	const char *base;
	const struct arc_field *f;
	size_t nf;
};

/* arc_hash_headers - the fields named in h= (RFC 6376 5.4.2: each name
 * takes the bottom-most instance not yet used; a missing one adds
 * nothing) into data, canonicalised; kept_only: fields that are delivered.
 * -1 when h= is malformed or names ARC-Seal (RFC 8617 4.1.2). */
static int arc_hash_headers(const struct arc_hdrs *hs, const char *h, bool relaxed,
                            bool kept_only, struct util_buf *data)
{
	bool *used = util_xcalloc(hs->nf + 1, sizeof(*used));
	const char *p = h;
	size_t nnames = 0;
	int rc = -1;

	while (*p) {
		const char *s, *e;
		while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
			p++;
		s = p;
		while (*p && *p != ':')
			p++;
		e = p;
		while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
			e--;
		if (*p == ':')
			p++;
		if (e == s || ++nnames > POLICY_ARC_MAX_SIGNED)
			goto done;
		if ((size_t)(e - s) == 8 && strncasecmp(s, "arc-seal", 8) == 0)
			goto done;
		for (size_t i = hs->nf; i-- > 0;) {
			const struct arc_field *f = &hs->f[i];
			if (used[i] || (kept_only && !f->kept) ||
			    !arc_field_name_is(hs->base + f->off, f->len, s, (size_t)(e - s)))
				continue;
			used[i] = true;
			policy_arc_canon_header(data, hs->base + f->off, f->len, relaxed, true);
			break;
		}
	}
	rc = nnames > 0 ? 0 : -1;
done:
	free(used);
	return rc;
}

/* arc_add_sig_field - the signature field itself, b= emptied, no CRLF. */
static void arc_add_sig_field(struct util_buf *data, const char *raw, size_t len, bool relaxed)
{
	size_t sl = 0;
	char *s = policy_arc_strip_b(raw, len, &sl);

	if (s != NULL)
		policy_arc_canon_header(data, s, sl, relaxed, false);
	else
		policy_arc_canon_header(data, raw, len, relaxed, false);
	free(s);
}

/* ------------------------------------------------------------ context */

/* policy_arc_lib_init - load the sealing key. */
int policy_arc_lib_init(struct policy_ctx *pc, char *err, size_t errlen)
{
	struct arc_ctx *ac = util_xcalloc(1, sizeof(*ac));
	const struct config *cfg = pc->cfg;

	pc->arc = ac;
	if (!cfg->arc_seal)
		return 0;
	ac->key = policy_arc_load_key(cfg->arc_key_file, cfg->arc_algorithm, err, errlen);
	ac->alg = cfg->arc_algorithm == 0 ? "rsa-sha256" : "ed25519-sha256";
	return ac->key != NULL ? 0 : -1;
}

/* policy_arc_lib_free - NULL-safe. */
void policy_arc_lib_free(struct policy_ctx *pc)
{
	struct arc_ctx *ac = pc->arc;

	if (ac == NULL)
		return;
	EVP_PKEY_free(ac->key);
	free(ac);
	pc->arc = NULL;
}

/* ------------------------------------------------------------ streaming (loop) */

/* arc_msg - the message's ARC state, made on first use. */
static struct arc_msg *arc_msg(struct policy_msg *pm)
{
	if (pm->arc == NULL) {
		struct arc_msg *am = util_xcalloc(1, sizeof(*am));
		util_buf_init(&am->hdr);
		pm->arc = am;
	}
	return pm->arc;
}

/* arc_active - verification or sealing configured. */
static bool arc_active(const struct policy_msg *pm)
{
	return pm->pc->cfg->arc_enabled || pm->pc->cfg->arc_seal;
}

/* policy_arc_header - loop: keep a copy of one raw field. */
void policy_arc_header(struct policy_msg *pm, const char *f, size_t len)
{
	struct arc_msg *am;
	struct util_hdr_field hf;
	size_t pos = 0;

	if (!arc_active(pm))
		return;
	am = arc_msg(pm);
	if (am->nf == POLICY_ARC_MAX_FIELDS) {
		am->too_many = true; /* more fields than we index: no seal, chain fails */
		return;
	}
	if (am->nf == am->capf) {
		am->capf = am->capf ? am->capf * 2 : 32;
		am->f = realloc(am->f, am->capf * sizeof(*am->f));
		if (am->f == NULL)
			abort();
	}
	am->f[am->nf].off = am->hdr.len;
	am->f[am->nf].len = len;
	am->f[am->nf].kept =
	    util_hdr_next(f, len, &pos, &hf) == 1 && !policy_drop_header(pm->pc->cfg, &hf);
	am->nf++;
	util_buf_add(&am->hdr, f, len);
}

/* policy_arc_eoh - loop: group the ARC sets, set up the body hashes. */
void policy_arc_eoh(struct policy_msg *pm)
{
	struct arc_msg *am;
	const char **fields;
	size_t *lens;

	if (!arc_active(pm))
		return;
	am = arc_msg(pm);
	fields = util_xcalloc(am->nf + 1, sizeof(*fields));
	lens = util_xcalloc(am->nf + 1, sizeof(*lens));
	for (size_t i = 0; i < am->nf; i++) {
		fields[i] = am->hdr.data + am->f[i].off;
		lens[i] = am->f[i].len;
	}
	policy_arc_chain_parse(fields, lens, am->nf, &am->chain);
	am->parsed = true;
	free(fields);
	free(lens);
	if (am->chain.n > 0 && !am->chain.structural_fail) {
		const struct policy_arc_tags *t =
		    &am->chain.sets[am->chain.n - 1].tags[POLICY_ARC_AMS];
		const char *c = policy_arc_tag(t, "c");
		const char *l = policy_arc_tag(t, "l");
		const char *slash = c != NULL ? strchr(c, '/') : NULL;
		int64_t limit = -1;
		if (l != NULL && strspn(l, "0123456789") == strlen(l) && strlen(l) < 16)
			limit = strtoll(l, NULL, 10);
		am->vbody =
		    policy_arc_body_new(slash != NULL && strcmp(slash + 1, "relaxed") == 0, limit);
	}
	/* deferred: the body is hashed as delivered, by policy_seal_run */
	if (pm->pc->cfg->arc_seal && !pm->seal_later)
		am->sbody = policy_arc_body_new(true, -1);
}

/* policy_arc_body - loop: a body chunk (the chunked interface). */
void policy_arc_body(struct policy_msg *pm, const char *p, size_t n)
{
	struct arc_msg *am = pm->arc;

	if (am == NULL)
		return;
	am->body_fed = true;
	if (am->vbody != NULL)
		policy_arc_body_update(am->vbody, p, n);
	if (am->sbody != NULL)
		policy_arc_body_update(am->sbody, p, n);
}

/* policy_arc_wants_body - a body hash is needed. */
bool policy_arc_wants_body(const struct policy_msg *pm)
{
	const struct arc_msg *am = pm->arc;

	return am != NULL && (am->vbody != NULL || am->sbody != NULL);
}

/* arc_body_from_fd - worker: the body from the spool into the hashes. */
static int arc_body_from_fd(struct policy_msg *pm, struct arc_msg *am)
{
	static const size_t chunk = 64 * 1024;
	char *buf;
	off_t off = (off_t)pm->body_off;
	int rc = 0;

	if (am->body_fed || pm->body_fd < 0)
		return 0;
	buf = util_xmalloc(chunk);
	while (off < (off_t)pm->body_end) {
		size_t want = (size_t)((off_t)pm->body_end - off) < chunk
		                  ? (size_t)((off_t)pm->body_end - off)
		                  : chunk;
		ssize_t n = pread(pm->body_fd, buf, want, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			util_log_err("arc op=read-body error=\"%s\"",
			             n < 0 ? strerror(errno) : "file shorter than the message");
			rc = -1;
			break;
		}
		if (am->vbody != NULL)
			policy_arc_body_update(am->vbody, buf, (size_t)n);
		if (am->sbody != NULL)
			policy_arc_body_update(am->sbody, buf, (size_t)n);
		off += n;
	}
	am->body_fed = true;
	free(buf);
	return rc;
}

/* ------------------------------------------------------------ verify (worker) */

/* arc_verify_ams - the newest AMS (RFC 8617 5.2 step 5). */
static const char *arc_verify_ams(struct policy_msg *pm, struct arc_msg *am,
                                  const struct policy_arc_set *set)
{
	const struct policy_arc_tags *t = &set->tags[POLICY_ARC_AMS];
	const char *a = policy_arc_tag(t, "a"), *b = policy_arc_tag(t, "b"),
	           *bh = policy_arc_tag(t, "bh"), *d = policy_arc_tag(t, "d"),
	           *h = policy_arc_tag(t, "h"), *s = policy_arc_tag(t, "s"),
	           *c = policy_arc_tag(t, "c");
	const struct arc_hdrs hs = {am->hdr.data, am->f, am->nf};
	const char *why = NULL;
	unsigned char hash[32], *want = NULL;
	size_t wantlen = 0;
	struct util_buf data;
	EVP_PKEY *key = NULL;
	bool relaxed = c != NULL && strncmp(c, "relaxed", 7) == 0;
	int alg = policy_arc_alg(a);

	util_buf_init(&data);
	if (b == NULL || bh == NULL || d == NULL || h == NULL || s == NULL || alg < 0) {
		why = "AMS: missing tag or unknown algorithm";
		goto done;
	}
	if (c != NULL && strcmp(c, "relaxed") != 0 && strcmp(c, "simple") != 0 &&
	    strcmp(c, "relaxed/relaxed") != 0 && strcmp(c, "relaxed/simple") != 0 &&
	    strcmp(c, "simple/relaxed") != 0 && strcmp(c, "simple/simple") != 0) {
		why = "AMS: unknown canonicalisation";
		goto done;
	}
	want = policy_arc_unb64(bh, &wantlen);
	if (am->vbody == NULL || policy_arc_body_final(am->vbody, hash) < 0 || want == NULL ||
	    wantlen != sizeof(hash) || memcmp(want, hash, sizeof(hash)) != 0) {
		why = "AMS: body hash did not verify";
		goto done;
	}
	if (arc_hash_headers(&hs, h, relaxed, false, &data) < 0) {
		why = "AMS: bad h= (ARC-Seal may not be signed)";
		goto done;
	}
	arc_add_sig_field(&data, set->raw[POLICY_ARC_AMS], set->rawlen[POLICY_ARC_AMS], relaxed);
	key = arc_fetch_key(pm, s, d, &why);
	if (key == NULL)
		goto done;
	why = policy_arc_verify_sig(key, alg, &data, b) ? NULL : "AMS: signature did not verify";
done:
	EVP_PKEY_free(key);
	free(want);
	util_buf_free(&data);
	return why;
}

/* arc_seal_input - the ARC sets 1..upto, relaxed, the last AS with b=
 * emptied and without CRLF (RFC 8617 5.1.1). */
static void arc_seal_input(const struct policy_arc_chain *c, size_t from, size_t upto,
                           struct util_buf *data)
{
	for (size_t i = from; i < upto; i++) {
		const struct policy_arc_set *set = &c->sets[i];
		policy_arc_canon_header(data, set->raw[POLICY_ARC_AAR], set->rawlen[POLICY_ARC_AAR],
		                        true, true);
		policy_arc_canon_header(data, set->raw[POLICY_ARC_AMS], set->rawlen[POLICY_ARC_AMS],
		                        true, true);
		if (i + 1 < upto)
			policy_arc_canon_header(data, set->raw[POLICY_ARC_AS],
			                        set->rawlen[POLICY_ARC_AS], true, true);
		else
			arc_add_sig_field(data, set->raw[POLICY_ARC_AS], set->rawlen[POLICY_ARC_AS],
			                  true);
	}
}

/* arc_verify_as - the seal of instance i+1 (index i). */
static const char *arc_verify_as(struct policy_msg *pm, const struct policy_arc_chain *c, size_t i)
{
	const struct policy_arc_tags *t = &c->sets[i].tags[POLICY_ARC_AS];
	const char *a = policy_arc_tag(t, "a"), *b = policy_arc_tag(t, "b"),
	           *d = policy_arc_tag(t, "d"), *s = policy_arc_tag(t, "s");
	const char *why = NULL;
	struct util_buf data;
	EVP_PKEY *key;
	int alg = policy_arc_alg(a);

	if (b == NULL || d == NULL || s == NULL || alg < 0)
		return "AS: missing tag or unknown algorithm";
	key = arc_fetch_key(pm, s, d, &why);
	if (key == NULL)
		return why;
	util_buf_init(&data);
	arc_seal_input(c, 0, i + 1, &data);
	if (!policy_arc_verify_sig(key, alg, &data, b))
		why = "AS: signature did not verify";
	util_buf_free(&data);
	EVP_PKEY_free(key);
	return why;
}

/* arc_verify_chain - RFC 8617 5.2; NULL = pass, else the reason of fail. */
static const char *arc_verify_chain(struct policy_msg *pm, struct arc_msg *am, char *buf,
                                    size_t buflen)
{
	struct policy_arc_chain *c = &am->chain;
	const char *why;

	if (c->structural_fail)
		return c->why;
	if (am->too_many)
		return "too many header fields";
	for (size_t i = 0; i < c->n; i++) {
		const char *cv = policy_arc_tag(&c->sets[i].tags[POLICY_ARC_AS], "cv");
		if (i + 1 == c->n && strcmp(cv, "fail") == 0)
			return "the newest seal says cv=fail";
		if ((i == 0) != (strcmp(cv, "none") == 0) || strcmp(cv, "fail") == 0) {
			snprintf(buf, buflen, "ARC-Seal i=%zu has cv=%s", i + 1, cv);
			return buf;
		}
	}
	why = arc_verify_ams(pm, am, &c->sets[c->n - 1]);
	if (why != NULL) {
		snprintf(buf, buflen, "i=%zu %s", c->n, why);
		return buf;
	}
	for (size_t i = c->n; i-- > 0;) {
		why = arc_verify_as(pm, c, i);
		if (why != NULL) {
			snprintf(buf, buflen, "i=%zu %s", i + 1, why);
			return buf;
		}
	}
	return NULL;
}

/* arc_eval - worker: verify the chain; then the override. */
static void arc_eval(struct policy_msg *pm)
{
	const struct config *cfg = pm->pc->cfg;
	struct arc_msg *am = pm->arc;
	char buf[160];
	const char *why;

	if (!cfg->arc_enabled || am == NULL || !am->parsed)
		return;
	if (arc_body_from_fd(pm, am) < 0 && am->vbody != NULL) {
		am->evaluated = true;
		am->result = POLICY_ARC_FAIL;
		am->why = util_xstrdup("the message could not be read back");
		return;
	}
	am->evaluated = true;
	if (am->chain.n == 0 && !am->chain.structural_fail) {
		am->result = POLICY_ARC_NONE;
		return;
	}
	why = arc_verify_chain(pm, am, buf, sizeof(buf));
	if (why != NULL) {
		const char *newest = NULL;
		am->result = POLICY_ARC_FAIL;
		am->why = util_xstrdup(why);
		if (!am->chain.structural_fail && am->chain.n > 0)
			newest = policy_arc_tag(
			    &am->chain.sets[am->chain.n - 1].tags[POLICY_ARC_AS], "d");
		/* A DNS failure is not a verdict: when it hides whether a
		 * trusted forwarder's chain holds and DMARC would be enforced,
		 * ask for a retry instead of refusing for good. */
		if (am->key_temp && newest != NULL && pm->dmarc.evaluated &&
		    pm->dmarc.result == POLICY_DMARC_FAIL && pm->dmarc.exempt == NULL &&
		    util_strlist_has_case(&cfg->arc_trusted_sealers, newest))
			am->defer = util_xasprintf("451 4.4.3 The ARC key of trusted forwarder %s "
			                           "could not be looked up, try again later",
			                           newest);
		return;
	}
	am->result = POLICY_ARC_PASS;
	am->sealer =
	    util_xstrdup(policy_arc_tag(&am->chain.sets[am->chain.n - 1].tags[POLICY_ARC_AS], "d"));
	/* Trusted-forwarder override (local policy: RFC 8617 section 7 use
	 * cases, RFC 7489 6.7): the newest sealer is one the postmaster
	 * trusts, its chain validates, and a trusted hop's ARC-A-R recorded
	 * dmarc=pass for this From: domain.  Only the sets sealed by trusted
	 * sealers count: the oldest of the unbroken run of trusted sealers
	 * down from the newest is the hop that received the message from
	 * outside, and its ARC-A-R is its own judgement.  An older set by
	 * anyone else is the word of whoever sealed it (an attacker can seal
	 * i=1 "dmarc=pass" with its own key, then post through a trusted
	 * list: red team finding). */
	if (pm->dmarc.evaluated && pm->dmarc.result == POLICY_DMARC_FAIL &&
	    pm->dmarc.exempt == NULL &&
	    util_strlist_has_case(&cfg->arc_trusted_sealers, am->sealer)) {
		size_t k = am->chain.n - 1;
		while (k > 0) {
			const char *d =
			    policy_arc_tag(&am->chain.sets[k - 1].tags[POLICY_ARC_AS], "d");
			if (d == NULL || !util_strlist_has_case(&cfg->arc_trusted_sealers, d))
				break;
			k--;
		}
		if (policy_arc_aar_dmarc_pass(am->chain.sets[k].raw[POLICY_ARC_AAR],
		                              am->chain.sets[k].rawlen[POLICY_ARC_AAR],
		                              pm->from.domain)) {
			pm->dmarc.exempt = util_xasprintf("arc trusted sealer %s, i=%zu dmarc=pass",
			                                  am->sealer, k + 1);
			util_log_info(
			    "arc override=dmarc sealer=%s from=%s reason=\"trusted sealer, "
			    "i=%zu dmarc=pass\"",
			    am->sealer, pm->from.domain ? pm->from.domain : "-", k + 1);
			util_metrics_inc("mxgate_arc_overrides_total", NULL);
		}
	}
}

/* policy_arc_eval - worker: the chain's result (counted), the override. */
void policy_arc_eval(struct policy_msg *pm)
{
	const struct arc_msg *am = pm->arc;

	arc_eval(pm);
	if (am != NULL && am->evaluated)
		util_metrics_inc("mxgate_arc_results_total", policy_arc_result_str(am->result));
}

/* ------------------------------------------------------------ A-R */

/* policy_arc_result_str - the RFC 8601 result word. */
const char *policy_arc_result_str(enum policy_arc_result r)
{
	return r == POLICY_ARC_PASS ? "pass" : r == POLICY_ARC_FAIL ? "fail" : "none";
}

/* arc_ctext - comment text with ( ) \ quoted, controls dropped. */
static void arc_ctext(struct util_buf *b, const char *s)
{
	for (; s != NULL && *s; s++) {
		if (*s == '(' || *s == ')' || *s == '\\')
			util_buf_adds(b, "\\");
		if ((unsigned char)*s >= 0x20 && *s != 0x7f)
			util_buf_add(b, s, 1);
	}
}

/* policy_arc_ar_clause - "arc=pass (i=2, sealer d) smtp.remote-ip=..." */
char *policy_arc_ar_clause(const struct policy_msg *pm)
{
	const struct arc_msg *am = pm->arc;
	struct util_buf b;
	char ip[64];

	if (am == NULL || !am->evaluated)
		return NULL;
	util_buf_init(&b);
	util_buf_printf(&b, "arc=%s", policy_arc_result_str(am->result));
	if (am->result == POLICY_ARC_PASS) {
		util_buf_printf(&b, " (i=%zu sealed by ", am->chain.n);
		arc_ctext(&b, am->sealer);
		util_buf_adds(&b, ")");
	} else if (am->why != NULL) {
		util_buf_adds(&b, " (");
		arc_ctext(&b, am->why);
		util_buf_adds(&b, ")");
	}
	/* RFC 8617 4.4 / 11: the address the chain reached us from */
	util_buf_printf(&b, " smtp.remote-ip=%s", util_addr_str(&pm->client, ip, sizeof(ip)));
	return b.data;
}

/* policy_arc_defer_reply - the 451 reply that replaces a DMARC reject
 * when a trusted sealer's key could not be fetched, or NULL. */
const char *policy_arc_defer_reply(const struct policy_msg *pm)
{
	const struct arc_msg *am = pm->arc;

	return am != NULL ? am->defer : NULL;
}

/* policy_arc_summary - "arc=pass " or "". */
const char *policy_arc_summary(const struct policy_msg *pm)
{
	const struct arc_msg *am = pm->arc;

	if (am == NULL || !am->evaluated)
		return "";
	return am->result == POLICY_ARC_PASS   ? "arc=pass "
	       : am->result == POLICY_ARC_FAIL ? "arc=fail "
	                                       : "arc=none ";
}

/* ------------------------------------------------------------ seal (worker) */

/* arc_fold_b64 - b= value folded every 64 characters. */
static void arc_fold_b64(struct util_buf *out, const char *b64)
{
	size_t n = strlen(b64);

	for (size_t i = 0; i < n; i += 64) {
		if (i > 0)
			util_buf_adds(out, "\r\n\t ");
		util_buf_add(out, b64 + i, n - i < 64 ? n - i : 64);
	}
}

/* arc_our_ar - the value of the first Authentication-Results field of
 * the verdict headers (ours), as [p, p+len) without white space in front
 * and without the final CRLF; NULL when there is none. */
static const char *arc_our_ar(const char *headers, size_t *len)
{
	struct util_hdr_field f;
	size_t pos = 0, n = headers != NULL ? strlen(headers) : 0;

	while (n > 0 && util_hdr_next(headers, n, &pos, &f) == 1) {
		const char *p = f.value;
		size_t l = f.value_len;
		if (!util_hdr_name_is(&f, "Authentication-Results"))
			continue;
		while (l > 0 && (*p == ' ' || *p == '\t')) {
			p++;
			l--;
		}
		*len = l;
		return p;
	}
	return NULL;
}

/* What one seal needs besides the header fields and the body hash, all
 * owned: made by the verdict job (policy_arc_seal) and used there at once,
 * or - the seal deferred (policy_msg_seal_later) - handed to the caller
 * (policy_msg_seal_take) and used on a content worker once the message is
 * final.  It outlives the message and the context (a reload): the key is a
 * reference of its own and the strings are copies. */
struct policy_seal {
	EVP_PKEY *key; /* a reference of our own (EVP_PKEY_up_ref) */
	char *alg, *domain, *selector;
	size_t inst;
	const char *cv;       /* static: "none", "pass", "fail" */
	char *aar;            /* our Authentication-Results value */
	struct util_buf prev; /* cv=pass: the older sets, relaxed with CRLF, oldest first */
	size_t max_header;    /* the spool's header block is at most this long */
	char *fields;         /* the result: ARC-Seal, ARC-Message-Signature, AAR */
};

/* policy_seal_free - NULL-safe. */
void policy_seal_free(struct policy_seal *ps)
{
	if (ps == NULL)
		return;
	EVP_PKEY_free(ps->key);
	free(ps->alg);
	free(ps->domain);
	free(ps->selector);
	free(ps->aar);
	util_buf_free(&ps->prev);
	free(ps->fields);
	free(ps);
}

/* arc_make_set - sign: our ARC set (AS, AMS, AAR, CRLF each) over the
 * delivered fields of hs and the body hash bh into ps->fields; 0/-1. */
static int arc_make_set(struct policy_seal *ps, const struct arc_hdrs *hs,
                        const unsigned char bh[32])
{
	struct util_buf aar, ams, as, data, out;
	char *bh64 = NULL, *sig = NULL, hlist[1024];
	size_t hl = 0;
	long long now = (long long)time(NULL);
	int rc = -1;

	/* h=: each signable name as often as it is delivered (From always) */
	for (size_t k = 0; k < sizeof(arc_sign_names) / sizeof(arc_sign_names[0]); k++) {
		size_t nl = strlen(arc_sign_names[k]), count = 0;
		for (size_t i = 0; i < hs->nf; i++)
			if (hs->f[i].kept && arc_field_name_is(hs->base + hs->f[i].off,
			                                       hs->f[i].len, arc_sign_names[k], nl))
				count++;
		if (k == 0 && count == 0)
			count = 1;
		for (size_t c = 0; c < count && count <= 8 && hl + nl + 2 < sizeof(hlist); c++)
			hl += (size_t)snprintf(hlist + hl, sizeof(hlist) - hl, "%s%s",
			                       hl ? ":" : "", arc_sign_names[k]);
	}
	bh64 = policy_arc_b64(bh, 32);
	util_buf_init(&aar);
	util_buf_init(&ams);
	util_buf_init(&as);
	util_buf_init(&data);
	util_buf_init(&out);
	util_buf_printf(&aar, "ARC-Authentication-Results: i=%zu; %s\r\n", ps->inst, ps->aar);
	util_buf_printf(&ams,
	                "ARC-Message-Signature: i=%zu; a=%s; c=relaxed/relaxed;\r\n\td=%s; s=%s; "
	                "t=%lld;\r\n\th=%s;\r\n\tbh=%s;\r\n\tb=",
	                ps->inst, ps->alg, ps->domain, ps->selector, now, hlist, bh64);
	if (arc_hash_headers(hs, hlist, true, true, &data) < 0)
		goto done;
	policy_arc_canon_header(&data, ams.data, ams.len, true, false);
	sig = policy_arc_sign(ps->key, &data);
	if (sig == NULL)
		goto done;
	arc_fold_b64(&ams, sig);
	util_buf_adds(&ams, "\r\n");
	free(sig);
	sig = NULL;
	util_buf_printf(&as, "ARC-Seal: i=%zu; a=%s; t=%lld; cv=%s;\r\n\td=%s; s=%s;\r\n\tb=",
	                ps->inst, ps->alg, now, ps->cv, ps->domain, ps->selector);
	util_buf_reset(&data);
	/* cv=pass: the seal covers every set, oldest first, ours last;
	 * cv=fail: our set only (RFC 8617 5.1.1 / 5.1.2) */
	if (ps->prev.len > 0)
		util_buf_add(&data, ps->prev.data, ps->prev.len);
	policy_arc_canon_header(&data, aar.data, aar.len, true, true);
	policy_arc_canon_header(&data, ams.data, ams.len, true, true);
	policy_arc_canon_header(&data, as.data, as.len, true, false);
	sig = policy_arc_sign(ps->key, &data);
	if (sig == NULL)
		goto done;
	arc_fold_b64(&as, sig);
	util_buf_adds(&as, "\r\n");
	util_buf_add(&out, as.data, as.len);
	util_buf_add(&out, ams.data, ams.len);
	util_buf_add(&out, aar.data, aar.len);
	free(ps->fields);
	ps->fields = out.data;
	out.data = NULL;
	rc = 0;
done:
	free(sig);
	free(bh64);
	util_buf_free(&aar);
	util_buf_free(&ams);
	util_buf_free(&as);
	util_buf_free(&data);
	util_buf_free(&out);
	return rc;
}

/* arc_seal_new - worker: what our seal of this message needs, or NULL
 * when none is due (not sealing, refused, chain at i=50) or it cannot be
 * made (counted and logged as failed). */
static struct policy_seal *arc_seal_new(struct policy_msg *pm)
{
	const struct config *cfg = pm->pc->cfg;
	struct arc_ctx *ac = pm->pc->arc;
	struct arc_msg *am = pm->arc;
	struct policy_seal *ps;
	const char *arv;
	size_t arlen = 0;

	if (!cfg->arc_seal || ac == NULL || ac->key == NULL || am == NULL || !am->parsed ||
	    (pm->verdict.action != POLICY_ACCEPT && pm->verdict.action != POLICY_QUARANTINE))
		return NULL;
	arv = arc_our_ar(pm->v_headers, &arlen);
	if (arv == NULL || am->too_many) {
		util_log_err("arc op=seal error=\"message not sealed: no A-R or too many header "
		             "fields\"");
		util_metrics_inc("mxgate_arc_seals_total", "failed");
		return NULL;
	}
	ps = util_xcalloc(1, sizeof(*ps));
	util_buf_init(&ps->prev);
	/* RFC 8617 5.1.1: our instance follows the chain; cv is what we found */
	if (am->evaluated && am->result == POLICY_ARC_PASS) {
		ps->inst = am->chain.n + 1;
		ps->cv = "pass";
	} else if (am->chain.n == 0 && am->chain.max_seen == 0 && !am->chain.structural_fail) {
		ps->inst = 1;
		ps->cv = "none";
	} else {
		ps->inst = (size_t)am->chain.max_seen + 1;
		ps->cv = "fail";
	}
	if (ps->inst > 50) {
		util_log_warn("arc op=seal error=\"chain at i=50: not sealed (RFC 8617 5.1.1)\"");
		policy_seal_free(ps);
		return NULL;
	}
	for (size_t i = 0; strcmp(ps->cv, "pass") == 0 && i < am->chain.n; i++)
		for (int k = 0; k < 3; k++)
			policy_arc_canon_header(&ps->prev, am->chain.sets[i].raw[k],
			                        am->chain.sets[i].rawlen[k], true, true);
	EVP_PKEY_up_ref(ac->key);
	ps->key = ac->key;
	ps->alg = util_xstrdup(ac->alg);
	ps->domain = util_xstrdup(cfg->arc_domain);
	ps->selector = util_xstrdup(cfg->arc_selector);
	ps->aar = util_xasprintf("%.*s", (int)arlen, arv);
	ps->max_header = cfg->max_header_size > 0 ? (size_t)cfg->max_header_size : 0;
	return ps;
}

/* policy_arc_seal - worker, after the verdict headers: our ARC set in
 * front of them; deferred (policy_msg_seal_later): only what the seal
 * needs, kept for policy_msg_seal_take. */
void policy_arc_seal(struct policy_msg *pm)
{
	struct arc_msg *am = pm->arc;
	struct policy_seal *ps;
	struct util_buf out;
	unsigned char bh[32];

	if (am == NULL || (am->sbody == NULL && !pm->seal_later))
		return;
	ps = arc_seal_new(pm);
	if (ps == NULL)
		return;
	if (pm->seal_later) {
		policy_seal_free(am->later);
		am->later = ps;
		return;
	}
	const struct arc_hdrs hs = {am->hdr.data, am->f, am->nf};
	if (arc_body_from_fd(pm, am) < 0 || policy_arc_body_final(am->sbody, bh) < 0 ||
	    arc_make_set(ps, &hs, bh) < 0) {
		util_log_err("arc op=seal error=\"message not sealed: body or signing failed\"");
		util_metrics_inc("mxgate_arc_seals_total", "failed");
		policy_seal_free(ps);
		return;
	}
	util_buf_init(&out);
	util_buf_adds(&out, ps->fields);
	util_buf_adds(&out, pm->v_headers);
	free(pm->v_headers);
	pm->v_headers = out.data;
	pm->verdict.headers = pm->v_headers;
	util_metrics_inc("mxgate_arc_seals_total", "sealed");
	policy_seal_free(ps);
}

/* policy_msg_seal_later - see policy.h. */
void policy_msg_seal_later(struct policy_msg *pm)
{
	pm->seal_later = true;
}

/* policy_msg_seal_take - see policy.h. */
struct policy_seal *policy_msg_seal_take(struct policy_msg *pm)
{
	struct arc_msg *am = pm->arc;
	struct policy_seal *ps = am != NULL ? am->later : NULL;

	if (am != NULL)
		am->later = NULL;
	return ps;
}

/* seal_read - the spool [0, size) of fd: its header block appended to
 * hdr, its body into the hash; 0/-1 (a read error, or a header block
 * longer than any the session keeps). */
static int seal_read(struct policy_seal *ps, int fd, int64_t size, struct util_buf *hdr,
                     struct policy_arc_body *body)
{
	static const size_t chunk = 64 * 1024;
	struct policy_arc_split sp;
	int64_t off = 0;
	char *buf = util_xmalloc(chunk);
	int rc = 0;

	/* the header block was at most max_header_size when it was received */
	policy_arc_split_init(&sp, hdr, body, ps->max_header);
	while (off < size) {
		size_t want = size - off < (int64_t)chunk ? (size_t)(size - off) : chunk;
		ssize_t n = pread(fd, buf, want, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			util_log_err("arc op=seal-read error=\"%s\"",
			             n < 0 ? strerror(errno) : "file shorter than the message");
			rc = -1;
			break;
		}
		off += n;
		if (policy_arc_split_feed(&sp, buf, (size_t)n) < 0) {
			util_log_err("arc op=seal-read error=\"header block over max_header_size\"");
			rc = -1;
			break;
		}
	}
	free(buf);
	return rc;
}

/* policy_seal_run - see policy.h. */
int policy_seal_run(struct policy_seal *ps, const char *prepend, int fd, int64_t size)
{
	struct policy_arc_body *body = policy_arc_body_new(true, -1);
	struct util_buf hdr;
	struct arc_field *f = NULL;
	size_t nf = 0, nown = 0, capf = 0, pos = 0, plen = prepend != NULL ? strlen(prepend) : 0;
	struct util_hdr_field hf;
	struct arc_hdrs hs;
	unsigned char bh[32];
	bool too_many = false;
	int r, rc = -1;

	util_buf_init(&hdr);
	util_buf_add(&hdr, prepend != NULL ? prepend : "", plen);
	if (fd < 0 || seal_read(ps, fd, size, &hdr, body) < 0)
		goto done;
	/* the final header block: the fields mxgate puts in front (the
	 * re-emitted Subject among them), then the spool's; all delivered.
	 * Only the spool's count against POLICY_ARC_MAX_FIELDS, the limit
	 * the policy job applied to the fields as received. */
	while ((r = util_hdr_next(hdr.data, hdr.len, &pos, &hf)) == 1) {
		bool own = (size_t)(hf.raw - hdr.data) < plen;
		too_many = own ? nown == POLICY_ARC_MAX_OWN : nf - nown == POLICY_ARC_MAX_FIELDS;
		if (too_many)
			break;
		nown += own;
		if (nf == capf) {
			capf = capf ? capf * 2 : 64;
			f = util_xrealloc(f, capf * sizeof(*f));
		}
		f[nf].off = (size_t)(hf.raw - hdr.data);
		f[nf].len = hf.raw_len;
		f[nf].kept = true;
		nf++;
	}
	if (r < 0 || too_many) {
		util_log_err("arc op=seal error=\"message not sealed: %s\"",
		             r < 0 ? "malformed header field" : "too many header fields");
		goto done;
	}
	hs.base = hdr.data;
	hs.f = f;
	hs.nf = nf;
	if (policy_arc_body_final(body, bh) < 0 || arc_make_set(ps, &hs, bh) < 0) {
		util_log_err("arc op=seal error=\"signing failed: message not sealed\"");
		goto done;
	}
	rc = 0;
done:
	util_metrics_inc("mxgate_arc_seals_total", rc == 0 ? "sealed" : "failed");
	policy_arc_body_free(body);
	util_buf_free(&hdr);
	free(f);
	return rc;
}

/* policy_seal_fields - see policy.h. */
const char *policy_seal_fields(const struct policy_seal *ps)
{
	return ps != NULL ? ps->fields : NULL;
}

/* policy_arc_msg_free - the message's ARC state. */
void policy_arc_msg_free(struct policy_msg *pm)
{
	struct arc_msg *am = pm->arc;

	if (am == NULL)
		return;
	util_buf_free(&am->hdr);
	free(am->f);
	policy_arc_chain_free(&am->chain);
	policy_arc_body_free(am->vbody);
	policy_arc_body_free(am->sbody);
	policy_seal_free(am->later);
	free(am->why);
	free(am->sealer);
	free(am->defer);
	free(am);
	pm->arc = NULL;
}
