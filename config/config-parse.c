/*
 * config-parse.c - reading mxgate.conf: libinih does the INI splitting, fed
 * by our own fgets-style reader over the file held in memory.  The reader
 * counts lines (inih's handler gets no line number), refuses over-long lines
 * and lines with NUL bytes, validates section headers and spots syntax
 * errors itself, so every problem - not only the first, which is all inih
 * reports - comes out as "FILE:LINE: message".  The handler looks directives
 * up in the tables of config-table.c and hands values to config-types.c;
 * defaults are applied afterwards to whatever the file did not set, then
 * config-check.c runs the cross-field checks.
 *
 * INI dialect: "name = value" (inih also takes "name: value"); ';' or '#'
 * starts a comment at the start of a line or after whitespace in a value.
 * An indented line continues the previous directive (inih's multi-line
 * values): for list directives it adds items, for single-valued ones it is
 * an error that names the likely cause (an accidentally indented line).
 * Indented section headers are accepted.  Setting a single-valued directive
 * twice is an error rather than "later wins": in a security gateway a
 * silently overridden `deny` or `tls` is worse than a refused start.  List
 * directives may be repeated; each repetition appends.
 *
 * Ownership: config_load*() return a struct config owned by the caller
 * (config_free()); diagnostics are appended to the caller's list.  libinih's
 * option globals are set for the duration of a parse and restored, so
 * loading is not thread-safe (it runs at start-up and on SIGHUP only).
 */
#include "config-internal.h"

#include <errno.h>
#include <ini.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* ------------------------------------------------------------ diagnostics */

/* config_diag_add - append one diagnostic. */
void config_diag_add(struct config_diags *d, const char *file, int line, bool warning,
                     const char *fmt, ...)
{
	struct config_diag *e;
	va_list ap, ap2;
	int n;

	d->v = util_xrealloc(d->v, (d->n + 1) * sizeof(*d->v));
	e = &d->v[d->n++];
	e->file = util_xstrdup(file != NULL ? file : "(config)");
	e->line = line;
	e->warning = warning;
	va_start(ap, fmt);
	va_copy(ap2, ap);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	e->msg = util_xmalloc((size_t)(n < 0 ? 0 : n) + 1);
	vsnprintf(e->msg, (size_t)(n < 0 ? 0 : n) + 1, fmt, ap2);
	va_end(ap2);
}

/* config_diags_free - free every entry; d itself belongs to the caller. */
void config_diags_free(struct config_diags *d)
{
	size_t i;

	if (d == NULL)
		return;
	for (i = 0; i < d->n; i++) {
		free(d->v[i].file);
		free(d->v[i].msg);
	}
	free(d->v);
	d->v = NULL;
	d->n = 0;
}

/* config_diags_print - "FILE:LINE: [warning: ]message" per entry; "FILE:
 * message" when no line is to blame (the message names what is missing). */
void config_diags_print(const struct config_diags *d, FILE *out)
{
	size_t i;

	for (i = 0; i < d->n; i++) {
		if (d->v[i].line > 0)
			fprintf(out, "%s:%d: %s%s\n", d->v[i].file, d->v[i].line,
			        d->v[i].warning ? "warning: " : "", d->v[i].msg);
		else
			fprintf(out, "%s: %s%s\n", d->v[i].file,
			        d->v[i].warning ? "warning: " : "", d->v[i].msg);
	}
}

/* config_diags_errors - entries that are not warnings. */
size_t config_diags_errors(const struct config_diags *d)
{
	size_t i, n = 0;

	for (i = 0; i < d->n; i++)
		n += !d->v[i].warning;
	return n;
}

/* lower - ASCII tolower without locale surprises. */
static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* distance - optimal string alignment distance (Levenshtein plus adjacent
 * transpositions), case-insensitive; words longer than 63 are "far". */
static size_t distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), i, j;
	size_t d[64][64];

	if (la >= 64 || lb >= 64)
		return 64;
	for (i = 0; i <= la; i++)
		d[i][0] = i;
	for (j = 0; j <= lb; j++)
		d[0][j] = j;
	for (i = 1; i <= la; i++) {
		for (j = 1; j <= lb; j++) {
			size_t cost = lower(a[i - 1]) != lower(b[j - 1]);
			size_t v = d[i - 1][j] + 1;

			if (d[i][j - 1] + 1 < v)
				v = d[i][j - 1] + 1;
			if (d[i - 1][j - 1] + cost < v)
				v = d[i - 1][j - 1] + cost;
			if (i > 1 && j > 1 && lower(a[i - 1]) == lower(b[j - 2]) &&
			    lower(a[i - 2]) == lower(b[j - 1]) && d[i - 2][j - 2] + 1 < v)
				v = d[i - 2][j - 2] + 1;
			d[i][j] = v;
		}
	}
	return d[la][lb];
}

/* config_suggest - closest candidate within a length-dependent distance. */
const char *config_suggest(const char *word, const char *const *cands, size_t n)
{
	size_t len = strlen(word), limit = len <= 4 ? 1 : len <= 8 ? 2 : 3;
	size_t i, best = limit + 1;
	const char *pick = NULL;

	for (i = 0; i < n; i++) {
		size_t dist = distance(word, cands[i]);

		if (dist < best) {
			best = dist;
			pick = cands[i];
		}
	}
	return pick;
}

/* ------------------------------------------------------------ parser state */

struct parser {
	struct config_parse p; /* shared with config-check.c */
	const char *text;      /* the whole file, borrowed */
	size_t len, pos;
	int lineno;                          /* line last handed to inih */
	bool cont;                           /* that line continues the previous directive */
	bool inih_prev;                      /* inih has a previous name to continue */
	bool before_any;                     /* no section header seen yet */
	const struct config_section *sec;    /* current section; NULL = ignore its keys */
	const struct config_section *meant;  /* sec NULL: the section a misspelt header meant */
	size_t route;                        /* current route when sec->named */
	const struct config_directive *prev; /* directive a continuation line extends */
};

/* section_index - position of s in config_sections. */
static size_t section_index(const struct config_section *s)
{
	return (size_t)(s - config_sections);
}

/* seen_array - first-set lines of the current section (or route). */
static int *seen_array(struct parser *ps)
{
	if (ps->sec->named)
		return ps->p.route_seen[ps->route];
	return ps->p.seen[section_index(ps->sec)];
}

/* bad_slot - where the first rejected attempt at d of section s (route ri)
 * is remembered, or NULL. */
static int *bad_slot(const struct config_parse *p, const struct config_section *s, size_t ri,
                     const struct config_directive *d)
{
	if (s->named)
		return ri < p->cfg->nroutes ? &p->route_bad[ri][d - s->dirs] : NULL;
	return &p->bad[section_index(s)][d - s->dirs];
}

/* mark_bad - remember line as a rejected attempt at d (the first one). */
static void mark_bad(struct parser *ps, const struct config_section *s, size_t ri,
                     const struct config_directive *d)
{
	int *slot = bad_slot(&ps->p, s, ri, d);

	if (slot != NULL && *slot == 0)
		*slot = ps->lineno;
}

/* config_rejected_line - see config-internal.h. */
int config_rejected_line(const struct config_parse *p, const char *sname, size_t ri,
                         const char *name)
{
	const struct config_section *s = config_section_find(sname);
	const struct config_directive *d = s != NULL ? config_directive_find(s, name) : NULL;
	const int *slot = d != NULL ? bad_slot(p, s, ri, d) : NULL;

	return slot != NULL ? *slot : 0;
}

/* config_seen_line - see config-internal.h. */
int config_seen_line(const struct config_parse *p, const char *sname, size_t ri, const char *name)
{
	const struct config_section *s = config_section_find(sname);
	const struct config_directive *d = s != NULL ? config_directive_find(s, name) : NULL;
	int line;

	if (d == NULL)
		return 0;
	if (s->named)
		line = ri < p->cfg->nroutes ? p->route_seen[ri][d - s->dirs] : 0;
	else
		line = p->seen[section_index(s)][d - s->dirs];
	return line != 0 ? line : config_rejected_line(p, sname, ri, name);
}

/* perr - an error at the current line. */
static void perr(struct parser *ps, const char *fmt, ...) UTIL_PRINTF(2, 3);
static void perr(struct parser *ps, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	config_diag_add(ps->p.diags, ps->p.file, ps->lineno, false, "%s", msg);
}

/* ------------------------------------------------------------ sections */

/* is_route_name - letters, digits, '.', '_', '-' (domain-like names). */
static bool is_route_name(const char *s)
{
	for (; *s != '\0'; s++) {
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' || *s == '-'))
			return false;
	}
	return true;
}

/* open_route - a new [route NAME]; NULL section when the name is unusable. */
static void open_route(struct parser *ps, const struct config_section *s, const char *name)
{
	struct config *cfg = ps->p.cfg;
	struct config_route *r;
	size_t i;

	ps->sec = NULL;
	if (name[0] == '\0') {
		perr(ps, "[route] needs a name: [route NAME]");
		return;
	}
	if (!is_route_name(name)) {
		perr(ps, "bad route name \"%s\" (letters, digits, '.', '_' and '-' only)", name);
		return;
	}
	for (i = 0; i < cfg->nroutes; i++) {
		if (strcmp(cfg->routes[i].name, name) == 0) {
			perr(ps, "route '%s' is already defined at line %d", name,
			     cfg->routes[i].line);
			return;
		}
	}
	cfg->routes = util_xrealloc(cfg->routes, (cfg->nroutes + 1) * sizeof(*cfg->routes));
	ps->p.route_seen =
	    util_xrealloc(ps->p.route_seen, (cfg->nroutes + 1) * sizeof(*ps->p.route_seen));
	ps->p.route_seen[cfg->nroutes] = util_xcalloc(s->ndirs, sizeof(int));
	ps->p.route_bad =
	    util_xrealloc(ps->p.route_bad, (cfg->nroutes + 1) * sizeof(*ps->p.route_bad));
	ps->p.route_bad[cfg->nroutes] = util_xcalloc(s->ndirs, sizeof(int));
	r = &cfg->routes[cfg->nroutes];
	memset(r, 0, sizeof(*r));
	r->name = util_xstrdup(name);
	r->line = ps->lineno;
	ps->route = cfg->nroutes++;
	ps->sec = s;
}

/* open_section - "[kind]" or "[kind arg]" between the brackets. */
static void open_section(struct parser *ps, char *inside)
{
	const char *names[32];
	const struct config_section *s;
	char *kind = inside, *arg;
	const char *sug;
	size_t i;

	ps->before_any = false;
	ps->prev = NULL;
	ps->meant = NULL;
	arg = kind + strcspn(kind, " \t");
	if (*arg != '\0')
		*arg++ = '\0';
	arg += strspn(arg, " \t");
	s = config_section_find(kind);
	if (s == NULL) {
		for (i = 0; i < config_nsections; i++)
			names[i] = config_sections[i].name;
		sug = config_suggest(kind, names, config_nsections);
		if (sug != NULL)
			perr(ps, "unknown section [%s] (did you mean [%s]?)", kind, sug);
		else
			perr(ps, "unknown section [%s]", kind);
		ps->sec = NULL;
		/* its directives count as rejected attempts at the meant ones */
		ps->meant = sug != NULL ? config_section_find(sug) : NULL;
		if (ps->meant != NULL && ps->meant->named) {
			if (ps->p.route_typo == 0)
				ps->p.route_typo = ps->lineno;
			ps->meant = NULL;
		}
		return;
	}
	if (s->named) {
		open_route(ps, s, arg);
		return;
	}
	if (*arg != '\0')
		perr(ps, "section [%s] takes no name (\"%s\")", kind, arg);
	ps->sec = s;
}

/* ------------------------------------------------------------ reader */

/* comment_at - does an inline comment start at p (whitespace before it)? */
static bool comment_at(const char *line, const char *p)
{
	return (*p == ';' || *p == '#') && p > line && (p[-1] == ' ' || p[-1] == '\t');
}

/* header_line - check "[...]" and open the section; false when malformed. */
static bool header_line(struct parser *ps, const char *s, size_t n)
{
	char inside[CONFIG_LINE_MAX + 1];
	const char *close = NULL, *p, *end = s + n;
	size_t len;

	for (p = s + 1; p < end; p++) {
		if (comment_at(s, p))
			break;
		if (*p == ']') {
			close = p;
			break;
		}
	}
	if (close == NULL) {
		perr(ps, "section header without closing ']'");
		goto bad;
	}
	for (p = close + 1; p < end && (*p == ' ' || *p == '\t' || *p == '\r'); p++)
		;
	if (p < end && *p != ';' && *p != '#') {
		perr(ps, "unexpected text after ']' of the section header");
		goto bad;
	}
	for (s++; s < close && (*s == ' ' || *s == '\t'); s++)
		;
	len = (size_t)(close - s);
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	memcpy(inside, s, len);
	inside[len] = '\0';
	open_section(ps, inside);
	return true;
bad:
	/* Keys up to the next good header would land in the wrong section. */
	ps->before_any = false;
	ps->sec = NULL;
	ps->prev = NULL;
	return false;
}

/* has_separator - '=' or ':' before any inline comment (as inih sees it). */
static bool has_separator(const char *s, const char *end)
{
	const char *p;

	for (p = s; p < end; p++) {
		if (*p == '=' || *p == ':')
			return true;
		if (comment_at(s, p))
			return false;
	}
	return false;
}

/* names_section - does "[kind ...]" name a known section kind?  Decides
 * whether an indented "[...]" line is a header or continues a list such as
 * "listen = 0.0.0.0:25," followed by "    [::]:25". */
static bool names_section(const char *s, const char *end)
{
	char kind[32];
	size_t n;

	for (s++; s < end && (*s == ' ' || *s == '\t'); s++)
		;
	for (n = 0; s + n < end && strchr(" \t]", s[n]) == NULL; n++)
		;
	if (n == 0 || n >= sizeof(kind))
		return false;
	memcpy(kind, s, n);
	kind[n] = '\0';
	return config_section_find(kind) != NULL;
}

/* classify - check one physical line; returns the text inih should see
 * (s, the line itself) or NULL to hand it a blank line instead. */
static const char *classify(struct parser *ps, const char *line, size_t n)
{
	const char *s = line, *end = line + n;

	ps->cont = false;
	if (memchr(line, '\0', n) != NULL) {
		perr(ps, "NUL byte in line");
		return NULL;
	}
	if (n > 0 && line[n - 1] == '\r')
		n--, end--;
	if (n > CONFIG_LINE_MAX) {
		perr(ps, "line too long (%zu characters; at most %d)", n, CONFIG_LINE_MAX);
		return NULL;
	}
	if (ps->lineno == 1 && n >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0)
		s += 3, line += 3;
	while (s < end && (*s == ' ' || *s == '\t'))
		s++;
	if (s == end || *s == ';' || *s == '#')
		return line;
	if (*s == '[' && (s == line || !ps->inih_prev || names_section(s, end))) {
		if (!header_line(ps, s, (size_t)(end - s)))
			return NULL;
		ps->inih_prev = false;
		return s; /* without indentation, which inih would take as a continuation */
	}
	if (s > line && ps->inih_prev) {
		ps->cont = true;
		return line;
	}
	if (!has_separator(s, end)) {
		perr(ps, "expected 'name = value', a [section] or a comment");
		ps->prev = NULL;
		return NULL;
	}
	ps->inih_prev = true;
	return line;
}

/* reader - fgets() over the in-memory file for ini_parse_stream. */
static char *reader(char *str, int num, void *stream)
{
	struct parser *ps = stream;
	const char *line, *eol, *out;
	size_t n, avail;

	if (ps->pos >= ps->len)
		return NULL;
	line = ps->text + ps->pos;
	avail = ps->len - ps->pos;
	eol = memchr(line, '\n', avail);
	n = eol != NULL ? (size_t)(eol - line) : avail;
	ps->pos += n + (eol != NULL);
	ps->lineno++;
	out = classify(ps, line, n);
	if (out == NULL || (size_t)num < (size_t)(line + n - out) + 2) {
		snprintf(str, (size_t)num, "\n");
		return str;
	}
	n = (size_t)(line + n - out);
	memcpy(str, out, n);
	str[n] = '\n';
	str[n + 1] = '\0';
	return str;
}

/* ------------------------------------------------------------ handler */

/* strip_comment - cut an inline comment off a continuation value (inih
 * only strips them on "name = value" lines) and trailing blanks. */
static void strip_comment(char *v)
{
	char *p;
	size_t n;

	for (p = v; *p != '\0'; p++) {
		if (comment_at(v, p)) {
			*p = '\0';
			break;
		}
	}
	n = strlen(v);
	while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r'))
		v[--n] = '\0';
}

/* looks_like_directive - "word = ..." where word is a directive of s. */
static const char *looks_like_directive(const struct config_section *s, const char *v)
{
	char word[64];
	size_t n = strcspn(v, " \t=:");

	if (n == 0 || n >= sizeof(word) || strchr("=: \t", v[n]) == NULL)
		return NULL;
	memcpy(word, v, n);
	word[n] = '\0';
	if (strchr("=:", v[n + strspn(v + n, " \t")]) == NULL)
		return NULL;
	return config_directive_find(s, word) != NULL ? config_directive_find(s, word)->name : NULL;
}

/* continuation - an indented line extending the previous directive. */
static void continuation(struct parser *ps, void *base, const char *value)
{
	const struct config_directive *d = ps->prev;
	struct config_loc loc = {ps->p.diags, ps->p.file, ps->lineno};
	const char *word;
	char *v;

	if (d == NULL)
		return; /* the line it continues was already reported */
	v = util_xstrdup(value);
	strip_comment(v);
	word = looks_like_directive(ps->sec, v);
	if (word != NULL)
		perr(ps,
		     "indented line continues '%s'; if '%s' is meant as a new directive, "
		     "remove the leading whitespace",
		     d->name, word);
	else if (!config_type_is_list(d->type))
		perr(ps,
		     "continuation line: '%s' takes a single value (is this line indented "
		     "by mistake?)",
		     d->name);
	else if (v[0] != '\0')
		config_value_parse(d, base, v, &loc);
	free(v);
}

/* unknown_directive - error with a did-you-mean or the right section. */
static void unknown_directive(struct parser *ps, const char *name)
{
	const char *names[64];
	const char *sug;
	size_t i;

	for (i = 0; i < config_nsections; i++) {
		const struct config_section *s = &config_sections[i];
		const struct config_directive *d = config_directive_find(s, name);

		if (s != ps->sec && d != NULL) {
			perr(ps, "'%s' belongs in [%s%s], not [%s]", name, s->name,
			     s->named ? " NAME" : "", ps->sec->name);
			if (!s->named)
				mark_bad(ps, s, 0, d);
			return;
		}
	}
	for (i = 0; i < ps->sec->ndirs && i < 64; i++)
		names[i] = ps->sec->dirs[i].name;
	sug = config_suggest(name, names, i);
	if (sug != NULL) {
		perr(ps, "unknown directive '%s' in [%s] (did you mean '%s'?)", name, ps->sec->name,
		     sug);
		mark_bad(ps, ps->sec, ps->route, config_directive_find(ps->sec, sug));
	} else
		perr(ps, "unknown directive '%s' in [%s]", name, ps->sec->name);
}

/* handler - one name/value from inih (the reader knows the line). */
static int handler(void *user, const char *section, const char *name, const char *value)
{
	struct parser *ps = user;
	struct config_loc loc = {ps->p.diags, ps->p.file, ps->lineno};
	const struct config_directive *d;
	void *base;
	int *seen;

	(void)section; /* the reader tracks sections itself, with their lines */
	if (ps->before_any && ps->cont)
		return 1; /* the line it continues was already reported */
	if (ps->before_any) {
		perr(ps, "'%s' is outside any section (directives go under a [section])", name);
		return 1;
	}
	if (ps->sec == NULL) {
		/* unknown or broken section: reported once at its header */
		if (!ps->cont && ps->meant != NULL &&
		    (d = config_directive_find(ps->meant, name)) != NULL)
			mark_bad(ps, ps->meant, 0, d);
		return 1;
	}
	base = ps->sec->named ? (void *)&ps->p.cfg->routes[ps->route] : (void *)ps->p.cfg;
	if (ps->cont) {
		continuation(ps, base, value);
		return 1;
	}
	ps->prev = NULL;
	if (name[0] == '\0') {
		perr(ps, "missing directive name before '='");
		return 1;
	}
	d = config_directive_find(ps->sec, name);
	if (d == NULL) {
		unknown_directive(ps, name);
		return 1;
	}
	seen = &seen_array(ps)[d - ps->sec->dirs];
	if (*seen != 0 && !config_type_is_list(d->type)) {
		perr(ps,
		     "duplicate directive '%s' (first set at line %d; only list directives "
		     "may be repeated)",
		     name, *seen);
		return 1;
	}
	if (*seen == 0)
		*seen = ps->lineno;
	ps->prev = d;
	if (value[0] == '\0') {
		perr(ps, "empty value for '%s' (remove the line to get the default)", name);
		mark_bad(ps, ps->sec, ps->route, d);
		return 1;
	}
	if (config_value_parse(d, base, value, &loc) < 0)
		mark_bad(ps, ps->sec, ps->route, d);
	return 1;
}

/* ------------------------------------------------------------ load */

/* inih's option globals, saved around a parse. */
struct ini_opts {
	int max_line;
	bool use_stack, multiline, inline_comments, stop, no_value, bom;
	char *inline_prefixes, *start_prefixes;
};

/* ini_setup - our dialect; returns the previous settings. */
static struct ini_opts ini_setup(void)
{
	static char prefixes[] = ";#";
	struct ini_opts o = {ini_max_line,
	                     ini_use_stack,
	                     ini_allow_multiline,
	                     ini_allow_inline_comments,
	                     ini_stop_on_first_error,
	                     ini_allow_no_value,
	                     ini_allow_bom,
	                     ini_inline_comment_prefixes,
	                     ini_start_comment_prefixes};

	ini_max_line = CONFIG_LINE_MAX + 3;
	ini_use_stack = true;
	ini_allow_multiline = true;
	ini_allow_inline_comments = true;
	ini_stop_on_first_error = false;
	ini_allow_no_value = false;
	ini_allow_bom = true;
	ini_inline_comment_prefixes = prefixes;
	ini_start_comment_prefixes = prefixes;
	return o;
}

/* ini_restore - put back what ini_setup() found. */
static void ini_restore(const struct ini_opts *o)
{
	ini_max_line = o->max_line;
	ini_use_stack = o->use_stack;
	ini_allow_multiline = o->multiline;
	ini_allow_inline_comments = o->inline_comments;
	ini_stop_on_first_error = o->stop;
	ini_allow_no_value = o->no_value;
	ini_allow_bom = o->bom;
	ini_inline_comment_prefixes = o->inline_prefixes;
	ini_start_comment_prefixes = o->start_prefixes;
}

/* apply_defaults - parse the table default of every directive not set. */
static void apply_defaults(struct parser *ps)
{
	struct config_loc loc = {ps->p.diags, ps->p.file, 0};
	struct config *cfg = ps->p.cfg;
	size_t i, j, r;

	for (i = 0; i < config_nsections; i++) {
		const struct config_section *s = &config_sections[i];

		for (r = 0; r < (s->named ? cfg->nroutes : 1); r++) {
			void *base = s->named ? (void *)&cfg->routes[r] : (void *)cfg;
			int *seen = s->named ? ps->p.route_seen[r] : ps->p.seen[i];

			for (j = 0; j < s->ndirs; j++) {
				if (seen[j] == 0 && s->dirs[j].def != NULL)
					config_value_parse(&s->dirs[j], base, s->dirs[j].def, &loc);
			}
		}
	}
}

/* outbound_route - the route for what mxgate itself originates (DSNs):
 * an explicit role = outbound route gets type mx and tls dane unless the file
 * says otherwise; a file without one gets an implicit [route outbound] built
 * from the table defaults the same way (unless an inbound route already has
 * that name: config_check reports it).  Runs after apply_defaults. */
static void outbound_route(struct parser *ps)
{
	const struct config_section *s = config_route_section();
	size_t ti = (size_t)(config_directive_find(s, "type") - s->dirs);
	size_t li = (size_t)(config_directive_find(s, "tls") - s->dirs);
	struct config_loc loc = {ps->p.diags, ps->p.file, 0};
	struct config *cfg = ps->p.cfg;
	struct config_route *r;
	size_t i, j;

	for (i = 0; i < cfg->nroutes; i++) {
		if (strcmp(cfg->routes[i].name, "outbound") == 0 ||
		    cfg->routes[i].role == CONFIG_ROLE_OUTBOUND)
			break;
	}
	if (i == cfg->nroutes) {
		cfg->routes = util_xrealloc(cfg->routes, (cfg->nroutes + 1) * sizeof(*cfg->routes));
		ps->p.route_seen = util_xrealloc(ps->p.route_seen,
		                                 (cfg->nroutes + 1) * sizeof(*ps->p.route_seen));
		ps->p.route_seen[cfg->nroutes] = util_xcalloc(s->ndirs, sizeof(int));
		ps->p.route_bad = util_xrealloc(ps->p.route_bad,
		                                (cfg->nroutes + 1) * sizeof(*ps->p.route_bad));
		ps->p.route_bad[cfg->nroutes] = util_xcalloc(s->ndirs, sizeof(int));
		r = &cfg->routes[cfg->nroutes++];
		memset(r, 0, sizeof(*r));
		r->name = util_xstrdup("outbound");
		for (j = 0; j < s->ndirs; j++) {
			if (s->dirs[j].def != NULL)
				config_value_parse(&s->dirs[j], r, s->dirs[j].def, &loc);
		}
		r->role = CONFIG_ROLE_OUTBOUND;
		r->implicit = true;
	}
	for (i = 0; i < cfg->nroutes; i++) {
		r = &cfg->routes[i];
		if (r->role != CONFIG_ROLE_OUTBOUND)
			continue;
		if (ps->p.route_seen[i][ti] == 0)
			r->type = CONFIG_ROUTE_MX;
		if (ps->p.route_seen[i][li] == 0)
			r->tls = r->type == CONFIG_ROUTE_MX ? CONFIG_TLS_DANE : CONFIG_TLS_MAY;
	}
}

/* has_error_at - did this load report an error on line? */
static bool has_error_at(const struct config_diags *d, size_t from, int line)
{
	for (; from < d->n; from++) {
		if (!d->v[from].warning && d->v[from].line == line)
			return true;
	}
	return false;
}

/* parse_text - the whole pipeline over text[0..len). */
static struct config *parse_text(const char *text, size_t len, const char *name,
                                 unsigned flags, struct config_diags *diags)
{
	struct parser ps;
	struct ini_opts saved;
	size_t i, first = diags->n;
	int rc;

	memset(&ps, 0, sizeof(ps));
	ps.p.cfg = util_xcalloc(1, sizeof(*ps.p.cfg));
	ps.p.cfg->path = util_xstrdup(name);
	ps.p.diags = diags;
	ps.p.file = name;
	ps.p.host = (flags & CONFIG_LOAD_HOST) != 0;
	ps.text = text;
	ps.len = len;
	ps.before_any = true;
	ps.p.seen = util_xcalloc(config_nsections, sizeof(*ps.p.seen));
	ps.p.bad = util_xcalloc(config_nsections, sizeof(*ps.p.bad));
	for (i = 0; i < config_nsections; i++) {
		ps.p.seen[i] = util_xcalloc(config_sections[i].ndirs + 1, sizeof(int));
		ps.p.bad[i] = util_xcalloc(config_sections[i].ndirs + 1, sizeof(int));
	}

	saved = ini_setup();
	rc = ini_parse_stream(reader, &ps, handler, &ps);
	ini_restore(&saved);
	if (rc == -2)
		config_diag_add(diags, name, 0, false, "out of memory while parsing");
	else if (rc > 0 && !has_error_at(diags, first, rc))
		config_diag_add(diags, name, rc, false, "syntax error");

	apply_defaults(&ps);
	outbound_route(&ps);
	config_check_all(&ps.p);

	for (i = 0; i < config_nsections; i++) {
		free(ps.p.seen[i]);
		free(ps.p.bad[i]);
	}
	free(ps.p.seen);
	free(ps.p.bad);
	for (i = 0; i < ps.p.cfg->nroutes; i++) {
		free(ps.p.route_seen[i]);
		free(ps.p.route_bad[i]);
	}
	free(ps.p.route_seen);
	free(ps.p.route_bad);
	for (i = first; i < diags->n; i++) {
		if (!diags->v[i].warning) {
			config_free(ps.p.cfg);
			return NULL;
		}
	}
	return ps.p.cfg;
}

/* config_load - a file, or the embedded default when path is NULL. */
struct config *config_load(const char *path, struct config_diags *diags)
{
	return config_load_flags(path, 0, diags);
}

/* config_load_flags - config_load() with CONFIG_LOAD_* flags. */
struct config *config_load_flags(const char *path, unsigned flags, struct config_diags *diags)
{
	struct config *cfg;
	size_t len = 0;
	char *text;

	if (path == NULL)
		return config_load_string_flags(config_default_text, "(embedded default)", flags,
		                                diags);
	text = util_read_file(path, CONFIG_FILE_MAX, &len);
	if (text == NULL) {
		config_diag_add(diags, path, 0, false, "cannot read the configuration: %s",
		                errno == EFBIG ? "file too large" : strerror(errno));
		return NULL;
	}
	cfg = parse_text(text, len, path, flags, diags);
	free(text);
	return cfg;
}

/* config_load_string - text in memory, name for the messages. */
struct config *config_load_string(const char *text, const char *name, struct config_diags *diags)
{
	return config_load_string_flags(text, name, 0, diags);
}

/* config_load_string_flags - config_load_string() with CONFIG_LOAD_* flags. */
struct config *config_load_string_flags(const char *text, const char *name, unsigned flags,
                                        struct config_diags *diags)
{
	return parse_text(text, strlen(text), name != NULL ? name : "(string)", flags, diags);
}

/* config_free - walk the tables; NULL is a no-op. */
void config_free(struct config *cfg)
{
	size_t i, j, r;

	if (cfg == NULL)
		return;
	for (i = 0; i < config_nsections; i++) {
		const struct config_section *s = &config_sections[i];

		for (r = 0; r < (s->named ? cfg->nroutes : 1); r++) {
			void *base = s->named ? (void *)&cfg->routes[r] : (void *)cfg;

			for (j = 0; j < s->ndirs; j++)
				config_value_free(&s->dirs[j], base);
		}
	}
	for (r = 0; r < cfg->nroutes; r++)
		free(cfg->routes[r].name);
	free(cfg->routes);
	util_strlist_free(&cfg->listed_domains);
	free(cfg->dnsbl_sites);
	free(cfg->path);
	free(cfg);
}
