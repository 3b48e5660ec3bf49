/*
 * policy-test-helpers.h - the config the policy unit tests start from,
 * loaded through the config table (config_load_string), so every default
 * (spam weights, header names, DKIM limits, ...) is the documented one and
 * lives in one place: config/config-table.c.
 *
 * Ownership: policy_test_config() returns a config the caller frees with
 * config_free(); tests may change its scalar fields.
 *
 * Diagnostics: a config that does not load fails the test with the
 * FILE:LINE messages of the loader.
 */
#ifndef MX_POLICY_TEST_HELPERS_H
#define MX_POLICY_TEST_HELPERS_H

#include <stdio.h>
#include <stdlib.h>

#include "config.h"

/* policy_test_config - a minimal valid file for mx.example.test, plus the
 * sections in extra (may be ""), loaded with every other directive at its
 * default. */
static struct config *policy_test_config(const char *extra)
{
	static const char base[] = "[server]\n"
	                           "hostname = mx.example.test\n"
	                           "listen = 127.0.0.1:2525\n"
	                           "[domains]\n"
	                           "accepted_domains = example.test\n"
	                           "[queue]\n"
	                           "directory = /nonexistent/mxgate-policy-test/queue\n"
	                           "[route default]\n"
	                           "type = directory\n"
	                           "directory = /nonexistent/mxgate-policy-test/mailbox\n";
	struct config_diags d = {NULL, 0};
	struct config *cfg;
	size_t n = sizeof(base) + strlen(extra) + 1;
	char *text = malloc(n);

	assert_non_null(text);
	snprintf(text, n, "%s%s", base, extra);
	cfg = config_load_string(text, "policy-test.conf", &d);
	if (cfg == NULL) {
		config_diags_print(&d, stderr);
		fail_msg("the policy tests' config does not load");
	}
	config_diags_free(&d);
	free(text);
	return cfg;
}

#endif
