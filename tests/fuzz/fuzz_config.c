/*
 * fuzz_config.c - libFuzzer target: the config parser and validator
 * (config_load_string) with the dump of every config it accepts and the
 * reload comparison against the embedded default, and the partial read of
 * the control socket path the CLI falls back to (config-peek.c).  A config is written by
 * an administrator, not an attacker, but a parser that crashes on a typo is
 * a daemon that does not come back after a reload.
 *
 * Invariants besides memory and UB safety: a NULL result comes with at
 * least one error; an accepted config dumps, and every diagnostic has a
 * file name and a message.
 */
#include <stdbool.h>
#include <string.h>

#include "config.h"
#include "fuzz-common.h"

static struct config *base_cfg;
static FILE *devnull;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct config_diags d = {0};
	base_cfg = config_load_string(config_default_text, "(default)", &d);
	config_diags_free(&d);
	if (!base_cfg)
		abort();
	devnull = fopen("/dev/null", "w");
	if (!devnull)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1 << 16)
		return 0;
	char *text = fuzz_strdup(data, size);
	struct config_diags d = {0};
	struct config *cfg = config_load_string(text, "fuzz.conf", &d);
	/* the CLI's partial read of a broken file (config-peek.c) */
	char sock[256];
	if (config_peek_control_socket_string(text, sock, sizeof(sock)) == 0)
		FUZZ_CHECK(strlen(sock) < sizeof(sock));
	for (size_t i = 0; i < d.n; i++)
		FUZZ_CHECK(d.v[i].file != NULL && d.v[i].msg != NULL);
	if (!cfg) {
		FUZZ_CHECK(config_diags_errors(&d) > 0);
	} else {
		config_dump(cfg, devnull);
		struct config_diags r = {0};
		(void)config_reload_check(base_cfg, cfg, &r);
		config_diags_free(&r);
		if (cfg->accepted_domains.n > 0) {
			(void)config_is_accepted_rcpt(cfg, "user@example.test");
			(void)config_route_for(cfg, cfg->accepted_domains.v[0]);
		}
	}
	config_diags_print(&d, devnull);
	config_diags_free(&d);
	config_free(cfg);
	free(text);
	return 0;
}
