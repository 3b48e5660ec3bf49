/*
 * config-check.c - what a single directive cannot decide: computed defaults
 * (hostname, authserv_id, bounce_sender, control_socket), files that must be
 * readable, listeners that collide, TLS certificate/key pairs, relay control
 * (accepted domains and recipients, recipients_file), and the downstream
 * routes (one default route, no domain claimed twice, hosts or directory
 * present, credentials never sent in clear, an outbound route that can reach
 * a sender's domain).  Also the two lookups the SMTP
 * side asks of a loaded config.
 *
 * Ownership: checks fill computed defaults into the config being loaded and
 * merge recipients_file / auth_file contents into it; lookups return
 * pointers borrowed from the config.
 *
 * Diagnostics: each problem is reported at the line of the directive that
 * causes it (line 0 when the cause is something missing from the whole
 * file, or a default: the message then names the section and directive);
 * checks never stop at the first problem.  What would fail at start-up
 * is checked by config-start.c, called last.
 */
#include "config-internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

/* err_at / warn_at - a diagnostic in the config file. */
#define err_at(p, line, ...)  config_diag_add((p)->diags, (p)->file, (line), false, __VA_ARGS__)
#define warn_at(p, line, ...) config_diag_add((p)->diags, (p)->file, (line), true, __VA_ARGS__)

/* gline - line that set a directive of a global section. */
static int gline(const struct config_parse *p, const char *sec, const char *name)
{
	return config_seen_line(p, sec, 0, name);
}

/* rline - line that set a route directive, else the [route] header line. */
static int rline(const struct config_parse *p, size_t ri, const char *name)
{
	int line = config_seen_line(p, "route", ri, name);

	return line != 0 ? line : p->cfg->routes[ri].line;
}

/* ------------------------------------------------------------ computed defaults */

/* check_identity - hostname (gethostname()), authserv_id, bounce_sender and
 * control_socket when the file left them out. */
static void check_identity(struct config_parse *p)
{
	struct config *cfg = p->cfg;
	char host[256], buf[256];
	const char *why;
	size_t n;

	if (cfg->hostname == NULL && gline(p, "server", "hostname") != 0) {
		/* set but rejected (already reported): a placeholder for the rest */
		cfg->hostname = util_xstrdup("invalid.invalid");
	} else if (cfg->hostname == NULL) {
		if (gethostname(host, sizeof(host)) == -1) {
			err_at(p, 0, "no [server] hostname and gethostname() failed: %s",
			       strerror(errno));
			snprintf(host, sizeof(host), "localhost.localdomain");
		}
		host[sizeof(host) - 1] = '\0';
		why = config_check_fqdn(host, buf, sizeof(buf));
		if (why != NULL)
			err_at(p, 0,
			       "no [server] hostname, and this machine's name \"%s\" cannot be "
			       "used: %s; set [server] hostname",
			       host, why);
		cfg->hostname = util_xstrdup(host);
	}
	if (cfg->authserv_id == NULL)
		cfg->authserv_id = util_xstrdup(cfg->hostname);
	if (cfg->bounce_sender == NULL)
		cfg->bounce_sender = util_xasprintf("MAILER-DAEMON@%s", cfg->hostname);
	if (cfg->control_socket == NULL && cfg->queue_dir != NULL) {
		n = strlen(cfg->queue_dir);
		cfg->control_socket =
		    util_xasprintf("%s%scontrol.sock", cfg->queue_dir,
		                   n > 0 && cfg->queue_dir[n - 1] == '/' ? "" : "/");
	}
	/* sockaddr_un.sun_path holds 108 bytes including the NUL. */
	if (cfg->control_socket != NULL && strlen(cfg->control_socket) > 107) {
		int line = gline(p, "server", "control_socket");

		err_at(p, line != 0 ? line : gline(p, "queue", "directory"),
		       "control_socket \"%s\" is longer than the 107 bytes a unix socket path "
		       "may have",
		       cfg->control_socket);
	}
}

/* ------------------------------------------------------------ files */

/* check_file - path must be a readable regular file (or device/pipe). */
static bool check_file(struct config_parse *p, int line, const char *name, const char *path)
{
	struct stat st;

	if (stat(path, &st) == -1) {
		err_at(p, line, "cannot read %s \"%s\": %s", name, path, strerror(errno));
		return false;
	}
	if (S_ISDIR(st.st_mode)) {
		err_at(p, line, "%s \"%s\" is a directory, not a file", name, path);
		return false;
	}
	if (access(path, R_OK) == -1) {
		err_at(p, line, "cannot read %s \"%s\": %s", name, path, strerror(errno));
		return false;
	}
	return true;
}

/* check_dir - an existing path must be a directory; a missing one is
 * created at start. */
static void check_dir(struct config_parse *p, int line, const char *name, const char *path)
{
	struct stat st;

	if (stat(path, &st) == 0 && !S_ISDIR(st.st_mode))
		err_at(p, line, "%s \"%s\" exists and is not a directory", name, path);
}

/* check_paths - every PATH and DIR directive of a section instance. */
static void check_paths(struct config_parse *p, const struct config_section *s, size_t ri,
                        const void *base)
{
	size_t j;

	for (j = 0; j < s->ndirs; j++) {
		const struct config_directive *d = &s->dirs[j];
		const char *v;
		int line;

		if (d->type != CONFIG_T_PATH && d->type != CONFIG_T_DIR)
			continue;
		v = *(char *const *)(const void *)((const char *)base + d->off);
		if (v == NULL)
			continue;
		line = config_seen_line(p, s->name, ri, d->name);
		/* auto / none are keywords, not files (policy-dns-anchor.c) */
		if (strcmp(d->name, "trust_anchor_file") == 0 &&
		    (strcmp(v, "auto") == 0 || strcmp(v, "none") == 0))
			continue;
		/* The PSL is only read for DMARC; its default may be absent. */
		if (line == 0 && strcmp(d->name, "psl_file") == 0 && !p->cfg->dmarc_enabled)
			continue;
		/* the seal key is made by mxgate: say how */
		if (strcmp(s->name, "arc") == 0 && strcmp(d->name, "key_file") == 0 &&
		    access(v, F_OK) == -1 && errno == ENOENT) {
			err_at(p, line, "key_file \"%s\" does not exist: make it with `mxgate keygen %s`",
			       v, v);
			continue;
		}
		if (line == 0) {
			/* a default: say which directive of which section to set */
			char label[128];

			snprintf(label, sizeof(label), "%s (default of [%s]%s%s %s)", d->name,
			         s->name, s->named ? " " : "",
			         s->named ? p->cfg->routes[ri].name : "", d->name);
			if (d->type == CONFIG_T_DIR)
				check_dir(p, line, label, v);
			else
				check_file(p, line, label, v);
		} else if (d->type == CONFIG_T_DIR)
			check_dir(p, line, d->name, v);
		else
			check_file(p, line, d->name, v);
	}
}

/* ------------------------------------------------------------ server */

/* is_wildcard - 0.0.0.0 or ::. */
static bool is_wildcard(const char *host)
{
	return strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0;
}

/* check_listen - present, no address:port twice, nothing under a wildcard
 * on the same port and family (bind would fail with EADDRINUSE). */
static void check_listen(struct config_parse *p)
{
	const struct config *cfg = p->cfg;
	char a[64], b[64];
	size_t i, j;

	/* set but rejected: reported at its line already (one cause, one error) */
	if (cfg->nlisten == 0 && gline(p, "server", "listen") == 0)
		err_at(p, 0, "no listen address: set [server] listen (e.g. 0.0.0.0:25)");
	for (i = 0; i < cfg->nlisten; i++) {
		const struct config_listen *l = &cfg->listen[i];

		util_addr_str(&l->addr, a, sizeof(a));
		for (j = 0; j < i; j++) {
			const struct config_listen *m = &cfg->listen[j];

			if (m->port != l->port || m->addr.ss.ss_family != l->addr.ss.ss_family)
				continue;
			util_addr_str(&m->addr, b, sizeof(b));
			if (strcmp(a, b) == 0) {
				err_at(p, l->line,
				       "duplicate listener %s%s%s:%d (first at line %d)",
				       strchr(a, ':') ? "[" : "", a, strchr(a, ':') ? "]" : "",
				       l->port, m->line);
				break;
			}
			if (is_wildcard(a) || is_wildcard(b)) {
				err_at(p, l->line,
				       "listener %s port %d overlaps listener %s (line %d) on the "
				       "same port",
				       a, l->port, b, m->line);
				break;
			}
		}
	}
}

/* check_tls - certificate and key come together. */
static void check_tls(struct config_parse *p)
{
	const struct config *cfg = p->cfg;

	/* a rejected (or misspelt) partner is reported at its own line */
	if (cfg->tls_cert_file != NULL && cfg->tls_key_file == NULL &&
	    gline(p, "tls", "key_file") == 0)
		err_at(p, gline(p, "tls", "cert_file"),
		       "cert_file is set but key_file is not (both or neither)");
	if (cfg->tls_key_file != NULL && cfg->tls_cert_file == NULL &&
	    gline(p, "tls", "cert_file") == 0)
		err_at(p, gline(p, "tls", "key_file"),
		       "key_file is set but cert_file is not (both or neither)");
}

/* listen_is_loopback - 127.0.0.0/8 or ::1 (not the wildcards). */
static bool listen_is_loopback(const struct config_listen *l)
{
	return util_addr_is_loopback(&l->addr);
}

/* config_admin_https - see config.h. */
bool config_admin_https(const struct config *cfg)
{
	if (cfg->admin_tls != CONFIG_ADMIN_TLS_AUTO)
		return cfg->admin_tls == CONFIG_ADMIN_TLS_YES;
	for (size_t i = 0; i < cfg->nadmin_listen; i++)
		if (!listen_is_loopback(&cfg->admin_listen[i]))
			return true;
	return false;
}

/* check_admin - the dashboard's token and reports never cross a network in
 * clear: HTTPS needs the [tls] certificate; plain HTTP beyond loopback
 * only when the postmaster says so (allow_plain_http, behind a proxy). */
static void check_admin(struct config_parse *p)
{
	const struct config *cfg = p->cfg;
	char a[64];

	if (cfg->nadmin_listen == 0)
		return;
	if (config_admin_https(cfg)) {
		if (cfg->tls_cert_file != NULL)
			return;
		if (cfg->admin_tls == CONFIG_ADMIN_TLS_YES) {
			err_at(p, gline(p, "admin", "tls"),
			       "tls = yes needs the gateway's certificate: set [tls] cert_file and "
			       "key_file");
			return;
		}
		for (size_t i = 0; i < cfg->nadmin_listen; i++) {
			const struct config_listen *l = &cfg->admin_listen[i];

			if (listen_is_loopback(l))
				continue;
			util_addr_str(&l->addr, a, sizeof(a));
			err_at(p, l->line,
			       "the dashboard on %s%s%s:%d (not loopback) is served over HTTPS, "
			       "which needs [tls] cert_file and key_file; plain HTTP there needs "
			       "tls = no and allow_plain_http = yes",
			       strchr(a, ':') ? "[" : "", a, strchr(a, ':') ? "]" : "", l->port);
		}
		return;
	}
	for (size_t i = 0; i < cfg->nadmin_listen; i++) {
		const struct config_listen *l = &cfg->admin_listen[i];

		if (listen_is_loopback(l) || cfg->admin_allow_plain_http)
			continue;
		util_addr_str(&l->addr, a, sizeof(a));
		err_at(p, l->line,
		       "plain HTTP (tls = no) on %s%s%s:%d, which is not loopback: the token and "
		       "the reports would cross the network in clear; use tls = auto or yes "
		       "(HTTPS with the [tls] certificate), or allow_plain_http = yes behind a "
		       "TLS proxy",
		       strchr(a, ':') ? "[" : "", a, strchr(a, ':') ? "]" : "", l->port);
	}
}

/* ------------------------------------------------------------ domains */

/* merge_recipients - recipients_file lines into accepted_recipients; its
 * own problems are reported as RECIPIENTS_FILE:LINE. */
static void merge_recipients(struct config_parse *p)
{
	struct config *cfg = p->cfg;
	char *text, *line, *next, buf[256];
	const char *why;
	int lineno = 0;
	size_t len;

	text = util_read_file(cfg->recipients_file, CONFIG_FILE_MAX, &len);
	if (text == NULL)
		return; /* check_file() reported it */
	for (line = text; line != NULL; line = next) {
		char *s = line, *e;

		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		lineno++;
		e = strchr(s, '#');
		if (e != NULL)
			*e = '\0';
		s += strspn(s, " \t\r");
		for (e = s + strlen(s); e > s && strchr(" \t\r", e[-1]) != NULL; e--)
			;
		*e = '\0';
		if (*s == '\0')
			continue;
		for (e = s; *e != '\0'; e++)
			*e = (char)(*e >= 'A' && *e <= 'Z' ? *e - 'A' + 'a' : *e);
		why = config_check_address(s, buf, sizeof(buf));
		if (why != NULL)
			config_diag_add(p->diags, cfg->recipients_file, lineno, false,
			                "bad address \"%s\": %s", s, why);
		else if (!util_strlist_has_case(&cfg->accepted_recipients, s))
			util_strlist_add(&cfg->accepted_recipients, s);
	}
	free(text);
}

/* check_domains - something accepted; listed recipients reachable. */
static void check_domains(struct config_parse *p)
{
	struct config *cfg = p->cfg;
	struct util_strlist bad = {0};
	int line;
	size_t i;

	if (cfg->accepted_domains.n == 0 && gline(p, "domains", "accepted_domains") == 0)
		err_at(p, 0,
		       "no accepted_domains: set [domains] accepted_domains to the domains "
		       "this gateway is the MX of");
	/* <postmaster> without a domain must reach someone (RFC 5321 4.5.1). */
	if (cfg->primary_domain == NULL && cfg->accepted_domains.n > 0)
		cfg->primary_domain = util_xstrdup(cfg->accepted_domains.v[0]);
	else if (cfg->primary_domain != NULL) {
		for (char *c = cfg->primary_domain; *c; c++)
			*c = (char)tolower((unsigned char)*c);
		if (!util_strlist_has_case(&cfg->accepted_domains, cfg->primary_domain))
			err_at(p, gline(p, "domains", "primary_domain"),
			       "primary_domain %s is not in accepted_domains", cfg->primary_domain);
	}
	if (cfg->recipients_file != NULL && check_file(p, gline(p, "domains", "recipients_file"),
	                                               "recipients_file", cfg->recipients_file))
		merge_recipients(p);
	line = gline(p, "domains", "accepted_recipients");
	if (line == 0)
		line = gline(p, "domains", "recipients_file");
	for (i = 0; i < cfg->accepted_recipients.n; i++) {
		const char *dom = util_domain_of(cfg->accepted_recipients.v[i]);

		/* Lists are per domain: only a domain with listed addresses is closed. */
		if (dom != NULL && !util_strlist_has_case(&cfg->listed_domains, dom))
			util_strlist_add(&cfg->listed_domains, dom);
		if (dom == NULL || util_strlist_has_case(&cfg->accepted_domains, dom) ||
		    util_strlist_has_case(&bad, dom))
			continue;
		util_strlist_add(&bad, dom);
		warn_at(p, line,
		        "accepted_recipients has addresses at %s, which is not in "
		        "accepted_domains: they will be refused",
		        dom);
	}
	util_strlist_free(&bad);
}

/* check_dnsbl - [dnsbl] sites into their parsed form (the validator
 * already refused bad ones; what is left parses). */
static void check_dnsbl(struct config_parse *p)
{
	struct config *cfg = p->cfg;
	char err[200];
	cfg->ndnsbl_sites = 0;
	if (cfg->dnsbl_site_specs.n == 0)
		return;
	cfg->dnsbl_sites = util_xcalloc(cfg->dnsbl_site_specs.n, sizeof(*cfg->dnsbl_sites));
	for (size_t i = 0; i < cfg->dnsbl_site_specs.n; i++)
		if (config_dnsbl_parse(cfg->dnsbl_site_specs.v[i],
				       &cfg->dnsbl_sites[cfg->ndnsbl_sites], err, sizeof(err)) == 0)
			cfg->ndnsbl_sites++;
	if (cfg->dnsbl_reject_threshold > 0 && cfg->dnsbl_tag_threshold > 0 &&
	    cfg->dnsbl_tag_threshold > cfg->dnsbl_reject_threshold)
		config_diag_add(p->diags, p->file, config_seen_line(p, "dnsbl", 0, "tag_threshold"),
				true, "tag_threshold (%d) is above reject_threshold (%d): nothing is "
				"ever tagged", cfg->dnsbl_tag_threshold, cfg->dnsbl_reject_threshold);
}

/* check_actions - the per-verdict actions (issue 13): dmarc_quarantine_action
 * and score_action default to quarantine_action, so a file written before
 * they existed keeps its meaning; a virus delivered with only a header is
 * allowed (monitoring a new scanner) but said out loud. */
static void check_actions(struct config_parse *p)
{
	struct config *cfg = p->cfg;

	if (gline(p, "spam", "dmarc_quarantine_action") == 0)
		cfg->spam_dmarc_action = cfg->spam_quarantine_action;
	if (gline(p, "spam", "score_action") == 0)
		cfg->spam_score_action = cfg->spam_quarantine_action;
	/* an attachment check that silently stops above a size is a bypass
	 * (pad the message): by default every acceptable message is judged,
	 * and one too large to judge is treated like one that cannot be read */
	if (gline(p, "attachments", "max_size") == 0)
		cfg->attach_max_size = cfg->message_size_limit;
	if (gline(p, "attachments", "oversize_action") == 0)
		cfg->attach_oversize_action = cfg->attach_unparsable_action;
	if (cfg->attach_enabled && cfg->attach_max_size < cfg->message_size_limit)
		warn_at(p, gline(p, "attachments", "max_size"),
		        "[attachments] max_size (%lld) is below [limits] message_size_limit (%lld): "
		        "larger messages are accepted without their attachments being judged "
		        "(oversize_action = %s)",
		        (long long)cfg->attach_max_size, (long long)cfg->message_size_limit,
		        (const char *const[]){"reject", "quarantine", "tag",
		                              "deliver"}[cfg->attach_oversize_action]);
	if (cfg->clamav_socket != NULL && cfg->clamav_virus_action == CONFIG_SCAN_DELIVER)
		warn_at(
		    p, gline(p, "clamav", "virus_action"),
		    "virus_action = deliver hands infected messages to the mailboxes with only an "
		    "X-Virus-Scan header; use tag (header and subject tag) to warn the reader, or "
		    "quarantine");
}

/* check_global_sanity - limits and timers that contradict each other. */
static void check_global_sanity(struct config_parse *p)
{
	const struct config *cfg = p->cfg;
	size_t i;

	if (cfg->max_connections_per_ip > cfg->max_connections)
		warn_at(p, gline(p, "limits", "max_connections_per_ip"),
		        "max_connections_per_ip (%d) is above max_connections (%d)",
		        cfg->max_connections_per_ip, cfg->max_connections);
	if (cfg->max_header_size > cfg->message_size_limit)
		warn_at(p, gline(p, "limits", "max_header_size"),
		        "max_header_size is above message_size_limit");
	if (cfg->delay_warning_time != 0 && cfg->delay_warning_time >= cfg->max_queue_lifetime)
		warn_at(p, gline(p, "queue", "delay_warning_time"),
		        "delay_warning_time is not below max_lifetime: no delay warning will "
		        "ever be sent");
	for (i = 1; i < cfg->nretry; i++) {
		if (cfg->retry_schedule[i] < cfg->retry_schedule[i - 1]) {
			warn_at(p, gline(p, "queue", "retry_schedule"),
			        "retry_schedule gets shorter at step %zu; the last step repeats "
			        "forever",
			        i + 1);
			break;
		}
	}
	if (cfg->dmarc_enabled && !cfg->spf_enabled && !cfg->dkim_enabled)
		warn_at(p, gline(p, "auth", "dmarc"),
		        "dmarc = yes with spf and dkim both off: every message will fail DMARC");
	if (cfg->dns_slow_domain_limit == 0 ||
	    cfg->dns_slow_domain_limit >= (cfg->policy_workers > 0 ? cfg->policy_workers : 4))
		warn_at(p, gline(p, "dns", "slow_domain_limit"),
		        "slow_domain_limit (%d) does not keep a policy worker free: one DNS zone "
		        "that never answers can hold all %d workers",
		        cfg->dns_slow_domain_limit, cfg->policy_workers);
}

/* ------------------------------------------------------------ routes */

/* host_is_loopback - "localhost" or a numeric loopback address. */
static bool host_is_loopback(const char *host)
{
	struct util_addr a;

	if (util_strcaseeq(host, "localhost"))
		return true;
	return util_addr_parse_numeric(host, 25, &a) == 0 && util_addr_is_loopback(&a);
}

/* load_auth_file - "user:password" on the first line into the route. */
static void load_auth_file(struct config_parse *p, size_t ri)
{
	struct config_route *r = &p->cfg->routes[ri];
	int line = rline(p, ri, "auth_file");
	struct stat st;
	char *text, *colon;
	size_t len;

	if (!check_file(p, line, "auth_file", r->auth_file))
		return;
	if (stat(r->auth_file, &st) == 0 && (st.st_mode & 077) != 0)
		warn_at(p, line, "auth_file \"%s\" is readable by group or others (chmod 600)",
		        r->auth_file);
	text = util_read_file(r->auth_file, 4096, &len);
	if (text == NULL) {
		err_at(p, line, "cannot read auth_file \"%s\": %s", r->auth_file,
		       errno == EFBIG ? "file too large" : strerror(errno));
		return;
	}
	text[strcspn(text, "\r\n")] = '\0';
	colon = strchr(text, ':');
	if (colon == NULL || colon == text || colon[1] == '\0') {
		err_at(p, line, "auth_file \"%s\": expected \"user:password\" on the first line",
		       r->auth_file);
	} else {
		*colon = '\0';
		r->auth_user = util_xstrdup(text);
		r->auth_password = util_xstrdup(colon + 1);
	}
	free(text);
}

/* check_route_auth - credentials complete, from one place, never in clear. */
static void check_route_auth(struct config_parse *p, size_t ri)
{
	struct config_route *r = &p->cfg->routes[ri];
	bool has_user = r->auth_user != NULL, has_pw = r->auth_password != NULL;

	if (r->auth_file != NULL && (has_user || has_pw)) {
		err_at(p, rline(p, ri, "auth_file"),
		       "route '%s': auth_file and auth_user/auth_password are exclusive", r->name);
	} else if (has_user != has_pw) {
		err_at(p, rline(p, ri, has_user ? "auth_user" : "auth_password"),
		       "route '%s': %s is set without %s", r->name,
		       has_user ? "auth_user" : "auth_password",
		       has_user ? "auth_password" : "auth_user");
	} else if (r->auth_file != NULL) {
		load_auth_file(p, ri);
	}
	if ((has_user || has_pw || r->auth_file != NULL) &&
	    (r->tls == CONFIG_TLS_NONE || r->tls == CONFIG_TLS_MAY || r->tls == CONFIG_TLS_DANE))
		err_at(p, rline(p, ri, "tls"),
		       "route '%s' would send SMTP AUTH credentials in clear text with tls = %s; "
		       "use verify or encrypt",
		       r->name, r->tls == CONFIG_TLS_NONE ? "none" : r->tls == CONFIG_TLS_MAY ? "may" : "dane");
}

/* check_route_type - what each type needs, and what it ignores. */
static void check_route_type(struct config_parse *p, size_t ri)
{
	const struct config_route *r = &p->cfg->routes[ri];
	static const char *const types[] = {"smtp", "mx", "directory"};
	size_t i;

	/* a rejected type: what it needs and ignores is unknown (one typo, one
	 * error) */
	if (config_rejected_line(p, "route", ri, "type") != 0)
		return;
	/* a hosts / directory line that was rejected is reported at its line */
	if (r->type == CONFIG_ROUTE_SMTP && r->nhosts == 0 &&
	    config_seen_line(p, "route", ri, "hosts") == 0)
		err_at(p, r->line, "route '%s' has type smtp but no hosts", r->name);
	if (r->type == CONFIG_ROUTE_DIRECTORY && r->directory == NULL &&
	    config_seen_line(p, "route", ri, "directory") == 0)
		err_at(p, r->line, "route '%s' has type directory but no directory", r->name);
	if (r->type != CONFIG_ROUTE_SMTP && r->nhosts > 0)
		warn_at(p, rline(p, ri, "hosts"), "route '%s': hosts is ignored with type %s",
		        r->name, types[r->type]);
	if (r->type != CONFIG_ROUTE_DIRECTORY && r->directory != NULL)
		warn_at(p, rline(p, ri, "directory"),
		        "route '%s': directory is ignored with type %s", r->name, types[r->type]);
	if (r->verify_recipients && r->type != CONFIG_ROUTE_SMTP)
		err_at(p, rline(p, ri, "verify_recipients"),
		       "route '%s': verify_recipients needs type smtp (the callout asks the "
		       "route's hosts)",
		       r->name);
	if (r->ca_file != NULL && r->tls != CONFIG_TLS_VERIFY)
		warn_at(p, rline(p, ri, "tls_ca_file"),
		        "route '%s': tls_ca_file is only used with tls = verify", r->name);
	/* the per-route limit is what keeps a dead route from starving the
	 * others (the scheduler's max_deliveries default is max_connections) */
	int limit = r->max_deliveries > 0               ? r->max_deliveries
	            : r->type == CONFIG_ROUTE_DIRECTORY ? 0
	                                                : r->max_connections;
	if (p->cfg->nroutes > 1 && p->cfg->max_deliveries > 0 && limit >= p->cfg->max_deliveries)
		warn_at(
		    p, rline(p, ri, r->max_deliveries > 0 ? "max_deliveries" : "max_connections"),
		    "route '%s' may take all %d [queue] max_deliveries slots (its limit is %d): "
		    "while it is slow or down, the other routes wait",
		    r->name, p->cfg->max_deliveries, limit);
	if (r->tls == CONFIG_TLS_DANE && r->type != CONFIG_ROUTE_MX)
		err_at(p, rline(p, ri, "tls"),
		       "route '%s': tls = dane needs type = mx (TLSA records of the MX hosts)",
		       r->name);
	if (r->tls != CONFIG_TLS_NONE)
		return;
	if (r->type == CONFIG_ROUTE_MX)
		warn_at(p, rline(p, ri, "tls"),
		        "route '%s' delivers to MX hosts without TLS (tls = none)", r->name);
	for (i = 0; r->type == CONFIG_ROUTE_SMTP && i < r->nhosts; i++) {
		if (!host_is_loopback(r->hosts[i].host))
			warn_at(p, rline(p, ri, "tls"),
			        "route '%s' delivers to %s without TLS (tls = none): mail crosses "
			        "the network in clear text",
			        r->name, r->hosts[i].host);
	}
}

/* is_ses_inbound - SES/WorkMail receiving endpoint (inbound-smtp.REGION.
 * amazonaws.com): it takes mail for the account's verified domains only. */
static bool is_ses_inbound(const char *host)
{
	static const char suffix[] = ".amazonaws.com";
	size_t n = strlen(host), ns = sizeof(suffix) - 1;

	if (n > 0 && host[n - 1] == '.')
		n--;
	return n > 13 + ns && strncasecmp(host, "inbound-smtp.", 13) == 0 &&
	       strncasecmp(host + n - ns, suffix, ns) == 0;
}

/* host_eq - same downstream: name (case, trailing dot ignored) and port. */
static bool host_eq(const struct config_host *a, const struct config_host *b)
{
	size_t na = strlen(a->host), nb = strlen(b->host);

	if (na > 0 && a->host[na - 1] == '.')
		na--;
	if (nb > 0 && b->host[nb - 1] == '.')
		nb--;
	return na == nb && strncasecmp(a->host, b->host, na) == 0 &&
	       (a->port > 0 ? a->port : 25) == (b->port > 0 ? b->port : 25);
}

/* check_outbound - the route of what mxgate originates (DSNs) must reach the
 * sender's domain: an inbound downstream (SES/WorkMail inbound-smtp, the
 * M365 tenant) refuses mail for foreign domains, and a folder reaches
 * nobody.  The implicit route (type mx) is always sane. */
static void check_outbound(struct config_parse *p, size_t oi)
{
	const struct config *cfg = p->cfg;
	const struct config_route *o = &cfg->routes[oi];
	bool all_dirs = true;
	size_t i, j, k;

	if (config_rejected_line(p, "route", oi, "type") != 0)
		return; /* reported at its line */
	if (o->domains.n > 0)
		err_at(p, rline(p, oi, "domains"),
		       "route '%s' has role = outbound and domains: it carries what mxgate "
		       "originates to any domain; remove domains",
		       o->name);
	for (i = 0; i < cfg->nroutes; i++) {
		if (cfg->routes[i].role == CONFIG_ROLE_INBOUND &&
		    cfg->routes[i].type != CONFIG_ROUTE_DIRECTORY)
			all_dirs = false;
	}
	if (o->type == CONFIG_ROUTE_DIRECTORY) {
		/* A gateway that delivers everything into folders is a test
		 * set-up (the embedded default): a warning is enough there. */
		config_diag_add(p->diags, p->file, rline(p, oi, "type"), all_dirs,
		                "route '%s' (role = outbound) has type directory: bounces would "
		                "stay in %s and never reach their senders; use type = mx",
		                o->name, o->directory ? o->directory : "a folder");
	}
	if (o->type != CONFIG_ROUTE_SMTP)
		return;
	for (k = 0; k < o->nhosts; k++) {
		if (is_ses_inbound(o->hosts[k].host)) {
			err_at(p, rline(p, oi, "hosts"),
			       "route '%s' (role = outbound) relays through %s, an SES inbound "
			       "endpoint that refuses mail for other domains: bounces would be "
			       "dropped; use type = mx or an outbound smart host",
			       o->name, o->hosts[k].host);
			continue;
		}
		for (i = 0; i < cfg->nroutes; i++) {
			const struct config_route *r = &cfg->routes[i];

			if (r->role != CONFIG_ROLE_INBOUND || r->type != CONFIG_ROUTE_SMTP)
				continue;
			for (j = 0; j < r->nhosts; j++) {
				if (host_eq(&o->hosts[k], &r->hosts[j])) {
					err_at(p, rline(p, oi, "hosts"),
					       "route '%s' (role = outbound) relays through %s, the "
					       "downstream of inbound route '%s' (line %d), which "
					       "accepts mail for our own domains only: bounces would "
					       "be refused; use type = mx or an outbound smart host",
					       o->name, o->hosts[k].host, r->name,
					       rline(p, i, "hosts"));
					break;
				}
			}
		}
	}
}

/* check_routes - per route, then the default route, domain claims and the
 * outbound route. */
static void check_routes(struct config_parse *p)
{
	const struct config *cfg = p->cfg;
	size_t i, j, k, d, ndefault = 0, first_default = 0, ninbound = 0, noutbound = 0;
	size_t first_outbound = 0;

	for (i = 0; i < cfg->nroutes; i++) {
		if (cfg->routes[i].role == CONFIG_ROLE_INBOUND)
			ninbound++;
	}
	if (ninbound == 0) {
		if (p->route_typo == 0) /* else: the misspelt header is reported */
			err_at(p, 0, "no default route: add a [route NAME] section without domains");
		return;
	}
	for (i = 0; i < cfg->nroutes; i++) {
		const struct config_route *r = &cfg->routes[i];

		check_route_type(p, i);
		check_route_auth(p, i);
		if (r->role == CONFIG_ROLE_OUTBOUND) {
			if (noutbound++ == 0)
				first_outbound = i;
			else
				err_at(p, rline(p, i, "role"),
				       "two outbound routes: '%s' and '%s' (line %d) both have "
				       "role = outbound",
				       r->name, cfg->routes[first_outbound].name,
				       cfg->routes[first_outbound].line);
			continue;
		}
		if (strcmp(r->name, "outbound") == 0)
			err_at(p, r->line,
			       "route name 'outbound' is kept for the route of what mxgate itself "
			       "sends: add role = outbound, or rename the route");
		if (r->domains.n == 0) {
			if (ndefault++ == 0)
				first_default = i;
			else
				err_at(p, r->line,
				       "two default routes: '%s' and '%s' (line %d) both have no "
				       "domains",
				       r->name, cfg->routes[first_default].name,
				       cfg->routes[first_default].line);
		}
		for (d = 0; d < r->domains.n; d++) {
			const char *dom = r->domains.v[d];

			if (!util_strlist_has_case(&cfg->accepted_domains, dom) &&
			    cfg->accepted_domains.n > 0)
				warn_at(p, rline(p, i, "domains"),
				        "route '%s': %s is not in accepted_domains, so no mail for "
				        "it is accepted",
				        r->name, dom);
			for (j = 0; j < i; j++) {
				if (cfg->routes[j].role != CONFIG_ROLE_INBOUND)
					continue;
				for (k = 0; k < cfg->routes[j].domains.n; k++) {
					if (util_strcaseeq(cfg->routes[j].domains.v[k], dom))
						err_at(p, rline(p, i, "domains"),
						       "domain %s is claimed by route '%s' and by "
						       "route '%s' (line %d)",
						       dom, r->name, cfg->routes[j].name,
						       rline(p, j, "domains"));
				}
			}
		}
	}
	if (ndefault == 0)
		err_at(p, 0, "no default route: one [route NAME] section must have no domains");
	if (noutbound > 0)
		check_outbound(p, first_outbound);
}

/* route_is_ses_only - every host of the route is SES inbound. */
static bool route_is_ses_only(const struct config_route *r)
{
	for (size_t h = 0; h < r->nhosts; h++)
		if (!is_ses_inbound(r->hosts[h].host))
			return false;
	return r->nhosts > 0;
}

/* check_backscatter - every accepted domain must know its recipients: a
 * recipient list for the domain, or a route that asks its downstream
 * (verify_recipients).  Otherwise mail to a user who does not exist is
 * accepted, refused downstream and bounced to a sender who, for spam, is a
 * forged third party.  A warning (the gateway works), at the domain's
 * accepted_domains line.  A directory route is a local folder: nobody
 * refuses anything there, so nothing bounces and nothing is asked. */
static void check_backscatter(struct config_parse *p)
{
	const struct config *cfg = p->cfg;
	int line = gline(p, "domains", "accepted_domains");

	for (size_t i = 0; i < cfg->accepted_domains.n; i++) {
		const char *dom = cfg->accepted_domains.v[i];
		const struct config_route *r = config_route_for(cfg, dom);

		/* a route whose type was refused (already an error) is not
		 * judged: its defaults are not what the postmaster meant */
		if (r == NULL || r->type == CONFIG_ROUTE_DIRECTORY ||
		    util_strlist_has_case(&cfg->listed_domains, dom) ||
		    config_rejected_line(p, "route", (size_t)(r - cfg->routes), "type") != 0)
			continue;
		if (r->type == CONFIG_ROUTE_SMTP && r->verify_recipients) {
			/* SES inbound accepts every address of a domain whose
			 * receipt rule covers it: the callout verifies nothing */
			int vline = rline(p, (size_t)(r - cfg->routes), "verify_recipients");
			if (route_is_ses_only(r))
				warn_at(p, vline,
				        "accepted domain %s: route '%s' verifies recipients at "
				        "SES inbound, which accepts every address of the "
				        "domain: give it a recipient list (recipients_file; "
				        "WorkMail: deploy/aws/mxgate-workmail-recipients)",
				        dom, r->name);
			continue;
		}
		warn_at(p, line,
		        "accepted domain %s has no recipient list (accepted_recipients, "
		        "recipients_file) and its route '%s' (line %d) does not verify recipients "
		        "(verify_recipients = yes): mail to users who do not exist is accepted and "
		        "bounced later to possibly forged senders (backscatter)",
		        dom, r->name, r->line);
	}
}

/* check_arc - sealing needs verification (the seal's cv= is the chain's
 * result), a selector, a domain and a key. */
static void check_arc(struct config_parse *p)
{
	const struct config *cfg = p->cfg;
	int line = gline(p, "arc", "seal");

	if (!cfg->arc_seal)
		return;
	if (!cfg->arc_enabled)
		err_at(p, line, "seal = yes needs enabled = yes (the seal records the chain's result)");
	if (cfg->arc_selector == NULL)
		err_at(p, line, "seal = yes needs selector");
	if (cfg->arc_domain == NULL)
		err_at(p, line, "seal = yes needs domain");
	if (cfg->arc_key_file == NULL)
		err_at(p, line, "seal = yes needs key_file");
}

/* check_reports - failure reports go out by the aggregate report sender,
 * which runs with record = yes only. */
static void check_reports(struct config_parse *p)
{
	if (p->cfg->reports_failure && !p->cfg->reports_record)
		err_at(p, gline(p, "reports", "failure_reports"),
		       "failure_reports = yes needs record = yes (the report sender and its "
		       "signing key)");
}

/* config_check_all - run after the defaults are in place. */
void config_check_all(struct config_parse *p)
{
	size_t i, r;

	check_identity(p);
	for (i = 0; i < config_nsections; i++) {
		const struct config_section *s = &config_sections[i];

		if (!s->named)
			check_paths(p, s, 0, p->cfg);
		for (r = 0; s->named && r < p->cfg->nroutes; r++)
			check_paths(p, s, r, &p->cfg->routes[r]);
	}
	check_listen(p);
	check_tls(p);
	check_admin(p);
	check_domains(p);
	check_global_sanity(p);
	check_routes(p);
	check_backscatter(p);
	check_arc(p);
	check_reports(p);
	config_check_start(p);
	check_dnsbl(p);
	check_actions(p);
}

/* ------------------------------------------------------------ lookups */

/* config_route_for - exact domain match, else the default route. */
const struct config_route *config_route_for(const struct config *cfg, const char *domain)
{
	const struct config_route *def = NULL;
	char buf[256];
	size_t i, n;

	if (domain != NULL) {
		n = strlen(domain);
		if (n > 0 && n < sizeof(buf) && domain[n - 1] == '.') {
			memcpy(buf, domain, n - 1);
			buf[n - 1] = '\0';
			domain = buf;
		}
	}
	for (i = 0; i < cfg->nroutes; i++) {
		const struct config_route *r = &cfg->routes[i];

		if (r->role != CONFIG_ROLE_INBOUND)
			continue;
		if (r->domains.n == 0) {
			if (def == NULL)
				def = r;
		} else if (domain != NULL && util_strlist_has_case(&r->domains, domain)) {
			return r;
		}
	}
	return def;
}

/* config_route_outbound - the (first) route with role = outbound. */
const struct config_route *config_route_outbound(const struct config *cfg)
{
	for (size_t i = 0; i < cfg->nroutes; i++) {
		if (cfg->routes[i].role == CONFIG_ROLE_OUTBOUND)
			return &cfg->routes[i];
	}
	return NULL;
}

/* config_rcpt_check - accepted domain; listed when that domain has a list. */
enum config_rcpt config_rcpt_check(const struct config *cfg, const char *addr)
{
	const char *dom = util_domain_of(addr);

	if (dom == NULL || dom[0] == '\0' || dom == addr + 1)
		return CONFIG_RCPT_RELAY;
	if (!util_strlist_has_case(&cfg->accepted_domains, dom))
		return CONFIG_RCPT_RELAY;
	if (!util_strlist_has_case(&cfg->listed_domains, dom))
		return CONFIG_RCPT_OPEN;
	return util_strlist_has_case(&cfg->accepted_recipients, addr) ? CONFIG_RCPT_LISTED
	                                                              : CONFIG_RCPT_UNKNOWN;
}

/* config_is_accepted_rcpt - listed, or at an accepted domain without a list. */
bool config_is_accepted_rcpt(const struct config *cfg, const char *addr)
{
	enum config_rcpt r = config_rcpt_check(cfg, addr);

	return r == CONFIG_RCPT_LISTED || r == CONFIG_RCPT_OPEN;
}
