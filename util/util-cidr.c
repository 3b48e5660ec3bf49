/*
 * util-cidr.c - CIDR blocks and lists for the access control and trusted
 * PROXY peers.
 *
 * An entry written as an IPv4-mapped IPv6 block ("::ffff:192.0.2.0/120",
 * prefix >= 96) is stored as the IPv4 block it denotes, and an IPv4-mapped
 * IPv6 address matches IPv4 entries, so a dual-stack listener behaves like
 * an IPv4 one.  An IPv4 address never matches an IPv6 entry such as ::/0.
 *
 * Ownership: a struct util_cidr_list owns its array (util_cidr_list_free).
 * Diagnostics: util_cidr_parse explains the problem in err, and for host
 * bits set beyond the prefix suggests the intended network.
 */
#include "util.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t cidr_v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* cidr_prefix_match - do the first prefix bits of a and b agree? */
static bool cidr_prefix_match(const uint8_t *a, const uint8_t *b, int prefix)
{
	int full = prefix / 8;
	int rem = prefix % 8;
	uint8_t mask;

	if (memcmp(a, b, (size_t)full) != 0)
		return false;
	if (rem == 0)
		return true;
	mask = (uint8_t)(0xff << (8 - rem));
	return (a[full] & mask) == (b[full] & mask);
}

/* cidr_clear_host - clear the bits beyond prefix; true when some were set. */
static bool cidr_clear_host(uint8_t *a, int bytes, int prefix)
{
	bool had = false;
	int i;

	for (i = 0; i < bytes; i++) {
		int bits = prefix - i * 8;
		uint8_t mask = bits >= 8 ? 0xff : bits <= 0 ? 0 : (uint8_t)(0xff << (8 - bits));

		if ((a[i] & (uint8_t)~mask) != 0)
			had = true;
		a[i] &= mask;
	}
	return had;
}

/* util_cidr_parse - "addr/prefix" or a bare address (host route). */
int util_cidr_parse(const char *s, struct util_cidr *out, char *err, size_t errlen)
{
	char addr[INET6_ADDRSTRLEN + 1];
	const char *slash;
	size_t alen;
	int maxbits;
	int prefix;

	memset(out, 0, sizeof(*out));
	if (s == NULL || s[0] == '\0') {
		util_seterr(err, errlen, "empty CIDR");
		return -1;
	}
	slash = strchr(s, '/');
	alen = slash != NULL ? (size_t)(slash - s) : strlen(s);
	if (alen == 0 || alen >= sizeof(addr)) {
		util_seterr(err, errlen, "bad address in \"%s\"", s);
		return -1;
	}
	memcpy(addr, s, alen);
	addr[alen] = '\0';
	if (inet_pton(AF_INET, addr, out->addr) == 1) {
		out->family = AF_INET;
		maxbits = 32;
	} else if (inet_pton(AF_INET6, addr, out->addr) == 1) {
		out->family = AF_INET6;
		maxbits = 128;
	} else {
		util_seterr(err, errlen, "bad address \"%s\"", addr);
		return -1;
	}
	prefix = maxbits;
	if (slash != NULL) {
		const char *p = slash + 1;
		size_t i;

		if (p[0] == '\0' || strlen(p) > 3) {
			util_seterr(err, errlen, "bad prefix length in \"%s\"", s);
			return -1;
		}
		prefix = 0;
		for (i = 0; p[i] != '\0'; i++) {
			if (p[i] < '0' || p[i] > '9') {
				util_seterr(err, errlen, "bad prefix length in \"%s\"", s);
				return -1;
			}
			prefix = prefix * 10 + (p[i] - '0');
		}
		if (prefix > maxbits) {
			util_seterr(err, errlen, "prefix length %d over %d in \"%s\"", prefix,
			            maxbits, s);
			return -1;
		}
	}
	out->prefix = prefix;
	if (cidr_clear_host(out->addr, maxbits / 8, prefix)) {
		char net[INET6_ADDRSTRLEN + 8];

		util_cidr_format(out, net, sizeof(net));
		util_seterr(err, errlen, "host bits set in \"%s\" (did you mean %s?)", s, net);
		memset(out, 0, sizeof(*out));
		return -1;
	}
	if (out->family == AF_INET6 && prefix >= 96 &&
	    memcmp(out->addr, cidr_v4mapped, sizeof(cidr_v4mapped)) == 0) {
		memmove(out->addr, out->addr + 12, 4);
		memset(out->addr + 4, 0, 12);
		out->family = AF_INET;
		out->prefix = prefix - 96;
	}
	return 0;
}

/* util_cidr_match - is a inside c?  ::ffff:a.b.c.d is compared as IPv4. */
bool util_cidr_match(const struct util_cidr *c, const struct util_addr *a)
{
	if (a->ss.ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)&a->ss;

		return c->family == AF_INET &&
		       cidr_prefix_match(c->addr, (const uint8_t *)&s4->sin_addr, c->prefix);
	}
	if (a->ss.ss_family == AF_INET6) {
		const uint8_t *b = ((const struct sockaddr_in6 *)&a->ss)->sin6_addr.s6_addr;

		if (c->family == AF_INET6)
			return cidr_prefix_match(c->addr, b, c->prefix);
		if (c->family == AF_INET && memcmp(b, cidr_v4mapped, sizeof(cidr_v4mapped)) == 0)
			return cidr_prefix_match(c->addr, b + 12, c->prefix);
	}
	return false;
}

/* util_cidr_format - "192.0.2.0/24" into out. */
void util_cidr_format(const struct util_cidr *c, char *out, size_t outlen)
{
	char a[INET6_ADDRSTRLEN];

	if (outlen == 0)
		return;
	if (inet_ntop(c->family, c->addr, a, sizeof(a)) == NULL)
		snprintf(a, sizeof(a), "?");
	snprintf(out, outlen, "%s/%d", a, c->prefix);
}

/* util_cidr_list_add - append a copy of c. */
void util_cidr_list_add(struct util_cidr_list *l, const struct util_cidr *c)
{
	l->v = util_xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
	l->v[l->n++] = *c;
}

/* util_cidr_list_match - does any entry contain a? */
bool util_cidr_list_match(const struct util_cidr_list *l, const struct util_addr *a)
{
	size_t i;

	for (i = 0; i < l->n; i++) {
		if (util_cidr_match(&l->v[i], a))
			return true;
	}
	return false;
}

/* util_cidr_list_free - free the array; l is left empty. */
void util_cidr_list_free(struct util_cidr_list *l)
{
	if (l == NULL)
		return;
	free(l->v);
	l->v = NULL;
	l->n = 0;
}
