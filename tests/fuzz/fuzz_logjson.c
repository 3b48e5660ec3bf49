/*
 * fuzz_logjson.c - libFuzzer target: util_logkv_next and
 * util_log_json_line (util/util-logjson.c), which turn every log message -
 * holding client-supplied HELO names, addresses and replies - into the JSON
 * object of `[log] format = json`, and util_json_flat_parse, which reads
 * those objects back for `mxgate log`.
 *
 * Input: first byte selects the output capacity (128..8192), the rest (up
 * to its first NUL, as from vsnprintf) is the message.
 * Invariants besides memory safety:
 *  - the tokenizer's position strictly increases and ends at the length;
 *  - the object is always complete and valid: it fits the capacity, starts
 *    with ts/level/pid, ends with '}', parses with util_json_flat_parse, has
 *    no raw control byte, and no member name twice;
 *  - nothing is lost: unless "truncated" is set, every plain key=value's
 *    value is a member's value and every bare word is inside one.
 */
#include <stdbool.h>

#include "fuzz-common.h"
#include "util.h"

struct seen {
	char keys[64][128];
	size_t nkeys;
	char last[128];
	bool dup;
	char *vals; /* every decoded value, each followed by \x1f */
	size_t nvals, cap;
};

static void cb(void *ctx, const char *key, const char *val)
{
	struct seen *s = ctx;
	size_t vl = strlen(val);

	if (strcmp(key, s->last) != 0) { /* array elements repeat the key */
		for (size_t i = 0; i < s->nkeys; i++)
			if (strcmp(s->keys[i], key) == 0)
				s->dup = true;
		if (s->nkeys < 64)
			snprintf(s->keys[s->nkeys++], 128, "%s", key);
		snprintf(s->last, sizeof(s->last), "%s", key);
	}
	if (s->nvals + vl + 2 > s->cap) {
		s->cap = (s->nvals + vl + 2) * 2;
		s->vals = realloc(s->vals, s->cap);
		if (!s->vals)
			abort();
	}
	memcpy(s->vals + s->nvals, val, vl);
	s->nvals += vl;
	s->vals[s->nvals++] = '\x1f';
	s->vals[s->nvals] = '\0';
}

static bool has_value(const struct seen *s, const char *v, size_t n, bool whole)
{
	for (const char *p = s->vals; p != NULL && *p != '\0';) {
		const char *end = strchr(p, '\x1f');
		size_t l = (size_t)(end - p);
		if (whole ? (l == n && memcmp(p, v, n) == 0) : memmem(p, l, v, n) != NULL)
			return true;
		p = end + 1;
	}
	return n == 0 && !whole;
}

static bool plain_ascii(const char *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] < 0x21 || v[i] > 0x7e)
			return false;
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 8192)
		return 0;
	size_t cap = 128 + (size_t)data[0] * 32;
	char *msg = fuzz_strdup(data + 1, size - 1);
	size_t len = strlen(msg), pos = 0, last = 0;
	struct util_logkv kv;
	char *out = malloc(cap);
	struct seen s = {.nkeys = 0};

	if (!out)
		abort();
	while (util_logkv_next(msg, len, &pos, &kv)) {
		FUZZ_CHECK(pos > last && pos <= len);
		FUZZ_CHECK(kv.val >= msg && kv.val + kv.vallen <= msg + len);
		last = pos;
	}
	FUZZ_CHECK(pos == len);

	size_t n = util_log_json_line(out, cap, "T", "info", 1, msg);
	FUZZ_CHECK(n < cap && strlen(out) == n);
	FUZZ_CHECK(strncmp(out, "{\"ts\":\"T\",\"level\":\"info\",\"pid\":1", 32) == 0);
	FUZZ_CHECK(out[n - 1] == '}');
	for (size_t i = 0; i < n; i++)
		FUZZ_CHECK((unsigned char)out[i] >= 0x20 && out[i] != 0x7f);
	FUZZ_CHECK(util_json_flat_parse(out, n, cb, &s) == 0);
	FUZZ_CHECK(!s.dup);

	if (strstr(out, "\"truncated\":true}") == NULL) {
		pos = 0;
		while (util_logkv_next(msg, len, &pos, &kv)) {
			if (!plain_ascii(kv.val, kv.vallen))
				continue;
			if (kv.keylen > 0 && kv.quote == 0 &&
			    !(kv.keylen == 2 && memcmp(kv.key, "id", 2) == 0))
				FUZZ_CHECK(has_value(&s, kv.val, kv.vallen, true));
			else if (kv.keylen == 0 && !(kv.vallen == 1 && kv.val[0] == '-'))
				FUZZ_CHECK(has_value(&s, kv.val, kv.vallen, false));
		}
	}
	free(s.vals);
	free(out);
	free(msg);
	return 0;
}
