/*
 * test_config.c - unit tests of config parsing and diagnostics: a table of
 * {config text, expected diagnostic, expected line} covering every kind of
 * problem check-config reports, over-long lines and NUL bytes, the print
 * format, and the checks that keep the directive tables documented and
 * docs/config-reference.md up to date.  Values, defaults, the embedded
 * default and the example file are in test_config_values.c.
 *
 * Ownership: every config and diagnostics list is freed by the test that
 * made it; the temporary directory is removed by the group teardown.
 *
 * Diagnostics: a failing case prints its name and every diagnostic it got.
 * MXGATE_UPDATE_DOCS=1 rewrites docs/config-reference.md instead of
 * comparing it.
 */
#include "config-test-helpers.h"

/* ------------------------------------------------------------ diagnostic cases */

struct diag_case {
	const char *name;
	const char *text;
	int line;        /* expected line of the diagnostic */
	const char *sub; /* expected substring of its message */
	bool warning;    /* a warning: the config must still load */
};

static const struct diag_case diag_cases[] = {
    /* sections */
    {"unknown section", GOOD "[srever]\nfoo = 1\n", 11,
     "unknown section [srever] (did you mean [server]?)", false},
    {"unknown section far", GOOD "[xyzzy]\n", 11, "unknown section [xyzzy]", false},
    {"header without ]", GOOD "[server\nhostname = x\n", 11, "without closing ']'", false},
    {"text after header", GOOD "[server] junk\n", 11, "unexpected text after ']'", false},
    {"section takes no name", GOOD "[limits x]\n", 11, "section [limits] takes no name", false},
    {"route without name", GOOD "[route]\n", 11, "[route] needs a name", false},
    {"bad route name", GOOD "[route a/b]\n", 11, "bad route name \"a/b\"", false},
    {"route twice", GOOD "[route default]\n", 11, "route 'default' is already defined at line 8",
     false},
    {"outside section", "foo = 1\n" GOOD, 1, "'foo' is outside any section", false},
    /* syntax */
    {"no equals", GOOD "[server]\njust words\n", 12, "expected 'name = value'", false},
    {"empty value", GOOD "[server]\nbanner_text =\n", 12, "empty value for 'banner_text'", false},
    {"missing name", GOOD "[server]\n= x\n", 12, "missing directive name", false},
    {"continuation of scalar", GOOD "[server]\nbanner_text = hello\n  world\n", 13,
     "continuation line: 'banner_text' takes a single value", false},
    {"indented directive", GOOD "[limits]\n  max_errors = 5\n  max_recipients = 5\n", 13,
     "indented line continues 'max_errors'; if 'max_recipients'", false},
    /* unknown keys */
    {"unknown key suggestion", GOOD "[limits]\nmax_recipents = 5\n", 12,
     "unknown directive 'max_recipents' in [limits] (did you mean 'max_recipients'?)", false},
    {"unknown key case", GOOD "[server]\nBanner_Text = x\n", 12, "(did you mean 'banner_text'?)",
     false},
    {"unknown key far", GOOD "[limits]\nzzzzzz = 5\n", 12, "unknown directive 'zzzzzz' in [limits]",
     false},
    {"key in wrong section", GOOD "[server]\nmin_version = TLSv1.3\n", 12,
     "'min_version' belongs in [tls], not [server]", false},
    {"route key in global", GOOD "[queue]\nhosts = a.example.net\n", 12,
     "'hosts' belongs in [route NAME], not [queue]", false},
    /* duplicates */
    {"duplicate key", GOOD "[server]\nhostname = other.example.com\n", 12,
     "duplicate directive 'hostname' (first set at line 2", false},
    {"duplicate route key", GOOD "type = smtp\n", 11,
     "duplicate directive 'type' (first set at line 9", false},
    {"duplicate list item", GOOD "[domains]\naccepted_domains = Example.COM\n", 12,
     "'accepted_domains' lists \"example.com\" more than once", true},
    /* types */
    {"bad bool", GOOD "[queue]\nfsync = maybe\n", 12,
     "bad value for 'fsync': \"maybe\" (expected yes/no, true/false, on/off or 1/0)", false},
    {"bad int", GOOD "[limits]\nmax_errors = ten\n", 12,
     "bad value for 'max_errors': \"ten\" (expected an integer)", false},
    {"int range", GOOD "[limits]\nmax_errors = 5000\n", 12,
     "'max_errors' = 5000 is out of range (1..1000)", false},
    {"bad size", GOOD "[limits]\nmessage_size_limit = 35X\n", 12,
     "expected bytes, or a number with K, M or G", false},
    {"size range", GOOD "[limits]\nmessage_size_limit = 3G\n", 12,
     "'message_size_limit' = 3G is out of range (1K..2G)", false},
    {"bad duration", GOOD "[limits]\ncommand_timeout = 5 minutes\n", 12,
     "expected seconds, or a number with s, m, h or d", false},
    {"duration range", GOOD "[dns]\ntimeout = 2m\n", 12, "'timeout' = 2m is out of range (1s..1m)",
     false},
    {"bad double", GOOD "[spam]\nthreshold = high\n", 12, "\"high\" (expected a number", false},
    {"double range", GOOD "[spam]\nweight_dnsbl = 1000\n", 12, "out of range (-100..100)", false},
    {"bad enum", GOOD "[auth]\ndmarc_enforcement = rejct\n", 12,
     "expected one of: reject, quarantine, monitor; did you mean 'reject'?", false},
    {"bad string enum", GOOD "[tls]\nmin_version = SSLv3\n", 12,
     "expected one of: TLSv1.2, TLSv1.3", false},
    {"bad duration item", GOOD "[queue]\nretry_schedule = 1m, 5x, 0\n", 12,
     "bad value for 'retry_schedule': \"5x\"", false},
    {"duration item range", GOOD "[queue]\nretry_schedule = 1m, 5x, 0\n", 12,
     "'retry_schedule' = 0 is out of range (1s..7d)", false},
    {"bad header name", GOOD "[spam]\nflag_header = X Spam\n", 12,
     "not allowed in a header field name", false},
    {"bad forwarder", GOOD "[dns]\nforwarders = 127.0.0.1@99999\n", 12, "bad port", false},
    {"forwarder name", GOOD "[dns]\nforwarders = dns.example.net\n", 12,
     "is not a numeric IPv4/IPv6 address", false},
    {"bad account", GOOD "[server]\nuser = -root\n", 12, "must not start with '-'", false},
    /* CIDR */
    {"cidr host bits", GOOD "[access]\ndeny = 10.0.0.1/8, 192.0.2.0/33\n", 12,
     "bad CIDR in 'deny': host bits set in \"10.0.0.1/8\" (did you mean 10.0.0.0/8?)", false},
    {"cidr prefix", GOOD "[access]\ndeny = 10.0.0.1/8, 192.0.2.0/33\n", 12,
     "bad CIDR in 'deny': prefix length 33", false},
    {"cidr garbage", GOOD "[auth]\ndmarc_exempt_clients = example.com\n", 12,
     "bad CIDR in 'dmarc_exempt_clients'", false},
    /* domains and addresses */
    {"bad domain", GOOD "[domains]\naccepted_domains = bad_domain.com\n", 12,
     "character '_' not allowed in a domain name", false},
    {"ip as domain", GOOD "[spam]\ndnsbl_zones = 192.0.2.1\n", 12, "looks like an IP address",
     false},
    {"non-ascii domain",
     GOOD "[domains]\naccepted_domains = b\xc3\xbc"
          "cher.example\n",
     12, "A-label", false},
    {"bad address", GOOD "[domains]\naccepted_recipients = alice\n", 12, "missing '@'", false},
    {"bad local part", GOOD "[domains]\naccepted_recipients = a..b@example.com\n", 12,
     "\"..\" in the local part", false},
    {"bad bounce sender", GOOD "[queue]\nbounce_sender = postmaster\n", 12, "missing '@'", false},
    {"recipient other domain", GOOD "[domains]\naccepted_recipients = x@example.net\n", 12,
     "addresses at example.net, which is not in accepted_domains", true},
    {"primary domain not accepted", GOOD "[domains]\nprimary_domain = example.net\n", 12,
     "primary_domain example.net is not in accepted_domains", false},
    /* hostname */
    {"hostname not fqdn", "[server]\nhostname = localhost\n", 2,
     "not a fully-qualified domain name", false},
    {"hostname hyphen", "[server]\nhostname = -mx.example.com\n", 2, "starts or ends with '-'",
     false},
    {"hostname underscore", "[server]\nhostname = mx_1.example.com\n", 2,
     "character '_' not allowed", false},
    /* listeners */
    {"duplicate listener", GOOD "[server]\nlisten = 127.0.0.1:2525\n", 12,
     "duplicate listener 127.0.0.1:2525 (first at line 3)", false},
    {"duplicate v6 listener", GOOD "[server]\nlisten = [::1]:25, [::1]:25\n", 12,
     "duplicate listener [::1]:25 (first at line 12)", false},
    {"wildcard overlap", GOOD "[server]\nlisten = 0.0.0.0:2525\n", 12,
     "listener 0.0.0.0 port 2525 overlaps listener 127.0.0.1 (line 3)", false},
    /* listeners of other services, TLS policy (config-start.c) */
    {"metrics on smtp port", GOOD "[metrics]\nlisten = 127.0.0.1:2525\n", 12,
     "[metrics] listen 127.0.0.1:2525 uses the same port as [server] listen at line 3", false},
    {"metrics wildcard on smtp port", GOOD "[metrics]\nlisten = 0.0.0.0:2525\n", 12,
     "uses the same port as [server] listen at line 3", false},
    {"mta-sts on metrics port", GOOD "[tls]\ncert_file = @DIR@/cert.pem\nkey_file = @DIR@/cert.pem\n"
     "[metrics]\nlisten = 127.0.0.1:9125\n[mta_sts]\nlisten = 127.0.0.1:9125\n", 17,
     "[mta_sts] listen 127.0.0.1:9125 uses the same port as [metrics] listen at line 15", false},
    {"mta-sts listen without cert", GOOD "[mta_sts]\nlisten = 127.0.0.1:8443\n", 12,
     "[mta_sts] listen serves the policy over HTTPS and needs the [tls] certificate", false},
    {"mta-sts enforce without starttls", GOOD "[mta_sts]\nmode = enforce\n", 12,
     "MTA-STS mode = enforce but STARTTLS is not offered", false},
    {"verify ip literal", GOOD "[route b]\ndomains = example.com\nhosts = 192.0.2.7:25\n", 13,
     "route 'b': tls = verify (the default) with IP-literal host 192.0.2.7", true},
    {"verify ip literal explicit",
     GOOD "[route b]\ndomains = example.com\nhosts = [2001:db8::1]:25\ntls = verify\n", 13,
     "route 'b': tls = verify with IP-literal host 2001:db8::1", true},
    {"listen name", GOOD "[server]\nlisten = localhost:25\n", 12,
     "\"localhost\" is not a numeric address", false},
    {"listen no port", GOOD "[server]\nlisten = 127.0.0.2\n", 12, "missing port", false},
    {"listen bad port", GOOD "[server]\nlisten = 127.0.0.2:70000\n", 12, "bad port", false},
    {"listen v6 no brackets", GOOD "[server]\nlisten = ::1:25\n", 12, "missing port", false},
    {"listen v6 continuation",
     GOOD "[server]\nlisten = 127.0.0.2:25,\n  [::1]:2525\n"
          "  [::1]:2525\n  [server]\nlisten = 127.0.0.2:25\n",
     14, "duplicate listener [::1]:2525 (first at line 13)", false},
    {"indented header", GOOD "[server]\nlisten = 127.0.0.2:25\n  [server]\nlisten = 127.0.0.2:25\n",
     14, "duplicate listener 127.0.0.2:25 (first at line 12)", false},
    /* files */
    {"missing cert", GOOD "[tls]\ncert_file = @DIR@/missing.pem\nkey_file = @DIR@/key.pem\n", 12,
     "cannot read cert_file \"", false},
    {"missing key", GOOD "[tls]\ncert_file = @DIR@/cert.pem\nkey_file = @DIR@/nokey.pem\n", 13,
     "No such file or directory", false},
    {"cert is dir", GOOD "[tls]\ncert_file = @DIR@\nkey_file = @DIR@/key.pem\n", 12,
     "is a directory, not a file", false},
    {"cert without key", GOOD "[tls]\ncert_file = @DIR@/cert.pem\n", 12,
     "cert_file is set but key_file is not", false},
    {"key without cert", GOOD "[tls]\nkey_file = @DIR@/key.pem\n", 12,
     "key_file is set but cert_file is not", false},
    {"missing ca",
     GOOD "[route a]\ndomains = example.com\nhosts = h.example.net\n"
          "tls_ca_file = @DIR@/nope.pem\n",
     14, "cannot read tls_ca_file", false},
    {"missing psl", GOOD "[auth]\npsl_file = @DIR@/psl.dat\n", 12, "cannot read psl_file", false},
    {"missing trust anchor", GOOD "[dns]\ntrust_anchor_file = @DIR@/root.key\n", 12,
     "cannot read trust_anchor_file", false},
    {"dir is file",
     GOOD "[route d2]\ndomains = example.com\ntype = directory\n"
          "directory = @DIR@/cert.pem\n",
     14, "exists and is not a directory", false},
    {"recipients file line", GOOD "[domains]\nrecipients_file = @DIR@/recipients\n", 3,
     "bad address \"not-an-address\": missing '@'", false},
    /* whole-file problems */
    {"no accepted domains", "[server]\nhostname = mx.example.com\nlisten = 127.0.0.1:25\n", 0,
     "no accepted_domains", false},
    {"no listen", "[server]\nhostname = mx.example.com\n", 0, "no listen address", false},
    {"no route", BASE, 0, "no default route: add a [route NAME] section", false},
    {"only domain routes", BASE "[route a]\ndomains = example.com\nhosts = h.example.net\n", 0,
     "no default route: one [route NAME] section must have no domains", false},
    /* routes */
    {"two default routes", GOOD "[route other]\ntype = directory\ndirectory = @DIR@/x\n", 11,
     "two default routes: 'other' and 'default' (line 8)", false},
    {"domain claimed twice",
     GOOD "[route a]\ndomains = example.com\nhosts = 127.0.0.1\n"
          "[route b]\ndomains = EXAMPLE.com\nhosts = 127.0.0.1\n",
     15, "domain example.com is claimed by route 'b' and by route 'a' (line 12)", false},
    /* the outbound route (DSNs): never through an inbound downstream */
    {"outbound to inbound downstream",
     GOOD "[route ses]\ndomains = example.com\nhosts = mail.example.net:25\n"
          "[route out]\nrole = outbound\ntype = smtp\nhosts = relay.example.net, "
          "MAIL.example.net.\n",
     17, "route 'out' (role = outbound) relays through MAIL.example.net., the downstream of "
         "inbound route 'ses' (line 13)", false},
    {"outbound to SES inbound",
     GOOD "[route out]\nrole = outbound\ntype = smtp\n"
          "hosts = inbound-smtp.eu-west-1.amazonaws.com\n",
     14, "an SES inbound endpoint that refuses mail for other domains", false},
    {"outbound directory",
     GOOD "[route x]\ndomains = example.com\nhosts = 127.0.0.1:2526\ntls = none\n"
          "[route out]\nrole = outbound\ntype = directory\ndirectory = @DIR@/b\n",
     17, "route 'out' (role = outbound) has type directory: bounces would stay in", false},
    {"outbound directory offline", GOOD "[route out]\nrole = outbound\ntype = directory\n"
                                        "directory = @DIR@/b\n",
     13, "route 'out' (role = outbound) has type directory", true},
    {"outbound with domains", GOOD "[route out]\nrole = outbound\ndomains = example.com\n", 13,
     "route 'out' has role = outbound and domains", false},
    {"two outbound routes",
     GOOD "[route o1]\nrole = outbound\n[route o2]\nrole = outbound\n", 14,
     "two outbound routes: 'o2' and 'o1' (line 11)", false},
    {"inbound route named outbound", GOOD "[route outbound]\ndomains = example.com\nhosts = h.example.net\n",
     11, "route name 'outbound' is kept for the route of what mxgate itself sends", false},
    {"dane needs mx", GOOD "[route a]\ndomains = example.com\nhosts = h.example.net\ntls = dane\n",
     14, "route 'a': tls = dane needs type = mx", false},
    {"auth over tls may",
     GOOD "[route a]\ndomains = example.com\nhosts = h.example.net\ntls = may\n"
          "auth_user = u\nauth_password = p\n",
     14, "would send SMTP AUTH credentials in clear text with tls = may", false},
    {"smtp without hosts", GOOD "[route a]\ndomains = example.com\n", 11,
     "route 'a' has type smtp but no hosts", false},
    {"directory without directory", GOOD "[route a]\ndomains = example.com\ntype = directory\n", 11,
     "route 'a' has type directory but no directory", false},
    {"bad host", GOOD "[route a]\ndomains = example.com\nhosts = smtp.example.net:0\n", 13,
     "bad value for 'hosts': bad port", false},
    {"tls none remote",
     GOOD "[route a]\ndomains = example.com\nhosts = smtp.example.net\n"
          "tls = none\n",
     14, "route 'a' delivers to smtp.example.net without TLS (tls = none)", true},
    {"tls none mx", GOOD "[route a]\ndomains = example.com\ntype = mx\ntls = none\n", 14,
     "delivers to MX hosts without TLS", true},
    {"auth with tls none",
     GOOD "[route a]\ndomains = example.com\nhosts = 127.0.0.1:2526\n"
          "tls = none\nauth_user = u\nauth_password = p\n",
     14, "route 'a' would send SMTP AUTH credentials in clear text with tls = none", false},
    {"auth_file with tls none",
     GOOD "[route a]\ndomains = example.com\nhosts = ::1\n"
          "auth_file = @DIR@/auth\ntls = none\n",
     15, "in clear text with tls = none", false},
    {"user without password",
     GOOD "[route a]\ndomains = example.com\nhosts = h.example.net\n"
          "auth_user = u\n",
     14, "route 'a': auth_user is set without auth_password", false},
    {"auth_file and user",
     GOOD "[route a]\ndomains = example.com\nhosts = h.example.net\n"
          "auth_user = u\nauth_password = p\nauth_file = @DIR@/auth\n",
     16, "auth_file and auth_user/auth_password are exclusive", false},
    {"auth_file format",
     GOOD "[route a]\ndomains = example.com\nhosts = h.example.net\n"
          "auth_file = @DIR@/auth-bad\n",
     14, "expected \"user:password\" on the first line", false},
    {"auth_file mode",
     GOOD "[route a]\ndomains = example.com\nhosts = h.example.net\n"
          "auth_file = @DIR@/auth-loose\n",
     14, "is readable by group or others (chmod 600)", true},
    {"route domain not accepted", GOOD "[route a]\ndomains = example.org\nhosts = h.example.net\n",
     12, "route 'a': example.org is not in accepted_domains", true},
    {"route may take every slot",
     GOOD "[route a]\ndomains = example.com\nhosts = 127.0.0.1\nmax_deliveries = 20\n", 14,
     "route 'a' may take all 20 [queue] max_deliveries slots (its limit is 20)", true},
    {"route may take every slot (max_connections)",
     GOOD "[queue]\nmax_deliveries = 8\n[route a]\ndomains = example.com\nhosts = 127.0.0.1\n", 13,
     "route 'a' may take all 8 [queue] max_deliveries slots (its limit is 10)", true},
    {"hosts ignored", GOOD "[route a]\ndomains = example.com\ntype = mx\nhosts = h.example.net\n",
     14, "hosts is ignored with type mx", true},
    /* cross-field sanity */
    {"delay warning", GOOD "[queue]\nmax_lifetime = 1h\ndelay_warning_time = 4h\n", 13,
     "no delay warning will ever be sent", true},
    {"retry shrinks", GOOD "[queue]\nretry_schedule = 5m, 1m\n", 12,
     "retry_schedule gets shorter at step 2", true},
    {"per ip above total", GOOD "[limits]\nmax_connections = 10\nmax_connections_per_ip = 20\n", 13,
     "max_connections_per_ip (20) is above max_connections (10)", true},
    {"dmarc alone", GOOD "[auth]\nspf = no\ndkim = off\ndmarc = yes\n", 14,
     "every message will fail DMARC", true},
    {"slow domain holds every worker", GOOD "[dns]\nslow_domain_limit = 4\n", 12,
     "slow_domain_limit (4) does not keep a policy worker free", true},
    {"slow domain unlimited", GOOD "[dns]\nslow_domain_limit = 0\n[auth]\npolicy_workers = 8\n", 12,
     "can hold all 8 workers", true},
    /* a virus delivered with only a header: allowed, said out loud (issue 13) */
    {"virus delivered", GOOD "[clamav]\nsocket = 127.0.0.1:3310\nvirus_action = deliver\n", 13,
     "virus_action = deliver hands infected messages to the mailboxes", true},
    /* the dashboard's token never crosses a network in clear (issue 15) */
    {"admin plain http beyond loopback",
     GOOD "[admin]\nlisten = 127.0.0.1:8026\nlisten = 10.1.2.3:8026\ntls = no\n", 13,
     "plain HTTP (tls = no) on 10.1.2.3:8026, which is not loopback", false},
    {"admin https without certificate", GOOD "[admin]\nlisten = [2001:db8::1]:8026\n", 12,
     "the dashboard on [2001:db8::1]:8026 (not loopback) is served over HTTPS, which needs "
     "[tls] cert_file and key_file",
     false},
    {"admin tls yes without certificate", GOOD "[admin]\nlisten = 127.0.0.1:8026\ntls = yes\n",
     13, "tls = yes needs the gateway's certificate", false},
};

/* test_diag_cases - each case yields its diagnostic at its line. */
static void test_diag_cases(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(diag_cases) / sizeof(diag_cases[0]); i++) {
		const struct diag_case *c = &diag_cases[i];
		struct config_diags d = {0};
		struct config *cfg = load(c->text, &d);
		const struct config_diag *hit = find_diag(&d, c->sub);
		bool ok = hit != NULL && hit->line == c->line && hit->warning == c->warning &&
		          (c->warning ? cfg != NULL : cfg == NULL);

		if (!ok) {
			print_error("case \"%s\": expected %s at line %d: %s\n", c->name,
			            c->warning ? "warning" : "error", c->line, c->sub);
			print_error("got config %s and:\n", cfg != NULL ? "loaded" : "NULL");
			config_diags_print(&d, stderr);
		}
		if (hit != NULL && strcmp(c->name, "recipients file line") != 0)
			assert_string_equal(hit->file, "t.conf");
		config_free(cfg);
		config_diags_free(&d);
		assert_true(ok);
	}
}

/* test_one_cause_one_error - a directive that was set but rejected is not
 * reported again as missing (listen, accepted_domains, a route's hosts or
 * directory), nor does it draw follow-up warnings. */
static void test_one_cause_one_error(void **state)
{
	struct config_diags d = {0};
	struct config *cfg;

	(void)state;
	cfg = load("[server]\nhostname = mx.example.com\nlisten = localhost:25\n"
	           "[domains]\naccepted_domains = bad_domain.com\n"
	           "[queue]\ndirectory = @DIR@/queue\n"
	           "[route default]\ntype = smtp\nhosts = smtp.example.net:0\ntls = encrypt\n"
	           "[route b]\ndomains = example.com\ntype = directory\ndirectory =\n",
	           &d);
	assert_null(cfg);
	if (d.n != 4)
		config_diags_print(&d, stderr);
	assert_int_equal(d.n, 4);
	assert_int_equal(config_diags_errors(&d), 4);
	assert_int_equal(find_diag(&d, "not a numeric address")->line, 3);
	assert_int_equal(find_diag(&d, "character '_'")->line, 5);
	assert_int_equal(find_diag(&d, "'hosts'")->line, 10);
	assert_int_equal(find_diag(&d, "empty value for 'directory'")->line, 15);
	config_diags_free(&d);
}

/* test_start_checks_quiet - the start-up checks stay quiet on what is
 * fine, and one cause gives one message. */
static void test_start_checks_quiet(void **state)
{
	static const char *const fine[] = {
	    GOOD "[metrics]\nlisten = 127.0.0.1:9125\n[mta_sts]\nmode = testing\n",
	    GOOD "[metrics]\nlisten = [::1]:2525\n", /* other family, same port */
	    GOOD "[route b]\ndomains = example.com\nhosts = 192.0.2.7:25\ntls = encrypt\n"
	         "verify_recipients = yes\n",
	    GOOD "[route b]\ndomains = example.com\nhosts = smtp.example.net:25\n"
	         "verify_recipients = yes\n",
	    GOOD "[tls]\ncert_file = @DIR@/cert.pem\nkey_file = @DIR@/cert.pem\n"
	         "[mta_sts]\nmode = enforce\nlisten = 127.0.0.1:8443\n",
	};
	struct config_diags d = {0};
	struct config *cfg;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(fine) / sizeof(fine[0]); i++) {
		cfg = load(fine[i], &d);
		if (cfg == NULL || d.n != 0) {
			print_error("case %zu:\n", i);
			config_diags_print(&d, stderr);
		}
		assert_non_null(cfg);
		assert_int_equal(d.n, 0);
		config_free(cfg);
		config_diags_free(&d);
	}
	/* enforce and an HTTPS listener, no certificate: one error, not two */
	cfg = load(GOOD "[mta_sts]\nmode = enforce\nlisten = 127.0.0.1:8443\n", &d);
	assert_null(cfg);
	assert_int_equal(d.n, 1);
	assert_int_equal(d.v[0].line, 12);
	config_diags_free(&d);
}

/* test_recipients_file_name - its diagnostics name the recipients file. */
static void test_recipients_file_name(void **state)
{
	struct config_diags d = {0};
	char path[512];
	struct config *cfg;
	const struct config_diag *hit;

	(void)state;
	cfg = load(GOOD "[domains]\nrecipients_file = @DIR@/recipients\n", &d);
	hit = find_diag(&d, "not-an-address");
	assert_null(cfg);
	assert_non_null(hit);
	snprintf(path, sizeof(path), "%s/recipients", tmpdir);
	assert_string_equal(hit->file, path);
	assert_int_equal(hit->line, 3);
	config_diags_free(&d);
}

/* test_many_errors - every problem of one file is reported, in order. */
static void test_many_errors(void **state)
{
	struct config_diags d = {0};
	struct config *cfg;

	(void)state;
	cfg = load("[server]\nhostname = localhost\nlisten = 127.0.0.1:2525\n"
	           "listen = 127.0.0.1:2525\n[limits]\nmax_errors = 0\nmax_recipents = 1\n"
	           "[tls]\ncert_file = @DIR@/cert.pem\n[access]\ndeny = 10.0.0.1/8\n",
	           &d);
	assert_null(cfg);
	assert_true(config_diags_errors(&d) >= 8);
	assert_int_equal(find_diag(&d, "fully-qualified")->line, 2);
	assert_int_equal(find_diag(&d, "duplicate listener")->line, 4);
	assert_int_equal(find_diag(&d, "out of range")->line, 6);
	assert_int_equal(find_diag(&d, "did you mean 'max_recipients'")->line, 7);
	assert_int_equal(find_diag(&d, "key_file is not")->line, 9);
	assert_int_equal(find_diag(&d, "bad CIDR")->line, 11);
	assert_int_equal(find_diag(&d, "no accepted_domains")->line, 0);
	assert_int_equal(find_diag(&d, "no default route")->line, 0);
	assert_null(find_diag(&d, "this machine's name")); /* hostname was set, if badly */
	config_diags_free(&d);
}

/* test_print - the "FILE:LINE: [warning: ]message" format. */
static void test_print(void **state)
{
	struct config_diags d = {0};
	char buf[4096] = "";
	FILE *f;

	(void)state;
	config_free(load(GOOD "[queue]\nfsync = maybe\nretry_schedule = 5m, 1m\n", &d));
	f = fmemopen(buf, sizeof(buf) - 1, "w");
	config_diags_print(&d, f);
	fclose(f);
	assert_non_null(strstr(buf, "t.conf:12: bad value for 'fsync'"));
	assert_non_null(strstr(buf, "t.conf:13: warning: retry_schedule gets shorter"));
	assert_int_equal(config_diags_errors(&d), 1);
	config_diags_free(&d);
	config_diags_free(&d);
	config_diags_free(NULL);
	config_free(NULL);
}

/* ------------------------------------------------------------ files: long lines, NUL */

/* load_bytes - write bytes to a file and config_load() it. */
static struct config *load_bytes(const char *bytes, size_t len, struct config_diags *d)
{
	char path[512];
	FILE *f;
	struct config *cfg;

	snprintf(path, sizeof(path), "%s/raw.conf", tmpdir);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(bytes, 1, len, f), len);
	fclose(f);
	cfg = config_load(path, d);
	return cfg;
}

/* test_line_limits - over-long lines and NUL bytes, and the lines after. */
static void test_line_limits(void **state)
{
	struct config_diags d = {0};
	struct util_buf b;
	struct config *cfg;
	char *good = expand(GOOD);

	(void)state;
	util_buf_init(&b);
	util_buf_adds(&b, good);
	util_buf_adds(&b, "[server]\nbanner_text = ");
	for (int i = 0; i < CONFIG_LINE_MAX; i++)
		util_buf_adds(&b, "x");
	util_buf_adds(&b, "\nbanner = y\n[limits]\nmax_errors = 5\r\n");
	util_buf_add(&b, "max_recipients = 1\0\n", 20);
	util_buf_adds(&b, "[spam]\nthreshold = x\n");
	cfg = load_bytes(b.data, b.len, &d);
	assert_null(cfg);
	assert_int_equal(find_diag(&d, "line too long")->line, 12);
	assert_non_null(find_diag(&d, "(4110 characters; at most 4096)"));
	assert_int_equal(find_diag(&d, "unknown directive 'banner'")->line, 13);
	assert_int_equal(find_diag(&d, "NUL byte")->line, 16);
	assert_int_equal(find_diag(&d, "'threshold'")->line, 18);
	assert_int_equal(config_diags_errors(&d), 4);
	config_diags_free(&d);

	/* A line of exactly the limit is fine, as is a missing final newline
	 * and a UTF-8 BOM. */
	util_buf_reset(&b);
	util_buf_adds(&b, "\xEF\xBB\xBF");
	util_buf_adds(&b, good);
	util_buf_adds(&b, "[spam]\nflag_header = ");
	for (int i = 0; i < CONFIG_LINE_MAX - 14; i++)
		util_buf_adds(&b, "X");
	util_buf_adds(&b, "\n[limits]\nmax_errors = 7");
	cfg = load_bytes(b.data, b.len, &d);
	if (cfg == NULL)
		config_diags_print(&d, stderr);
	/* the header validator caps names at 76 characters */
	assert_null(cfg);
	assert_non_null(find_diag(&d, "longer than 76 characters"));
	assert_null(find_diag(&d, "line too long"));
	config_diags_free(&d);

	util_buf_reset(&b);
	util_buf_adds(&b, "\xEF\xBB\xBF");
	util_buf_adds(&b, good);
	util_buf_adds(&b, "[tls]\nciphers = ");
	for (int i = 0; i < CONFIG_LINE_MAX - 10; i++)
		util_buf_adds(&b, "A");
	util_buf_adds(&b, "\n[limits]\nmax_errors = 7");
	cfg = load_bytes(b.data, b.len, &d);
	assert_non_null(cfg);
	assert_int_equal(d.n, 0);
	assert_int_equal(strlen(cfg->tls_ciphers), CONFIG_LINE_MAX - 10);
	assert_int_equal(cfg->max_errors, 7);
	config_free(cfg);
	config_diags_free(&d);

	assert_null(config_load("/nonexistent/mxgate.conf", &d));
	assert_int_equal(d.v[0].line, 0);
	assert_non_null(strstr(d.v[0].msg, "cannot read the configuration"));
	config_diags_free(&d);
	util_buf_free(&b);
	free(good);
}

/* ------------------------------------------------------------ tables and docs */

/* test_tables_documented - every section and directive has a doc string,
 * names are unique, defaults parse, ranges are sane. */
static void test_tables_documented(void **state)
{
	size_t i, j, k;

	(void)state;
	for (i = 0; i < config_nsections; i++) {
		const struct config_section *s = &config_sections[i];

		if (s->doc == NULL || s->doc[0] == '\0')
			fail_msg("section [%s] has no doc string", s->name);
		for (j = 0; j < s->ndirs; j++) {
			const struct config_directive *d = &s->dirs[j];

			if (d->doc == NULL || d->doc[0] == '\0')
				fail_msg("[%s] %s has no doc string", s->name, d->name);
			if (strchr(d->doc, '\n') != NULL)
				fail_msg("[%s] %s: doc must be one line", s->name, d->name);
			if (d->min > d->max)
				fail_msg("[%s] %s: min > max", s->name, d->name);
			if ((d->type == CONFIG_T_ENUM) != (d->enums != NULL) &&
			    d->type != CONFIG_T_STRING)
				fail_msg("[%s] %s: enum without names", s->name, d->name);
			for (k = 0; k < j; k++) {
				if (strcmp(s->dirs[k].name, d->name) == 0)
					fail_msg("[%s] %s listed twice", s->name, d->name);
			}
		}
	}
}

/* test_defaults_parse - each table default is accepted by its own type. */
static void test_defaults_parse(void **state)
{
	size_t i, j;

	(void)state;
	for (i = 0; i < config_nsections; i++) {
		const struct config_section *s = &config_sections[i];

		for (j = 0; j < s->ndirs; j++) {
			const struct config_directive *d = &s->dirs[j];
			struct config_diags diags = {0};
			struct config_loc loc = {&diags, "table", 0};
			union {
				struct config c;
				struct config_route r;
			} u;

			if (d->def == NULL)
				continue;
			memset(&u, 0, sizeof(u));
			if (config_value_parse(d, &u, d->def, &loc) != 0 || diags.n != 0)
				fail_msg("[%s] %s: default \"%s\" does not parse", s->name, d->name,
				         d->def);
			config_value_free(d, &u);
			config_diags_free(&diags);
		}
	}
}

/* test_reference_up_to_date - docs/config-reference.md matches the tables. */
static void test_reference_up_to_date(void **state)
{
	char path[1024], *want = NULL, *have;
	size_t len = 0;
	FILE *f;

	(void)state;
	f = open_memstream(&want, &len);
	config_reference_markdown(f);
	fclose(f);
	source_path(path, sizeof(path), "docs/config-reference.md");
	if (getenv("MXGATE_UPDATE_DOCS") != NULL) {
		f = fopen(path, "w");
		assert_non_null(f);
		fputs(want, f);
		fclose(f);
	}
	have = read_all(path);
	if (have == NULL)
		fail_msg("%s is missing; run with MXGATE_UPDATE_DOCS=1 to create it", path);
	if (strcmp(have, want) != 0)
		fail_msg("%s is stale: the directive tables changed; regenerate it with "
		         "MXGATE_UPDATE_DOCS=1 ctest -R unit/test_config",
		         path);
	free(have);
	free(want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_start_checks_quiet),
	    cmocka_unit_test(test_one_cause_one_error),
	    cmocka_unit_test(test_diag_cases),     cmocka_unit_test(test_recipients_file_name),
	    cmocka_unit_test(test_many_errors),    cmocka_unit_test(test_print),
	    cmocka_unit_test(test_line_limits),    cmocka_unit_test(test_tables_documented),
	    cmocka_unit_test(test_defaults_parse), cmocka_unit_test(test_reference_up_to_date),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
