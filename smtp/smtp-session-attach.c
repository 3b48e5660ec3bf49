/*
 * smtp-session-attach.c - the attachment policy in the session (issue 13,
 * [attachments]): the first inspection step after the policy verdict.  The
 * MIME walk (content/content-attach.c: names, magic bytes, zip archives one
 * level deep) runs on a content worker (the server's bounded pool, [server]
 * content_workers), never on the event loop: it reads the spool (only its
 * size: spool files are recycled) and the result comes back through the
 * pool's event; the completion finds the session by id (gone: dropped).
 * A session that goes first calls its job off (smtp_content_abandon): a
 * queued one never runs, a running one stops at its next part - a client
 * leaving right after its dot no longer has its check run for nobody (red
 * team 2).  The worker reads the spool into one buffer of exactly its
 * size, which the check parses in place (content-attach.c: "Memory").
 * When the pool's queue is full the message gets 451 4.3.2 (nothing is
 * queued; the client retries).
 *
 * Decisions: blocked -> [attachments] action: 550 5.7.1 (nothing queued),
 * quarantine (reason "attachment"), tag or deliver (both with
 * "X-Mxgate-Attachments: blocked; ..."; tag also puts the subject tag on).
 * A message GMime cannot parse at all -> unparsable_action (the same four;
 * the header says "unchecked; reason=unparsable").  One over max_size
 * (default: [limits] message_size_limit, so every acceptable message is
 * judged) -> oversize_action (default unparsable_action's; the header
 * says "unchecked; reason=size").  One whose check could not start is
 * delivered with "unchecked; reason=setup": never a silent pass.
 * Diagnostics:
 * "s=... attachment_check result=blocked|clean|unchecked ... action=...",
 * metric mxgate_attachment_checks_total{result}.
 *
 * Ownership: the job owns its descriptor and copies; the completion frees
 * it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "content.h"
#include "smtp-server-internal.h"

struct attach_job {
	struct smtp_job hdr;     /* first: the pool frees unfinished jobs with it */
	uint64_t id;             /* session id */
	struct smtp_server *srv; /* borrowed */
	int fd;                  /* owned; the spool, read-only */
	int64_t size;
	struct util_strlist ext; /* owned copy of the extensions */
	struct content_attach_opts o;
	bool ran; /* job_work started (not taken back from the queue) */
	int rc;   /* content_attach_check's result */
	int err;
	char why[256];
};

/* job_work - worker: read the spool into one buffer of its size (no
 * growing copies; content_attach_check parses it where it lies), judge
 * it.  The session gone (hdr.cancelled): stop between chunks, and the
 * check between parts. */
static void job_work(void *arg)
{
	struct attach_job *j = arg;
	j->ran = true;
	char *in = util_xmalloc((size_t)j->size + 1);
	int64_t got = 0;
	while (got < j->size && !atomic_load(&j->hdr.cancelled)) {
		size_t want = j->size - got < 1 << 20 ? (size_t)(j->size - got) : 1 << 20;
		ssize_t n = pread(j->fd, in + got, want, (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			j->err = n < 0 ? errno : EIO;
			break;
		}
		got += n;
	}
	if (atomic_load(&j->hdr.cancelled)) {
		j->rc = -1;
		snprintf(j->why, sizeof(j->why), "cancelled");
	} else if (j->err) {
		j->rc = -1;
		snprintf(j->why, sizeof(j->why), "spool=unreadable");
	} else {
		in[got] = 0;
		j->o.cancel = &j->hdr.cancelled;
		j->rc = content_attach_check(in, (size_t)got, &j->o, j->why, sizeof(j->why));
	}
	free(in);
}

/* job_free - release a finished job. */
static void job_free(struct attach_job *j)
{
	if (j->fd >= 0)
		close(j->fd);
	util_strlist_free(&j->ext);
	free(j);
}

/* job_free_any - job_free for the pool (struct smtp_job). */
static void job_free_any(void *job)
{
	job_free((struct attach_job *)job);
}

/* attach_header - "X-Mxgate-Attachments: STATE; KEY=WHAT; by=HOST" for the
 * commit; a verdict (names from the message) is quoted, with '"' and '\\'
 * shown as '?' (content-attach.c already made it printable ASCII). */
static void attach_header(struct smtp_session *s, const char *state, const char *key,
                          const char *what)
{
	struct util_buf b;
	util_buf_init(&b);
	if (s->tx->scan_headers)
		util_buf_adds(&b, s->tx->scan_headers);
	bool quote = strcmp(key, "verdict") == 0;
	util_buf_printf(&b, CONTENT_ATTACH_FIELD ": %s; %s=%s", state, key, quote ? "\"" : "");
	for (const char *p = what; *p; p++)
		util_buf_printf(&b, "%c",
		                (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20 ||
		                 (unsigned char)*p > 0x7e)
		                    ? '?'
		                    : *p);
	util_buf_printf(&b, "%s; by=%s\r\n", quote ? "\"" : "", s->cfg->hostname);
	free(s->tx->scan_headers);
	s->tx->scan_headers = b.data; /* ownership moves to the transaction */
}

/* apply - the configured action (enum config_attach_action) on a blocked,
 * unparsable or oversize message; -1 when it was refused (and the session
 * resumed when async: called from a callback).  reason, the metric's label,
 * stays the last argument (test_ops_metrics.py reads it there). */
static int apply(struct smtp_session *s, int action, bool async, const char *state, const char *why,
                 const char *reply, const char *reason)
{
	if (action == CONFIG_ATTACH_REJECT) {
		smtp_data_refuse(s, reply, reason);
		if (async)
			smtp_session_resume(s);
		return -1;
	}
	if (action == CONFIG_ATTACH_QUARANTINE)
		smtp_data_quarantine(s, "attachment", why); /* "unparsable; mime=..." */
	if (action == CONFIG_ATTACH_TAG)
		s->tx->subject_tag = true;
	if (action == CONFIG_ATTACH_TAG || action == CONFIG_ATTACH_QUARANTINE)
		s->tx->own_flag = true; /* X-Spam-Flag: YES (smtp-session-scan.c) */
	attach_header(s, state, strcmp(state, "blocked") == 0 ? "verdict" : "reason", why);
	return 0;
}

static const char *const action_name[] = {"reject", "quarantine", "tag", "deliver"};

/* job_done - loop: the verdict on the attachments. */
static void job_done(void *arg)
{
	struct attach_job *j = arg;
	struct smtp_session *s = smtp_server_find(j->srv, j->id);
	if (!s || s->wait != SMTP_WAIT_SCAN || !s->tx) {
		/* work=none: taken back unrun; stopped: called off midway
		 * (smtp_content_abandon); done: it had finished */
		util_log_info("s=%016llx attachment_check note=client_gone work=%s",
		              (unsigned long long)j->id,
		              !j->ran                          ? "none"
		              : strcmp(j->why, "cancelled") == 0 ? "stopped"
		                                               : "done");
		job_free(j);
		return;
	}
	s->wait = SMTP_WAIT_NONE;
	int rc = j->rc;
	char why[256];
	snprintf(why, sizeof(why), "%s", j->why);
	job_free(j);
	if (rc == 0) {
		util_metrics_inc("mxgate_attachment_checks_total", "clean");
		util_log_info("s=%016llx attachment_check result=clean", (unsigned long long)s->id);
		smtp_scan_continue(s);
		return;
	}
	if (rc < 0) {
		/* MIME GMime could not read, or read only by guessing (why:
		 * "mime=multipart_without_boundary", ...): a reader may see an
		 * attachment that was never judged - said in a header, and acted
		 * on as configured; a tempfail would only bring it back */
		int action = s->cfg->attach_unparsable_action;
		char detail[300];
		snprintf(detail, sizeof(detail), "unparsable; %s", why);
		util_metrics_inc("mxgate_attachment_checks_total", "unchecked");
		util_log_warn("s=%016llx attachment_check result=unchecked reason=unparsable %s "
		              "action=%s",
		              (unsigned long long)s->id, why, action_name[action]);
		if (apply(
		        s, action, true, "unchecked", detail,
		        "550 5.7.1 Message refused: its MIME structure cannot be parsed reliably, "
		        "so its attachments cannot be checked",
		        "attachment_unparsable") == 0)
			smtp_scan_continue(s);
		return;
	}
	int action = s->cfg->attach_action;
	util_metrics_inc("mxgate_attachment_checks_total", "blocked");
	util_log_info("s=%016llx attachment_check result=blocked %s action=%s",
	              (unsigned long long)s->id, why, action_name[action]);
	char reply[400];
	snprintf(reply, sizeof(reply), "550 5.7.1 Message refused: attachment not allowed (%s)",
	         why);
	if (apply(s, action, true, "blocked", why, reply, "attachment") == 0)
		smtp_scan_continue(s);
}

/* smtp_attach_start - see smtp-server-internal.h. */
int smtp_attach_start(struct smtp_session *s, bool async)
{
	const struct config *cfg = s->cfg;
	if (!cfg->attach_enabled)
		return -1;
	int64_t size = queue_spool_size(s->tx->spool);
	if (size > cfg->attach_max_size) {
		/* too large to judge: padding must not buy a pass (red team), so
		 * oversize_action acts (by default unparsable_action's) */
		int action = cfg->attach_oversize_action;
		util_metrics_inc("mxgate_attachment_checks_total", "unchecked");
		util_log_warn("s=%016llx attachment_check result=unchecked reason=size size=%lld "
		              "max_size=%lld action=%s",
		              (unsigned long long)s->id, (long long)size,
		              (long long)cfg->attach_max_size, action_name[action]);
		if (apply(s, action, async, "unchecked", "size",
		          "550 5.7.1 Message refused: too large for its attachments to be checked",
		          "attachment_oversize") < 0)
			return 0; /* refused: no further step */
		return -1;
	}
	struct attach_job *j = util_xcalloc(1, sizeof(*j));
	j->hdr.free = job_free_any;
	j->id = s->id;
	j->srv = s->srv;
	j->size = size;
	for (size_t i = 0; i < cfg->attach_extensions.n; i++)
		util_strlist_add(&j->ext, cfg->attach_extensions.v[i]);
	j->o.extensions = &j->ext;
	for (size_t i = 0; i < cfg->attach_types.n; i++) {
		const char *t = cfg->attach_types.v[i];
		j->o.types |= strcmp(t, "pe") == 0    ? CONTENT_TYPE_PE
		              : strcmp(t, "elf") == 0 ? CONTENT_TYPE_ELF
		                                      : CONTENT_TYPE_SCRIPT;
	}
	j->o.zip = cfg->attach_zip;
	j->o.max_zip_entries = (size_t)cfg->attach_max_zip_entries;
	j->fd = queue_spool_open_read(s->tx->spool);
	if (j->fd < 0)
		goto fail;
	if (smtp_content_submit(s, job_work, job_done, &j->hdr) < 0) {
		job_free(j);
		smtp_content_busy(s, "attachments", async);
		return 0;
	}
	s->wait = SMTP_WAIT_SCAN;
	return 0;
fail:
	util_log_warn("s=%016llx attachment_check result=unchecked reason=setup",
	              (unsigned long long)s->id);
	util_metrics_inc("mxgate_attachment_checks_total", "unchecked");
	attach_header(s, "unchecked", "reason", "setup");
	job_free(j);
	return -1;
}
