/*
 * policy-dkim.c - DKIM verification (RFC 6376, RFC 8301, RFC 8463) with
 * libopendkim, keys from mxgate's own resolver.
 *
 * Streaming: the loop thread only saves the header fields (raw, in one
 * buffer bounded by max_header_size; DKIM-Signature fields beyond
 * dkim_max_signatures are counted and dropped) - no libopendkim call runs on
 * the loop: signature parsing inside dkim_eoh() is outside input with a
 * worse-than-linear cost (one message with 6,500 signatures held the loop
 * for seconds).  The worker (policy_dkim_eval) feeds dkim_header() and
 * dkim_eoh(), hashes the body read back from the spool, then verifies.
 * libopendkim verifies signatures (and so fetches keys) inside dkim_eoh()
 * unless DKIM_LIBFLAGS_DELAYSIGPROC is set, so we set it: dkim_eoh() then
 * only parses.  All key
 * lookups happen in policy_dkim_eval() on a worker: we fetch every selector
 * record through policy_dns first (so we know each one's DNSSEC status and
 * can tell temporary from permanent failures), then dkim_eom() gets them
 * through the dkim_set_key_lookup() callback.  libopendkim's own resolver
 * (res_* or its libunbound, which calls ub_ctx_config per message - see
 * DESIGN.md "Known traps") is never used.
 *
 * RFC 8301: rsa-sha1 and RSA keys shorter than dkim_min_rsa_bits never pass
 * (result "policy").  After libopendkim's verdict mxgate's own layer
 * (dkim_strict_judge, helpers in policy-dkim-strict.c) overrides it where
 * the library is wrong by RFC 6376 (a repeated tag, k= vs a=) or where
 * [auth] dkim_strict refuses a known attack (l= leaving body bytes
 * unsigned, an unsigned extra instance of a signed single-use field);
 * docs/conformance.md "DKIM".  Only the first dkim_max_signatures signatures are
 * evaluated (prescreen callback).
 *
 * Ownership: the DKIM handle and the results belong to the message.
 * Threads: the DKIM_LIB is shared (libopendkim allows that); a DKIM handle
 * is created on the loop (dkim_verify, no input) and used only by the
 * worker.  Memory: a session holds at most one copy of its header block
 * here; libopendkim's own copies exist only while a worker runs the job.
 * Diagnostics: library errors at debug, results in the A-R comments.
 */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <opendkim/dkim.h>

#include "policy-internal.h"

/* Header fields other than DKIM-Signature a message may have and still be
 * verified (dkim_feed_headers). */
#define DKIM_MAX_FIELDS 1000

struct dkim_key {
	DKIM_SIGINFO *sig;
	enum policy_dns_status status;
	char *text;
	bool secure;
	bool fetched;  /* looked up (not over the limit / broken) */
	bool bad_name; /* s._domainkey.d is no DNS name: not looked up */
};

struct dkim_keys {
	struct dkim_key *v;
	size_t n;
};

/* What mxgate's own checks (policy-dkim-strict.c) need, gathered by the
 * worker while it feeds libopendkim: the DKIM-Signature values as
 * received, instance counts of the single-use fields, the canonical body
 * lengths. */
struct dkim_strict {
	char **sigv; /* owned copies of the DKIM-Signature values */
	size_t nsig;
	int count[POLICY_DKIM_NSINGLE];
	struct policy_dkim_bodylen bl;
};

/* dkim_strict_free - NULL-safe. */
static void dkim_strict_free(struct dkim_strict *st)
{
	if (st == NULL)
		return;
	for (size_t i = 0; i < st->nsig; i++)
		free(st->sigv[i]);
	free(st->sigv);
	free(st);
}

/* dkim_find_key - the prefetched key record of one signature. */
static struct dkim_key *dkim_find_key(struct policy_msg *pm, DKIM_SIGINFO *sig)
{
	struct dkim_keys *ks = pm->keys;

	for (size_t i = 0; ks != NULL && i < ks->n; i++)
		if (ks->v[i].sig == sig)
			return &ks->v[i];
	return NULL;
}

/* dkim_key_lookup - libopendkim callback (worker, inside dkim_eom): serve
 * the record prefetched through policy_dns. */
static DKIM_CBSTAT dkim_key_lookup(DKIM *dkim, DKIM_SIGINFO *sig, u_char *buf, size_t buflen)
{
	struct policy_msg *pm = dkim_get_user_context(dkim);
	struct dkim_key *k = pm != NULL ? dkim_find_key(pm, sig) : NULL;

	if (k == NULL || k->status != POLICY_DNS_OK || k->text == NULL)
		return DKIM_CBSTAT_NOTFOUND;
	if (strlen(k->text) >= buflen)
		return DKIM_CBSTAT_ERROR;
	strcpy((char *)buf, k->text);
	return DKIM_CBSTAT_CONTINUE;
}

/* dkim_prescreen - libopendkim callback (worker, in dkim_eoh): ignore the
 * signatures beyond dkim_max_signatures.  A second guard: only that many
 * DKIM-Signature fields reach the library (policy_dkim_header). */
static DKIM_CBSTAT dkim_prescreen(DKIM *dkim, DKIM_SIGINFO **sigs, int nsigs)
{
	struct policy_msg *pm = dkim_get_user_context(dkim);
	int max = pm != NULL ? pm->pc->cfg->dkim_max_signatures : 5;

	for (int i = max > 0 ? max : 0; i < nsigs; i++)
		dkim_sig_ignore(sigs[i]);
	return DKIM_CBSTAT_CONTINUE;
}

/* policy_dkim_lib_init - one DKIM_LIB per context: delayed signature processing, our key lookup,
 * limits. */
int policy_dkim_lib_init(struct policy_ctx *pc, char *err, size_t errlen)
{
	DKIM_LIB *lib = dkim_init(NULL, NULL);
	unsigned int flags = 0;
	unsigned int bits =
	    (unsigned int)(pc->cfg->dkim_min_rsa_bits > 0 ? pc->cfg->dkim_min_rsa_bits : 1024);

	if (lib == NULL) {
		snprintf(err, errlen, "dkim_init failed");
		return -1;
	}
	pc->dkim_lib = lib;
	dkim_options(lib, DKIM_OP_GETOPT, DKIM_OPTS_FLAGS, &flags, sizeof(flags));
	flags |= DKIM_LIBFLAGS_DELAYSIGPROC;
	if (dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags, sizeof(flags)) !=
	        DKIM_STAT_OK ||
	    dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_MINKEYBITS, &bits, sizeof(bits)) !=
	        DKIM_STAT_OK ||
	    dkim_set_key_lookup(lib, dkim_key_lookup) != DKIM_STAT_OK ||
	    dkim_set_prescreen(lib, dkim_prescreen) != DKIM_STAT_OK) {
		snprintf(err, errlen, "libopendkim options refused");
		return -1;
	}
	if (!dkim_libfeature(lib, DKIM_FEATURE_ED25519))
		util_log_warn("dkim ed25519=unsupported msg=\"libopendkim built without "
		              "ed25519-sha256: such signatures will not verify\"");
	return 0;
}

/* policy_dkim_lib_free - close the context's DKIM_LIB. */
void policy_dkim_lib_free(struct policy_ctx *pc)
{
	if (pc->dkim_lib != NULL)
		dkim_close(pc->dkim_lib);
	pc->dkim_lib = NULL;
}

/* policy_dkim_msg_begin - loop: a verification handle for one message. */
int policy_dkim_msg_begin(struct policy_msg *pm)
{
	DKIM_STAT st = DKIM_STAT_OK;
	DKIM *dkim;

	if (pm->pc->dkim_lib == NULL)
		return -1;
	dkim = dkim_verify(pm->pc->dkim_lib, (const unsigned char *)"mxgate", NULL, &st);
	if (dkim == NULL) {
		util_log_warn("dkim_verify failed status=%d", st);
		pm->dkim_broken = true;
		return -1;
	}
	dkim_set_user_context(dkim, pm);
	pm->dkim = dkim;
	return 0;
}

/* policy_dkim_header - loop: save one header field for the worker (no
 * library call here: libopendkim's signature parsing is not linear in the
 * number of signatures, and it is outside input).  DKIM-Signature fields
 * beyond dkim_max_signatures are not saved at all, only counted: libopendkim
 * never sees them, so they cost neither time nor memory (RFC 6376 6.1 lets a
 * verifier limit the signatures it processes). */
void policy_dkim_header(struct policy_msg *pm, const struct util_hdr_field *f)
{
	int max = pm->pc->cfg->dkim_max_signatures > 0 ? pm->pc->cfg->dkim_max_signatures : 5;

	if (pm->dkim_broken)
		return;
	if (util_hdr_name_is(f, "DKIM-Signature")) {
		if (pm->dkim_sigs_kept >= max) {
			pm->dkim_sigs_skipped++;
			return;
		}
		pm->dkim_sigs_kept++;
	} else {
		pm->dkim_fields++;
	}
	util_buf_add(&pm->dkim_hdrs, f->raw, f->raw_len);
}

/* policy_dkim_eoh - loop: end of header.  Without a DKIM-Signature there is
 * nothing to verify: the saved fields are dropped at once. */
void policy_dkim_eoh(struct policy_msg *pm)
{
	if (pm->dkim_broken)
		return;
	if (pm->dkim_sigs_kept == 0) {
		pm->dkim_nosig = true;
		util_buf_free(&pm->dkim_hdrs);
	}
	if (pm->dkim_sigs_skipped > 0)
		util_log_info("dkim signatures=%d ignored=%d msg=\"beyond dkim_max_signatures\"",
		              pm->dkim_sigs_kept + pm->dkim_sigs_skipped, pm->dkim_sigs_skipped);
}

/* policy_dkim_body - loop: a body chunk from a caller without a file: kept
 * in an anonymous file (memfd) that the worker reads like a spool file. */
void policy_dkim_body(struct policy_msg *pm, const char *p, size_t n)
{
	if (pm->dkim_broken || pm->dkim_nosig || n == 0)
		return;
	if (pm->body_fd < 0) {
		pm->body_fd = memfd_create("mxgate-dkim-body", MFD_CLOEXEC);
		pm->body_off = pm->body_end = 0;
		if (pm->body_fd < 0) {
			pm->body_err = errno;
			return;
		}
	}
	if (util_write_all(pm->body_fd, p, n) < 0)
		pm->body_err = errno ? errno : EIO;
	else
		pm->body_end += (int64_t)n;
}

/* policy_dkim_wants_body - loop: a body would be hashed. */
bool policy_dkim_wants_body(const struct policy_msg *pm)
{
	return !pm->dkim_broken && !pm->dkim_nosig;
}

/* dkim_feed_headers - worker: the saved header fields into libopendkim
 * (without their final CRLF, as it wants them), then end of header.  -1
 * when the library refuses the block (no signature can then be judged).
 * A message with more than DKIM_MAX_FIELDS other fields gets only its
 * DKIM-Signature fields (and one From:) handed over, so they are named in
 * the A-R, and
 * none verified (dkim_too_many: result "policy"): libopendkim keeps a
 * struct and copies per field (~100 bytes for a 4-byte field), so a block
 * of tiny fields would cost it ~25x max_header_size per job.  Handing over
 * only the bottom-most fields instead would be unsafe: a field added on top
 * of an over-signed one (RFC 6376 8.15) would go unseen and the signature
 * would pass. */
static int dkim_feed_headers(struct policy_msg *pm)
{
	struct util_hdr_field f;
	size_t pos = 0;
	bool from_seen = false;
	DKIM_STAT st;
	struct dkim_strict *ds = util_xcalloc(1, sizeof(*ds));

	dkim_strict_free(pm->strict);
	pm->strict = ds;
	ds->sigv = util_xcalloc((size_t)pm->dkim_sigs_kept + 1, sizeof(*ds->sigv));
	pm->dkim_too_many = pm->dkim_fields > DKIM_MAX_FIELDS;
	if (pm->dkim_too_many)
		util_log_info("dkim fields=%d msg=\"more than %d header fields: no signature is "
		              "verified\"",
		              pm->dkim_fields, DKIM_MAX_FIELDS);
	while (util_hdr_next(pm->dkim_hdrs.data, pm->dkim_hdrs.len, &pos, &f) == 1) {
		size_t len = f.raw_len;
		int su = policy_dkim_single_use_index(f.name, f.name_len);

		if (su >= 0)
			ds->count[su]++;
		if (util_hdr_name_is(&f, "DKIM-Signature") && ds->nsig < (size_t)pm->dkim_sigs_kept)
			ds->sigv[ds->nsig++] = util_xstrndup(f.value, f.value_len);
		/* too many: the signatures and one From: (libopendkim refuses a
		 * message without one) */
		if (pm->dkim_too_many && !util_hdr_name_is(&f, "DKIM-Signature") &&
		    (from_seen || !util_hdr_name_is(&f, "From")))
			continue;
		if (util_hdr_name_is(&f, "From"))
			from_seen = true;
		if (len >= 2 && f.raw[len - 2] == '\r' && f.raw[len - 1] == '\n')
			len -= 2;
		st = dkim_header(pm->dkim, (u_char *)(uintptr_t)f.raw, len);
		if (st != DKIM_STAT_OK)
			util_log_debug("dkim_header status=%d error=\"%s\"", st,
			               dkim_geterror(pm->dkim) ? dkim_geterror(pm->dkim) : "");
	}
	util_buf_free(&pm->dkim_hdrs);
	st = dkim_eoh(pm->dkim);
	if (st == DKIM_STAT_NOSIG) {
		pm->dkim_nosig = true;
		return -1;
	}
	if (st != DKIM_STAT_OK)
		util_log_debug("dkim_eoh status=%d error=\"%s\"", st,
		               dkim_geterror(pm->dkim) ? dkim_geterror(pm->dkim) : "");
	return 0;
}

/* dkim_body_from_fd - worker: the body from the spool file into the body
 * hashes (policy_msg_body_fd).  A read error is kept in body_err: every
 * signature then gets temperror, never fail. */
static void dkim_body_from_fd(struct policy_msg *pm)
{
	static const size_t chunk = 64 * 1024;
	char *buf = util_xmalloc(chunk);
	off_t off = (off_t)pm->body_off;

	while (off < (off_t)pm->body_end) {
		size_t want = (size_t)((off_t)pm->body_end - off) < chunk
		                  ? (size_t)((off_t)pm->body_end - off)
		                  : chunk;
		ssize_t n = pread(pm->body_fd, buf, want, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			pm->body_err = errno;
			util_log_err("dkim op=read-body error=\"%s\"", strerror(errno));
			break;
		}
		if (n == 0) {
			/* shorter than what was written: never hash a partial body */
			pm->body_err = EIO;
			util_log_err("dkim op=read-body error=\"file shorter than the message\"");
			break;
		}
		dkim_body(pm->dkim, (u_char *)buf, (size_t)n);
		if (pm->strict != NULL)
			policy_dkim_bodylen_feed(&((struct dkim_strict *)pm->strict)->bl, buf,
			                         (size_t)n);
		off += n;
	}
	free(buf);
}

/* dkim_prefetch - worker: look up every selector record through our
 * resolver; signatures whose key is missing or unreachable are set aside
 * (ignored by the library, reported by us). */
static void dkim_prefetch(struct policy_msg *pm, DKIM_SIGINFO **sigs, int nsigs)
{
	struct dkim_keys *ks = util_xcalloc(1, sizeof(*ks));

	ks->v = util_xcalloc((size_t)(nsigs > 0 ? nsigs : 1), sizeof(*ks->v));
	pm->keys = ks;
	for (int i = 0; i < nsigs; i++) {
		struct dkim_key *k = &ks->v[ks->n++];
		const char *d = (const char *)dkim_sig_getdomain(sigs[i]);
		const char *s = (const char *)dkim_sig_getselector(sigs[i]);
		struct util_strlist txt = {0};
		char *name;

		k->sig = sigs[i];
		k->status = POLICY_DNS_NXDOMAIN;
		if ((dkim_sig_getflags(sigs[i]) & DKIM_SIGFLAG_IGNORE) != 0 || d == NULL ||
		    s == NULL || dkim_sig_geterror(sigs[i]) != DKIM_SIGERROR_UNKNOWN)
			continue;
		k->fetched = true;
		name = util_xasprintf("%s._domainkey.%s", s, d);
		/* a selector or domain that makes no DNS name (a label over 63
		 * octets, an empty one, over 253 in all) is the signature's own
		 * error: permerror, never the resolver's temperror (which let
		 * anyone turn an aligned signature into DMARC temperror) */
		if (!policy_dns_name_ok(name)) {
			k->bad_name = true;
			free(name);
			dkim_sig_ignore(sigs[i]);
			continue;
		}
		k->status = policy_dns_txt_sync(pm->pc->dns, name, &txt, &k->secure);
		if (k->status == POLICY_DNS_OK && txt.n > 0)
			k->text = util_xstrdup(txt.v[0]);
		else if (k->status == POLICY_DNS_OK)
			k->status = POLICY_DNS_NODATA;
		util_strlist_free(&txt);
		free(name);
		if (k->status != POLICY_DNS_OK)
			dkim_sig_ignore(sigs[i]);
	}
}

/* dkim_b8 - first 8 characters of the b= tag, folding removed (RFC 6008). */
static char *dkim_b8(DKIM_SIGINFO *sig)
{
	const char *b = (const char *)dkim_sig_gettagvalue(sig, 0, (u_char *)"b");
	char out[9];
	size_t o = 0;

	if (b == NULL)
		return NULL;
	for (; *b && o < 8; b++)
		if (*b != ' ' && *b != '\t' && *b != '\r' && *b != '\n')
			out[o++] = *b;
	out[o] = 0;
	return util_xstrdup(out);
}

/* dkim_judge - one signature's RFC 8601 result and comment. */
static void dkim_judge(struct policy_msg *pm, DKIM_SIGINFO *sig, struct dkim_key *k,
                       struct policy_dkim_sig *out)
{
	int err = dkim_sig_geterror(sig);
	unsigned int bits = 0;
	dkim_alg_t alg = DKIM_SIGN_RSASHA256;

	if (k != NULL && !k->fetched)
		k = NULL;
	if (pm->dkim_too_many) {
		out->result = "policy";
		out->comment =
		    util_xasprintf("more than %d header fields, not verified", DKIM_MAX_FIELDS);
		return;
	}
	if (pm->body_err != 0) {
		out->result = "temperror";
		out->comment = util_xasprintf("the message could not be read back: %s",
		                              strerror(pm->body_err));
		return;
	}
	if (k != NULL && k->bad_name) {
		out->result = "permerror";
		out->comment = util_xstrdup("the key name s._domainkey.d is not a valid DNS name");
		return;
	}
	if (k != NULL && (k->status == POLICY_DNS_TEMPFAIL || k->status == POLICY_DNS_BOGUS)) {
		out->result = "temperror";
		out->comment = util_xstrdup(k->status == POLICY_DNS_BOGUS
		                                ? "key lookup failed DNSSEC validation"
		                                : "key lookup failed");
		return;
	}
	if (k != NULL && (k->status == POLICY_DNS_NXDOMAIN || k->status == POLICY_DNS_NODATA) &&
	    (err == DKIM_SIGERROR_UNKNOWN || err == DKIM_SIGERROR_NOKEY)) {
		out->result = "permerror";
		out->comment = util_xstrdup("no key for signature");
		return;
	}
	dkim_sig_getsignalg(sig, &alg);
	if ((err == DKIM_SIGERROR_OK || err == DKIM_SIGERROR_BADSIG) &&
	    dkim_sig_getbh(sig) == DKIM_SIGBH_MISMATCH) {
		out->result = "fail";
		out->comment = util_xstrdup("body hash did not verify");
		return;
	}
	if (err == DKIM_SIGERROR_OK && DKIM_SIG_CHECK(sig)) {
		dkim_sig_getkeysize(sig, &bits);
		if (alg == DKIM_SIGN_RSASHA1) {
			out->result = "policy";
			out->comment = util_xstrdup("rsa-sha1 is not accepted, RFC 8301");
		} else if (alg != DKIM_SIGN_ED25519SHA256 &&
		           (int)bits < pm->pc->cfg->dkim_min_rsa_bits) {
			out->result = "policy";
			out->comment = util_xasprintf("%u-bit key is too short, RFC 8301", bits);
		} else {
			out->result = "pass";
			out->comment = alg == DKIM_SIGN_ED25519SHA256
			                   ? util_xstrdup("ed25519-sha256")
			                   : util_xasprintf("%u-bit key", bits);
		}
		return;
	}
	switch (err) {
	case DKIM_SIGERROR_OK:
		out->result = "fail";
		out->comment = util_xstrdup(dkim_sig_getbh(sig) == DKIM_SIGBH_MISMATCH
		                                ? "body hash did not verify"
		                                : "signature did not verify");
		return;
	case DKIM_SIGERROR_KEYTOOSMALL:
		dkim_sig_getkeysize(sig, &bits);
		out->result = "policy";
		out->comment = util_xasprintf("%u-bit key is too short, RFC 8301", bits);
		return;
	case DKIM_SIGERROR_BADSIG:
	case DKIM_SIGERROR_KEYREVOKED:
	case DKIM_SIGERROR_EXPIRED:
	case DKIM_SIGERROR_FUTURE:
	case DKIM_SIGERROR_KEYHASHMISMATCH:
	case DKIM_SIGERROR_SUBDOMAIN:
		out->result = "fail";
		break;
	case DKIM_SIGERROR_NOKEY:
	case DKIM_SIGERROR_DNSSYNTAX:
	case DKIM_SIGERROR_KEYDECODE:
	case DKIM_SIGERROR_KEYTYPEUNKNOWN:
	case DKIM_SIGERROR_KEYVERSION:
	case DKIM_SIGERROR_NOTEMAILKEY:
		out->result = "permerror";
		break;
	case DKIM_SIGERROR_KEYFAIL:
		out->result = "temperror";
		break;
	case DKIM_SIGERROR_UNKNOWN:
		out->result = "neutral";
		out->comment = util_xstrdup("signature not verified");
		return;
	default:
		out->result = "neutral";
		break;
	}
	out->comment = util_xstrdup(dkim_sig_geterrorstr(err) ? dkim_sig_geterrorstr(err)
	                                                      : "invalid signature");
}

/* dkim_set - replace a signature's result and comment. */
static void dkim_set(struct policy_dkim_sig *o, const char *result, const char *comment)
{
	free(o->comment);
	o->result = result;
	o->comment = util_xstrdup(comment);
}

/* dkim_same_b - the b= value of our parse equals libopendkim's, white space
 * ignored: how a DKIM_SIGINFO is matched to the field it came from. */
static bool dkim_same_b(const struct policy_dkim_tag *t, const char *b)
{
	size_t i = 0;

	for (;; b++) {
		while (i < t->value_len && isspace((unsigned char)t->value[i]))
			i++;
		while (*b != 0 && isspace((unsigned char)*b))
			b++;
		if (i == t->value_len || *b == 0)
			return i == t->value_len && *b == 0;
		if (t->value[i++] != *b)
			return false;
	}
}

/* dkim_find_field - parse the received DKIM-Signature values until the one
 * sig came from (same b=); its parse result (0/-1, err) and tags. */
static bool dkim_find_field(struct dkim_strict *ds, DKIM_SIGINFO *sig,
                            struct policy_dkim_tags *tags, int *rc, char *err, size_t errlen)
{
	const char *b = (const char *)dkim_sig_gettagvalue(sig, 0, (u_char *)"b");

	for (size_t j = 0; b != NULL && j < ds->nsig; j++) {
		*rc = policy_dkim_tags_parse(ds->sigv[j], strlen(ds->sigv[j]), tags, err, errlen);
		for (size_t t = 0; t < tags->n; t++)
			if (tags->v[t].name_len == 1 && tags->v[t].name[0] == 'b' &&
			    dkim_same_b(&tags->v[t], b))
				return true;
		policy_dkim_tags_free(tags);
	}
	return false;
}

/* dkim_strict_judge - mxgate's layer after libopendkim's verdict
 * (docs/conformance.md "## DKIM"): a tag-list with a repeated tag is
 * permerror (RFC 6376 3.2; libopendkim keeps the last d=), a key whose type
 * is not a='s fails (3.6.1), and with dkim_strict a pass whose l= leaves
 * body bytes unsigned (8.2) or that leaves an instance of a signed
 * single-use field unsigned (8.15) becomes "policy". */
static void dkim_strict_judge(struct policy_msg *pm, DKIM_SIGINFO *sig, struct dkim_key *k,
                              struct policy_dkim_sig *o)
{
	struct dkim_strict *ds = pm->strict;
	struct policy_dkim_tags tags = {0}, key = {0};
	const struct policy_dkim_tag *a, *l, *h;
	char err[200], msg[300];
	int rc = 0;

	if (ds == NULL)
		return;
	if (!dkim_find_field(ds, sig, &tags, &rc, err, sizeof(err))) {
		dkim_set(o, "permerror", "signature tag-list does not parse, RFC 6376 3.2");
		goto done;
	}
	if (rc < 0) {
		snprintf(msg, sizeof(msg), "invalid signature: %s", err);
		dkim_set(o, "permerror", msg);
		goto done;
	}
	if (strcmp(o->result, "temperror") == 0 || strcmp(o->result, "permerror") == 0)
		goto done;
	if (k != NULL && k->fetched && k->status == POLICY_DNS_OK && k->text != NULL) {
		if (policy_dkim_tags_parse(k->text, strlen(k->text), &key, err, sizeof(err)) < 0) {
			snprintf(msg, sizeof(msg), "invalid key record: %s", err);
			dkim_set(o, "permerror", msg);
			goto done;
		}
		a = policy_dkim_tags_get(&tags, "a");
		if (a != NULL &&
		    policy_dkim_key_alg_check(&key, a->value, a->value_len, err, sizeof(err)) < 0) {
			dkim_set(o, "fail", err);
			goto done;
		}
	}
	if (!pm->pc->cfg->dkim_strict || strcmp(o->result, "pass") != 0)
		goto done;
	l = policy_dkim_tags_get(&tags, "l");
	if (l != NULL && pm->body_err == 0) {
		dkim_canon_t hc = DKIM_CANON_SIMPLE, bc = DKIM_CANON_SIMPLE;
		int64_t simple = 0, relaxed = 0, want;
		long long lv = strtoll(l->value, NULL, 10);

		dkim_sig_getcanons(sig, &hc, &bc);
		policy_dkim_bodylen_end(&ds->bl, &simple, &relaxed);
		want = bc == DKIM_CANON_RELAXED ? relaxed : simple;
		if (want > lv) {
			snprintf(msg, sizeof(msg),
			         "l=%lld leaves %lld body bytes unsigned, RFC 6376 8.2", lv,
			         (long long)(want - lv));
			dkim_set(o, "policy", msg);
			goto done;
		}
	}
	h = policy_dkim_tags_get(&tags, "h");
	for (int i = 0; h != NULL && i < POLICY_DKIM_NSINGLE; i++) {
		const char *name = policy_dkim_single_use_name(i);
		int n =
		    ds->count[i] > 1 ? policy_dkim_hlist_count(h->value, h->value_len, name) : 0;

		if (n > 0 && ds->count[i] > n) {
			snprintf(
			    msg, sizeof(msg),
			    "%d %s: fields, %d signed: an unsigned one was added, RFC 6376 8.15",
			    ds->count[i], name, n);
			dkim_set(o, "policy", msg);
			goto done;
		}
	}
done:
	policy_dkim_tags_free(&tags);
	policy_dkim_tags_free(&key);
}

/* dkim_eval - worker: fetch keys, finish verification, judge each signature. */
static void dkim_eval(struct policy_msg *pm)
{
	DKIM *dkim = pm->dkim;
	DKIM_SIGINFO **sigs = NULL;
	int nsigs = 0;
	_Bool testkey = 0;

	if (dkim == NULL || pm->dkim_broken || pm->dkim_nosig)
		return;
	if (dkim_feed_headers(pm) < 0)
		return;
	if (pm->body_fd >= 0 && !pm->dkim_too_many)
		dkim_body_from_fd(pm);
	if (dkim_getsiglist(dkim, &sigs, &nsigs) != DKIM_STAT_OK || nsigs <= 0)
		return;
	if (!pm->dkim_too_many) {
		dkim_prefetch(pm, sigs, nsigs);
		(void)dkim_eom(dkim, &testkey);
	}
	pm->sigs = util_xcalloc((size_t)nsigs, sizeof(*pm->sigs));
	for (int i = 0; i < nsigs; i++) {
		struct dkim_key *k = dkim_find_key(pm, sigs[i]);
		struct policy_dkim_sig *o;
		const char *d = (const char *)dkim_sig_getdomain(sigs[i]);
		const char *s = (const char *)dkim_sig_getselector(sigs[i]);
		const char *iv = (const char *)dkim_sig_gettagvalue(sigs[i], 0, (u_char *)"i");

		/* over the limit: not evaluated, not reported */
		if ((dkim_sig_getflags(sigs[i]) & DKIM_SIGFLAG_IGNORE) != 0 &&
		    (k == NULL || !k->fetched))
			continue;
		o = &pm->sigs[pm->nsigs++];
		o->d = d ? util_xstrdup(d) : NULL;
		o->s = s ? util_xstrdup(s) : NULL;
		o->i = iv ? util_xstrdup(iv) : NULL;
		o->b = dkim_b8(sigs[i]);
		o->secure = k != NULL && k->secure;
		dkim_judge(pm, sigs[i], k, o);
		dkim_strict_judge(pm, sigs[i], k, o);
	}
	dkim_strict_free(pm->strict);
	pm->strict = NULL;
	if (pm->keys != NULL) {
		struct dkim_keys *ks = pm->keys;
		for (size_t i = 0; i < ks->n; i++)
			free(ks->v[i].text);
		free(ks->v);
		free(ks);
		pm->keys = NULL;
	}
}

/* policy_dkim_eval - worker: the verdict on every signature (pm->sigs), then
 * libopendkim's handle is freed at once: it holds its own copy of every
 * header field fed to it, and the message may wait a while longer for its
 * queue commit - with the handle kept until then, a burst of messages
 * ending together held one such copy each instead of one per worker
 * (docs/security.md, "Memory in DATA"). */
void policy_dkim_eval(struct policy_msg *pm)
{
	dkim_eval(pm);
	if (pm->dkim != NULL)
		dkim_free(pm->dkim);
	pm->dkim = NULL;
}

/* policy_dkim_msg_free - free the handle and the per-signature results. */
void policy_dkim_msg_free(struct policy_msg *pm)
{
	if (pm->dkim != NULL)
		dkim_free(pm->dkim);
	pm->dkim = NULL;
	util_buf_free(&pm->dkim_hdrs);
	dkim_strict_free(pm->strict);
	pm->strict = NULL;
	for (size_t i = 0; i < pm->nsigs; i++) {
		free(pm->sigs[i].d);
		free(pm->sigs[i].s);
		free(pm->sigs[i].i);
		free(pm->sigs[i].b);
		free(pm->sigs[i].comment);
	}
	free(pm->sigs);
	pm->sigs = NULL;
	pm->nsigs = 0;
}
