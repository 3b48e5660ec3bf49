/*
 * fuzz_smtp_cmd.c - libFuzzer target: the SMTP command-line parser
 * (smtp_cmd_parse) and the MAIL/RCPT path parser (smtp_path_parse) with the
 * relay-hack check, i.e. everything a client controls before DATA.
 *
 * Input: byte 0 selects the flags (bit 0 SMTPUTF8 allowed, bit 1 null path
 * allowed, bit 2 "TO:" instead of "FROM:"); the rest is one command line
 * without its CRLF.  Invariants checked besides memory safety:
 *  - a line containing CR, LF or NUL, or longer than 510 bytes, is refused;
 *  - an accepted path is at most SMTP_MAX_PATH bytes, has no control bytes,
 *    no 8-bit bytes unless SMTPUTF8 was allowed, and no angle brackets
 *    outside a quoted local part;
 *  - a path that is not a relay hack has exactly one '@' (so the domain
 *    mxgate checks for relay control is the one a downstream routes on) and
 *    its domain has no route or quote characters;
 *  - a refusal comes with an SMTP 5xx reply.
 */
#include <stdbool.h>

#include "fuzz-common.h"
#include "smtp-internal.h"

static void check_path(const char *arg, bool utf8, bool null_ok, bool rcpt)
{
	struct smtp_path p;
	char reply[300];
	reply[0] = 0;
	int rc = smtp_path_parse(arg, rcpt ? "TO:" : "FROM:", utf8, null_ok, &p, reply,
				 sizeof(reply));
	if (rc < 0) {
		FUZZ_CHECK(reply[0] == '5' && strlen(reply) >= 3);
		return;
	}
	FUZZ_CHECK(rc == 0);
	size_t n = strlen(p.addr);
	FUZZ_CHECK(n <= SMTP_MAX_PATH);
	FUZZ_CHECK(p.nparams <= SMTP_MAX_PARAMS);
	if (p.null_path) {
		FUZZ_CHECK(null_ok);
		FUZZ_CHECK(n == 0);
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p.addr[i];
		FUZZ_CHECK(c >= 0x20 && c != 0x7f);
		if (p.addr[0] != '"')   /* a quoted local part may hold them */
			FUZZ_CHECK(c != '<' && c != '>');
		if (!utf8)
			FUZZ_CHECK(c < 0x80);
	}
	for (size_t i = 0; i < p.nparams; i++) {
		FUZZ_CHECK(p.params[i].key[0] != 0);
		for (const char *k = p.params[i].key; *k; k++)
			FUZZ_CHECK(!(*k >= 'a' && *k <= 'z'));
		FUZZ_CHECK(smtp_path_param(&p, p.params[i].key) != NULL);
	}
	if (n > 0 && !smtp_addr_is_relay_hack(p.addr)) {
		const char *at = strchr(p.addr, '@');
		if (at) {
			FUZZ_CHECK(at == strrchr(p.addr, '@'));
			const char *dom = util_domain_of(p.addr);
			FUZZ_CHECK(dom == at + 1);
			FUZZ_CHECK(strpbrk(dom, ":,\"\\ <>") == NULL);
			FUZZ_CHECK(memchr(p.addr, '%', (size_t)(at - p.addr)) == NULL);
			FUZZ_CHECK(memchr(p.addr, '!', (size_t)(at - p.addr)) == NULL);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 4096)
		return 0;
	unsigned flags = data[0];
	char *line = fuzz_strdup(data + 1, size - 1);
	size_t len = size - 1;
	struct smtp_cmd c;
	int rc = smtp_cmd_parse(line, len, &c);
	bool bad_byte = memchr(line, '\r', len) || memchr(line, '\n', len) ||
			memchr(line, '\0', len);
	if (bad_byte || len > SMTP_MAX_CMD_LINE - 2)
		FUZZ_CHECK(rc == -1);
	if (rc < 0) {
		FUZZ_CHECK(c.verb == SMTP_VERB_UNKNOWN);
	} else {
		FUZZ_CHECK(rc == 0);
		FUZZ_CHECK(c.verb != SMTP_VERB_UNKNOWN);
		FUZZ_CHECK(smtp_verb_name(c.verb) != NULL);
		size_t alen = strlen(c.arg);
		FUZZ_CHECK(alen < SMTP_MAX_CMD_LINE);
		FUZZ_CHECK(alen == 0 || c.arg[alen - 1] != ' ');
		if (c.verb == SMTP_VERB_MAIL || c.verb == SMTP_VERB_RCPT)
			check_path(c.arg, flags & 1, flags & 2, c.verb == SMTP_VERB_RCPT);
	}
	/* The path parser on its own, on any argument (the session hands it
	 * the argument of a parsed line, but it must not trust that). */
	check_path(line, flags & 1, flags & 2, flags & 4);
	free(line);
	return 0;
}
