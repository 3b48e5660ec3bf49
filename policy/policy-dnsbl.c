/*
 * policy-dnsbl.c - the client-address facts of the spam score: DNSBL
 * listings ([spam] dnsbl_zones, RFC 5782 query format) and whether the
 * client has reverse DNS at all (a PTR record naming an LDH host), both
 * through mxgate's resolver.
 *
 * Ownership: hits are stored in the message (zone names).
 * Threads: worker.  Diagnostics: lookups at debug level.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy-internal.h"

#define DNS_T_A   1
#define DNS_T_PTR 12

/* dnsbl_reverse - RFC 5782 2.1 / 2.4: reversed octets or nibbles. */
static void dnsbl_reverse(const struct util_addr *a, char *out, size_t outlen)
{
	size_t o = 0;

	out[0] = 0;
	if (a->ss.ss_family == AF_INET) {
		const unsigned char *b =
		    (const unsigned char *)&((const struct sockaddr_in *)&a->ss)->sin_addr;
		snprintf(out, outlen, "%u.%u.%u.%u", b[3], b[2], b[1], b[0]);
		return;
	}
	const unsigned char *b =
	    (const unsigned char *)&((const struct sockaddr_in6 *)&a->ss)->sin6_addr;
	for (int i = 15; i >= 0 && o + 5 < outlen; i--) {
		o += (size_t)snprintf(out + o, outlen - o, "%x.%x.", b[i] & 0xf, b[i] >> 4);
	}
	if (o > 0)
		out[o - 1] = 0;
}

/* policy_dnsbl_eval - worker: DNSBL listings and the client's PTR. */
void policy_dnsbl_eval(struct policy_msg *pm)
{
	const struct config *cfg = pm->pc->cfg;
	char rev[80];

	pm->rdns_checked = false;
	dnsbl_reverse(&pm->client, rev, sizeof(rev));
	if (rev[0] == 0)
		return;
	for (size_t i = 0; i < cfg->dnsbl_zones.n; i++) {
		struct policy_dns_answer ans;
		char *name = util_xasprintf("%s.%s", rev, cfg->dnsbl_zones.v[i]);
		bool listed = false;

		policy_dns_query_sync(pm->pc->dns, name, DNS_T_A, &ans);
		/* RFC 5782 2.3: listings are 127.0.0.0/8 answers */
		for (size_t k = 0; k < ans.n; k++)
			if (ans.len[k] == 4 && ans.data[k][0] == 127)
				listed = true;
		if (listed)
			util_strlist_add(&pm->dnsbl_hits, cfg->dnsbl_zones.v[i]);
		policy_dns_answer_free(&ans);
		free(name);
	}
	if (cfg->weight_no_rdns != 0) {
		struct policy_dns_answer ans;
		char *name = util_xasprintf(
		    "%s.%s", rev, pm->client.ss.ss_family == AF_INET ? "in-addr.arpa" : "ip6.arpa");
		policy_dns_query_sync(pm->pc->dns, name, DNS_T_PTR, &ans);
		/* only a definite "no such name / no PTR" counts, never a timeout;
		 * a PTR that is not an LDH host name (CR, LF, spaces... in a
		 * label) is no rDNS either, as for Received: */
		pm->rdns_checked = true;
		pm->no_rdns = ans.status == POLICY_DNS_NXDOMAIN || ans.status == POLICY_DNS_NODATA;
		if (ans.status == POLICY_DNS_OK) {
			bool named = false;
			for (size_t k = 0; k < ans.n && !named; k++) {
				char host[256];
				named = policy_dns_name_from_wire(ans.data[k], ans.len[k], host,
				                                  sizeof(host)) == 0 &&
				        host[0] != '\0';
			}
			pm->no_rdns = !named;
		}
		policy_dns_answer_free(&ans);
		free(name);
	}
}
