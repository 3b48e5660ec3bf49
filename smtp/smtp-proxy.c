/*
 * smtp-proxy.c - HAProxy PROXY protocol headers, version 1 (text) and
 * version 2 (binary), as sent by a load balancer in front of mxgate
 * (haproxy.org/download/2.9/doc/proxy-protocol.txt, sections 2.1 and 2.2).
 *
 * Accepted: v1 "TCP4", "TCP6" and "UNKNOWN"; v2 LOCAL (any family), and
 * PROXY over TCP/IPv4, TCP/IPv6 or AF_UNSPEC.  UNKNOWN, LOCAL and AF_UNSPEC
 * mean "use the real connection endpoints" (info->local).  Everything else
 * is refused: other versions, commands or families (UDP, AF_UNIX), addresses
 * that do not parse in the announced family, ports with leading zeros or out
 * of range, a v1 line over 107 bytes or not ended by CRLF, a v2 address
 * block shorter than its family needs, TLVs that overrun the header, and v2
 * headers longer than SMTP_PROXY_V2_MAX.  IPv4-mapped IPv6 source addresses
 * are turned into IPv4 (util_addr_from_sockaddr).
 *
 * Ownership: nothing is allocated; the caller's buffer is only read, never
 * past len.  Diagnostics: -1 for "not a valid header"; the caller logs.
 */
#include "smtp-internal.h"

#include <arpa/inet.h>
#include <string.h>

static const unsigned char proxy_v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                               0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
static const char proxy_v1_sig[] = "PROXY ";

#define PROXY_V2_HDR    16
#define PROXY_V1_SIGLEN (sizeof(proxy_v1_sig) - 1)

/* proxy_prefix - buf[0..len) is a prefix of sig[0..siglen) or starts with it. */
static bool proxy_prefix(const unsigned char *buf, size_t len, const void *sig, size_t siglen)
{
	return memcmp(buf, sig, len < siglen ? len : siglen) == 0;
}

/* smtp_proxy_looks_like - starts like a v1 or v2 header (or a prefix of one). */
bool smtp_proxy_looks_like(const unsigned char *buf, size_t len)
{
	if (len == 0)
		return false;
	return proxy_prefix(buf, len, proxy_v1_sig, PROXY_V1_SIGLEN) ||
	       proxy_prefix(buf, len, proxy_v2_sig, sizeof(proxy_v2_sig));
}

/* proxy_set - fill a util_addr from raw address bytes and a port in network order. */
static void proxy_set(struct util_addr *a, int family, const void *addr, const void *port_net)
{
	if (family == AF_INET) {
		struct sockaddr_in s4;

		memset(&s4, 0, sizeof(s4));
		s4.sin_family = AF_INET;
		memcpy(&s4.sin_addr, addr, 4);
		memcpy(&s4.sin_port, port_net, 2);
		util_addr_from_sockaddr(a, (struct sockaddr *)&s4, sizeof(s4));
	} else {
		struct sockaddr_in6 s6;

		memset(&s6, 0, sizeof(s6));
		s6.sin6_family = AF_INET6;
		memcpy(&s6.sin6_addr, addr, 16);
		memcpy(&s6.sin6_port, port_net, 2);
		util_addr_from_sockaddr(a, (struct sockaddr *)&s6, sizeof(s6));
	}
}

/* proxy_v1_port - decimal 0..65535, no sign, no leading zero.  0/-1. */
static int proxy_v1_port(const char *s, uint16_t *port_net)
{
	unsigned long v = 0;
	size_t i;

	if (s[0] == '\0' || strlen(s) > 5 || (s[0] == '0' && s[1] != '\0'))
		return -1;
	for (i = 0; s[i] != '\0'; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > 65535)
		return -1;
	*port_net = htons((uint16_t)v);
	return 0;
}

/* proxy_v1 - "PROXY TCP4 src dst sport dport\r\n" (section 2.1). */
static int proxy_v1(const unsigned char *buf, size_t len, struct smtp_proxy_info *out)
{
	char line[SMTP_PROXY_V1_MAX + 1];
	char *tok[6];
	size_t ntok = 0;
	size_t end;
	size_t i;
	int family;
	unsigned char src[16], dst[16];
	uint16_t sport, dport;
	char *s;

	/* Find the CRLF within the first 107 bytes; anything else is refused. */
	for (end = 0; end < len; end++) {
		unsigned char c = buf[end];

		if (end >= SMTP_PROXY_V1_MAX)
			return -1;
		if (c == '\r')
			break;
		if (c < 0x20 || c > 0x7e)
			return -1;
	}
	if (end == len || end + 1 == len)
		return len >= SMTP_PROXY_V1_MAX ? -1 : 0;
	if (buf[end + 1] != '\n' || end + 2 > SMTP_PROXY_V1_MAX)
		return -1;
	memcpy(line, buf, end);
	line[end] = '\0';
	if (strncmp(line, "PROXY UNKNOWN", 13) == 0 && (line[13] == '\0' || line[13] == ' ')) {
		/* The rest of an UNKNOWN line is to be ignored (section 2.1). */
		out->local = true;
		return (int)end + 2;
	}
	/* Fields are separated by exactly one space. */
	s = line;
	for (;;) {
		char *sp = strchr(s, ' ');

		if (ntok == sizeof(tok) / sizeof(tok[0]))
			return -1;
		tok[ntok++] = s;
		if (sp == NULL)
			break;
		*sp = '\0';
		s = sp + 1;
	}
	for (i = 0; i < ntok; i++) {
		if (tok[i][0] == '\0')
			return -1;
	}
	if (ntok != 6)
		return -1;
	if (strcmp(tok[1], "TCP4") == 0)
		family = AF_INET;
	else if (strcmp(tok[1], "TCP6") == 0)
		family = AF_INET6;
	else
		return -1;
	if (inet_pton(family, tok[2], src) != 1 || inet_pton(family, tok[3], dst) != 1)
		return -1;
	if (proxy_v1_port(tok[4], &sport) == -1 || proxy_v1_port(tok[5], &dport) == -1)
		return -1;
	proxy_set(&out->src, family, src, &sport);
	proxy_set(&out->dst, family, dst, &dport);
	return (int)end + 2;
}

/* proxy_v2_tlvs - the TLV vector must exactly fill its space (section 2.2.7). */
static bool proxy_v2_tlvs(const unsigned char *p, size_t n)
{
	while (n > 0) {
		size_t vlen;

		if (n < 3)
			return false;
		vlen = ((size_t)p[1] << 8) | p[2];
		if (vlen > n - 3)
			return false;
		p += 3 + vlen;
		n -= 3 + vlen;
	}
	return true;
}

/* proxy_v2 - the binary header (section 2.2). */
static int proxy_v2(const unsigned char *buf, size_t len, struct smtp_proxy_info *out)
{
	size_t alen;
	size_t total;
	const unsigned char *a;
	unsigned cmd;

	/* Refuse as early as the bytes allow, so a bad peer is not waited for. */
	if (len <= 12)
		return 0;
	if ((buf[12] >> 4) != 2)
		return -1; /* version */
	cmd = buf[12] & 0x0f;
	if (cmd > 1)
		return -1; /* only LOCAL (0) and PROXY (1) exist */
	if (len <= 13)
		return 0;
	if (cmd == 1 && buf[13] != 0x00 && buf[13] != 0x11 && buf[13] != 0x21)
		return -1; /* UDP, AF_UNIX and unassigned values */
	if (len < PROXY_V2_HDR)
		return 0;
	alen = ((size_t)buf[14] << 8) | buf[15];
	total = PROXY_V2_HDR + alen;
	if (total > SMTP_PROXY_V2_MAX)
		return -1;
	if (len < total)
		return 0;
	a = buf + PROXY_V2_HDR;
	if (cmd == 0 || buf[13] == 0x00) {
		/* LOCAL: health checks and the like; UNSPEC: no address known.
		 * Both mean "use the real endpoints", and the block is skipped. */
		out->local = true;
		return (int)total;
	}
	if (buf[13] == 0x11) {
		if (alen < 12 || !proxy_v2_tlvs(a + 12, alen - 12))
			return -1;
		proxy_set(&out->src, AF_INET, a, a + 8);
		proxy_set(&out->dst, AF_INET, a + 4, a + 10);
	} else {
		if (alen < 36 || !proxy_v2_tlvs(a + 36, alen - 36))
			return -1;
		proxy_set(&out->src, AF_INET6, a, a + 32);
		proxy_set(&out->dst, AF_INET6, a + 16, a + 34);
	}
	return (int)total;
}

/* smtp_proxy_parse - a complete v1 or v2 header: its length; 0 more; -1 bad. */
int smtp_proxy_parse(const unsigned char *buf, size_t len, struct smtp_proxy_info *out)
{
	memset(out, 0, sizeof(*out));
	if (len == 0)
		return 0;
	if (buf[0] == proxy_v1_sig[0]) {
		if (!proxy_prefix(buf, len, proxy_v1_sig, PROXY_V1_SIGLEN))
			return -1;
		return len < PROXY_V1_SIGLEN ? 0 : proxy_v1(buf, len, out);
	}
	if (!proxy_prefix(buf, len, proxy_v2_sig, sizeof(proxy_v2_sig)))
		return -1;
	return proxy_v2(buf, len, out);
}
