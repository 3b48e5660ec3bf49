/*
 * util-addr.c - socket addresses: printing, IPv4-mapped normalisation,
 * numeric parsing and "host:port" parsing for the config file.
 *
 * Ownership: callers pass every buffer; nothing is allocated.
 * Diagnostics: util_hostport_parse writes a one-line reason into err
 * ("missing ']'", "bad port \"x\"", ...); the others return -1 or "?".
 */
#include "util.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

/* util_addr_str - numeric address without port; "?" for other families. */
const char *util_addr_str(const struct util_addr *a, char *out, size_t outlen)
{
	const void *src = NULL;
	int family = a->ss.ss_family;

	if (outlen == 0)
		return out;
	if (family == AF_INET)
		src = &((const struct sockaddr_in *)&a->ss)->sin_addr;
	else if (family == AF_INET6)
		src = &((const struct sockaddr_in6 *)&a->ss)->sin6_addr;
	if (src == NULL || inet_ntop(family, src, out, (socklen_t)outlen) == NULL)
		snprintf(out, outlen, "?");
	return out;
}

/* util_addr_port - port in host order, or -1 for a non-IP address. */
int util_addr_port(const struct util_addr *a)
{
	if (a->ss.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
	if (a->ss.ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
	return -1;
}

/* util_addr_from_sockaddr - copy sa; ::ffff:a.b.c.d becomes AF_INET a.b.c.d so
 * that logs, access lists and SPF see the client's IPv4 address. */
void util_addr_from_sockaddr(struct util_addr *a, const struct sockaddr *sa, socklen_t len)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;

	memset(a, 0, sizeof(*a));
	if (len > (socklen_t)sizeof(a->ss))
		len = (socklen_t)sizeof(a->ss);
	if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(*s6) &&
	    IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&a->ss;

		s4->sin_family = AF_INET;
		s4->sin_port = s6->sin6_port;
		memcpy(&s4->sin_addr, &s6->sin6_addr.s6_addr[12], 4);
		a->len = (socklen_t)sizeof(*s4);
		return;
	}
	memcpy(&a->ss, sa, len);
	a->len = len;
}

/* hostport_port - strict decimal port 1..65535; 0/-1. */
static int hostport_port(const char *s, int *port)
{
	long v = 0;
	size_t i;

	if (s[0] == '\0' || strlen(s) > 5)
		return -1;
	for (i = 0; s[i] != '\0'; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	if (v < 1 || v > 65535)
		return -1;
	*port = (int)v;
	return 0;
}

/* hostport_is_hostname - letters, digits, '-', '.', '_' (a name or IPv4). */
static bool hostport_is_hostname(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n > 253)
		return false;
	for (i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '.' || c == '_'))
			return false;
	}
	return true;
}

/* util_hostport_parse - "host:port", "[v6]:port", "host", "[v6]".  A bare
 * IPv6 address without brackets is accepted only when it has no port (it
 * parses as an IPv6 literal as a whole).  default_port < 0 makes the port
 * mandatory. */
int util_hostport_parse(const char *s, int default_port, char *host, size_t hostlen, int *port,
                        char *err, size_t errlen)
{
	struct in6_addr a6;
	char tmp[256];
	const char *h;
	const char *rest;
	size_t hlen;

	if (s == NULL || s[0] == '\0') {
		util_seterr(err, errlen, "empty address");
		return -1;
	}
	if (strlen(s) >= sizeof(tmp)) {
		util_seterr(err, errlen, "address too long");
		return -1;
	}
	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (close == NULL) {
			util_seterr(err, errlen, "missing ']' in \"%s\"", s);
			return -1;
		}
		h = s + 1;
		hlen = (size_t)(close - h);
		memcpy(tmp, h, hlen);
		tmp[hlen] = '\0';
		if (hlen == 0 || inet_pton(AF_INET6, tmp, &a6) != 1) {
			util_seterr(err, errlen, "bad IPv6 address \"%s\"", tmp);
			return -1;
		}
		rest = close + 1;
		if (rest[0] != '\0' && rest[0] != ':') {
			util_seterr(err, errlen, "unexpected \"%s\" after ']'", rest);
			return -1;
		}
	} else {
		const char *colon = strchr(s, ':');

		if (colon != NULL && strchr(colon + 1, ':') != NULL) {
			/* Several colons: only a whole IPv6 literal makes sense. */
			if (inet_pton(AF_INET6, s, &a6) != 1) {
				util_seterr(err, errlen,
				            "bad address \"%s\" (write IPv6 as [addr]:port)", s);
				return -1;
			}
			h = s;
			hlen = strlen(s);
			rest = s + hlen;
		} else {
			h = s;
			hlen = colon != NULL ? (size_t)(colon - s) : strlen(s);
			rest = s + hlen;
			if (!hostport_is_hostname(h, hlen)) {
				util_seterr(err, errlen, "bad host name in \"%s\"", s);
				return -1;
			}
		}
	}
	if (rest[0] == ':') {
		if (hostport_port(rest + 1, port) == -1) {
			util_seterr(err, errlen, "bad port \"%s\" (1..65535)", rest + 1);
			return -1;
		}
	} else if (default_port < 0) {
		util_seterr(err, errlen, "missing port in \"%s\"", s);
		return -1;
	} else {
		*port = default_port;
	}
	if (hlen + 1 > hostlen) {
		util_seterr(err, errlen, "host name too long in \"%s\"", s);
		return -1;
	}
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	return 0;
}

/* util_addr_parse_numeric - numeric IPv4 or IPv6 host and port 0..65535. */
int util_addr_parse_numeric(const char *host, int port, struct util_addr *out)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)&out->ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->ss;

	memset(out, 0, sizeof(*out));
	if (host == NULL || port < 0 || port > 65535)
		return -1;
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		out->len = (socklen_t)sizeof(*s4);
		return 0;
	}
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		out->len = (socklen_t)sizeof(*s6);
		return 0;
	}
	memset(out, 0, sizeof(*out));
	return -1;
}

/* util_addr_is_loopback - 127.0.0.0/8, ::1, or ::ffff:127.0.0.0/104. */
bool util_addr_is_loopback(const struct util_addr *a)
{
	if (a->ss.ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)&a->ss;

		return (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
	}
	if (a->ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a->ss;

		if (IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr))
			return true;
		return IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr) && s6->sin6_addr.s6_addr[12] == 127;
	}
	return false;
}
