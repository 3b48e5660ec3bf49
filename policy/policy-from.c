/*
 * policy-from.c - the RFC 5322 From: field parser DMARC judges by.
 *
 * RFC 9989 (and RFC 7489 6.6.1) judge the domain of the one author mailbox
 * a mail reader shows; a lenient parser that takes "the last <...>" or "the
 * part after the first @" judges another domain than the reader displays
 * ("From: ceo@bank.test <a@evil.test>").  So this is a strict recursive-
 * descent parser of RFC 5322 3.6.2 From: mailbox-list (mailbox, name-addr,
 * angle-addr, addr-spec, with the obsolete forms of 4.4 that readers
 * accept: obs-phrase, obs-route, obs-local-part, obs-domain, obs-mbox-list
 * empty elements) and RFC 6532 UTF-8 in atoms and quoted strings.  A value
 * that is not exactly such a list is a syntax error (a group, "x:;", too:
 * From: is a mailbox-list, not an address-list); domain literals are
 * refused (no DMARC domain).  One leniency: a final dot on the domain
 * ("a@example.test.") is accepted and dropped.
 *
 * Ownership: *domain is malloc'd, caller frees.  Threads: pure, any thread.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "policy-internal.h"

struct from_p {
	const char *p, *end;
};

/* from_is_atext - RFC 5322 3.2.3 atext, plus RFC 6532 UTF8-non-ascii. */
static bool from_is_atext(unsigned char c)
{
	return isalnum(c) || c >= 0x80 || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* from_cfws - skip folding white space and (nested) comments; -1 on an
 * unterminated comment. */
static int from_cfws(struct from_p *s)
{
	while (s->p < s->end) {
		unsigned char c = (unsigned char)*s->p;
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			s->p++;
		} else if (c == '(') {
			int depth = 0;
			for (; s->p < s->end; s->p++) {
				if (*s->p == '\\' && s->p + 1 < s->end)
					s->p++;
				else if (*s->p == '(')
					depth++;
				else if (*s->p == ')' && --depth == 0)
					break;
			}
			if (s->p >= s->end)
				return -1;
			s->p++;
		} else {
			break;
		}
	}
	return 0;
}

/* from_atom - [CFWS] 1*atext [CFWS]; out gets the atom; false if none. */
static bool from_atom(struct from_p *s, struct util_buf *out)
{
	const char *save = s->p;

	if (from_cfws(s) < 0)
		goto no;
	if (s->p >= s->end || !from_is_atext((unsigned char)*s->p))
		goto no;
	while (s->p < s->end && from_is_atext((unsigned char)*s->p)) {
		if (out != NULL)
			util_buf_add(out, s->p, 1);
		s->p++;
	}
	if (from_cfws(s) < 0)
		goto no;
	return true;
no:
	s->p = save;
	return false;
}

/* from_quoted - [CFWS] quoted-string [CFWS]; false if none or unterminated. */
static bool from_quoted(struct from_p *s)
{
	const char *save = s->p;

	if (from_cfws(s) < 0 || s->p >= s->end || *s->p != '"')
		goto no;
	for (s->p++; s->p < s->end && *s->p != '"'; s->p++)
		if (*s->p == '\\' && s->p + 1 < s->end)
			s->p++;
	if (s->p >= s->end)
		goto no;
	s->p++;
	if (from_cfws(s) < 0)
		goto no;
	return true;
no:
	s->p = save;
	return false;
}

static bool from_word(struct from_p *s)
{
	return from_atom(s, NULL) || from_quoted(s);
}

/* from_at - the next significant character is c (consumed). */
static bool from_at(struct from_p *s, char c)
{
	const char *save = s->p;

	if (from_cfws(s) == 0 && s->p < s->end && *s->p == c) {
		s->p++;
		return true;
	}
	s->p = save;
	return false;
}

/* from_domain - dot-atom / obs-domain (atom *("." atom)), lower-cased into
 * out; a trailing dot is dropped.  Domain literals are refused. */
static bool from_domain(struct from_p *s, struct util_buf *out)
{
	const char *save = s->p;
	size_t len0 = out->len;

	if (!from_atom(s, out))
		goto no;
	while (from_at(s, '.')) {
		util_buf_adds(out, ".");
		if (!from_atom(s, out)) {
			/* "a@example.test." : the final dot, nothing after */
			const char *q = s->p;
			from_cfws(s);
			if (s->p < s->end && *s->p != ',' && *s->p != '>' && *s->p != ';') {
				s->p = q;
				goto no;
			}
			out->len--;
			out->data[out->len] = 0;
			break;
		}
	}
	return true;
no:
	s->p = save;
	out->len = len0;
	if (out->data != NULL)
		out->data[len0] = 0;
	return false;
}

/* from_addr_spec - local-part "@" domain; domain into out. */
static bool from_addr_spec(struct from_p *s, struct util_buf *out)
{
	const char *save = s->p;

	if (!from_word(s))
		goto no;
	while (from_at(s, '.'))
		if (!from_word(s))
			goto no;
	if (!from_at(s, '@') || !from_domain(s, out))
		goto no;
	return true;
no:
	s->p = save;
	return false;
}

/* from_angle_addr - [CFWS] "<" [obs-route] addr-spec ">" [CFWS]. */
static bool from_angle_addr(struct from_p *s, struct util_buf *out)
{
	const char *save = s->p;
	struct util_buf route;

	if (!from_at(s, '<'))
		return false;
	util_buf_init(&route);
	util_buf_adds(&route, "");
	/* obs-route: *(CFWS / ",") "@" domain *("," [CFWS] ["@" domain]) ":" */
	{
		const char *r = s->p;
		bool ok = false;
		while (from_at(s, ','))
			;
		if (from_at(s, '@') && from_domain(s, &route)) {
			ok = true;
			while (ok && from_at(s, ',')) {
				if (from_at(s, '@'))
					ok = from_domain(s, &route);
			}
			ok = ok && from_at(s, ':');
		}
		if (!ok)
			s->p = r;
	}
	util_buf_free(&route);
	if (!from_addr_spec(s, out) || !from_at(s, '>') || from_cfws(s) < 0) {
		s->p = save;
		return false;
	}
	return true;
}

/* from_mailbox - name-addr / addr-spec, followed by the end of the list
 * element (",", ";" or end); domain into out. */
static bool from_mailbox(struct from_p *s, struct util_buf *out)
{
	const char *save = s->p;
	size_t len0 = out->len;

	if (from_addr_spec(s, out)) {
		from_cfws(s);
		if (s->p >= s->end || *s->p == ',' || *s->p == ';')
			return true;
		s->p = save;
		out->len = len0;
		out->data[len0] = 0;
	}
	/* display-name = phrase (obs-phrase: word *(word / "." / CFWS)) */
	if (from_word(s))
		while (from_word(s) || from_at(s, '.'))
			;
	if (from_angle_addr(s, out) && (s->p >= s->end || *s->p == ',' || *s->p == ';'))
		return true;
	s->p = save;
	out->len = len0;
	out->data[len0] = 0;
	return false;
}

/* from_blank - only CFWS up to the next "," ";" ":" or end. */
static bool from_blank(struct from_p *s)
{
	const char *save = s->p;

	if (from_cfws(s) == 0 && (s->p >= s->end || *s->p == ',' || *s->p == ';'))
		return true;
	s->p = save;
	return false;
}

/* policy_from_parse - RFC 5322 3.6.2 From: a mailbox-list (obs-mbox-list
 * empty elements allowed; a group is not a mailbox-list and is refused):
 * the number of mailboxes, the domain of the first. */
int policy_from_parse(const char *value, size_t len, char **domain)
{
	struct from_p s = {value, value + len};
	struct util_buf first, d;
	int count = 0, rc = -1;

	if (domain != NULL)
		*domain = NULL;
	util_buf_init(&first);
	util_buf_adds(&first, "");
	util_buf_init(&d);
	for (;;) {
		util_buf_reset(&d);
		util_buf_adds(&d, "");
		if (from_blank(&s)) {
			/* obs-mbox-list: an empty element */
		} else if (from_mailbox(&s, &d)) {
			if (count++ == 0)
				util_buf_adds(&first, d.data);
		} else {
			goto out;
		}
		if (s.p >= s.end)
			break;
		if (*s.p != ',')
			goto out; /* ";": a group, or garbage */
		s.p++;
	}
	rc = count;
	if (domain != NULL && count > 0) {
		for (char *p = first.data; *p; p++)
			*p = (char)tolower((unsigned char)*p);
		*domain = util_xstrdup(first.data);
	}
out:
	util_buf_free(&d);
	util_buf_free(&first);
	return rc;
}
