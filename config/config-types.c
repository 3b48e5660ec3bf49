/*
 * config-types.c - the value types of the directive tables: how a value of
 * each type is parsed from the file (with its unit suffixes and bounds), how
 * it is printed back (config_dump, the reference) and how it is freed.  Also
 * the syntax checks for domain names and addresses that validators and
 * cross-field checks share.
 *
 * Ownership: parse functions write into the field at base + off and allocate
 * what it owns (strings, list arrays); config_value_free() releases exactly
 * that and zeroes the field, so a struct config is freed by walking the
 * tables.
 *
 * Diagnostics: every bad value or list item is reported through
 * config_diag_add() at the caller's FILE:LINE, quoting the value and the
 * expected form; a list keeps its good items so that every bad one is shown.
 */
#include "config-internal.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

/* field - the address of d's field inside base. */
static void *field(const struct config_directive *d, void *base)
{
	return (char *)base + d->off;
}

/* cfield - const variant of field(). */
static const void *cfield(const struct config_directive *d, const void *base)
{
	return (const char *)base + d->off;
}

/* count_of - the size_t count field of a pointer+count directive. */
static size_t *count_of(const struct config_directive *d, void *base)
{
	return (size_t *)(void *)((char *)base + d->noff);
}

/* ccount_of - const variant of count_of(). */
static size_t ccount_of(const struct config_directive *d, const void *base)
{
	return *(const size_t *)(const void *)((const char *)base + d->noff);
}

/* ------------------------------------------------------------ syntax checks */

/* config_check_domain - LDH labels of 1..63, at most 253 characters, not an
 * IP address (RFC 1035 section 2.3.1, RFC 5321 section 4.1.2). */
const char *config_check_domain(const char *s, char *buf, size_t buflen)
{
	size_t i, label = 0;
	bool digits_only = true;

	if (s[0] == '\0')
		return "empty domain name";
	if (strlen(s) > 253)
		return "domain longer than 253 characters";
	for (i = 0;; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.' || c == '\0') {
			if (label == 0)
				return "empty label in domain name";
			if (label > 63)
				return "domain label longer than 63 characters";
			if (s[i - 1] == '-' || s[i - label] == '-')
				return "domain label starts or ends with '-'";
			if (c == '\0')
				break;
			label = 0;
			digits_only = true;
			continue;
		}
		if (c >= 0x80)
			return "non-ASCII domain name: write it in A-label form (xn--...)";
		if (!isalnum(c) && c != '-') {
			snprintf(buf, buflen, "character '%c' not allowed in a domain name", c);
			return buf;
		}
		if (!isdigit(c))
			digits_only = false;
		label++;
	}
	if (digits_only)
		return "looks like an IP address, not a domain name";
	return NULL;
}

/* config_check_fqdn - a domain with at least two labels (EHLO wants an FQDN,
 * RFC 5321 section 4.1.1.1). */
const char *config_check_fqdn(const char *s, char *buf, size_t buflen)
{
	const char *err = config_check_domain(s, buf, buflen);

	if (err != NULL)
		return err;
	if (strchr(s, '.') == NULL)
		return "not a fully-qualified domain name (expected e.g. mx1.example.com)";
	return NULL;
}

/* config_check_address - dot-atom local part (RFC 5322 section 3.2.3) at
 * most 64 characters, '@', a valid domain. */
const char *config_check_address(const char *s, char *buf, size_t buflen)
{
	const char *at = strrchr(s, '@');
	size_t i, llen;

	if (at == NULL)
		return "missing '@' (expected local@domain)";
	llen = (size_t)(at - s);
	if (llen == 0)
		return "empty local part (expected local@domain)";
	if (llen > 64)
		return "local part longer than 64 characters";
	if (s[0] == '.' || s[llen - 1] == '.')
		return "local part starts or ends with '.'";
	for (i = 0; i < llen; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.' && s[i + 1] == '.')
			return "\"..\" in the local part";
		if (!isalnum(c) && strchr(".!#$%&'*+-/=?^_`{|}~", c) == NULL) {
			snprintf(buf, buflen, "character '%c' not allowed in the local part",
			         c >= 0x20 && c < 0x7f ? c : '?');
			return buf;
		}
	}
	return config_check_domain(at + 1, buf, buflen);
}

/* ------------------------------------------------------------ number syntax */

/* parse_scaled - decimal digits with one optional unit letter from units,
 * each scaling by the matching factor; overflow is an error.  0/-1. */
static int parse_scaled(const char *s, const char *units, const int64_t *factors, int64_t *out)
{
	int64_t v = 0, f = 1;
	size_t i = 0;

	if (!isdigit((unsigned char)s[0]))
		return -1;
	for (; isdigit((unsigned char)s[i]); i++) {
		if (v > (INT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	if (s[i] != '\0') {
		const char *u = strchr(units, tolower((unsigned char)s[i]));

		if (u == NULL || s[i + 1] != '\0')
			return -1;
		f = factors[u - units];
	}
	if (v > INT64_MAX / f)
		return -1;
	*out = v * f;
	return 0;
}

/* parse_int - optional sign and decimal digits only. */
static int parse_int(const char *s, int64_t *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (end == s || *end != '\0' || errno != 0 || isspace((unsigned char)s[0]))
		return -1;
	*out = v;
	return 0;
}

/* parse_size - bytes with K, M or G (1024-based). */
static int parse_size(const char *s, int64_t *out)
{
	static const int64_t f[] = {1024, 1024 * 1024, 1024 * 1024 * 1024};

	return parse_scaled(s, "kmg", f, out);
}

/* parse_duration - seconds with s, m, h or d. */
static int parse_duration(const char *s, int64_t *out)
{
	static const int64_t f[] = {1, 60, 3600, 86400};

	return parse_scaled(s, "smhd", f, out);
}

/* parse_bool - yes/no, true/false, on/off, 1/0 in any case. */
static int parse_bool(const char *s, bool *out)
{
	static const char *const t[] = {"yes", "true", "on", "1"};
	static const char *const f[] = {"no", "false", "off", "0"};
	size_t i;

	for (i = 0; i < 4; i++) {
		if (strcasecmp(s, t[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, f[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

/* enum_index - position of s in the NULL-terminated names (any case). */
static int enum_index(const char *const *names, const char *s)
{
	int i;

	for (i = 0; names[i] != NULL; i++) {
		if (strcasecmp(names[i], s) == 0)
			return i;
	}
	return -1;
}

/* ------------------------------------------------------------ formatting */

/* config_format_duration - largest unit that divides exactly. */
void config_format_duration(int64_t secs, char *out, size_t outlen)
{
	if (secs != 0 && secs % 86400 == 0)
		snprintf(out, outlen, "%lldd", (long long)(secs / 86400));
	else if (secs != 0 && secs % 3600 == 0)
		snprintf(out, outlen, "%lldh", (long long)(secs / 3600));
	else if (secs != 0 && secs % 60 == 0)
		snprintf(out, outlen, "%lldm", (long long)(secs / 60));
	else if (secs != 0)
		snprintf(out, outlen, "%llds", (long long)secs);
	else
		snprintf(out, outlen, "0");
}

/* config_format_size - largest of G, M, K that divides exactly. */
void config_format_size(int64_t bytes, char *out, size_t outlen)
{
	static const char units[] = "GMK";
	int64_t f = INT64_C(1024) * 1024 * 1024;
	int i;

	for (i = 0; i < 3; i++, f /= 1024) {
		if (bytes != 0 && bytes % f == 0) {
			snprintf(out, outlen, "%lld%c", (long long)(bytes / f), units[i]);
			return;
		}
	}
	snprintf(out, outlen, "%lld", (long long)bytes);
}

/* format_bound - one bound in the unit of d's type. */
static void format_bound(const struct config_directive *d, int64_t v, char *out, size_t outlen)
{
	if (d->type == CONFIG_T_SIZE)
		config_format_size(v, out, outlen);
	else if (d->type == CONFIG_T_DURATION || d->type == CONFIG_T_DURATIONS)
		config_format_duration(v, out, outlen);
	else
		snprintf(out, outlen, "%lld", (long long)v);
}

/* config_range_format - bounds or the allowed names of d. */
void config_range_format(const struct config_directive *d, char *out, size_t outlen)
{
	char lo[32], hi[32];
	size_t i, len = 0;

	out[0] = '\0';
	if (d->enums != NULL) {
		for (i = 0; d->enums[i] != NULL && len < outlen; i++)
			len += (size_t)snprintf(out + len, outlen - len, "%s%s", i ? " | " : "",
			                        d->enums[i]);
		return;
	}
	if (d->min == 0 && d->max == 0)
		return;
	format_bound(d, d->min, lo, sizeof(lo));
	format_bound(d, d->max, hi, sizeof(hi));
	snprintf(out, outlen, "%s..%s", lo, hi);
}

/* config_type_name - the type column of the reference. */
const char *config_type_name(const struct config_directive *d)
{
	static const char *const names[CONFIG_T_COUNT] = {
	    "string",    "path",        "directory", "bool",         "integer",     "size",
	    "duration",  "number",      "enum",      "list",         "domain list", "address list",
	    "CIDR list", "listen list", "host list", "duration list"};

	if (d->type == CONFIG_T_STRING && d->enums != NULL)
		return "enum";
	return names[d->type];
}

/* config_type_form - the expected form, for "bad value" messages. */
const char *config_type_form(const struct config_directive *d)
{
	static const char *const forms[CONFIG_T_COUNT] = {
	    "text",
	    "a path to a readable file",
	    "a directory path",
	    "yes/no, true/false, on/off or 1/0",
	    "an integer",
	    "bytes, or a number with K, M or G (35M)",
	    "seconds, or a number with s, m, h or d (30s, 5m, 4h, 5d)",
	    "a number (5.0)",
	    "one of the listed values",
	    "items separated by commas or spaces",
	    "domain names separated by commas or spaces",
	    "addresses (user@example.com) separated by commas or spaces",
	    "networks (192.0.2.0/24, 2001:db8::/32) separated by commas or spaces",
	    "numeric address:port (0.0.0.0:25, [::]:25)",
	    "name:port (mx.example.net:25, [2001:db8::1]:25)",
	    "durations (1m, 5m, 1h) separated by commas or spaces"};

	return forms[d->type];
}

/* ------------------------------------------------------------ parsing */

/* shorten - v, or its first 60 characters and "...", for quoting in a
 * message (a 4000-character value would drown the reason). */
static const char *shorten(const char *v, char *buf, size_t buflen)
{
	if (strlen(v) < buflen && strlen(v) <= 64)
		return v;
	snprintf(buf, buflen, "%.60s...", v);
	return buf;
}

/* bad - "bad value for 'name': why" at loc; always returns -1. */
static int bad(const struct config_directive *d, const struct config_loc *loc, const char *fmt, ...)
    UTIL_PRINTF(3, 4);
static int bad(const struct config_directive *d, const struct config_loc *loc, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	config_diag_add(loc->diags, loc->file, loc->line, false, "bad value for '%s': %s", d->name,
	                msg);
	return -1;
}

/* check_range - bounds of d (per item for lists); -1 after reporting. */
static int check_range(const struct config_directive *d, const struct config_loc *loc,
                       const char *value, int64_t v)
{
	char lo[32], hi[32];

	if ((d->min == 0 && d->max == 0) || (v >= d->min && v <= d->max))
		return 0;
	format_bound(d, d->min, lo, sizeof(lo));
	format_bound(d, d->max, hi, sizeof(hi));
	config_diag_add(loc->diags, loc->file, loc->line, false,
	                "'%s' = %s is out of range (%s..%s)", d->name, value, lo, hi);
	return -1;
}

/* store_int - write v into an int or int64_t field. */
static void store_int(const struct config_directive *d, void *base, int64_t v)
{
	if (d->size == sizeof(int64_t))
		*(int64_t *)field(d, base) = v;
	else
		*(int *)field(d, base) = (int)v;
}

/* load_int - read an int or int64_t field. */
static int64_t load_int(const struct config_directive *d, const void *base)
{
	if (d->size == sizeof(int64_t))
		return *(const int64_t *)cfield(d, base);
	return *(const int *)cfield(d, base);
}

/* enum_names - "a, b, c" of d->enums. */
static void enum_names(const struct config_directive *d, char *out, size_t outlen)
{
	size_t i, len = 0;

	out[0] = '\0';
	for (i = 0; d->enums[i] != NULL && len < outlen; i++)
		len +=
		    (size_t)snprintf(out + len, outlen - len, "%s%s", i ? ", " : "", d->enums[i]);
}

/* bad_enum - value not among d->enums, with a did-you-mean. */
static int bad_enum(const struct config_directive *d, const struct config_loc *loc,
                    const char *value)
{
	char names[256], qb[72];
	size_t n = 0;
	const char *sug;

	while (d->enums[n] != NULL)
		n++;
	sug = config_suggest(value, d->enums, n);
	value = shorten(value, qb, sizeof(qb));
	enum_names(d, names, sizeof(names));
	if (sug != NULL)
		return bad(d, loc, "\"%s\" (expected one of: %s; did you mean '%s'?)", value, names,
		           sug);
	return bad(d, loc, "\"%s\" (expected one of: %s)", value, names);
}

/* parse_scalar - every single-valued type. */
static int parse_scalar(const struct config_directive *d, void *base, const char *value,
                        const struct config_loc *loc)
{
	char qb[72];
	const char *qv = shorten(value, qb, sizeof(qb));
	int64_t v = 0;
	bool b;
	int idx;

	switch (d->type) {
	case CONFIG_T_BOOL:
		if (parse_bool(value, &b) == -1)
			return bad(d, loc, "\"%s\" (expected %s)", qv, config_type_form(d));
		*(bool *)field(d, base) = b;
		return 0;
	case CONFIG_T_INT:
	case CONFIG_T_SIZE:
	case CONFIG_T_DURATION:
		if ((d->type == CONFIG_T_INT    ? parse_int(value, &v)
		     : d->type == CONFIG_T_SIZE ? parse_size(value, &v)
		                                : parse_duration(value, &v)) == -1)
			return bad(d, loc, "\"%s\" (expected %s)", qv, config_type_form(d));
		if (check_range(d, loc, qv, v) == -1)
			return -1;
		if (d->size != sizeof(int64_t) && (v > INT_MAX || v < INT_MIN))
			return bad(d, loc, "\"%s\" is too large", qv);
		store_int(d, base, v);
		return 0;
	case CONFIG_T_DOUBLE: {
		char *end;
		double x;

		errno = 0;
		x = strtod(value, &end);
		if (end == value || *end != '\0' || errno != 0 || !isfinite(x))
			return bad(d, loc, "\"%s\" (expected %s)", qv, config_type_form(d));
		if ((d->min != 0 || d->max != 0) && (x < (double)d->min || x > (double)d->max)) {
			config_diag_add(loc->diags, loc->file, loc->line, false,
			                "'%s' = %s is out of range (%lld..%lld)", d->name, qv,
			                (long long)d->min, (long long)d->max);
			return -1;
		}
		*(double *)field(d, base) = x;
		return 0;
	}
	case CONFIG_T_ENUM:
		idx = enum_index(d->enums, value);
		if (idx < 0)
			return bad_enum(d, loc, value);
		*(int *)field(d, base) = idx;
		return 0;
	default:
		break;
	}
	/* STRING, PATH, DIR */
	if (d->enums != NULL) {
		idx = enum_index(d->enums, value);
		if (idx < 0)
			return bad_enum(d, loc, value);
		value = d->enums[idx];
	}
	if (d->validate != NULL) {
		char buf[256];
		const char *why = d->validate(value, buf, sizeof(buf));

		if (why != NULL)
			return bad(d, loc, "\"%s\": %s", qv, why);
	}
	free(*(char **)field(d, base));
	*(char **)field(d, base) = util_xstrdup(value);
	return 0;
}

/* add_string_item - one item of LIST / DOMAINS / ADDRS. */
static int add_string_item(const struct config_directive *d, void *base, char *item,
                           const struct config_loc *loc)
{
	struct util_strlist *l = field(d, base);
	const char *why = NULL;
	char buf[256], qb[72];
	size_t n = strlen(item);

	if (d->type == CONFIG_T_DOMAINS || d->type == CONFIG_T_ADDRS) {
		for (size_t i = 0; i < n; i++)
			item[i] = (char)tolower((unsigned char)item[i]);
		if (d->type == CONFIG_T_DOMAINS && n > 1 && item[n - 1] == '.')
			item[n - 1] = '\0';
		why = d->type == CONFIG_T_DOMAINS ? config_check_domain(item, buf, sizeof(buf))
		                                  : config_check_address(item, buf, sizeof(buf));
	}
	if (why == NULL && d->validate != NULL)
		why = d->validate(item, buf, sizeof(buf));
	if (why != NULL)
		return bad(d, loc, "\"%s\": %s", shorten(item, qb, sizeof(qb)), why);
	if (util_strlist_has_case(l, item)) {
		config_diag_add(loc->diags, loc->file, loc->line, true,
		                "'%s' lists \"%s\" more than once", d->name,
		                shorten(item, qb, sizeof(qb)));
		return 0;
	}
	util_strlist_add(l, item);
	return 0;
}

/* add_listen_item - "addr:port" / "[v6]:port", numeric only. */
static int add_listen_item(const struct config_directive *d, void *base, const char *item,
                           const struct config_loc *loc)
{
	struct config_listen **v = field(d, base);
	size_t *n = count_of(d, base);
	struct config_listen l = {0};
	char host[256], err[256];

	if (util_hostport_parse(item, -1, host, sizeof(host), &l.port, err, sizeof(err)) == -1)
		return bad(d, loc, "%s (expected %s)", err, config_type_form(d));
	if (util_addr_parse_numeric(host, l.port, &l.addr) == -1)
		return bad(d, loc,
		           "\"%s\" is not a numeric address (write an IP address, not a name)",
		           host);
	l.host = util_xstrdup(host);
	l.line = loc->line;
	*v = util_xrealloc(*v, (*n + 1) * sizeof(**v));
	(*v)[(*n)++] = l;
	return 0;
}

/* add_host_item - "name:port", port 25 when omitted. */
static int add_host_item(const struct config_directive *d, void *base, const char *item,
                         const struct config_loc *loc)
{
	struct config_host **v = field(d, base);
	size_t *n = count_of(d, base);
	char host[256], err[256];
	int port;

	if (util_hostport_parse(item, 25, host, sizeof(host), &port, err, sizeof(err)) == -1)
		return bad(d, loc, "%s (expected %s)", err, config_type_form(d));
	*v = util_xrealloc(*v, (*n + 1) * sizeof(**v));
	(*v)[*n].host = util_xstrdup(host);
	(*v)[*n].port = port;
	(*n)++;
	return 0;
}

/* add_item - one item of any list type. */
static int add_item(const struct config_directive *d, void *base, char *item,
                    const struct config_loc *loc)
{
	struct util_cidr c;
	char err[256];
	int64_t v;

	switch (d->type) {
	case CONFIG_T_CIDRS:
		if (util_cidr_parse(item, &c, err, sizeof(err)) == -1) {
			config_diag_add(loc->diags, loc->file, loc->line, false,
			                "bad CIDR in '%s': %s", d->name, err);
			return -1;
		}
		util_cidr_list_add(field(d, base), &c);
		return 0;
	case CONFIG_T_LISTEN:
		return add_listen_item(d, base, item, loc);
	case CONFIG_T_HOSTS:
		return add_host_item(d, base, item, loc);
	case CONFIG_T_DURATIONS: {
		int64_t **arr = field(d, base);
		size_t *n = count_of(d, base);

		if (parse_duration(item, &v) == -1)
			return bad(d, loc, "\"%s\" (expected %s)", shorten(item, err, sizeof(err)),
			           config_type_form(d));
		if (check_range(d, loc, shorten(item, err, sizeof(err)), v) == -1)
			return -1;
		*arr = util_xrealloc(*arr, (*n + 1) * sizeof(**arr));
		(*arr)[(*n)++] = v;
		return 0;
	}
	default:
		return add_string_item(d, base, item, loc);
	}
}

/* config_type_is_list - types that take several items and may be repeated. */
bool config_type_is_list(enum config_type t)
{
	return t >= CONFIG_T_LIST;
}

/* config_value_parse - scalars replace, lists append item by item. */
int config_value_parse(const struct config_directive *d, void *base, const char *value,
                       const struct config_loc *loc)
{
	char *copy, *p, *tok;
	int rc = 0;

	if (!config_type_is_list(d->type))
		return parse_scalar(d, base, value, loc);
	copy = util_xstrdup(value);
	for (p = copy; (tok = strsep(&p, ", \t")) != NULL;) {
		if (tok[0] != '\0' && add_item(d, base, tok, loc) == -1)
			rc = -1;
	}
	free(copy);
	return rc;
}

/* ------------------------------------------------------------ is_set / format / free */

/* config_value_is_set - see config-internal.h. */
bool config_value_is_set(const struct config_directive *d, const void *base)
{
	switch (d->type) {
	case CONFIG_T_STRING:
	case CONFIG_T_PATH:
	case CONFIG_T_DIR:
		return *(char *const *)cfield(d, base) != NULL;
	case CONFIG_T_LIST:
	case CONFIG_T_DOMAINS:
	case CONFIG_T_ADDRS:
		return ((const struct util_strlist *)cfield(d, base))->n > 0;
	case CONFIG_T_CIDRS:
		return ((const struct util_cidr_list *)cfield(d, base))->n > 0;
	case CONFIG_T_LISTEN:
	case CONFIG_T_HOSTS:
	case CONFIG_T_DURATIONS:
		return ccount_of(d, base) > 0;
	default:
		return true;
	}
}

/* format_hostport - "host:port", brackets around IPv6. */
static void format_hostport(struct util_buf *out, const char *host, int port)
{
	if (strchr(host, ':') != NULL)
		util_buf_printf(out, "[%s]:%d", host, port);
	else
		util_buf_printf(out, "%s:%d", host, port);
}

/* format_item - item i of a list type. */
static void format_item(const struct config_directive *d, const void *base, size_t i,
                        struct util_buf *out)
{
	char tmp[64];

	switch (d->type) {
	case CONFIG_T_CIDRS:
		util_cidr_format(&((const struct util_cidr_list *)cfield(d, base))->v[i], tmp,
		                 sizeof(tmp));
		util_buf_adds(out, tmp);
		break;
	case CONFIG_T_LISTEN: {
		const struct config_listen *l = *(struct config_listen *const *)cfield(d, base);

		format_hostport(out, l[i].host, l[i].port);
		break;
	}
	case CONFIG_T_HOSTS: {
		const struct config_host *h = *(struct config_host *const *)cfield(d, base);

		format_hostport(out, h[i].host, h[i].port);
		break;
	}
	case CONFIG_T_DURATIONS:
		config_format_duration((*(int64_t *const *)cfield(d, base))[i], tmp, sizeof(tmp));
		util_buf_adds(out, tmp);
		break;
	default:
		util_buf_adds(out, ((const struct util_strlist *)cfield(d, base))->v[i]);
		break;
	}
}

/* list_count - number of items of a list type. */
static size_t list_count(const struct config_directive *d, const void *base)
{
	if (d->type == CONFIG_T_CIDRS)
		return ((const struct util_cidr_list *)cfield(d, base))->n;
	if (d->type == CONFIG_T_LISTEN || d->type == CONFIG_T_HOSTS ||
	    d->type == CONFIG_T_DURATIONS)
		return ccount_of(d, base);
	return ((const struct util_strlist *)cfield(d, base))->n;
}

/* config_value_format - see config-internal.h. */
void config_value_format(const struct config_directive *d, const void *base, struct util_buf *out)
{
	char tmp[64];
	int64_t v;
	double x;
	size_t i, n;

	switch (d->type) {
	case CONFIG_T_STRING:
	case CONFIG_T_PATH:
	case CONFIG_T_DIR: {
		const char *s = *(char *const *)cfield(d, base);

		util_buf_adds(out, s != NULL ? s : "");
		return;
	}
	case CONFIG_T_BOOL:
		util_buf_adds(out, *(const bool *)cfield(d, base) ? "yes" : "no");
		return;
	case CONFIG_T_INT:
	case CONFIG_T_SIZE:
	case CONFIG_T_DURATION:
		v = load_int(d, base);
		if (d->type == CONFIG_T_SIZE)
			config_format_size(v, tmp, sizeof(tmp));
		else if (d->type == CONFIG_T_DURATION)
			config_format_duration(v, tmp, sizeof(tmp));
		else
			snprintf(tmp, sizeof(tmp), "%lld", (long long)v);
		util_buf_adds(out, tmp);
		return;
	case CONFIG_T_DOUBLE:
		x = *(const double *)cfield(d, base);
		snprintf(tmp, sizeof(tmp), "%g", x);
		util_buf_adds(out, tmp);
		if (strpbrk(tmp, ".en") == NULL)
			util_buf_adds(out, ".0");
		return;
	case CONFIG_T_ENUM: {
		int idx = *(const int *)cfield(d, base);
		size_t cnt = 0;

		while (d->enums[cnt] != NULL)
			cnt++;
		util_buf_adds(out, idx >= 0 && (size_t)idx < cnt ? d->enums[idx] : "?");
		return;
	}
	default:
		break;
	}
	n = list_count(d, base);
	for (i = 0; i < n; i++) {
		if (i > 0)
			util_buf_adds(out, ", ");
		format_item(d, base, i, out);
	}
}

/* config_value_free - see config-internal.h. */
void config_value_free(const struct config_directive *d, void *base)
{
	size_t i;

	switch (d->type) {
	case CONFIG_T_STRING:
	case CONFIG_T_PATH:
	case CONFIG_T_DIR:
		free(*(char **)field(d, base));
		*(char **)field(d, base) = NULL;
		break;
	case CONFIG_T_LIST:
	case CONFIG_T_DOMAINS:
	case CONFIG_T_ADDRS:
		util_strlist_free(field(d, base));
		break;
	case CONFIG_T_CIDRS:
		util_cidr_list_free(field(d, base));
		break;
	case CONFIG_T_LISTEN: {
		struct config_listen **l = field(d, base);

		for (i = 0; i < *count_of(d, base); i++)
			free((*l)[i].host);
		free(*l);
		*l = NULL;
		*count_of(d, base) = 0;
		break;
	}
	case CONFIG_T_HOSTS: {
		struct config_host **h = field(d, base);

		for (i = 0; i < *count_of(d, base); i++)
			free((*h)[i].host);
		free(*h);
		*h = NULL;
		*count_of(d, base) = 0;
		break;
	}
	case CONFIG_T_DURATIONS:
		free(*(int64_t **)field(d, base));
		*(int64_t **)field(d, base) = NULL;
		*count_of(d, base) = 0;
		break;
	default:
		break;
	}
}
