/*
 * config-start.c - the checks that make `check-config` catch what would
 * otherwise only fail (or silently lose mail) when `run` starts: listeners
 * of [metrics], [admin] and [mta_sts] that collide with SMTP or each other, an
 * MTA-STS listener without a certificate, MTA-STS enforce without STARTTLS,
 * tls = verify towards an IP literal; and, when the load asks for the
 * machine to be checked too (CONFIG_LOAD_HOST: `check-config` and `run`),
 * the service user and group, the log file, the queue directory (it can be
 * created and the run user can write it), the certificate against its key,
 * the names it covers and its expiry.
 *
 * Ownership: nothing is kept; OpenSSL objects live for one call.
 *
 * Diagnostics: at the line of the directive that causes each problem; one
 * cause gives one message (a file that check_paths() already reported
 * unreadable is not checked again).
 */
#include "config-internal.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <linux/magic.h>
#include <openssl/x509v3.h>

#include "util.h"

#define err_at(p, line, ...)  config_diag_add((p)->diags, (p)->file, (line), false, __VA_ARGS__)
#define warn_at(p, line, ...) config_diag_add((p)->diags, (p)->file, (line), true, __VA_ARGS__)

/* Certificates closer than this to their notAfter get a warning. */
#define CERT_WARN_DAYS 14

/* gline - line that set a directive of a global section, 0 = default. */
static int gline(const struct config_parse *p, const char *sec, const char *name)
{
	return config_seen_line(p, sec, 0, name);
}

/* error_at_line - was an error already reported at this line of the file? */
static bool error_at_line(const struct config_parse *p, int line)
{
	size_t i;

	for (i = 0; line != 0 && i < p->diags->n; i++) {
		const struct config_diag *d = &p->diags->v[i];

		if (!d->warning && d->line == line && strcmp(d->file, p->file) == 0)
			return true;
	}
	return false;
}

/* ------------------------------------------------------------ listeners */

/* One listener of any of the three services. */
struct lis {
	const char *what; /* "[server] listen" */
	const struct config_listen *l;
};

/* clash - same port and family, and the same address or a wildcard. */
static bool clash(const struct config_listen *a, const struct config_listen *b)
{
	char x[64], y[64];

	if (a->port != b->port || a->addr.ss.ss_family != b->addr.ss.ss_family)
		return false;
	util_addr_str(&a->addr, x, sizeof(x));
	util_addr_str(&b->addr, y, sizeof(y));
	return strcmp(x, y) == 0 || strcmp(x, "0.0.0.0") == 0 || strcmp(x, "::") == 0 ||
	       strcmp(y, "0.0.0.0") == 0 || strcmp(y, "::") == 0;
}

/* check_cross_listeners - [metrics], [admin] and [mta_sts] listeners against
 * the SMTP ones and each other (collisions inside [server] are
 * check_listen's).  The dashboard has one set of listeners whether it
 * speaks HTTPS or plain HTTP ([admin] tls). */
static void check_cross_listeners(struct config_parse *p)
{
	const struct config *cfg = p->cfg;
	size_t n = cfg->nlisten + cfg->nmetrics_listen + cfg->nadmin_listen +
	           cfg->nmta_sts_listen,
	       k = 0, i, j;
	struct lis *v = util_xcalloc(n + 1, sizeof(*v));
	char a[64];

	for (i = 0; i < cfg->nlisten; i++)
		v[k++] = (struct lis){"[server] listen", &cfg->listen[i]};
	for (i = 0; i < cfg->nmetrics_listen; i++)
		v[k++] = (struct lis){"[metrics] listen", &cfg->metrics_listen[i]};
	for (i = 0; i < cfg->nadmin_listen; i++)
		v[k++] = (struct lis){"[admin] listen", &cfg->admin_listen[i]};
	for (i = 0; i < cfg->nmta_sts_listen; i++)
		v[k++] = (struct lis){"[mta_sts] listen", &cfg->mta_sts_listen[i]};
	for (i = cfg->nlisten; i < n; i++) {
		for (j = 0; j < i; j++) {
			if (!clash(v[i].l, v[j].l))
				continue;
			util_addr_str(&v[i].l->addr, a, sizeof(a));
			err_at(p, v[i].l->line,
			       "%s %s%s%s:%d uses the same port as %s at line %d: start-up would "
			       "fail with \"address in use\"",
			       v[i].what, strchr(a, ':') ? "[" : "", a, strchr(a, ':') ? "]" : "",
			       v[i].l->port, v[j].what, v[j].l->line);
			break;
		}
	}
	free(v);
}

/* ------------------------------------------------------------ TLS policy */

/* starttls_offered - a certificate is configured (set, even if rejected:
 * that is reported at its own line). */
static bool starttls_offered(const struct config_parse *p)
{
	return p->cfg->tls_cert_file != NULL || gline(p, "tls", "cert_file") != 0;
}

/* check_mta_sts - HTTPS needs a certificate; enforce needs STARTTLS. */
static void check_mta_sts(struct config_parse *p)
{
	const struct config *cfg = p->cfg;
	int line;

	if (starttls_offered(p))
		return;
	if (cfg->mta_sts_mode == 1) {
		line = gline(p, "mta_sts", "mode");
		err_at(p, line,
		       "MTA-STS mode = enforce but STARTTLS is not offered (no [tls] cert_file): "
		       "senders that follow the policy would stop delivering; set [tls] cert_file "
		       "and key_file, or use mode = testing");
	} else if (cfg->nmta_sts_listen > 0) {
		err_at(p, cfg->mta_sts_listen[0].line,
		       "[mta_sts] listen serves the policy over HTTPS and needs the [tls] "
		       "certificate: set [tls] cert_file and key_file");
	}
}

/* check_verify_ip - tls = verify towards a numeric host: the certificate
 * would have to name the IP address, which public certificates rarely do. */
static void check_verify_ip(struct config_parse *p)
{
	const struct config *cfg = p->cfg;
	struct util_addr a;
	size_t ri, h;

	for (ri = 0; ri < cfg->nroutes; ri++) {
		const struct config_route *r = &cfg->routes[ri];
		int line;

		if (r->type != CONFIG_ROUTE_SMTP || r->tls != CONFIG_TLS_VERIFY)
			continue;
		line = config_seen_line(p, "route", ri, "hosts");
		for (h = 0; h < r->nhosts; h++) {
			if (util_addr_parse_numeric(r->hosts[h].host, 25, &a) == -1)
				continue;
			warn_at(
			    p, line != 0 ? line : r->line,
			    "route '%s': tls = verify%s with IP-literal host %s: the downstream's "
			    "certificate must name that IP address, which certificates rarely "
			    "do; use the host name, or tls = encrypt",
			    r->name,
			    config_seen_line(p, "route", ri, "tls") == 0 ? " (the default)" : "",
			    r->hosts[h].host);
		}
	}
}

/* ------------------------------------------------------------ the machine */

/* check_accounts - user and group exist (`run` drops privileges to them). */
static void check_accounts(struct config_parse *p)
{
	const struct config *cfg = p->cfg;

	if (cfg->user != NULL && getpwnam(cfg->user) == NULL)
		err_at(p, gline(p, "server", "user"),
		       "user %s does not exist on this machine (create it, e.g. useradd "
		       "--system %s)",
		       cfg->user, cfg->user);
	if (cfg->group != NULL && getgrnam(cfg->group) == NULL)
		err_at(p, gline(p, "server", "group"), "group %s does not exist on this machine",
		       cfg->group);
	if (cfg->control_socket_group != NULL && getgrnam(cfg->control_socket_group) == NULL)
		err_at(p, gline(p, "server", "control_socket_group"),
		       "group %s does not exist on this machine", cfg->control_socket_group);
}

/* check_log_file - the file (or its folder, to create it) is writable. */
static void check_log_file(struct config_parse *p)
{
	const char *path = p->cfg->log_file;
	int line = gline(p, "log", "file");
	struct stat st;
	char *dir, *slash;

	if (path == NULL)
		return;
	if (stat(path, &st) == 0) {
		if (S_ISDIR(st.st_mode))
			err_at(p, line, "log file \"%s\" is a directory", path);
		else if (access(path, W_OK) == -1)
			err_at(p, line, "log file \"%s\" is not writable: %s", path,
			       strerror(errno));
		return;
	}
	if (errno != ENOENT) {
		err_at(p, line, "log file \"%s\": %s", path, strerror(errno));
		return;
	}
	dir = util_xstrdup(path);
	slash = strrchr(dir, '/');
	if (slash == dir)
		slash[1] = '\0';
	else if (slash != NULL)
		*slash = '\0';
	else
		strcpy(dir, ".");
	if (stat(dir, &st) == -1 || !S_ISDIR(st.st_mode))
		err_at(p, line, "log file \"%s\" cannot be created: folder \"%s\" does not exist",
		       path, dir);
	else if (access(dir, W_OK | X_OK) == -1)
		err_at(p, line,
		       "log file \"%s\" cannot be created: folder \"%s\" is not writable: %s", path,
		       dir, strerror(errno));
	free(dir);
}

/* virtual_fs - the name of a kernel file system no folder can be created
 * in (mkdir there fails even for root, whom access() lets through), or
 * NULL. */
static const char *virtual_fs(const char *path)
{
	static const struct {
		long type;
		const char *name;
	} fs[] = {
	    {PROC_SUPER_MAGIC, "proc"},       {SYSFS_MAGIC, "sysfs"},
	    {DEBUGFS_MAGIC, "debugfs"},       {CGROUP_SUPER_MAGIC, "cgroup"},
	    {CGROUP2_SUPER_MAGIC, "cgroup2"}, {DEVPTS_SUPER_MAGIC, "devpts"},
	    {SECURITYFS_MAGIC, "securityfs"}, {TRACEFS_MAGIC, "tracefs"},
	};
	struct statfs sf;
	size_t i;

	if (statfs(path, &sf) == -1)
		return NULL;
	for (i = 0; i < sizeof(fs) / sizeof(fs[0]); i++)
		if ((long)sf.f_type == fs[i].type)
			return fs[i].name;
	return NULL;
}

/* user_can - may uid (with the single group gid `run` keeps after dropping
 * privileges) do what the owner bits want (S_IWUSR, S_IXUSR) in folder st? */
static bool user_can(const struct stat *st, uid_t uid, gid_t gid, mode_t want)
{
	if (uid == 0)
		return true;
	if (st->st_uid == uid)
		return (st->st_mode & want) == want;
	if (st->st_gid == gid)
		return (st->st_mode & (want >> 3)) == (want >> 3);
	return (st->st_mode & (want >> 6)) == (want >> 6);
}

/* user_can_reach - may uid/gid search every folder above path? */
static bool user_can_reach(const char *path, uid_t uid, gid_t gid)
{
	char *d = util_xstrdup(path), *slash;
	struct stat st;
	bool ok = true;

	while (ok && (slash = strrchr(d, '/')) != NULL) {
		if (slash == d)
			slash[1] = '\0';
		else
			*slash = '\0';
		if (stat(d, &st) == 0)
			ok = user_can(&st, uid, gid, S_IXUSR);
		if (slash == d)
			break;
	}
	free(d);
	return ok;
}

/* check_queue_dir - `run` creates the queue directory (and the DNSSEC state
 * in it) as the user it starts as, then, with [server] user, writes it as
 * that user.  Without creating anything: the nearest existing folder must
 * be a writable folder on a real file system (error), and with user set
 * when started as root the queue directory must be writable by the user
 * (error); one that does not exist yet gets a warning, as root would create
 * it 0700 for itself (the package, or `install -d -o USER`, creates it
 * for the user before `run`). */
static void check_queue_dir(struct config_parse *p)
{
	const struct config *cfg = p->cfg;
	const char *q = cfg->queue_dir, *fsname;
	int line = gline(p, "queue", "directory");
	char *dir = NULL, *slash;
	struct statvfs sv;
	struct passwd *pw;
	struct group *gr;
	struct stat st;
	bool exists;
	gid_t gid;

	if (q == NULL || q[0] == '\0' || error_at_line(p, line))
		return;
	dir = util_xstrdup(q);
	while (stat(dir, &st) == -1) {
		if (errno != ENOENT && errno != ENOTDIR) {
			err_at(p, line, "queue directory \"%s\" cannot be created: \"%s\": %s", q,
			       dir, strerror(errno));
			goto out;
		}
		slash = strrchr(dir, '/');
		if (slash == NULL)
			strcpy(dir, ".");
		else if (slash == dir)
			slash[1] = '\0';
		else
			*slash = '\0';
	}
	exists = strcmp(dir, q) == 0;
	if (!S_ISDIR(st.st_mode)) {
		err_at(p, line, "queue directory \"%s\" cannot be created: \"%s\" is not a folder",
		       q, dir);
		goto out;
	}
	if ((fsname = virtual_fs(dir)) != NULL) {
		err_at(p, line,
		       "queue directory \"%s\" cannot be %s: \"%s\" is on the kernel's %s file "
		       "system",
		       q, exists ? "written" : "created", dir, fsname);
		goto out;
	}
	if (statvfs(dir, &sv) == 0 && (sv.f_flag & ST_RDONLY) != 0) {
		err_at(p, line, "queue directory \"%s\" cannot be %s: \"%s\" is on a read-only "
		                "file system",
		       q, exists ? "written" : "created", dir);
		goto out;
	}
	if (access(dir, W_OK | X_OK) == -1) {
		err_at(p, line, "queue directory \"%s\" cannot be %s: \"%s\" is not writable: %s",
		       q, exists ? "written" : "created", dir, strerror(errno));
		goto out;
	}
	if (geteuid() != 0 || cfg->user == NULL || (pw = getpwnam(cfg->user)) == NULL)
		goto out;
	gid = pw->pw_gid;
	if (cfg->group != NULL) {
		if ((gr = getgrnam(cfg->group)) == NULL)
			goto out; /* check_accounts reports it */
		gid = gr->gr_gid;
	}
	if (!exists && pw->pw_uid != 0)
		warn_at(p, line,
		        "queue directory \"%s\" does not exist: `run` started as root would "
		        "create it owned by root (mode 0700), which user %s cannot write; "
		        "create it for that user (install -d -o %s -m 0700 %s)",
		        q, cfg->user, cfg->user, q);
	else if (exists && (!user_can(&st, pw->pw_uid, gid, S_IWUSR | S_IXUSR) ||
	                    !user_can_reach(q, pw->pw_uid, gid)))
		err_at(p, line,
		       "queue directory \"%s\" is not writable by user %s: chown -R it to that "
		       "user",
		       q, cfg->user);
out:
	free(dir);
}

/* ssl_reason - the first queued OpenSSL error as text (queue cleared). */
static void ssl_reason(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();

	if (e == 0)
		snprintf(buf, len, "unknown error");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
}

/* check_cert_names - warn for each name senders will ask the certificate
 * to cover: hostname, the MX names, mta-sts.<domain> when serving HTTPS. */
static void check_cert_names(struct config_parse *p, X509 *x, int line)
{
	const struct config *cfg = p->cfg;
	struct util_strlist names = {0}, missing = {0};
	struct util_buf b = {0};
	size_t i;

	/* a rejected hostname is a placeholder (reported at its line) */
	if (config_rejected_line(p, "server", 0, "hostname") == 0)
		util_strlist_add(&names, cfg->hostname);
	for (i = 0; i < cfg->mta_sts_mx.n; i++)
		if (!util_strlist_has_case(&names, cfg->mta_sts_mx.v[i]))
			util_strlist_add(&names, cfg->mta_sts_mx.v[i]);
	for (i = 0; cfg->nmta_sts_listen > 0 && i < cfg->accepted_domains.n; i++) {
		char *n = util_xasprintf("mta-sts.%s", cfg->accepted_domains.v[i]);

		util_strlist_add(&names, n);
		free(n);
	}
	for (i = 0; i < names.n; i++)
		if (X509_check_host(x, names.v[i], 0, 0, NULL) != 1)
			util_strlist_add(&missing, names.v[i]);
	for (i = 0; i < missing.n; i++)
		util_buf_printf(&b, "%s%s", i > 0 ? ", " : "", missing.v[i]);
	if (missing.n > 0)
		warn_at(p, line,
		        "certificate \"%s\" does not cover %s: senders that check the name "
		        "(MTA-STS, DANE-less verify) will refuse it",
		        cfg->tls_cert_file, b.data);
	util_buf_free(&b);
	util_strlist_free(&missing);
	util_strlist_free(&names);
}

/* check_cert_expiry - warn when notAfter is near or past. */
static void check_cert_expiry(struct config_parse *p, X509 *x, int line)
{
	int days = 0, secs = 0;

	if (ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)) != 1)
		return;
	if (days < 0 || secs < 0 || (days == 0 && secs == 0))
		warn_at(p, line, "certificate \"%s\" has expired", p->cfg->tls_cert_file);
	else if (days < CERT_WARN_DAYS)
		warn_at(p, line,
		        "certificate \"%s\" expires in %d day%s: renew it (then `mxgate reload`)",
		        p->cfg->tls_cert_file, days, days == 1 ? "" : "s");
}

/* check_cert - the chain and key load as the server will load them, the key
 * belongs to the certificate, and the certificate names and dates. */
static void check_cert(struct config_parse *p)
{
	const struct config *cfg = p->cfg;
	int cline = gline(p, "tls", "cert_file"), kline = gline(p, "tls", "key_file");
	SSL_CTX *ctx;
	X509 *x;
	char why[256];

	if (cfg->tls_cert_file == NULL || cfg->tls_key_file == NULL || error_at_line(p, cline) ||
	    error_at_line(p, kline))
		return;
	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL)
		return;
	if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert_file) != 1) {
		ssl_reason(why, sizeof(why));
		err_at(p, cline, "cert_file \"%s\" is not a usable PEM certificate chain: %s",
		       cfg->tls_cert_file, why);
		goto out;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key_file, SSL_FILETYPE_PEM) != 1) {
		ssl_reason(why, sizeof(why));
		if (strstr(why, "values mismatch") != NULL || strstr(why, "mismatch") != NULL)
			err_at(p, kline, "key_file \"%s\" does not belong to cert_file \"%s\"",
			       cfg->tls_key_file, cfg->tls_cert_file);
		else
			err_at(p, kline, "key_file \"%s\" is not a usable PEM private key: %s",
			       cfg->tls_key_file, why);
		goto out;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ERR_clear_error();
		err_at(p, kline, "key_file \"%s\" does not belong to cert_file \"%s\"",
		       cfg->tls_key_file, cfg->tls_cert_file);
		goto out;
	}
	x = SSL_CTX_get0_certificate(ctx);
	if (x != NULL) {
		check_cert_names(p, x, cline);
		check_cert_expiry(p, x, cline);
	}
out:
	ERR_clear_error();
	SSL_CTX_free(ctx);
}

/* config_check_start - see the header comment. */
void config_check_start(struct config_parse *p)
{
	check_cross_listeners(p);
	check_mta_sts(p);
	check_verify_ip(p);
	if (!p->host)
		return;
	check_accounts(p);
	check_log_file(p);
	check_queue_dir(p);
	check_cert(p);
}
