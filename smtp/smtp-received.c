/*
 * smtp-received.c - the Received: trace field we prepend (RFC 5321 4.4),
 * as a pure function of what the session knows.
 *
 * Every part of it that the client or its DNS controls is reduced to text
 * that cannot end the field, open or close a comment, or end the clause list
 * early (a lax downstream parser reads the date after the last ';' and the
 * hop from "from ... by ..."): the HELO name keeps only domain/literal
 * characters, the reverse-DNS name must be an LDH host name (else
 * "unknown"), the TLS version and cipher keep only token characters, and the
 * "for <...>" clause is written only for a dot-atom mailbox - a quoted local
 * part such as "x; Tue, 1 Jan 2030"@dom could fake a date or a hop, and
 * RFC 5321 4.4 makes the clause optional.
 *
 * Ownership: every field of struct smtp_received is borrowed; the text is
 * appended to the caller's buffer.  Diagnostics: none.
 */
#include <string.h>

#include "smtp-internal.h"

/* received_add_safe - s with every byte outside keep (and every non-ASCII
 * byte) turned into '?'; n bytes at most. */
static void received_add_safe(struct util_buf *b, const char *s, size_t n, const char *keep)
{
	for (size_t i = 0; i < n && s[i] != '\0'; i++) {
		unsigned char c = (unsigned char)s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		          (c >= '0' && c <= '9') || (c != 0 && c < 0x80 && strchr(keep, c) != NULL);
		char out = ok ? (char)c : '?';
		util_buf_add(b, &out, 1);
	}
}

/* received_is_atext - RFC 5322 3.2.3 atext (UTF-8 octets allowed: RFC 6532). */
static bool received_is_atext(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c >= 0x80 || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* smtp_received_for_ok - addr is dot-atom "@" domain: safe in "for <...>". */
bool smtp_received_for_ok(const char *addr)
{
	const char *at = addr != NULL ? strrchr(addr, '@') : NULL;
	bool dot_ok = false; /* a dot may follow an atom, never start or double */

	if (at == NULL || at == addr || at[1] == '\0')
		return false;
	for (const char *p = addr; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;
		if (p == at || c == '.') {
			if (!dot_ok)
				return false;
			dot_ok = false;
		} else if (received_is_atext(c) &&
		           (p < at || c == '-' || c >= 0x80 || (c >= 'a' && c <= 'z') ||
		            (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) {
			dot_ok = true;
		} else {
			return false;
		}
	}
	return dot_ok;
}

/* smtp_received_format - the Received: field, folded, ending in CRLF. */
void smtp_received_format(struct util_buf *b, const struct smtp_received *r)
{
	util_buf_adds(b, "Received: from ");
	if (r->helo != NULL && r->helo[0] != '\0')
		received_add_safe(b, r->helo, 255, ".-_:[]");
	else
		util_buf_adds(b, "unknown");
	util_buf_printf(b, " (%s [%s%s])\r\n", util_is_ldh_name(r->rdns) ? r->rdns : "unknown",
	                r->v6 ? "IPv6:" : "", r->client);
	if (r->tls_desc != NULL) {
		/* "TLSv1.3 TLS_AES_256_GCM_SHA384" from OpenSSL */
		const char *sp = strchr(r->tls_desc, ' ');
		size_t vlen = sp != NULL ? (size_t)(sp - r->tls_desc) : strlen(r->tls_desc);
		util_buf_adds(b, "\t(using ");
		received_add_safe(b, r->tls_desc, vlen, ".-_/");
		util_buf_adds(b, " with cipher ");
		if (sp != NULL)
			received_add_safe(b, sp + 1, 128, ".-_/");
		else
			util_buf_adds(b, "unknown");
		util_buf_adds(b, ")\r\n");
	}
	util_buf_printf(b, "\tby %s (mxgate) with %s id %s", r->by, r->proto, r->qid);
	if (smtp_received_for_ok(r->rcpt))
		util_buf_printf(b, "\r\n\tfor <%s>; %s\r\n", r->rcpt, r->date);
	else
		util_buf_printf(b, ";\r\n\t%s\r\n", r->date);
}
