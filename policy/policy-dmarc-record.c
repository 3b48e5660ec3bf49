/*
 * policy-dmarc-record.c - the DMARC policy record parser (RFC 9989 4.7,
 * grammar of 4.8), mxgate's own.
 *
 * libopendmarc 1.4.2's parser is not used for the verdict: it does not
 * accept white space around "=" (tag-spec = [FWS] tag-name [FWS] "="
 * [FWS] tag-value [FWS]), reads pct=abc as 0, and knows neither np, t nor
 * psd.  Here: the first tag must be v=DMARC1 or the text is not a DMARC
 * record (ignored); unknown tags are ignored; a known tag with a value
 * outside its grammar takes its default; a tag-spec that is not
 * "name=value" after v=DMARC1 ("fo:1", a stray word) is discarded, as 4.8
 * requires of syntax errors in the remainder of the record (making the
 * record unusable dropped the owner's p=reject: red team finding); a
 * duplicated tag makes the record unusable; a record without a usable p
 * (or with an unusable sp/np) is read as p=none when it has rua, else
 * unusable (RFC 9989 4.7, "p").
 * pct is recognised and ignored (RFC 9989 removed it).  ruf and fo are
 * kept for failure reports (RFC 9991; reports/reports-failure.c).
 *
 * Threads: pure.  Bounds: works on the given length; no allocation.
 */
#include <ctype.h>
#include <string.h>

#include "policy-dmarc-internal.h"

const char *policy_dmarc_policy_word(char c)
{
	switch (c) {
	case 'n':
		return "none";
	case 'q':
		return "quarantine";
	case 'r':
		return "reject";
	default:
		return "unset";
	}
}

/* rec_eq - the value [v, v+n) equals word, ASCII case-insensitive. */
static bool rec_eq(const char *v, size_t n, const char *word)
{
	size_t wl = strlen(word);

	if (n != wl)
		return false;
	for (size_t i = 0; i < n; i++)
		if (tolower((unsigned char)v[i]) != word[i])
			return false;
	return true;
}

/* rec_policy - "none" "quarantine" "reject" -> 'n' 'q' 'r', else 0. */
static char rec_policy(const char *v, size_t n)
{
	if (rec_eq(v, n, "none"))
		return 'n';
	if (rec_eq(v, n, "quarantine"))
		return 'q';
	if (rec_eq(v, n, "reject"))
		return 'r';
	return 0;
}

static bool rec_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

enum { T_V, T_P, T_SP, T_NP, T_ADKIM, T_ASPF, T_PSD, T_T, T_PCT, T_RUA, T_RUF, T_FO, T_NTAGS };
static const char *const rec_tags[T_NTAGS] = {"v",    "p",   "sp", "np",  "adkim", "aspf",
                                              "psd",  "t",   "pct", "rua", "ruf",  "fo"};

/* rec_fo - the fo= options (RFC 9989 4.7: dmarc-fo = "0" / "1" / "d" /
 * "s" joined by ":"), POLICY_DMARC_FO_* bits; unknown options are
 * ignored, and a value without a known one means the default, 0. */
static unsigned rec_fo(const char *v, size_t n)
{
	unsigned fo = 0;
	size_t i = 0;

	while (i < n) {
		size_t j = i;
		while (j < n && v[j] != ':')
			j++;
		size_t a = i, b = j;
		while (a < b && rec_ws(v[a]))
			a++;
		while (b > a && rec_ws(v[b - 1]))
			b--;
		if (b - a == 1) {
			switch (tolower((unsigned char)v[a])) {
			case '0':
				fo |= POLICY_DMARC_FO_0;
				break;
			case '1':
				fo |= POLICY_DMARC_FO_1;
				break;
			case 'd':
				fo |= POLICY_DMARC_FO_D;
				break;
			case 's':
				fo |= POLICY_DMARC_FO_S;
				break;
			default:
				break;
			}
		}
		i = j + 1;
	}
	return fo != 0 ? fo : POLICY_DMARC_FO_0;
}

/* rec_ruf - keep the ruf= value in out (size POLICY_DMARC_RUF_MAX): when
 * it does not fit, cut after the last whole URI (at a ',') that does. */
static void rec_ruf(const char *v, size_t n, char *out)
{
	if (n >= POLICY_DMARC_RUF_MAX) {
		size_t k = POLICY_DMARC_RUF_MAX - 1;
		while (k > 0 && v[k] != ',')
			k--;
		n = k;
	}
	memcpy(out, v, n);
	out[n] = '\0';
	if (memchr(out, '\0', n) != NULL) /* a NUL inside: nothing usable */
		out[0] = '\0';
}

int policy_dmarc_record_parse(const char *txt, size_t len, struct policy_dmarc_record *r, char *err,
                              size_t errlen)
{
	const char *p = txt, *end = txt + len, *e = end, *name = txt;
	bool seen[T_NTAGS] = {false};
	bool bad_p = false, bad_sub = false;
	int ntag = 0;

	memset(r, 0, sizeof(*r));
	r->adkim = r->aspf = 'r';
	r->psd = 'u';
	r->fo = POLICY_DMARC_FO_0;
	if (errlen > 0)
		err[0] = 0;
	while (p < end) {
		const char *semi = memchr(p, ';', (size_t)(end - p));
		e = semi != NULL ? semi : end;
		const char *name_end, *v, *ve;
		int tag = -1;

		while (p < e && rec_ws(*p))
			p++;
		if (p == e) { /* empty tag-spec: "p=reject;" or ";;" */
			p = semi != NULL ? semi + 1 : end;
			continue;
		}
		name = p;
		if (isalpha((unsigned char)*p))
			while (p < e && (isalnum((unsigned char)*p) || *p == '_'))
				p++;
		name_end = p;
		while (p < e && rec_ws(*p))
			p++;
		if (name_end == name || p == e || *p != '=') {
			if (ntag == 0)
				return 1; /* not "v=...": not a DMARC record */
			/* RFC 9989 4.8: a syntax error in the remainder of the
			 * record is discarded, the other tags still count */
			r->syntax_errors++;
			p = semi != NULL ? semi + 1 : end;
			continue;
		}
		p++;
		while (p < e && rec_ws(*p))
			p++;
		v = p;
		ve = e;
		while (ve > v && rec_ws(ve[-1]))
			ve--;
		for (int i = 0; i < T_NTAGS; i++)
			if ((size_t)(name_end - name) == strlen(rec_tags[i]) &&
			    memcmp(name, rec_tags[i], strlen(rec_tags[i])) == 0)
				tag = i;
		if (ntag++ == 0) {
			/* the first tag must be v=DMARC1, else not a DMARC record */
			if (tag != T_V || (size_t)(ve - v) != 6 || memcmp(v, "DMARC1", 6) != 0)
				return 1;
		} else if (tag == T_V) {
			tag = -2; /* a second v= */
		}
		if (tag == -2 || (tag >= 0 && seen[tag])) {
			snprintf(err, errlen, "duplicated tag %.*s=", (int)(name_end - name), name);
			return -1;
		}
		if (tag >= 0)
			seen[tag] = true;
		switch (tag) {
		case T_P:
			r->p = rec_policy(v, (size_t)(ve - v));
			bad_p = r->p == 0;
			break;
		case T_SP:
			r->sp = rec_policy(v, (size_t)(ve - v));
			bad_sub |= r->sp == 0;
			break;
		case T_NP:
			r->np = rec_policy(v, (size_t)(ve - v));
			bad_sub |= r->np == 0;
			break;
		case T_ADKIM:
		case T_ASPF: {
			char a = rec_eq(v, (size_t)(ve - v), "s") ? 's' : 'r';
			if (tag == T_ADKIM)
				r->adkim = a;
			else
				r->aspf = a;
			break;
		}
		case T_PSD:
			r->psd = rec_eq(v, (size_t)(ve - v), "y")   ? 'y'
			         : rec_eq(v, (size_t)(ve - v), "n") ? 'n'
			                                            : 'u';
			break;
		case T_T:
			r->t = rec_eq(v, (size_t)(ve - v), "y");
			break;
		case T_PCT:
			r->has_pct = true;
			break;
		case T_RUA:
			r->has_rua = memchr(v, ':', (size_t)(ve - v)) != NULL;
			break;
		case T_RUF:
			rec_ruf(v, (size_t)(ve - v), r->ruf);
			break;
		case T_FO:
			r->fo = rec_fo(v, (size_t)(ve - v));
			break;
		default: /* v, or an unknown tag: ignored */
			break;
		}
		p = semi != NULL ? semi + 1 : end;
	}
	if (ntag == 0)
		return 1;
	if (!seen[T_P] || bad_p || bad_sub) {
		if (!r->has_rua) {
			snprintf(err, errlen, "%s",
			         !seen[T_P] ? "no p= tag"
			         : bad_p    ? "invalid p= value"
			                    : "invalid sp= or np= value");
			return -1;
		}
		/* RFC 9989 4.7: with a valid rua, act as if p=none */
		r->p = 'n';
		r->sp = r->np = 0;
		r->p_missing = true;
	}
	return 0;
}
