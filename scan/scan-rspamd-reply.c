/*
 * scan-rspamd-reply.c - rspamd's /checkv2 answer (JSON, parsed with
 * jansson) and the spam header fields built from it.
 *
 * The answer (https://rspamd.com/doc/developers/protocol.html) looks like
 *   {"is_skipped":false,"score":6.5,"required_score":15.0,"action":"add header",
 *    "symbols":{"NAME":{"name":"NAME","score":0.1,...},...},
 *    "messages":{"smtp_message":"..."}, ...}
 * It comes from another process over the network and is treated as outside
 * input: bounded size, unknown members ignored, symbol names reduced to
 * header-safe tokens, the symbol list cut at a whole symbol (fuzzed by
 * tests/fuzz/fuzz_rspamd_reply.c).
 *
 * Ownership: nothing kept; jansson's tree is freed before returning.
 * Diagnostics: none (the caller logs).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "scan.h"

static const char *const action_names[] = {
    [SCAN_SPAM_NO_ACTION] = "no action",     [SCAN_SPAM_GREYLIST] = "greylist",
    [SCAN_SPAM_ADD_HEADER] = "add header",   [SCAN_SPAM_REWRITE_SUBJECT] = "rewrite subject",
    [SCAN_SPAM_SOFT_REJECT] = "soft reject", [SCAN_SPAM_REJECT] = "reject",
    [SCAN_SPAM_DISCARD] = "discard",         [SCAN_SPAM_QUARANTINE] = "quarantine",
};

/* scan_spam_action_name - see scan.h. */
const char *scan_spam_action_name(enum scan_spam_action a)
{
	if ((size_t)a < sizeof(action_names) / sizeof(action_names[0]) && action_names[a])
		return action_names[a];
	return "no action";
}

/* token - s as a header-safe token into dst: printable ASCII without
 * space, ',', ';', '(', ')', '"' or '\\' (those become '_'). */
static void token(char *dst, size_t dstlen, const char *s)
{
	size_t j = 0;
	for (size_t i = 0; s[i] && j + 1 < dstlen; i++) {
		unsigned char c = (unsigned char)s[i];
		bool ok = c > 0x20 && c < 0x7f && !strchr(",;()\"\\", c);
		dst[j++] = ok ? (char)c : '_';
	}
	dst[j] = 0;
}

/* number - a JSON number (integer or real) that is finite and sane. */
static int number(json_t *v, double *out)
{
	if (!json_is_number(v))
		return -1;
	double d = json_number_value(v);
	if (!isfinite(d) || d > 1e6 || d < -1e6)
		return -1;
	*out = d;
	return 0;
}

/* scan_rspamd_parse_reply - see scan.h. */
int scan_rspamd_parse_reply(const char *body, size_t n, struct scan_spam_result *r)
{
	int rc = -1;
	json_t *root = NULL;
	memset(r, 0, sizeof(*r));
	if (n == 0 || n > SCAN_RSPAMD_MAX_REPLY)
		goto out;
	root = json_loadb(body, n, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(root))
		goto out;
	const char *action = json_string_value(json_object_get(root, "action"));
	if (!action)
		goto out;
	size_t i;
	for (i = 0; i < sizeof(action_names) / sizeof(action_names[0]); i++)
		if (strcmp(action, action_names[i]) == 0)
			break;
	if (i == sizeof(action_names) / sizeof(action_names[0]))
		goto out; /* a custom action we do not know: not understood */
	r->action = (enum scan_spam_action)i;
	if (number(json_object_get(root, "score"), &r->score) < 0)
		goto out;
	if (number(json_object_get(root, "required_score"), &r->required) < 0)
		r->required = 0;
	json_t *syms = json_object_get(root, "symbols");
	if (syms && json_is_object(syms)) {
		/* mxgate's rule ran (it adds the symbol for a non-zero score) */
		r->has_mxgate_auth = json_object_get(syms, "MXGATE_AUTH") != NULL;
		const char *key;
		json_t *val;
		size_t len = 0;
		json_object_foreach(syms, key, val)
		{
			char name[128], one[160];
			double sc = 0;
			token(name, sizeof(name), key);
			if (!name[0])
				continue;
			if (json_is_object(val))
				(void)number(json_object_get(val, "score"), &sc);
			int k = snprintf(one, sizeof(one), "%s%s(%.2f)", len ? "," : "", name, sc);
			if (k < 0 || (size_t)k >= sizeof(one) ||
			    len + (size_t)k >= sizeof(r->symbols))
				break; /* cut at a whole symbol */
			memcpy(r->symbols + len, one, (size_t)k + 1);
			len += (size_t)k;
		}
	}
	json_t *msgs = json_object_get(root, "messages");
	const char *sm =
	    json_is_object(msgs) ? json_string_value(json_object_get(msgs, "smtp_message")) : NULL;
	if (sm) {
		size_t j = 0;
		for (size_t k = 0; sm[k] && j + 1 < sizeof(r->message); k++) {
			unsigned char c = (unsigned char)sm[k];
			r->message[j++] = (c >= 0x20 && c < 0x7f) ? (char)c : ' ';
		}
		r->message[j] = 0;
	}
	rc = 0;
out:
	json_decref(root);
	return rc;
}

/* fold_add - append text to a header field, folding (CRLF TAB) before a
 * piece that would pass column 78 (RFC 5322 2.1.1). */
static void fold_add(struct util_buf *b, size_t *col, const char *piece)
{
	size_t n = strlen(piece);
	if (*col + n > 78 && *col > 1) {
		util_buf_adds(b, "\r\n\t");
		*col = 1;
		while (*piece == ' ') {
			piece++;
			n--;
		}
	}
	util_buf_add(b, piece, n);
	*col += n;
}

/* scan_spam_headers - see scan.h. */
void scan_spam_headers(struct util_buf *b, const struct config *cfg,
                       const struct scan_spam_result *r, bool spam)
{
	const char *flag = cfg->spam_flag_header ? cfg->spam_flag_header : "X-Spam-Flag";
	const char *score = cfg->spam_score_header ? cfg->spam_score_header : "X-Spam-Score";
	const char *status = cfg->spam_status_header ? cfg->spam_status_header : "X-Spam-Status";
	util_buf_printf(b, "%s: %s\r\n", flag, spam ? "YES" : "NO");
	util_buf_printf(b, "%s: %.2f\r\n", score, r->score);
	char piece[200];
	size_t col = strlen(status) + 1;
	util_buf_printf(b, "%s:", status);
	snprintf(piece, sizeof(piece), " %s, score=%.2f required=%.2f", spam ? "Yes" : "No",
	         r->score, r->required);
	fold_add(b, &col, piece);
	snprintf(piece, sizeof(piece), " action=\"%s\" scanner=rspamd",
	         scan_spam_action_name(r->action));
	fold_add(b, &col, piece);
	fold_add(b, &col, " tests=");
	/* one symbol per piece so folds fall between symbols */
	const char *p = r->symbols;
	while (*p) {
		const char *e = strchr(p, ',');
		size_t n = e ? (size_t)(e - p) + 1 : strlen(p);
		if (n >= sizeof(piece))
			n = sizeof(piece) - 1;
		memcpy(piece, p, n);
		piece[n] = 0;
		fold_add(b, &col, piece);
		p += e ? (size_t)(e - p) + 1 : strlen(p);
	}
	if (!r->symbols[0])
		fold_add(b, &col, "none");
	util_buf_adds(b, "\r\n");
}
