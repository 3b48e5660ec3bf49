/*
 * config-check.c - what a single directive cannot decide: computed defaults
 * (hostname, authserv_id, bounce_sender, control_socket), files that must be
 * readable, listeners that collide, TLS certificate/key pairs, relay control
 * (accepted domains and recipients, recipients_file), and the downstream
 * routes (one default route, no domain claimed twice, hosts or directory
 * present, credentials never sent in clear).  Also the two lookups the SMTP
 * side asks of a loaded config.
 *
 * Ownership: checks fill computed defaults into the config being loaded and
 * merge recipients_file / auth_file contents into it; lookups return
 * pointers borrowed from the config.
 *
 * Diagnostics: each problem is reported at the line of the directive that
 * causes it (line 0 when the cause is something missing from the whole
 * file, or a default); checks never stop at the first problem.
 */
#include "config-internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
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
		/* The PSL is only read for DMARC; its default may be absent. */
		if (line == 0 && strcmp(d->name, "psl_file") == 0 && !p->cfg->dmarc_enabled)
			continue;
		if (d->type == CONFIG_T_DIR)
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

	if (cfg->nlisten == 0)
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

	if (cfg->tls_cert_file != NULL && cfg->tls_key_file == NULL)
		err_at(p, gline(p, "tls", "cert_file"),
		       "cert_file is set but key_file is not (both or neither)");
	if (cfg->tls_key_file != NULL && cfg->tls_cert_file == NULL)
		err_at(p, gline(p, "tls", "key_file"),
		       "key_file is set but cert_file is not (both or neither)");
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

	if (cfg->accepted_domains.n == 0)
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
	if ((has_user || has_pw || r->auth_file != NULL) && r->tls == CONFIG_TLS_NONE)
		err_at(p, rline(p, ri, "tls"),
		       "route '%s' would send SMTP AUTH credentials in clear text with tls = none; "
		       "use verify or encrypt",
		       r->name);
}

/* check_route_type - what each type needs, and what it ignores. */
static void check_route_type(struct config_parse *p, size_t ri)
{
	const struct config_route *r = &p->cfg->routes[ri];
	static const char *const types[] = {"smtp", "mx", "directory"};
	size_t i;

	if (r->type == CONFIG_ROUTE_SMTP && r->nhosts == 0)
		err_at(p, r->line, "route '%s' has type smtp but no hosts", r->name);
	if (r->type == CONFIG_ROUTE_DIRECTORY && r->directory == NULL)
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

/* check_routes - per route, then the default route and domain claims. */
static void check_routes(struct config_parse *p)
{
	const struct config *cfg = p->cfg;
	size_t i, j, k, d, ndefault = 0, first_default = 0;

	if (cfg->nroutes == 0) {
		err_at(p, 0, "no default route: add a [route NAME] section without domains");
		return;
	}
	for (i = 0; i < cfg->nroutes; i++) {
		const struct config_route *r = &cfg->routes[i];

		check_route_type(p, i);
		check_route_auth(p, i);
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

			if (!util_strlist_has_case(&cfg->accepted_domains, dom))
				warn_at(p, rline(p, i, "domains"),
				        "route '%s': %s is not in accepted_domains, so no mail for "
				        "it is accepted",
				        r->name, dom);
			for (j = 0; j < i; j++) {
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
	check_domains(p);
	check_global_sanity(p);
	check_routes(p);
	check_dnsbl(p);
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

		if (r->domains.n == 0) {
			if (def == NULL)
				def = r;
		} else if (domain != NULL && util_strlist_has_case(&r->domains, domain)) {
			return r;
		}
	}
	return def;
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
