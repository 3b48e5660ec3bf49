/*
 * smtp-session-seal.c - mxgate's ARC seal (RFC 8617) over the message as the
 * downstream receives it, when content edits come after the verdict: the
 * external-sender banner rewrites the spool and the subject tags
 * ([warning] subject_tag, [rspamd] subject_tag) re-emit the Subject in the
 * prepend, both after the policy job.  A seal made by the policy job would
 * sign the message before them and break (cv=fail downstream), so when the
 * config can edit (smtp_scan_may_edit) the policy job only prepares the
 * seal (policy_msg_seal_later) and it is made here, last, before the
 * commit: over the final header block (the prepend - the re-emitted Subject
 * among it - then the spool's fields) and the final body.
 *
 * Hashing and signing run on a content worker (the server's bounded pool,
 * [server] content_workers), never on the event loop; the completion comes
 * back to the loop, finds the session by id (gone: dropped), puts the ARC
 * set after Received (where the policy job puts it otherwise) and commits.
 * The queue's commit (fsync before 250) follows the seal: the envelope's
 * prepend holds the seal before the message is durable.  A full queue:
 * 451 4.3.2 for the message (nothing queued, the client retries).  A seal
 * that cannot be made (read error, signing): the message goes unsealed,
 * logged and counted (mxgate_arc_seals_total{outcome="failed"}), as when
 * the policy job fails to seal.
 *
 * Ownership: the job owns the seal (with its own key reference), the
 * prepend and the read descriptor; the completion frees the job.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "smtp-server-internal.h"

struct seal_job {
	struct smtp_job hdr;     /* first: the pool frees unfinished jobs with it */
	uint64_t id;             /* session id */
	struct smtp_server *srv; /* borrowed */
	struct policy_seal *ps;  /* owned */
	char *prepend;           /* owned; without the ARC set */
	size_t arc_at;           /* where the ARC set goes in prepend */
	int fd;                  /* owned; the spool, read-only */
	int64_t size;
	int rc;                  /* policy_seal_run's */
};

/* job_free - release a job. */
static void job_free(struct seal_job *j)
{
	if (j->fd >= 0)
		close(j->fd);
	policy_seal_free(j->ps);
	free(j->prepend);
	free(j);
}

/* job_free_any - job_free for the pool (struct smtp_job). */
static void job_free_any(void *job)
{
	job_free((struct seal_job *)job);
}

/* job_work - worker: hash and sign. */
static void job_work(void *arg)
{
	struct seal_job *j = arg;
	if (atomic_load(&j->hdr.cancelled)) { /* the session is gone */
		j->rc = -1;
		return;
	}
	j->rc = policy_seal_run(j->ps, j->prepend, j->fd, j->size);
}

/* with_seal - prepend with the ARC set at arc_at (malloc'd), or prepend
 * itself (taken) when there is none. */
static char *with_seal(char *prepend, size_t arc_at, const char *set)
{
	if (!set)
		return prepend;
	struct util_buf b;
	util_buf_init(&b);
	util_buf_add(&b, prepend, arc_at);
	util_buf_adds(&b, set);
	util_buf_adds(&b, prepend + arc_at);
	free(prepend);
	return b.data;
}

/* job_done - loop: the seal is made (or not): commit. */
static void job_done(void *arg)
{
	struct seal_job *j = arg;
	struct smtp_session *s = smtp_server_find(j->srv, j->id);
	if (!s || s->wait != SMTP_WAIT_SCAN || !s->tx) {
		util_log_info("s=%016llx arc_seal note=client_gone", (unsigned long long)j->id);
		job_free(j);
		return;
	}
	s->wait = SMTP_WAIT_NONE;
	char *pre = with_seal(j->prepend, j->arc_at, j->rc == 0 ? policy_seal_fields(j->ps) : NULL);
	j->prepend = NULL;
	job_free(j);
	smtp_data_commit_prepend(s, pre); /* the commit's callback resumes the session */
}

/* smtp_seal_start - see smtp-server-internal.h. */
void smtp_seal_start(struct smtp_session *s, struct policy_seal *ps, char *prepend,
                     size_t arc_at, bool async)
{
	struct seal_job *j = util_xcalloc(1, sizeof(*j));
	j->hdr.free = job_free_any;
	j->id = s->id;
	j->srv = s->srv;
	j->ps = ps;
	j->prepend = prepend;
	j->arc_at = arc_at;
	j->size = queue_spool_size(s->tx->spool);
	j->fd = queue_spool_open_read(s->tx->spool);
	if (j->fd < 0) {
		/* the commit will meet the same trouble and answer it */
		util_log_warn("s=%016llx arc_seal spool not readable: not sealed",
		              (unsigned long long)s->id);
		util_metrics_inc("mxgate_arc_seals_total", "failed");
		char *pre = j->prepend;
		j->prepend = NULL;
		job_free(j);
		smtp_data_commit_prepend(s, pre);
		return;
	}
	if (smtp_content_submit(s, job_work, job_done, &j->hdr) < 0) {
		job_free(j);
		smtp_content_busy(s, "arc_seal", async);
		return;
	}
	s->wait = SMTP_WAIT_SCAN;
}
