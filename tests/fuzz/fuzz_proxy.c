/*
 * fuzz_proxy.c - libFuzzer target: the PROXY protocol v1/v2 parser
 * (smtp_proxy_parse, smtp_proxy_looks_like).  Only trusted load balancers
 * may send it, but the bytes still come from the network.
 *
 * Invariants besides memory safety:
 *  - a header length is never more than the bytes given, nor more than
 *    SMTP_PROXY_V2_MAX (v1: SMTP_PROXY_V1_MAX);
 *  - parsing exactly the header again gives the same length and address;
 *    every shorter prefix asks for more bytes (0) - a header is never
 *    accepted on a prefix and then re-read differently;
 *  - a non-LOCAL header yields an IPv4 or IPv6 source address;
 *  - anything accepted starts like a PROXY header.
 */
#include <stdbool.h>

#include "fuzz-common.h"
#include "smtp-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 2 * SMTP_PROXY_V2_MAX)
		return 0;
	/* A private copy so ASan sees reads past the end. */
	unsigned char *buf = malloc(size ? size : 1);
	if (!buf)
		abort();
	if (size)
		memcpy(buf, data, size);
	struct smtp_proxy_info info;
	memset(&info, 0, sizeof(info));
	int n = smtp_proxy_parse(buf, size, &info);
	FUZZ_CHECK(n >= -1 && (size_t)(n > 0 ? n : 0) <= size);
	(void)smtp_proxy_looks_like(buf, size);
	if (n > 0) {
		FUZZ_CHECK(n <= SMTP_PROXY_V2_MAX);
		FUZZ_CHECK(smtp_proxy_looks_like(buf, (size_t)n));
		if (buf[0] == 'P')
			FUZZ_CHECK(n <= SMTP_PROXY_V1_MAX);
		if (!info.local) {
			int fam = info.src.ss.ss_family;
			FUZZ_CHECK(fam == AF_INET || fam == AF_INET6);
		}
		struct smtp_proxy_info again;
		memset(&again, 0, sizeof(again));
		FUZZ_CHECK(smtp_proxy_parse(buf, (size_t)n, &again) == n);
		FUZZ_CHECK(again.local == info.local);
		if (!info.local)
			FUZZ_CHECK(again.src.len == info.src.len &&
				   memcmp(&again.src.ss, &info.src.ss, info.src.len) == 0);
		size_t cuts[3] = {(size_t)n - 1, (size_t)n / 2, 1};
		for (int i = 0; i < 3; i++) {
			struct smtp_proxy_info part;
			if (cuts[i] == 0 || cuts[i] >= (size_t)n)
				continue;
			unsigned char *pre = malloc(cuts[i]);
			if (!pre)
				abort();
			memcpy(pre, buf, cuts[i]);
			FUZZ_CHECK(smtp_proxy_parse(pre, cuts[i], &part) == 0);
			free(pre);
		}
	}
	free(buf);
	return 0;
}
