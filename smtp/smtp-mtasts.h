/*
 * smtp-mtasts.h - MTA-STS (RFC 8461) policy discovery and cache for MX
 * delivery (smtp-mtasts.c), used by the deliverer.  Not for use outside
 * smtp/.
 *
 * Ownership: smtp_mtasts_new returns an object freed with
 * smtp_mtasts_free(); the policy handed to a callback is borrowed for the
 * call.
 */
#ifndef MX_SMTP_MTASTS_H
#define MX_SMTP_MTASTS_H

#include <event2/event.h>

#include "policy.h"
#include "util.h"

struct smtp_mtasts;

/* smtp_mtasts_cb - pol is the domain's policy in force, or NULL (none). */
typedef void (*smtp_mtasts_cb)(void *arg, const struct policy_mtasts *pol);

struct smtp_mtasts *smtp_mtasts_new(struct event_base *base, struct policy_dns *dns);
/* smtp_mtasts_get - cb later (never inside the call).  port: HTTPS port of
 * mta-sts.DOMAIN (443; tests use another); ca_file: NULL = system CAs;
 * timeout: seconds for the HTTPS fetch (capped at 60). */
void smtp_mtasts_get(struct smtp_mtasts *m, const char *domain, int port, const char *ca_file,
                     int timeout, smtp_mtasts_cb cb, void *arg);
void smtp_mtasts_free(struct smtp_mtasts *m);

#endif
