/*
 * policy-dmarc-internal.h - DMARC by RFC 9989, shared by policy-dmarc*.c,
 * the unit tests and the fuzz target: the record parser
 * (policy-dmarc-record.c) and the DNS tree walk (policy-dmarc-walk.c).
 *
 * Threads: the parser is pure; a walk belongs to one worker thread.
 */
#ifndef MX_POLICY_DMARC_INTERNAL_H
#define MX_POLICY_DMARC_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "policy-internal.h"

/* ------------------------------------------------------------ record */

/* One parsed DMARC policy record (RFC 9989 4.7).  Policies are 'n' 'q' 'r',
 * 0 when the tag is absent (sp, np) or unusable. */
struct policy_dmarc_record {
	char p, sp, np;
	char adkim, aspf; /* 'r' (default) or 's' */
	char psd;         /* 'y' 'n' 'u' (default) */
	bool t;           /* t=y: testing */
	bool p_missing;   /* no usable p: treated as p=none because rua= is there */
	bool has_pct;     /* pct= present (RFC 9989: ignored) */
	bool has_rua;
	int syntax_errors; /* tag-specs discarded (RFC 9989 4.8) */
	/* failure reporting (RFC 9989 4.7 "ruf", "fo"; RFC 9991): the ruf
	 * value as published (blanks trimmed, cut at the last whole URI that
	 * fits, "" = absent), and the fo options, POLICY_DMARC_FO_* bits
	 * (POLICY_DMARC_FO_0 when absent or without a known option) */
	char ruf[POLICY_DMARC_RUF_MAX];
	unsigned fo;
};

/* policy_dmarc_record_parse - parse one TXT record text.  Returns 0 for a
 * usable DMARC policy record, 1 when the text is not a DMARC record at all
 * (does not begin with the v=DMARC1 tag: ignored, RFC 9989 4.7), -1 for a
 * DMARC record that cannot be used (why in err). */
int policy_dmarc_record_parse(const char *txt, size_t len, struct policy_dmarc_record *r, char *err,
                              size_t errlen);

/* policy_dmarc_policy_word - 'n' 'q' 'r' -> "none" "quarantine" "reject",
 * anything else -> "unset". */
const char *policy_dmarc_policy_word(char c);

/* ------------------------------------------------------------ tree walk */

#define POLICY_DMARC_WALK_MAX_LABELS 8  /* RFC 9989 4.10: jump to 7 labels above */
#define POLICY_DMARC_MAX_QUERIES     48 /* per message, all walks together */

/* The TXT lookup a walk uses: policy_dns_txt_sync() on the workers. */
typedef enum policy_dns_status (*policy_dmarc_txt_fn)(void *arg, const char *name,
                                                      struct util_strlist *out, bool *secure);

struct policy_dmarc_walk_entry; /* one cached _dmarc lookup */
struct policy_dmarc_walk {
	policy_dmarc_txt_fn txt; /* borrowed */
	void *arg;
	int queries;   /* DNS queries made */
	bool insecure; /* some answer used was not DNSSEC-secure */
	struct policy_dmarc_walk_entry *cache;
	size_t ncache;
};
void policy_dmarc_walk_init(struct policy_dmarc_walk *w, policy_dmarc_txt_fn txt, void *arg);
void policy_dmarc_walk_free(struct policy_dmarc_walk *w);

enum policy_dmarc_found {
	POLICY_DMARC_FOUND = 0, /* rec, rec_domain set */
	POLICY_DMARC_NOTFOUND,  /* no policy record anywhere: no DMARC processing */
	POLICY_DMARC_SEVERAL,   /* several records at the author domain: none */
	POLICY_DMARC_INVALID,   /* the author domain's record is unusable: permerror */
	POLICY_DMARC_DNS_ERROR, /* a lookup failed: temperror */
	POLICY_DMARC_DNS_BOGUS, /* DNSSEC validation failed: temperror */
	POLICY_DMARC_TOO_MANY   /* query budget spent: temperror */
};

/* policy_dmarc_discover - RFC 9989 4.10.1 policy discovery for the author
 * domain (A-labels, lower case): the record at _dmarc.<author>, else the
 * first one the tree walk finds.  rec_domain (size >= 256) gets the domain
 * the record was found at; err a reason for INVALID. */
enum policy_dmarc_found policy_dmarc_discover(struct policy_dmarc_walk *w, const char *author,
                                              struct policy_dmarc_record *rec, char *rec_domain,
                                              char *err, size_t errlen);

/* policy_dmarc_org_domain - RFC 9989 4.10.2 Organizational Domain of name
 * by the tree walk; out (size >= 256).  0, or -1 on a DNS failure / spent
 * budget (then *why says which, one of the DNS_* / TOO_MANY values). */
int policy_dmarc_org_domain(struct policy_dmarc_walk *w, const char *name, char *out,
                            enum policy_dmarc_found *why);

/* policy_dmarc_walk_targets - the names the walk queries after name itself
 * (RFC 9989 4.10 steps 4-8), into out[] (each a pointer into name); their
 * count.  Pure; for the unit tests. */
size_t policy_dmarc_walk_targets(const char *name, const char **out, size_t max);

#endif
