/*
 * smtp-cmd.c - pure parsers for SMTP command lines and MAIL/RCPT paths
 * (RFC 5321 4.1.1, 4.1.2; SMTPUTF8 addresses RFC 6531 3.3).
 *
 * Nothing here allocates or keeps state: the server hands in one line
 * (already cut at CRLF and length-checked) and gets back the verb, the
 * argument, or a parsed path with its ESMTP parameters.
 *
 * Ownership: struct smtp_cmd.arg points into the struct smtp_cmd itself
 * (its argbuf), so it stays valid as long as the struct; struct smtp_path is
 * self-contained.
 *
 * Diagnostics: smtp_path_parse writes the complete SMTP reply for the client
 * ("501 5.1.3 Bad recipient address syntax", "553 5.6.7 ..."); the other
 * functions only return -1 / false.
 */
#include "smtp-internal.h"

#include <arpa/inet.h>
#include <string.h>

static const struct {
	enum smtp_verb verb;
	const char *name;
} smtp_verbs[] = {
    {SMTP_VERB_HELO, "HELO"}, {SMTP_VERB_EHLO, "EHLO"}, {SMTP_VERB_MAIL, "MAIL"},
    {SMTP_VERB_RCPT, "RCPT"}, {SMTP_VERB_DATA, "DATA"}, {SMTP_VERB_RSET, "RSET"},
    {SMTP_VERB_NOOP, "NOOP"}, {SMTP_VERB_QUIT, "QUIT"}, {SMTP_VERB_VRFY, "VRFY"},
    {SMTP_VERB_EXPN, "EXPN"}, {SMTP_VERB_HELP, "HELP"}, {SMTP_VERB_STARTTLS, "STARTTLS"},
    {SMTP_VERB_AUTH, "AUTH"}, {SMTP_VERB_BDAT, "BDAT"},
};

#define NVERBS (sizeof(smtp_verbs) / sizeof(smtp_verbs[0]))

/* cmd_upper - ASCII upper case. */
static char cmd_upper(char c)
{
	return c >= 'a' && c <= 'z' ? (char)(c - ('a' - 'A')) : c;
}

/* cmd_caseprefix - does s start with prefix (ASCII case-insensitive)? */
static bool cmd_caseprefix(const char *s, const char *prefix)
{
	for (; *prefix != '\0'; s++, prefix++) {
		if (cmd_upper(*s) != cmd_upper(*prefix))
			return false;
	}
	return true;
}

/* smtp_cmd_parse - split a command line into verb and argument. */
int smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *cmd)
{
	size_t vlen;
	size_t i;
	size_t alen;

	cmd->verb = SMTP_VERB_UNKNOWN;
	cmd->argbuf[0] = '\0';
	cmd->arg = cmd->argbuf;
	/* The server cut the line at CRLF; any CR, LF or NUL left inside it is
	 * an attempt to smuggle a second command (RFC 5321 2.3.8). */
	if (memchr(line, '\0', len) != NULL || memchr(line, '\r', len) != NULL ||
	    memchr(line, '\n', len) != NULL)
		return -1;
	if (len > SMTP_MAX_CMD_LINE - 2)
		return -1; /* RFC 5321 4.5.3.1.4 */
	for (vlen = 0; vlen < len && line[vlen] != ' '; vlen++)
		;
	for (i = 0; i < NVERBS; i++) {
		if (strlen(smtp_verbs[i].name) == vlen && cmd_caseprefix(line, smtp_verbs[i].name))
			break;
	}
	if (i == NVERBS)
		return -1; /* unknown, or glued to its argument ("MAILFROM:") */
	if (vlen < len) {
		alen = len - vlen - 1;
		while (alen > 0 && line[vlen + 1 + alen - 1] == ' ')
			alen--;
		memcpy(cmd->argbuf, line + vlen + 1, alen);
		cmd->argbuf[alen] = '\0';
	}
	cmd->verb = smtp_verbs[i].verb;
	return 0;
}

/* smtp_verb_name - upper-case verb for logs; "UNKNOWN" for anything else. */
const char *smtp_verb_name(enum smtp_verb v)
{
	size_t i;

	for (i = 0; i < NVERBS; i++) {
		if (smtp_verbs[i].verb == v)
			return smtp_verbs[i].name;
	}
	return "UNKNOWN";
}

/* ------------------------------------------------------------ paths */

/* Parser state for one path: the cursor and what the reply should say. */
struct path_ctx {
	const char *p;
	bool utf8;
	bool rcpt;
	char *reply;
	size_t replylen;
};

/* path_fail - write reply and return -1. */
static int path_fail(struct path_ctx *c, const char *reply)
{
	if (c->reply != NULL && c->replylen > 0)
		snprintf(c->reply, c->replylen, "%s", reply);
	return -1;
}

/* path_bad_addr - the address-syntax reply for MAIL or RCPT. */
static int path_bad_addr(struct path_ctx *c)
{
	return path_fail(c, c->rcpt ? "501 5.1.3 Bad recipient address syntax"
	                            : "501 5.1.7 Bad sender address syntax");
}

/* path_utf8_len - length of the well-formed UTF-8 sequence at s (RFC 3629 4),
 * or 0 when it is not one (overlong forms, surrogates, > U+10FFFF). */
static size_t path_utf8_len(const unsigned char *s)
{
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		return (s[1] & 0xc0) == 0x80 ? 2 : 0;
	if (s[0] >= 0xe0 && s[0] <= 0xef) {
		unsigned lo = s[0] == 0xe0 ? 0xa0 : 0x80;
		unsigned hi = s[0] == 0xed ? 0x9f : 0xbf;

		return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 ? 3 : 0;
	}
	if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		unsigned lo = s[0] == 0xf0 ? 0x90 : 0x80;
		unsigned hi = s[0] == 0xf4 ? 0x8f : 0xbf;

		return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 && (s[3] & 0xc0) == 0x80
		           ? 4
		           : 0;
	}
	return 0;
}

/* path_8bit - check a byte >= 0x80 at *s; advance past the UTF-8 sequence.
 * 0, or -1 with the reply written. */
static int path_8bit(struct path_ctx *c, const char **s)
{
	size_t n;

	if (!c->utf8)
		return path_fail(c, "553 5.6.7 Non-ASCII address requires SMTPUTF8");
	n = path_utf8_len((const unsigned char *)*s);
	if (n == 0)
		return path_bad_addr(c);
	*s += n;
	return 0;
}

/* path_is_atext - RFC 5321 4.1.2 atext (RFC 5322 3.2.3). */
static bool path_is_atext(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       (ch != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", ch) != NULL);
}

/* path_domain - Domain or address-literal (RFC 5321 4.1.2, 4.1.3) at c->p,
 * ending at one of the bytes in stop.  Advances c->p.  0/-1. */
static int path_domain(struct path_ctx *c, const char *stop)
{
	const char *s = c->p;

	if (*s == '[') {
		const char *end = strchr(s, ']');
		char lit[INET6_ADDRSTRLEN + 8];
		unsigned char bin[16];
		size_t n;

		if (end == NULL || (size_t)(end - s - 1) >= sizeof(lit))
			return path_bad_addr(c);
		n = (size_t)(end - s - 1);
		memcpy(lit, s + 1, n);
		lit[n] = '\0';
		if (!(inet_pton(AF_INET, lit, bin) == 1 ||
		      (cmd_caseprefix(lit, "IPv6:") && inet_pton(AF_INET6, lit + 5, bin) == 1)))
			return path_bad_addr(c);
		c->p = end + 1;
		return *c->p != '\0' && strchr(stop, *c->p) != NULL ? 0 : path_bad_addr(c);
	}
	for (;;) {
		/* sub-domain = Let-dig [Ldh-str]; U-labels allowed with SMTPUTF8 */
		const char *label = s;

		while (*s != '\0') {
			unsigned char ch = (unsigned char)*s;

			if (ch >= 0x80) {
				if (path_8bit(c, &s) == -1)
					return -1;
			} else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			           (ch >= '0' && ch <= '9') || ch == '-' || ch == '_') {
				s++;
			} else {
				break;
			}
		}
		if (s == label || *label == '-' || s[-1] == '-')
			return path_bad_addr(c);
		if (*s != '.')
			break;
		s++;
	}
	c->p = s;
	return *s != '\0' && strchr(stop, *s) != NULL ? 0 : path_bad_addr(c);
}

/* path_local - Local-part (RFC 5321 4.1.2): Dot-string or Quoted-string.
 * Consecutive or edge dots in a Dot-string are tolerated (widely sent); a
 * second unquoted '@', specials, spaces and controls are not. */
static int path_local(struct path_ctx *c)
{
	const char *s = c->p;

	if (*s == '"') {
		for (s++; *s != '"'; s++) {
			unsigned char ch = (unsigned char)*s;

			if (ch == '\\') {
				s++;
				ch = (unsigned char)*s;
				if (ch < 32 || ch > 126) /* quoted-pairSMTP */
					return path_bad_addr(c);
			} else if (ch >= 0x80) {
				if (path_8bit(c, &s) == -1)
					return -1;
				s--;
			} else if (ch < 32 || ch == 127) {
				return path_bad_addr(c); /* also the end of the string */
			}
		}
		c->p = s + 1;
		return 0;
	}
	while (*s != '\0' && *s != '@' && *s != '>') {
		unsigned char ch = (unsigned char)*s;

		if (ch >= 0x80) {
			if (path_8bit(c, &s) == -1)
				return -1;
		} else if (ch == '.' || path_is_atext(ch)) {
			s++;
		} else {
			return path_bad_addr(c);
		}
	}
	if (s == c->p)
		return path_bad_addr(c);
	c->p = s;
	return 0;
}

/* path_mailbox - "<" [A-d-l ":"] Mailbox ">" at c->p; the mailbox without
 * its source route goes to out->addr. */
static int path_mailbox(struct path_ctx *c, struct smtp_path *out)
{
	const char *start;
	size_t n;

	c->p++; /* '<' */
	if (*c->p == '@') {
		/* A-d-l: "@a,@b:" - obsolete source route, accepted and dropped
		 * (RFC 5321 4.1.1.3, Appendix C). */
		for (;;) {
			c->p++;
			if (path_domain(c, ",:") == -1)
				return -1;
			if (*c->p == ':')
				break;
			c->p++;
			if (*c->p != '@')
				return path_bad_addr(c);
		}
		c->p++;
	}
	start = c->p;
	if (path_local(c) == -1)
		return -1;
	if (*c->p == '@') {
		c->p++;
		if (path_domain(c, ">") == -1)
			return -1;
	} else {
		/* Only <postmaster> may come without a domain (RFC 5321 4.1.1.3). */
		if (!c->rcpt || (size_t)(c->p - start) != strlen("postmaster") ||
		    !cmd_caseprefix(start, "postmaster"))
			return path_bad_addr(c);
	}
	if (*c->p != '>')
		return path_bad_addr(c);
	n = (size_t)(c->p - start);
	if (n > SMTP_MAX_PATH)
		return path_fail(c, c->rcpt ? "501 5.1.3 Recipient address too long"
		                            : "501 5.1.7 Sender address too long");
	memcpy(out->addr, start, n);
	out->addr[n] = '\0';
	c->p++;
	return 0;
}

/* path_params - Mail-parameters / Rcpt-parameters (RFC 5321 4.1.2):
 * esmtp-keyword ["=" esmtp-value], separated by spaces. */
static int path_params(struct path_ctx *c, struct smtp_path *out)
{
	const char *s = c->p;

	for (;;) {
		struct smtp_param *prm;
		size_t klen = 0;
		size_t vlen = 0;
		size_t i;

		while (*s == ' ')
			s++;
		if (*s == '\0')
			break;
		if (out->nparams == SMTP_MAX_PARAMS)
			return path_fail(c, "501 5.5.4 Too many parameters");
		prm = &out->params[out->nparams];
		/* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
		while ((s[klen] >= 'a' && s[klen] <= 'z') || (s[klen] >= 'A' && s[klen] <= 'Z') ||
		       (s[klen] >= '0' && s[klen] <= '9') || (klen > 0 && s[klen] == '-')) {
			if (klen + 1 >= sizeof(prm->key))
				return path_fail(c, "501 5.5.4 Malformed parameter");
			prm->key[klen] = cmd_upper(s[klen]);
			klen++;
		}
		prm->key[klen] = '\0';
		if (klen == 0)
			return path_fail(c, "501 5.5.4 Malformed parameter");
		s += klen;
		if (*s == '=') {
			/* esmtp-value = 1*(%d33-60 / %d62-126) */
			s++;
			while (s[vlen] >= 33 && s[vlen] <= 126 && s[vlen] != '=') {
				if (vlen + 1 >= sizeof(prm->value))
					return path_fail(c, "501 5.5.4 Malformed parameter");
				prm->value[vlen] = s[vlen];
				vlen++;
			}
			if (vlen == 0)
				return path_fail(c, "501 5.5.4 Malformed parameter");
			s += vlen;
		}
		prm->value[vlen] = '\0';
		if (*s != ' ' && *s != '\0')
			return path_fail(c, "501 5.5.4 Malformed parameter");
		for (i = 0; i < out->nparams; i++) {
			if (strcmp(out->params[i].key, prm->key) == 0)
				return path_fail(c, "501 5.5.4 Duplicate parameter");
		}
		out->nparams++;
	}
	c->p = s;
	return 0;
}

/* smtp_path_parse - "FROM:<a@b> SIZE=10" into a struct smtp_path. */
int smtp_path_parse(const char *arg, const char *prefix, bool utf8, bool null_ok,
                    struct smtp_path *out, char *reply, size_t replylen)
{
	struct path_ctx c;

	memset(out, 0, sizeof(*out));
	c.p = arg;
	c.utf8 = utf8;
	c.rcpt = cmd_caseprefix(prefix, "TO:");
	c.reply = reply;
	c.replylen = replylen;
	if (!cmd_caseprefix(arg, prefix))
		goto syntax;
	c.p += strlen(prefix);
	if (*c.p == ' ')
		c.p++; /* "MAIL FROM: <a@b>", tolerated like Postfix does */
	if (*c.p != '<')
		goto syntax;
	if (c.p[1] == '>') {
		if (!null_ok)
			return path_bad_addr(&c);
		out->null_path = true;
		c.p += 2;
	} else if (path_mailbox(&c, out) == -1) {
		goto err;
	}
	if (*c.p != ' ' && *c.p != '\0')
		goto syntax;
	if (path_params(&c, out) == -1)
		goto err;
	return 0;
syntax:
	path_fail(&c, c.rcpt ? "501 5.5.4 Syntax: RCPT TO:<address>"
	                     : "501 5.5.4 Syntax: MAIL FROM:<address>");
err:
	memset(out, 0, sizeof(*out));
	return -1;
}

/* smtp_path_param - value of an ESMTP parameter ("" when it has none). */
const char *smtp_path_param(const struct smtp_path *p, const char *key)
{
	size_t i;

	for (i = 0; i < p->nparams; i++) {
		if (strlen(p->params[i].key) == strlen(key) &&
		    cmd_caseprefix(p->params[i].key, key))
			return p->params[i].value;
	}
	return NULL;
}

/* smtp_addr_is_relay_hack - '%' or '!' in the local part ("user%host@us",
 * "host!user@us") or '@' inside a quoted local part: forms that old MTAs
 * route onwards, so accepting them could make us an open relay. */
bool smtp_addr_is_relay_hack(const char *addr)
{
	const char *at = strrchr(addr, '@');
	size_t n = at != NULL ? (size_t)(at - addr) : strlen(addr);

	if (memchr(addr, '%', n) != NULL || memchr(addr, '!', n) != NULL)
		return true;
	return memchr(addr, '@', n) != NULL;
}
