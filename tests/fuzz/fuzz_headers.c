/*
 * fuzz_headers.c - libFuzzer target: the header-field splitter
 * (util_hdr_next) and the rule that removes forged Authentication-Results
 * and spam headers (policy_drop_header) - together they decide which
 * incoming header fields reach the downstream next to ours.
 *
 * Input: a header block as the DATA parser hands it to the session.
 * Invariants besides memory safety:
 *  - fields are consecutive: their raw bytes, concatenated, are exactly the
 *    block up to where splitting stopped; every field has a non-empty name
 *    of printable non-colon bytes, and its value lies inside its raw bytes;
 *  - a complete field ends with CRLF and contains no other line end than
 *    CRLF followed by white space (folding) - no bare CR/LF or NUL can hide
 *    a second field inside one;
 *  - every Authentication-Results / ARC-Authentication-Results whose
 *    authserv-id (after white space or folding, plain or quoted, trailing
 *    dots ignored) is ours, in any letter case, is dropped, and so is every
 *    Received-SPF, every X-Spam* field and every configured spam header;
 *  - a kept Authentication-Results never reads as ours to a lax reader: the
 *    text before its first ';', without white space, quotes and trailing
 *    dots, is not our id (checked when that text has no comment);
 *  - a header that is none of these is kept.
 */
#include <ctype.h>
#include <strings.h>
#include <stdbool.h>

#include "config.h"
#include "fuzz-common.h"
#include "policy.h"
#include "util.h"

static struct config *cfg;
static const char *our_id;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct config_diags d = {0};
	cfg = config_load_string("[server]\nhostname = mx.example.test\nlisten = 127.0.0.1:2525\n"
				 "[domains]\naccepted_domains = example.test\n"
				 "[auth]\nauthserv_id = mx.example.test\n"
				 "[route default]\ntype = directory\ndirectory = /nonexistent\n",
				 "fuzz.conf", &d);
	config_diags_free(&d);
	if (!cfg) /* the file above must load: the target checks its authserv-id */
		abort();
	our_id = cfg->authserv_id ? cfg->authserv_id : cfg->hostname;
	return 0;
}

static bool name_eq(const struct util_hdr_field *f, const char *s)
{
	size_t n = strlen(s);
	if (f->name_len != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (tolower((unsigned char)f->name[i]) != tolower((unsigned char)s[i]))
			return false;
	return true;
}

/* claims_our_id - the value starts (after white space, and "i=N;" for an
 * ARC copy) with our id as a token or a quoted string without escapes,
 * trailing dots allowed. */
static bool claims_our_id(const struct util_hdr_field *f, bool arc)
{
	const char *p = f->value, *end = f->value + f->value_len;
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
		p++;
	if (arc) {
		if (end - p < 4 || p[0] != 'i' || p[1] != '=' || !isdigit((unsigned char)p[2]) ||
		    p[3] != ';')
			return false;
		p += 4;
		while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
			p++;
	}
	size_t n = strlen(our_id);
	bool quoted = p < end && *p == '"';
	if (quoted)
		p++;
	if ((size_t)(end - p) < n || strncasecmp(p, our_id, n) != 0)
		return false;
	p += n;
	while (p < end && *p == '.')
		p++;
	if (quoted)
		return p < end && *p == '"';
	return p == end || *p == ';' || *p == ' ' || *p == '\t' || *p == '\r' || *p == '(';
}

/* reads_as_ours - the text before the first ';' of a comment-free value,
 * without white space, quotes and trailing dots, is our id. */
static bool reads_as_ours(const struct util_hdr_field *f)
{
	char buf[512];
	size_t n = 0;
	for (size_t i = 0; i < f->value_len && f->value[i] != ';'; i++) {
		char c = f->value[i];
		if (c == '(' || c == ')' || c == '\\')
			return false;
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '"')
			continue;
		if (n + 1 >= sizeof(buf))
			return false;
		buf[n++] = c;
	}
	while (n > 0 && buf[n - 1] == '.')
		n--;
	buf[n] = 0;
	return strcasecmp(buf, our_id) == 0;
}

static bool name_prefix(const struct util_hdr_field *f, const char *s)
{
	size_t n = strlen(s);
	return f->name_len >= n && strncasecmp(f->name, s, n) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1 << 16)
		return 0;
	char *block = malloc(size ? size : 1);
	if (!block)
		abort();
	if (size)
		memcpy(block, data, size);
	size_t pos = 0, prev = 0;
	struct util_hdr_field f;
	int rc;
	while ((rc = util_hdr_next(block, size, &pos, &f)) == 1) {
		FUZZ_CHECK(pos > prev && pos <= size);
		FUZZ_CHECK(f.raw == block + prev && f.raw_len == pos - prev);
		FUZZ_CHECK(f.name == f.raw && f.name_len > 0 && f.name_len < f.raw_len);
		for (size_t i = 0; i < f.name_len; i++) {
			unsigned char c = (unsigned char)f.name[i];
			FUZZ_CHECK(c > 32 && c < 127 && c != ':');
		}
		FUZZ_CHECK(f.value >= f.raw + f.name_len + 1 &&
			   f.value + f.value_len <= f.raw + f.raw_len);
		bool complete = f.raw_len >= 2 && f.raw[f.raw_len - 2] == '\r' &&
				f.raw[f.raw_len - 1] == '\n';
		FUZZ_CHECK(complete || pos == size);
		size_t body = complete ? f.raw_len - 2 : f.raw_len;
		for (size_t i = 0; i < body; i++) {
			char c = f.raw[i];
			FUZZ_CHECK(c != 0);
			if (c == '\n')
				FUZZ_CHECK(i > 0 && f.raw[i - 1] == '\r' && i + 1 < body &&
					   (f.raw[i + 1] == ' ' || f.raw[i + 1] == '\t'));
			if (c == '\r')
				FUZZ_CHECK(i + 1 < f.raw_len && f.raw[i + 1] == '\n');
		}
		bool drop = policy_drop_header(cfg, &f);
		bool spam = name_eq(&f, cfg->spam_flag_header ? cfg->spam_flag_header : "X-Spam-Flag") ||
			    name_eq(&f, cfg->spam_score_header ? cfg->spam_score_header : "X-Spam-Score") ||
			    name_eq(&f, cfg->spam_status_header ? cfg->spam_status_header : "X-Spam-Status");
		spam = spam || name_prefix(&f, "X-Spam") || name_eq(&f, "Received-SPF");
		bool ar = name_eq(&f, "Authentication-Results");
		bool aar = name_eq(&f, "ARC-Authentication-Results");
		if (spam || (ar && claims_our_id(&f, false)) || (aar && claims_our_id(&f, true)))
			FUZZ_CHECK(drop);
		if (ar && !drop)
			FUZZ_CHECK(!reads_as_ours(&f));
		if (!spam && !ar && !aar)
			FUZZ_CHECK(!drop);
		prev = pos;
	}
	FUZZ_CHECK(rc == 0 || rc == -1);
	FUZZ_CHECK(pos == prev);
	free(block);
	return 0;
}
