/*
 * config-dnsbl.c - the DNSBL/DNSWL site syntax of [dnsbl] sites (issue 17),
 * as Postfix's postscreen_dnsbl_sites writes it:
 *
 *     zone[=filter][*weight]
 *     zen.spamhaus.org=127.0.0.[2..11]*3
 *     list.dnswl.org=127.0.[0..255].[1;2;3]*-5
 *     bl.example.net                           (any listing, weight 1)
 *
 * A filter is four dotted octets; each is a number, or a bracketed list of
 * numbers and inclusive ranges separated by ';'.  The weight is a non-zero
 * integer; a negative weight makes an allowlist (DNSWL).  Whatever the
 * filter, an answer outside 127.0.0.0/8 or inside 127.255.255.0/24 (the
 * "query refused / blocked" codes of Spamhaus and others) never matches:
 * that is "no data", never a listing (RFC 5782 section 2.3).
 *
 * Ownership: the parser fills a caller-provided struct; no allocation.
 * Diagnostics: one message into err; nothing printed.
 */
#include "config-internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* bit_set - mark v in an octet bitmap. */
static void bit_set(uint8_t *bits, unsigned v)
{
	bits[v >> 3] |= (uint8_t)(1u << (v & 7));
}

/* parse_num - a decimal 0..max at *p; advances; -1 when none or too big. */
static long parse_num(const char **p, long max)
{
	long v = 0;
	const char *s = *p;
	if (*s < '0' || *s > '9')
		return -1;
	while (*s >= '0' && *s <= '9') {
		v = v * 10 + (*s - '0');
		if (v > max)
			return -1;
		s++;
	}
	*p = s;
	return v;
}

/* parse_octet - one filter octet: N or [item;item...] with item N or N..M. */
static int parse_octet(const char **p, uint8_t *bits, char *err, size_t errlen)
{
	const char *s = *p;
	long a, b;
	if (*s != '[') {
		a = parse_num(&s, 255);
		if (a < 0) {
			snprintf(err, errlen, "expected an octet (0..255) or [list] in the filter");
			return -1;
		}
		bit_set(bits, (unsigned)a);
		*p = s;
		return 0;
	}
	s++;
	for (;;) {
		a = parse_num(&s, 255);
		if (a < 0) {
			snprintf(err, errlen, "expected a number 0..255 inside [...]");
			return -1;
		}
		b = a;
		if (s[0] == '.' && s[1] == '.') {
			s += 2;
			b = parse_num(&s, 255);
			if (b < 0 || b < a) {
				snprintf(err, errlen,
				         "bad range in [...] (N..M with N <= M <= 255)");
				return -1;
			}
		}
		for (long v = a; v <= b; v++)
			bit_set(bits, (unsigned)v);
		if (*s == ';') {
			s++;
			continue;
		}
		if (*s == ']') {
			*p = s + 1;
			return 0;
		}
		snprintf(err, errlen, "expected ';' or ']' in the filter");
		return -1;
	}
}

/* config_dnsbl_parse - one site specification. */
int config_dnsbl_parse(const char *spec, struct config_dnsbl_site *out, char *err, size_t errlen)
{
	char zone[CONFIG_DNSBL_ZONE_MAX + 1];
	char buf[200];
	size_t zlen = strcspn(spec, "=*");
	const char *p = spec + zlen;

	memset(out, 0, sizeof(*out));
	out->weight = 1;
	if (zlen == 0 || zlen > CONFIG_DNSBL_ZONE_MAX) {
		snprintf(err, errlen,
		         "expected zone[=filter][*weight] with a zone of 1..%d characters",
		         CONFIG_DNSBL_ZONE_MAX);
		return -1;
	}
	memcpy(zone, spec, zlen);
	zone[zlen] = 0;
	const char *msg = config_check_domain(zone, buf, sizeof(buf));
	if (msg) {
		snprintf(err, errlen, "zone \"%s\": %s", zone, msg);
		return -1;
	}
	for (size_t i = 0; i <= zlen; i++)
		out->zone[i] = (char)(zone[i] >= 'A' && zone[i] <= 'Z' ? zone[i] + 32 : zone[i]);
	if (*p == '=') {
		p++;
		out->filtered = true;
		for (int o = 0; o < 4; o++) {
			if (o > 0) {
				if (*p != '.') {
					snprintf(err, errlen,
					         "the filter needs four octets (a.b.c.d)");
					return -1;
				}
				p++;
			}
			if (parse_octet(&p, out->octets[o], err, errlen) < 0)
				return -1;
		}
	}
	if (*p == '*') {
		char *end;
		p++;
		if (!((*p >= '0' && *p <= '9') || *p == '-' || *p == '+')) {
			snprintf(err, errlen, "expected an integer weight after '*'");
			return -1;
		}
		long w = strtol(p, &end, 10);
		if (end == p || *end != 0 || w == 0 || w < -1000 || w > 1000) {
			snprintf(err, errlen,
			         "the weight must be a non-zero integer in -1000..1000");
			return -1;
		}
		out->weight = (int)w;
		p = end;
	}
	if (*p != 0) {
		snprintf(err, errlen, "unexpected \"%.20s\" (expected zone[=filter][*weight])", p);
		return -1;
	}
	return 0;
}

/* config_dnsbl_is_listing - RFC 5782 2.3: 127.0.0.0/8, but not the
 * 127.255.255.0/24 error codes (query refused, blocked, rate limited). */
bool config_dnsbl_is_listing(const uint8_t a[4])
{
	return a[0] == 127 && !(a[1] == 255 && a[2] == 255);
}

/* config_dnsbl_match - does answer a count as a listing for site? */
bool config_dnsbl_match(const struct config_dnsbl_site *site, const uint8_t a[4])
{
	if (!config_dnsbl_is_listing(a))
		return false;
	if (!site->filtered)
		return true;
	for (int o = 0; o < 4; o++)
		if (!(site->octets[o][a[o] >> 3] & (1u << (a[o] & 7))))
			return false;
	return true;
}
