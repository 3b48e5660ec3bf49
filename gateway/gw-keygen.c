/*
 * gw-keygen.c - `mxgate keygen [--algorithm A] [--bits N] [--group G] FILE`:
 * make the private key of mxgate's ARC seal (RFC 8617; any DKIM-style
 * signing key works the same) and print the public half as the DKIM key
 * record to publish at SELECTOR._domainkey.DOMAIN (RFC 6376 3.6.1).
 *
 *   --algorithm rsa-sha256 (default, RSA of --bits, 2048 by default; the
 *               only algorithm RFC 8617 registers) | ed25519-sha256 (RFC 8463)
 *   --group G   the file is root:G (or the caller's user:G) mode 0640, so a
 *               daemon that drops to a service account in G can read it;
 *               without it the file is mode 0600
 *
 * It needs no config: the seal's key_file must exist before check-config
 * accepts [arc] seal = yes, so the key comes first.  An existing FILE is
 * never replaced (a key in use would stop verifying until DNS caught up):
 * exit 1 with a hint to rotate through a new selector instead.
 *
 * Ownership: nothing outlives the call.  Diagnostics on stderr; the record
 * alone on stdout, so `mxgate keygen F > record.txt` keeps just it.  Exit
 * codes: 0 made, 1 failure (exists, cannot write), 2 usage.
 */
#include "gw.h"

#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "policy-arc.h"

static int keygen_usage(void)
{
	fprintf(stderr, "usage: mxgate keygen [--algorithm rsa-sha256|ed25519-sha256] [--bits N] "
	                "[--group GROUP] FILE\n");
	return 2;
}

/* gw_cmd_keygen - see gw.h (argv[0] = "keygen"). */
int gw_cmd_keygen(int argc, char **argv)
{
	const char *path = NULL, *group = NULL;
	int algorithm = 0, bits = 2048;
	char err[512];

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--algorithm") == 0 && i + 1 < argc) {
			a = argv[++i];
			if (strcmp(a, "rsa-sha256") == 0 || strcmp(a, "rsa") == 0) {
				algorithm = 0;
			} else if (strcmp(a, "ed25519-sha256") == 0 || strcmp(a, "ed25519") == 0) {
				algorithm = 1;
			} else {
				fprintf(stderr, "mxgate keygen: unknown algorithm '%s' (rsa-sha256 or "
				                "ed25519-sha256)\n", a);
				return 2;
			}
		} else if (strcmp(a, "--bits") == 0 && i + 1 < argc) {
			char *end;
			long b = strtol(argv[++i], &end, 10);
			/* RFC 8301 3.2: at least 1024, SHOULD 2048; above 4096 a TXT
			 * record no longer fits most DNS providers' limits */
			if (*end || b < 1024 || b > 4096) {
				fprintf(stderr, "mxgate keygen: --bits must be 1024..4096 "
				                "(RFC 8301: 2048 recommended)\n");
				return 2;
			}
			bits = (int)b;
		} else if (strcmp(a, "--group") == 0 && i + 1 < argc) {
			group = argv[++i];
		} else if (a[0] == '-' || path != NULL) {
			return keygen_usage();
		} else {
			path = a;
		}
	}
	if (path == NULL)
		return keygen_usage();
	struct group *gr = NULL;
	if (group != NULL && (gr = getgrnam(group)) == NULL) {
		fprintf(stderr, "mxgate keygen: no group '%s'\n", group);
		return 2;
	}
	char *rec = NULL;
	int made = policy_key_create(path, algorithm, bits, gr ? 0640 : 0600,
	                             gr ? gr->gr_gid : (gid_t)-1, &rec, err, sizeof(err));
	if (made < 0) {
		fprintf(stderr, "mxgate keygen: %s\n", err);
		return 1;
	}
	if (made == 1) {
		fprintf(stderr,
		        "mxgate keygen: %s exists and is left alone; to rotate, make a new key "
		        "under a new name, publish it under a new selector, then switch [arc] "
		        "selector and key_file\n",
		        path);
		return 1;
	}
	char kind[32];
	if (algorithm == 0)
		snprintf(kind, sizeof(kind), "RSA %d", bits);
	else
		snprintf(kind, sizeof(kind), "Ed25519");
	printf("%s\n", rec);
	fprintf(stderr,
	        "mxgate keygen: wrote %s (%s, mode %s); publish the record above as TXT at "
	        "SELECTOR._domainkey.DOMAIN (`mxgate dns-records` prints it with the names from "
	        "[arc]), then set [arc] key_file = %s\n",
	        path, kind, gr ? "0640" : "0600", path);
	free(rec);
	return 0;
}
