/*
 * policy-arc.h - ARC (RFC 8617) inside policy/: the pure parsing and
 * canonicalisation pieces (policy-arc-parse.c, reached by the unit tests and
 * the fuzz target) and the per-message hooks called from policy.c
 * (policy-arc.c).  Nothing outside policy/ and its tests includes this.
 *
 * Ownership: parse results own their strings (free with the matching
 * *_free); struct policy_arc (one per message) belongs to the message.
 */
#ifndef MX_POLICY_ARC_H
#define MX_POLICY_ARC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/evp.h>

#include "util.h"

struct policy_msg;
struct policy_ctx;

/* Caps: RFC 8617 5.1.1 allows i=1..50; a longer chain than this is a
 * "fail" here (no forwarding path needs ten sealers). */
#define POLICY_ARC_MAX_INSTANCES 10
#define POLICY_ARC_MAX_TAGS      32
#define POLICY_ARC_MAX_SIGNED    64 /* names in an AMS h= */
/* header fields of a message as received that ARC indexes: more, and the
 * chain fails and nothing is sealed.  mxgate's own fields (the prepend) do
 * not count against it, so the seal made after content edits
 * (policy_seal_run) takes the same messages as the one in the policy job. */
#define POLICY_ARC_MAX_FIELDS 512
#define POLICY_ARC_MAX_OWN    512 /* fields mxgate prepends (a sanity bound) */

/* ------------------------------------------------------------ tag-list */

/* One tag=value of an RFC 6376 3.2 tag-list.  value: whitespace removed at
 * both ends (inner folding kept).  voff/vend: where the value lies in the
 * text given to the parser (for removing b= when hashing). */
struct policy_arc_tag {
	char name[16];
	char *value;
	size_t voff, vend;
};
struct policy_arc_tags {
	struct policy_arc_tag v[POLICY_ARC_MAX_TAGS];
	size_t n;
};
/* policy_arc_tags_parse - strict RFC 6376 3.2 tag-list: tag names are
 * ALPHA *(ALNUM / "_"), values contain no ';' and only printable or
 * folding characters, a trailing ';' is allowed, a duplicate tag name is
 * an error (3.2: "MUST be treated as an error").  0, or -1 with a reason
 * in err.  Free with policy_arc_tags_free() in both cases. */
int policy_arc_tags_parse(const char *s, size_t len, struct policy_arc_tags *out, char *err,
                          size_t errlen);
void policy_arc_tags_free(struct policy_arc_tags *t);
/* policy_arc_tag - the value of tag name, or NULL. */
const char *policy_arc_tag(const struct policy_arc_tags *t, const char *name);

/* ------------------------------------------------------------ canonicalisation */

/* policy_arc_canon_header - one raw field (name ':' value, with or without
 * its final CRLF) into out, relaxed (RFC 6376 3.4.2) or simple (3.4.1);
 * crlf=false leaves the final CRLF out (the signature field itself). */
void policy_arc_canon_header(struct util_buf *out, const char *raw, size_t len, bool relaxed,
                             bool crlf);
/* policy_arc_strip_b - raw field copy with the value of its b= tag removed
 * (RFC 6376 3.5 / 3.7: the signature field is hashed with b= empty);
 * malloc'd, length in *outlen. */
char *policy_arc_strip_b(const char *raw, size_t len, size_t *outlen);

/* Body canonicalisation (RFC 6376 3.4.3 simple, 3.4.4 relaxed) streamed
 * into a SHA-256; limit < 0: whole body (l= otherwise). */
struct policy_arc_body;
struct policy_arc_body *policy_arc_body_new(bool relaxed, int64_t limit);
void policy_arc_body_update(struct policy_arc_body *b, const char *p, size_t n);
/* policy_arc_body_final - the 32-byte hash into out; 0/-1. */
int policy_arc_body_final(struct policy_arc_body *b, unsigned char out[32]);
void policy_arc_body_free(struct policy_arc_body *b);

/* A message streamed in pieces (the spool read back for a deferred seal,
 * policy_seal_run): its header block is appended to hdr (without the empty
 * line), every byte after the empty line goes into body.  The result does
 * not depend on how the message is cut (fuzz_arc.c checks).  No empty line:
 * all of it is header block, the body is empty. */
struct policy_arc_split {
	struct util_buf *hdr;         /* borrowed */
	struct policy_arc_body *body; /* borrowed */
	size_t hstart;                /* hdr->len at init */
	size_t scanned;               /* searched up to here (from hstart) */
	size_t max;                   /* header block bytes at most; 0 = no limit */
	bool in_body;
};
void policy_arc_split_init(struct policy_arc_split *sp, struct util_buf *hdr,
                           struct policy_arc_body *body, size_t max);
/* policy_arc_split_feed - the next piece; 0, or -1 when what is gathered
 * is longer than max and the empty line (up to 3 of its bytes may be
 * pending) has not come: the header block is longer than max (stop). */
int policy_arc_split_feed(struct policy_arc_split *sp, const char *p, size_t n);

/* ------------------------------------------------------------ ARC sets */

enum policy_arc_kind { POLICY_ARC_AAR = 0, POLICY_ARC_AMS, POLICY_ARC_AS };

/* The ARC header fields of a message, grouped by instance (pure; no DNS,
 * no crypto).  raw points into the caller's header block. */
struct policy_arc_set {
	const char *raw[3]; /* AAR, AMS, AS (whole fields, CRLF included) */
	size_t rawlen[3];
	struct policy_arc_tags tags[3]; /* AAR: only i= is a tag (the rest is A-R) */
};
struct policy_arc_chain {
	size_t n; /* highest instance, = number of sets when valid */
	struct policy_arc_set sets[POLICY_ARC_MAX_INSTANCES];
	bool structural_fail; /* missing/duplicate/oversized/unparsable */
	char why[128];        /* reason of structural_fail */
	int max_seen;         /* highest i= seen (capped at 51), for sealing */
};
/* policy_arc_chain_parse - fields[0..nfields) are raw header fields in
 * message order; collect the ARC sets (RFC 8617 4.1, 5.2 steps 1-4). */
void policy_arc_chain_parse(const char *const *fields, const size_t *lens, size_t nfields,
                            struct policy_arc_chain *c);
void policy_arc_chain_free(struct policy_arc_chain *c);

/* policy_arc_aar_dmarc_pass - the raw ARC-Authentication-Results field
 * carries a "dmarc=pass" result (comments ignored) whose header.from, when
 * present, is from_domain (case-insensitive).  For the trusted-forwarder
 * override, on the i=1 set. */
bool policy_arc_aar_dmarc_pass(const char *raw, size_t len, const char *from_domain);

/* ------------------------------------------------------------ message hooks */

/* Results of verification (RFC 8617 4.4 / 5.2). */
enum policy_arc_result { POLICY_ARC_NONE = 0, POLICY_ARC_PASS, POLICY_ARC_FAIL };
const char *policy_arc_result_str(enum policy_arc_result r);

int policy_arc_lib_init(struct policy_ctx *pc, char *err, size_t errlen);
void policy_arc_lib_free(struct policy_ctx *pc);
void policy_arc_header(struct policy_msg *pm, const char *f, size_t len); /* loop */
void policy_arc_eoh(struct policy_msg *pm);                               /* loop */
void policy_arc_body(struct policy_msg *pm, const char *p, size_t n);     /* loop */
bool policy_arc_wants_body(const struct policy_msg *pm);
void policy_arc_eval(struct policy_msg *pm); /* worker: verify, after DMARC: override */
void policy_arc_seal(struct policy_msg *pm); /* worker: after the verdict headers */
void policy_arc_msg_free(struct policy_msg *pm);
/* policy_arc_ar_clause - the "arc=..." clause for our A-R (no leading
 * ";"), or NULL when ARC is not evaluated; malloc'd. */
char *policy_arc_ar_clause(const struct policy_msg *pm);
/* policy_arc_defer_reply - "451 4.4.3 ..." when the key of a trusted
 * sealer could not be looked up (DNS temporary failure) while DMARC fails:
 * the verdict asks for a retry instead of rejecting; NULL otherwise. */
const char *policy_arc_defer_reply(const struct policy_msg *pm);
/* policy_arc_summary - "arc=pass " for the log summary, or "". */
const char *policy_arc_summary(const struct policy_msg *pm);

/* ------------------------------------------------------------ crypto */

/* policy-arc-crypto.c: base64 (malloc'd; decoding skips folding white
 * space, NULL on bad input), keys and signatures.  alg: 0 rsa-sha256,
 * 1 ed25519-sha256 (policy_arc_alg: -1 for anything else). */
char *policy_arc_b64(const unsigned char *p, size_t n);
unsigned char *policy_arc_unb64(const char *s, size_t *outlen);
int policy_arc_alg(const char *a);
/* policy_arc_load_key - the PEM private key of algorithm; NULL + err. */
EVP_PKEY *policy_arc_load_key(const char *path, int algorithm, char *err, size_t errlen);
/* policy_arc_parse_key - a DKIM key record into a public key; NULL with a
 * static reason in *why (RSA keys under min_rsa_bits are refused). */
EVP_PKEY *policy_arc_parse_key(const char *txt, int min_rsa_bits, const char **why);
/* policy_arc_verify_sig - b (base64) is key's signature of data. */
bool policy_arc_verify_sig(EVP_PKEY *key, int alg, const struct util_buf *data, const char *b);
/* policy_arc_sign - base64 signature of data (NULL on error). */
char *policy_arc_sign(EVP_PKEY *key, const struct util_buf *data);

/* policy_key_create - a new PEM private key at path (RSA of bits when
 * algorithm is 0, Ed25519 when 1), O_EXCL, group gid ((gid_t)-1: the
 * caller's) and mode set on the open file, fsynced; *record (when not
 * NULL, malloc'd) its DKIM key record, from the key in memory.  0 made,
 * 1 the file exists (left alone), -1 + err. */
int policy_key_create(const char *path, int algorithm, int bits, mode_t mode, gid_t gid,
                      char **record, char *err, size_t errlen);

/* policy_arc_key_record - the selector TXT text ("v=DKIM1; k=rsa; p=...")
 * of the private key in key_file; malloc'd, NULL + err on failure. */
char *policy_arc_key_record(const char *key_file, int algorithm, char *err, size_t errlen);

#endif
