/*
 * policy-idn.c - internationalised domain names for SPF, DMARC and the
 * header fields that report them (RFC 8616).
 *
 * SMTPUTF8 (RFC 6531) lets a client write the MAIL FROM domain (and, against
 * RFC 8616 4, its HELO name) in U-labels, and RFC 6532 the From: domain.
 * The DNS holds only A-labels (RFC 8616 3), so every name SPF or DMARC
 * looks up or compares is converted first (RFC 8616 4 and 6): IDNA2008
 * through libidn2, UTS #46 non-transitional mapping (so "BÜCHER" and
 * "bücher" are one name), NFC.  A name that does not convert is not a
 * domain name: SPF treats it as malformed (RFC 7208 4.3: none), DMARC as
 * an invalid From: domain.
 *
 * What mxgate writes into header fields (Authentication-Results
 * smtp.mailfrom / smtp.helo, Received-SPF envelope-from / helo) is ASCII
 * only: the domain as A-labels, a non-ASCII local-part left out (RFC 8601
 * 2.2 lets a pvalue be "@" domain-name), so a header of ours never carries
 * the client's raw 8-bit text, not even into a message without SMTPUTF8.
 *
 * Ownership: every function returns a new string the caller frees.
 * Threads: pure, any thread.  Diagnostics: none (NULL).
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <idn2.h>

#include "policy-internal.h"

/* policy_idn_is_ascii - s holds no octet over 0x7f. */
bool policy_idn_is_ascii(const char *s)
{
	for (; s != NULL && *s != '\0'; s++)
		if ((unsigned char)*s >= 0x80)
			return false;
	return true;
}

/* policy_idn_alabels - see policy-internal.h. */
char *policy_idn_alabels(const char *dom)
{
	char *out = NULL, *r = NULL;

	if (dom == NULL || dom[0] == '\0')
		return NULL;
	if (idn2_lookup_u8((const uint8_t *)dom, (uint8_t **)&out,
	                   IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL) != IDN2_OK ||
	    out == NULL || out[0] == '\0' || strlen(out) > 253)
		goto out;
	/* libidn2 passes ASCII labels through unchecked: LDH (and "_")
	 * labels of 1..63 octets only, so nothing odd reaches the DNS or a
	 * header field */
	for (char *p = out, *label = out;; p++) {
		if (*p == '.' || *p == '\0') {
			if (p == label || p - label > 63)
				goto out;
			if (*p == '\0')
				break;
			label = p + 1;
		} else if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_') {
			goto out;
		}
		*p = (char)tolower((unsigned char)*p);
	}
	r = util_xstrdup(out);
out:
	free(out); /* libidn2's allocator */
	return r;
}

/* policy_idn_lookup_name - see policy-internal.h. */
char *policy_idn_lookup_name(const char *dom)
{
	if (dom == NULL)
		return NULL;
	if (policy_idn_is_ascii(dom))
		return util_xstrdup(dom);
	return policy_idn_alabels(dom);
}

/* idn_ascii_safe - s with every octet over 0x7f as '?' (a name that is no
 * IDN: shown, never passed on raw). */
static char *idn_ascii_safe(const char *s)
{
	char *r = util_xstrdup(s);

	for (char *p = r; *p != '\0'; p++)
		if ((unsigned char)*p >= 0x80)
			*p = '?';
	return r;
}

/* policy_idn_header_name - see policy-internal.h. */
char *policy_idn_header_name(const char *name)
{
	char *r = policy_idn_lookup_name(name != NULL ? name : "");

	return r != NULL ? r : idn_ascii_safe(name);
}

/* policy_idn_header_addr - see policy-internal.h. */
char *policy_idn_header_addr(const char *addr)
{
	const char *at = addr != NULL ? strrchr(addr, '@') : NULL;
	char *dom, *r;
	size_t ll;

	if (addr == NULL)
		return util_xstrdup("");
	if (at == NULL)
		return policy_idn_header_name(addr);
	dom = policy_idn_header_name(at + 1);
	ll = (size_t)(at - addr);
	/* a UTF-8 local-part has no ASCII form (RFC 8616 4): left out */
	for (size_t i = 0; i < ll; i++)
		if ((unsigned char)addr[i] >= 0x80)
			ll = 0;
	r = util_xasprintf("%.*s@%s", (int)ll, addr, dom);
	free(dom);
	return r;
}
