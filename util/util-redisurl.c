/*
 * util-redisurl.c - the address of a Redis/Valkey server in [state] redis
 * (issue 17, state across a fleet):
 *   redis://HOST[:PORT][/DB]     TCP, PORT 6379 by default, DB 0 by default;
 *                                HOST may be an [IPv6] literal
 *   unix:/PATH[?db=DB]           a unix socket (also unix:///PATH)
 * The password is a separate directive ([state] password) so the URL can be
 * logged.  Config input, checked by check-config through the validator.
 *
 * Ownership: fills the caller's struct.  Diagnostics: a message in err.
 */
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* parse_num - decimal in [min, max]; -1 when not. */
static long parse_num(const char *s, size_t n, long min, long max)
{
	long v = 0;
	if (n == 0 || n > 9)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v < min || v > max ? -1 : v;
}

/* util_redis_url_parse - 0, or -1 with the reason in err. */
int util_redis_url_parse(const char *url, struct util_redis_url *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	out->port = 6379;
	if (strncmp(url, "unix:", 5) == 0) {
		const char *p = url + 5;
		if (strncmp(p, "//", 2) == 0)
			p += 2;
		const char *q = strchr(p, '?');
		size_t n = q ? (size_t)(q - p) : strlen(p);
		if (n == 0 || p[0] != '/' || n >= sizeof(out->path)) {
			snprintf(err, errlen, "unix: needs an absolute socket path of at most %zu bytes",
			         sizeof(out->path) - 1);
			return -1;
		}
		memcpy(out->path, p, n);
		out->path[n] = '\0';
		if (q) {
			long db = strncmp(q, "?db=", 4) == 0 ? parse_num(q + 4, strlen(q + 4), 0, 65535) : -1;
			if (db < 0) {
				snprintf(err, errlen, "after the socket path only ?db=N (0-65535)");
				return -1;
			}
			out->db = (int)db;
		}
		return 0;
	}
	if (strncmp(url, "redis://", 8) != 0) {
		snprintf(err, errlen, "must be redis://HOST[:PORT][/DB] or unix:/PATH[?db=N]");
		return -1;
	}
	const char *h = url + 8, *end;
	if (strchr(h, '@')) {
		snprintf(err, errlen, "no user or password in the URL: use [state] password");
		return -1;
	}
	size_t hn;
	if (*h == '[') {
		end = strchr(h, ']');
		if (!end) {
			snprintf(err, errlen, "unterminated [IPv6] literal");
			return -1;
		}
		hn = (size_t)(end - h - 1);
		h++;
		end++;
	} else {
		end = h + strcspn(h, ":/");
		hn = (size_t)(end - h);
	}
	if (hn == 0 || hn >= sizeof(out->host)) {
		snprintf(err, errlen, "missing or too long host name");
		return -1;
	}
	for (size_t i = 0; i < hn; i++) {
		char c = h[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-' || c == ':')) {
			snprintf(err, errlen, "bad character in host name");
			return -1;
		}
	}
	memcpy(out->host, h, hn);
	out->host[hn] = '\0';
	if (*end == ':') {
		const char *pp = end + 1;
		size_t pn = strcspn(pp, "/");
		long port = parse_num(pp, pn, 1, 65535);
		if (port < 0) {
			snprintf(err, errlen, "port must be 1-65535");
			return -1;
		}
		out->port = (int)port;
		end = pp + pn;
	}
	if (*end == '/' && end[1]) {
		long db = parse_num(end + 1, strlen(end + 1), 0, 65535);
		if (db < 0) {
			snprintf(err, errlen, "database must be a number 0-65535");
			return -1;
		}
		out->db = (int)db;
	} else if (*end && strcmp(end, "/") != 0) {
		snprintf(err, errlen, "unexpected text after the host");
		return -1;
	}
	return 0;
}
