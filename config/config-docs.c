/*
 * config-docs.c - everything the directive tables print: the effective
 * configuration (config_dump, as a valid INI file with every default spelled
 * out), docs/config-reference.md (config_reference_markdown), and the
 * warnings a reload gives for directives it cannot apply.
 *
 * Ownership: nothing is kept; output goes to the caller's FILE or diags.
 *
 * Diagnostics: config_reload_check() adds one warning per non-reloadable
 * directive whose value changed; the dump and the reference report nothing.
 */
#include "config-internal.h"

#include <stdio.h>
#include <string.h>

#include "util.h"

/* dump_section - "[name]" and one line per directive of base. */
static void dump_section(const struct config_section *s, const char *title, const void *base,
                         FILE *out)
{
	struct util_buf b;
	size_t j;

	util_buf_init(&b);
	fprintf(out, "\n[%s]\n", title);
	for (j = 0; j < s->ndirs; j++) {
		const struct config_directive *d = &s->dirs[j];

		if (!config_value_is_set(d, base)) {
			fprintf(out, "; %s = (not set)\n", d->name);
			continue;
		}
		/* Credentials read from auth_file are not directives of their own:
		 * printing them would make the dump fail to load (exclusive). */
		if (s->named && ((const struct config_route *)base)->auth_file != NULL &&
		    (strcmp(d->name, "auth_user") == 0 || strcmp(d->name, "auth_password") == 0)) {
			fprintf(out, "; %s = (from auth_file)\n", d->name);
			continue;
		}
		if (d->flags & CONFIG_F_SECRET) {
			fprintf(out, "; %s = (set, not shown)\n", d->name);
			continue;
		}
		util_buf_reset(&b);
		config_value_format(d, base, &b);
		fprintf(out, "%s = %s\n", d->name, b.data != NULL ? b.data : "");
	}
	util_buf_free(&b);
}

/* config_dump - every section, defaults included, routes last. */
void config_dump(const struct config *cfg, FILE *out)
{
	char title[300];
	size_t i, r;

	fprintf(out, "; mxgate effective configuration, from %s\n",
	        cfg->path != NULL ? cfg->path : "(unknown)");
	for (i = 0; i < config_nsections; i++) {
		const struct config_section *s = &config_sections[i];

		if (!s->named) {
			dump_section(s, s->name, cfg, out);
			continue;
		}
		for (r = 0; r < cfg->nroutes; r++) {
			snprintf(title, sizeof(title), "%s %s", s->name, cfg->routes[r].name);
			dump_section(s, title, &cfg->routes[r], out);
		}
	}
}

/* md_cell - one table cell: '|' escaped (GFM needs it even in code spans),
 * '<' and '>' escaped outside code spans so "<hostname>" is not taken for
 * HTML. */
static void md_cell(FILE *out, const char *s)
{
	bool code = false;

	fputs(" ", out);
	for (; *s != '\0'; s++) {
		if (*s == '`')
			code = !code;
		if (*s == '|')
			fputs("\\|", out);
		else if (!code && *s == '<')
			fputs("&lt;", out);
		else if (!code && *s == '>')
			fputs("&gt;", out);
		else
			fputc(*s, out);
	}
	fputs(" |", out);
}

/* md_section - heading, description and the directive table. */
static void md_section(const struct config_section *s, FILE *out)
{
	char name[96], range[256], def[512];
	size_t j;

	fprintf(out, "\n## [%s%s]\n\n%s\n\n", s->name, s->named ? " NAME" : "", s->doc);
	fputs("| name | type | default | range | reloadable | description |\n", out);
	fputs("|---|---|---|---|---|---|\n", out);
	for (j = 0; j < s->ndirs; j++) {
		const struct config_directive *d = &s->dirs[j];

		snprintf(name, sizeof(name), "`%s`", d->name);
		config_range_format(d, range, sizeof(range));
		if (d->def_doc != NULL)
			snprintf(def, sizeof(def), "*%s*", d->def_doc);
		else if (d->def != NULL)
			snprintf(def, sizeof(def), "`%s`", d->def);
		else
			snprintf(def, sizeof(def), "(none)");
		fputs("|", out);
		md_cell(out, name);
		md_cell(out, config_type_name(d));
		md_cell(out, def);
		md_cell(out, range);
		md_cell(out, (d->flags & CONFIG_F_RELOAD) ? "yes" : "no");
		md_cell(out, d->doc);
		fputs("\n", out);
	}
}

/* config_reference_markdown - docs/config-reference.md. */
void config_reference_markdown(FILE *out)
{
	size_t i;

	fputs("# mxgate configuration reference\n"
	      "\n"
	      "<!-- Generated from the directive tables in config/config-table.c by\n"
	      "     config_reference_markdown(); do not edit by hand.  tests/unit/test_config\n"
	      "     fails when this file is stale; regenerate it with\n"
	      "     MXGATE_UPDATE_DOCS=1 ctest -R unit/test_config -->\n"
	      "\n"
	      "mxgate reads one INI file (`mxgate run -c FILE`; without `-c`\n"
	      "/etc/mxgate/mxgate.conf when it exists, else an embedded default that listens\n"
	      "on 127.0.0.1:2525 and delivers into ./mxgate-data/mailbox).\n"
	      "`mxgate check-config -c FILE` reports every problem as `FILE:LINE: message`.\n"
	      "\n"
	      "Syntax:\n"
	      "\n"
	      "- `[section]` headers and `name = value` lines; `;` or `#` starts a comment at\n"
	      "  the start of a line, or after whitespace following a value.  Values are not\n"
	      "  quoted; a value cannot contain ` ;` or ` #` (put passwords in `auth_file`).\n"
	      "- Lists take items separated by commas or spaces; repeating the directive or\n"
	      "  indenting a continuation line adds items.  Every other directive may be set\n"
	      "  once: a second occurrence is an error, not a silent override.\n"
	      "- Sizes are bytes, or a number with K, M or G (1024-based).  Durations are\n"
	      "  seconds, or a number with s, m, h or d.  Booleans are yes/no, true/false,\n"
	      "  on/off or 1/0.  Enumerations ignore case.\n"
	      "- Lines are at most 4096 characters.\n"
	      "- *reloadable*: `yes` means SIGHUP applies a change; `no` needs a restart.\n",
	      out);
	for (i = 0; i < config_nsections; i++)
		md_section(&config_sections[i], out);
}

/* config_reload_check - compare non-reloadable directives of two configs. */
size_t config_reload_check(const struct config *old, const struct config *cur,
                           struct config_diags *diags)
{
	struct util_buf a, b;
	size_t i, j, n = 0;

	util_buf_init(&a);
	util_buf_init(&b);
	for (i = 0; i < config_nsections; i++) {
		const struct config_section *s = &config_sections[i];

		for (j = 0; !s->named && j < s->ndirs; j++) {
			const struct config_directive *d = &s->dirs[j];

			if (d->flags & CONFIG_F_RELOAD)
				continue;
			util_buf_reset(&a);
			util_buf_reset(&b);
			config_value_format(d, old, &a);
			config_value_format(d, cur, &b);
			if (strcmp(a.data != NULL ? a.data : "", b.data != NULL ? b.data : "") == 0)
				continue;
			config_diag_add(diags, cur->path, 0, true,
			                "[%s] %s changed from \"%s\" to \"%s\"; a reload keeps the "
			                "old value, restart mxgate to apply it",
			                s->name, d->name, a.data != NULL ? a.data : "",
			                b.data != NULL ? b.data : "");
			n++;
		}
	}
	util_buf_free(&a);
	util_buf_free(&b);
	return n;
}

/* man_text - s as roff text: backslashes doubled as \e, a leading '.' or
 * '\'' made literal with \&, markdown back-quotes dropped (the man page
 * shows code spans in bold via the caller, not here). */
static void man_text(FILE *out, const char *s)
{
	bool bol = true;

	for (; *s != '\0'; s++) {
		if (bol && (*s == '.' || *s == '\''))
			fputs("\\&", out);
		bol = false;
		if (*s == '\\')
			fputs("\\e", out);
		else if (*s == '`')
			continue;
		else if (*s == '-')
			fputs("\\-", out);
		else if (*s == '\n') {
			fputc('\n', out);
			bol = true;
		} else if (*s == ':' || *s == ',') {
			fputc(*s, out);
			fputs("\\:", out); /* a break point in long cipher lists */
		} else
			fputc(*s, out);
	}
}

/* man_section - one .SS per section, one .TP per directive. */
static void man_section(const struct config_section *s, FILE *out)
{
	char range[256];
	size_t j;

	fprintf(out, ".SS [%s%s]\n", s->name, s->named ? " NAME" : "");
	man_text(out, s->doc);
	fputs("\n", out);
	for (j = 0; j < s->ndirs; j++) {
		const struct config_directive *d = &s->dirs[j];

		fputs(".TP\n.B ", out);
		man_text(out, d->name);
		fputs("\n", out);
		man_text(out, d->doc);
		fputs("\n.br\nType: ", out);
		man_text(out, config_type_name(d));
		fputs("; default: ", out);
		if (d->def_doc != NULL)
			man_text(out, d->def_doc);
		else if (d->def != NULL && d->def[0] != '\0')
			man_text(out, d->def);
		else
			fputs("none", out);
		config_range_format(d, range, sizeof(range));
		if (range[0] != '\0') {
			fputs("; range: ", out);
			man_text(out, range);
		}
		fputs((d->flags & CONFIG_F_RELOAD) ? "; reloadable.\n" : "; needs a restart.\n", out);
	}
}

/* config_reference_man - mxgate.conf(5), from the same tables as
 * config_reference_markdown(). */
void config_reference_man(FILE *out, const char *version)
{
	size_t i;

	fprintf(out,
	        ".\\\" Generated from config/config-table.c by `mxgate config-man`; do not edit.\n"
	        ".TH MXGATE.CONF 5 \"\" \"mxgate %s\" \"File Formats\"\n"
	        /* left-adjusted: directive docs hold long unbreakable values
	         * (DNSBL filters, paths) that a justified line cannot fit */
	        ".ad l\n", version);
	fputs(".SH NAME\n"
	      "mxgate.conf \\- configuration file of the mxgate SMTP inbound gateway\n"
	      ".SH SYNOPSIS\n"
	      ".B /etc/mxgate/mxgate.conf\n"
	      ".SH DESCRIPTION\n"
	      "mxgate reads one INI file\n"
	      "(\\fBmxgate run \\-c\\fR \\fIFILE\\fR; without \\fB\\-c\\fR\n"
	      "\\fI/etc/mxgate/mxgate.conf\\fR when it exists, else an embedded default\n"
	      "that listens on 127.0.0.1:2525 and delivers into\n"
	      "\\fI./mxgate\\-data/mailbox\\fR).\n"
	      "\\fBmxgate check\\-config \\-c\\fR \\fIFILE\\fR reports every problem as\n"
	      "\\fIFILE\\fB:\\fILINE\\fB:\\fR \\fImessage\\fR.\n"
	      ".PP\n"
	      "\\fB[section]\\fR headers and \\fIname\\fB = \\fIvalue\\fR lines;\n"
	      "\\fB;\\fR or \\fB#\\fR starts a comment at the start of a line, or after\n"
	      "whitespace following a value.  Values are not quoted.\n"
	      "Lists take items separated by commas or spaces; repeating the directive or\n"
	      "indenting a continuation line adds items.  Every other directive may be set\n"
	      "once: a second occurrence is an error.\n"
	      "Sizes are bytes, or a number with K, M or G (1024\\-based).  Durations are\n"
	      "seconds, or a number with s, m, h or d.  Booleans are yes/no, true/false,\n"
	      "on/off or 1/0.  Lines are at most 4096 characters.\n"
	      "A directive marked \\(lqreloadable\\(rq is applied by\n"
	      "\\fBmxgate reload\\fR; the others need a restart.\n"
	      ".SH DIRECTIVES\n",
	      out);
	for (i = 0; i < config_nsections; i++)
		man_section(&config_sections[i], out);
	fputs(".SH FILES\n"
	      ".TP\n.I /etc/mxgate/mxgate.conf\nthe configuration read by the packaged service\n"
	      ".TP\n.I /usr/share/doc/mxgate/mxgate.conf.example\nan annotated example\n"
	      ".SH SEE ALSO\n"
	      ".BR mxgate (8)\n",
	      out);
}
