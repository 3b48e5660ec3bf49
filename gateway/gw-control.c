/*
 * gw-control.c - the control socket (server side, in the daemon) and its
 * clients (`mxgate queue ...`, `mxgate status`, `mxgate reload`).
 *
 * Protocol: a unix stream socket owned by the service user ([server] user
 * when started as root), group control_socket_group (else the user's), mode
 * control_socket_mode (0660): the daemon's user, its group and root may talk
 * to it.  The client sends one line "COMMAND [ARG]\n"; the daemon
 * answers with text lines, the last one "OK" or "ERR message", and closes.
 * Commands: queue-list, queue-show ID, queue-flush [ID], queue-hold ID,
 * queue-release ID, queue-delete ID, status, reload, reopen-logs.  Everything runs on the
 * loop thread, so requests are safe while mail flows.
 *
 * Ownership: the control object owns the listener and its connections; a
 * connection is freed once its answer is flushed (from its write callback,
 * as the last thing that callback does) or when the peer goes away.
 *
 * Diagnostics: a stale socket file left by a crash is replaced; a socket on
 * which another daemon still answers is an error ("already in use").  The
 * client prints the answer on stdout and "mxgate: message" on stderr for ERR.
 */
#include "gw.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <pwd.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>

#include "version.h"

#define CONTROL_LINE_MAX 1024
#define CONTROL_TIMEOUT  30 /* seconds a client may take to send its line */

struct gw_control {
	struct gw *gw;
	struct evconnlistener *lev;
	char *path;
	struct control_conn *conns;
};

struct control_conn {
	struct gw_control *ctl;
	struct bufferevent *bev;
	bool answered;
	struct control_conn *next;
};

/* control_conn_free - close one client connection. */
static void control_conn_free(struct control_conn *cc)
{
	struct control_conn **pp = &cc->ctl->conns;
	while (*pp && *pp != cc)
		pp = &(*pp)->next;
	if (*pp)
		*pp = cc->next;
	bufferevent_free(cc->bev);
	free(cc);
}

/* control_status - the `status` answer. */
static void control_status(struct gw *gw, struct util_buf *out)
{
	int64_t now = util_now_us() / 1000000;
	util_buf_printf(out, "version: %s\n", MXGATE_VERSION);
	util_buf_printf(out, "pid: %ld\n", (long)getpid());
	util_buf_printf(out, "uptime: %llds\n", (long long)(now - gw->started));
	util_buf_printf(out, "config: %s\n", gw->cfg && gw->cfg->path ? gw->cfg->path : "");
	/* NIST SP 800-177 4-2: say whether verdicts can be DNSSEC-secure */
	if (gw->dns != NULL)
		util_buf_printf(out, "dnssec: %s\n", policy_dns_dnssec_status(gw->dns));
	if (gw->server) {
		util_buf_printf(out, "sessions: %zu\n", smtp_server_session_count(gw->server));
		/* 1 + configs replaced by reloads that sessions or messages still use */
		util_buf_printf(out, "configs_alive: %zu\n",
		                smtp_server_generations(gw->server) + gw_retiring_count());
	}
	if (gw->sched) {
		int64_t oldest = queue_sched_oldest(gw->sched);
		util_buf_printf(out, "queue_messages: %zu\n", queue_sched_count(gw->sched));
		/* what delivery can still empty: held and quarantined mail waits
		 * for a person (mxgate-aws-boot drain waits for this one) */
		util_buf_printf(out, "queue_deliverable: %zu\n",
		                queue_sched_count_state(gw->sched, QUEUE_ACTIVE) +
		                    queue_sched_count_state(gw->sched, QUEUE_DEFERRED));
		util_buf_printf(out, "queue_oldest_age: %llds\n",
		                (long long)(oldest ? now - oldest : 0));
	}
	if (gw->qs)
		util_buf_printf(out, "queue_recycled_files: %zu (%lld KiB)\n",
		                queue_pool_size(gw->qs), (long long)(queue_pool_bytes(gw->qs) / 1024));
	util_buf_printf(out, "stopping: %s\n", gw->stopping ? "yes" : "no");
}

/* control_peer - "NAME" (or "uid=N") of the user at the other end of the
 * control socket (SO_PEERCRED), for the quarantine release stamp. */
static void control_peer(struct bufferevent *bev, char *out, size_t outlen)
{
	struct ucred uc;
	socklen_t len = sizeof(uc);
	snprintf(out, outlen, "unknown");
	if (getsockopt(bufferevent_getfd(bev), SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
		return;
	struct passwd pw, *res = NULL;
	char buf[1024];
	if (getpwuid_r(uc.uid, &pw, buf, sizeof(buf), &res) == 0 && res != NULL)
		snprintf(out, outlen, "%s", res->pw_name);
	else
		snprintf(out, outlen, "uid=%u", (unsigned)uc.uid);
}

/* control_execute - run one request line; the answer ends in OK / ERR. */
static void control_execute(struct gw *gw, const char *line, const char *peer,
                            struct util_buf *out)
{
	char cmd[64] = "", arg[CONTROL_LINE_MAX] = "", extra[8] = "";
	char err[256] = "";
	int n = sscanf(line, "%63s %1023s %7s", cmd, arg, extra);
	const char *id = n >= 2 ? arg : NULL;
	int rc = -1;
	if (n >= 3) {
		snprintf(err, sizeof(err), "too many arguments");
	} else if (strcmp(cmd, "status") == 0 && id == NULL) {
		control_status(gw, out);
		gw_status_extra(gw, out); /* issue 7: counters, last errors (gw-metrics.c) */
		rc = 0;
	} else if (strcmp(cmd, "reload") == 0 && id == NULL) {
		rc = gw_reload(gw, out);
		if (rc != 0)
			snprintf(err, sizeof(err),
			         "reload refused: still running on the old config");
	} else if (strcmp(cmd, "reopen-logs") == 0 && id == NULL) {
		rc = gw_reopen_logs(out);
		if (rc != 0)
			snprintf(err, sizeof(err), "the log file could not be reopened");
	} else if (strncmp(cmd, "quarantine-", 11) == 0) {
		rc = gw_quarantine_execute(gw, cmd, id, peer, out, err, sizeof(err));
	} else if (strcmp(cmd, "reports-send-now") == 0 && id == NULL) {
		/* issue 14: end the reporting run now (tests, postmaster) */
		if (gw->reports_sender == NULL)
			snprintf(err, sizeof(err), "[reports] record is off");
		else if ((rc = reports_send_now(gw->reports_sender, (int64_t)time(NULL) + 1)) < 0)
			snprintf(err, sizeof(err), "a report run is in progress");
	} else if (gw->sched == NULL && strncmp(cmd, "queue-", 6) == 0) {
		snprintf(err, sizeof(err), "the queue is not running");
	} else if (strcmp(cmd, "queue-list") == 0 && id == NULL) {
		rc = queue_sched_list(gw->sched, out);
	} else if (strcmp(cmd, "queue-flush") == 0) {
		if (gw->deliverer != NULL)
			smtp_deliverer_forget_dead(gw->deliverer);
		size_t nq = queue_sched_count(gw->sched);
		rc = queue_sched_flush(gw->sched, id, err, sizeof(err));
		if (rc == 0 && id != NULL)
			util_buf_printf(out, "flushed 1 message (%s): delivery is tried now\n", id);
		else if (rc == 0)
			util_buf_printf(out, "flushed %zu queued message%s: delivery is tried now "
			                     "(held ones stay held)\n", nq, nq == 1 ? "" : "s");
	} else if (id == NULL &&
	           (strcmp(cmd, "queue-show") == 0 || strcmp(cmd, "queue-hold") == 0 ||
	            strcmp(cmd, "queue-release") == 0 || strcmp(cmd, "queue-delete") == 0)) {
		snprintf(err, sizeof(err), "%s needs a queue id", cmd);
	} else if (strcmp(cmd, "queue-show") == 0) {
		rc = queue_sched_show(gw->sched, id, out, err, sizeof(err));
	} else if (strcmp(cmd, "queue-hold") == 0) {
		rc = queue_sched_hold(gw->sched, id, err, sizeof(err));
		if (rc == 0)
			util_buf_printf(out, "held 1 message (%s)\n", id);
	} else if (strcmp(cmd, "queue-release") == 0) {
		rc = queue_sched_release_by(gw->sched, id, peer, err, sizeof(err));
		if (rc == 0)
			util_buf_printf(out, "released 1 message (%s)\n", id);
	} else if (strcmp(cmd, "queue-delete") == 0) {
		rc = queue_sched_delete(gw->sched, id, err, sizeof(err));
		if (rc == 0)
			util_buf_printf(out, "deleted 1 message (%s), no bounce sent\n", id);
	} else {
		snprintf(err, sizeof(err), "unknown command");
	}
	if (rc == 0) {
		util_buf_adds(out, "OK\n");
	} else {
		util_buf_printf(out, "ERR %s\n", err[0] ? err : "failed");
	}
	util_log_info("- control request=(%s) result=%s%s%s", line, rc == 0 ? "ok" : "error",
	              rc == 0 ? "" : " error=", rc == 0 ? "" : err);
}

/* control_write_cb - the answer is flushed: done with this client. */
static void control_write_cb(struct bufferevent *bev, void *arg)
{
	struct control_conn *cc = arg;
	if (cc->answered)
		control_conn_free(cc); /* last statement: nothing uses cc after */
}

/* control_read_cb - one request line, one answer. */
static void control_read_cb(struct bufferevent *bev, void *arg)
{
	struct control_conn *cc = arg;
	if (cc->answered)
		return;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t len;
	char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF);
	struct util_buf out;
	util_buf_init(&out);
	if (line == NULL) {
		if (evbuffer_get_length(in) < CONTROL_LINE_MAX)
			return;
		util_buf_adds(&out, "ERR request line too long\n");
	} else {
		bool clean = len < CONTROL_LINE_MAX;
		for (size_t i = 0; i < len && clean; i++)
			if ((unsigned char)line[i] < 0x20 && line[i] != '\t')
				clean = false;
		char peer[64];
		control_peer(bev, peer, sizeof(peer));
		if (clean)
			control_execute(cc->ctl->gw, line, peer, &out);
		else
			util_buf_adds(&out, "ERR malformed request\n");
		free(line);
	}
	cc->answered = true;
	bufferevent_disable(bev, EV_READ);
	bufferevent_write(bev, out.data, out.len);
	util_buf_free(&out);
}

/* control_event_cb - the client went away or timed out. */
static void control_event_cb(struct bufferevent *bev, short what, void *arg)
{
	control_conn_free(arg);
}

/* control_accept_cb - a new client. */
static void control_accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                              int salen, void *arg)
{
	struct gw_control *ctl = arg;
	struct control_conn *cc = util_xcalloc(1, sizeof(*cc));
	cc->ctl = ctl;
	cc->bev = bufferevent_socket_new(evconnlistener_get_base(lev), fd, BEV_OPT_CLOSE_ON_FREE);
	if (cc->bev == NULL) {
		evutil_closesocket(fd);
		free(cc);
		return;
	}
	cc->next = ctl->conns;
	ctl->conns = cc;
	struct timeval tv = {.tv_sec = CONTROL_TIMEOUT, .tv_usec = 0};
	bufferevent_set_timeouts(cc->bev, &tv, &tv);
	bufferevent_setcb(cc->bev, control_read_cb, control_write_cb, control_event_cb, cc);
	bufferevent_enable(cc->bev, EV_READ | EV_WRITE);
}

/* control_addr - sockaddr_un for path, or -1 when it does not fit. */
static int control_addr(const char *path, struct sockaddr_un *sun)
{
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (path == NULL || strlen(path) >= sizeof(sun->sun_path))
		return -1;
	memcpy(sun->sun_path, path, strlen(path) + 1);
	return 0;
}

/* control_is_live - another process answers on path. */
static bool control_is_live(const struct sockaddr_un *sun)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	bool live = connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) == 0;
	close(fd);
	return live;
}

/* control_owner - started as root: hand the socket to the service user and
 * the configured (or the user's) group, so they can use the CLI once the
 * daemon has dropped root; then set the configured mode. */
static int control_owner(const struct config *cfg, const char *path)
{
	static const mode_t modes[] = {0600, 0660, 0666};
	int m = cfg->control_socket_mode;
	uid_t uid = (uid_t)-1;
	gid_t gid = (gid_t)-1;

	if (geteuid() == 0 && cfg->user != NULL) {
		struct passwd *pw = getpwnam(cfg->user);
		if (pw) {
			uid = pw->pw_uid;
			gid = pw->pw_gid;
		}
		if (cfg->group) {
			struct group *gr = getgrnam(cfg->group);
			if (gr)
				gid = gr->gr_gid;
		}
	}
	if (cfg->control_socket_group != NULL) {
		struct group *gr = getgrnam(cfg->control_socket_group);
		if (gr == NULL) {
			errno = ENOENT;
			return -1;
		}
		gid = gr->gr_gid;
	}
	/* never follow a symlink: the directory may belong to the service
	 * user, who could swap the fresh socket for a link to a root file
	 * between bind() and here */
	if ((uid != (uid_t)-1 || gid != (gid_t)-1) && lchown(path, uid, gid) != 0)
		return -1;
	return fchmodat(AT_FDCWD, path, modes[m >= 0 && m < 3 ? m : 1], AT_SYMLINK_NOFOLLOW);
}

/* gw_control_new - listen on path (owner, group and mode: control_owner). */
struct gw_control *gw_control_new(struct gw *gw, const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sun;
	int fd = -1;
	if (control_addr(path, &sun) != 0) {
		snprintf(err, errlen, "control socket path missing or too long");
		return NULL;
	}
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", path);
	char *d = dirname(dir);
	struct stat st;
	if (stat(d, &st) != 0 && util_mkdir_p(d, 0750) != 0) {
		snprintf(err, errlen, "cannot create %s: %s", d, strerror(errno));
		return NULL;
	}
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "%s exists and is not a socket", path);
			return NULL;
		}
		if (control_is_live(&sun)) {
			snprintf(err, errlen, "%s already in use by a running mxgate", path);
			return NULL;
		}
		unlink(path); /* stale, from a crash */
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		goto err;
	mode_t old = umask(077);
	int rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	umask(old);
	if (rc != 0 || control_owner(gw->cfg, path) != 0 || listen(fd, 16) != 0)
		goto err;
	struct gw_control *ctl = util_xcalloc(1, sizeof(*ctl));
	ctl->gw = gw;
	ctl->path = util_xstrdup(path);
	ctl->lev =
	    evconnlistener_new(gw->base, control_accept_cb, ctl, LEV_OPT_CLOSE_ON_FREE, -1, fd);
	if (ctl->lev == NULL) {
		free(ctl->path);
		free(ctl);
		goto err;
	}
	return ctl;
err:
	snprintf(err, errlen, "%s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	return NULL;
}

/* gw_control_free - close the listener and every client; remove the file. */
void gw_control_free(struct gw_control *ctl)
{
	if (ctl == NULL)
		return;
	while (ctl->conns)
		control_conn_free(ctl->conns);
	evconnlistener_free(ctl->lev);
	unlink(ctl->path);
	free(ctl->path);
	free(ctl);
}

/* gw_control_request - send line, print the answer; exit code 0 on OK. */
int gw_control_request(const char *path, const char *line)
{
	struct sockaddr_un sun;
	if (control_addr(path, &sun) != 0) {
		fprintf(stderr, "mxgate: no usable control_socket in the config\n");
		return 2;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
		if (errno == EACCES || errno == EPERM)
			fprintf(stderr,
			        "mxgate: cannot connect to %s: %s: the socket (or a folder above "
			        "it) does not let you in; use it as root or as a member of [server] "
			        "control_socket_group (socket mode control_socket_mode)\n",
			        path, strerror(errno));
		else
			fprintf(stderr, "mxgate: cannot connect to %s: %s (is mxgate running?)\n",
			        path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return 1;
	}
	struct timeval tv = {.tv_sec = 60, .tv_usec = 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	char *req = util_xasprintf("%s\n", line);
	int wrc = util_write_all(fd, req, strlen(req));
	free(req);
	struct util_buf ans;
	util_buf_init(&ans);
	char buf[8192];
	ssize_t n;
	while (wrc == 0 && ((n = read(fd, buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR)))
		if (n > 0)
			util_buf_add(&ans, buf, (size_t)n);
	close(fd);
	/* the last line decides; everything before it is the answer's text */
	while (ans.len > 0 && ans.data[ans.len - 1] == '\n')
		ans.data[--ans.len] = '\0';
	char *last = ans.data ? strrchr(ans.data, '\n') : NULL;
	const char *status = last ? last + 1 : (ans.data ? ans.data : "");
	/* the text of a refusal (a reload's FILE:LINE errors) goes with the error */
	if (last)
		fwrite(ans.data, 1, (size_t)(last - ans.data) + 1,
		       strncmp(status, "ERR", 3) == 0 ? stderr : stdout);
	int rc;
	if (strcmp(status, "OK") == 0) {
		rc = 0;
	} else if (strncmp(status, "ERR", 3) == 0) {
		fprintf(stderr, "mxgate: %s\n", status[3] ? status + 4 : "error");
		rc = 1;
	} else {
		fprintf(stderr, "mxgate: no answer from the daemon on %s\n", path);
		rc = 1;
	}
	util_buf_free(&ans);
	return rc;
}

/* queue_usage - synopsis of `mxgate queue`. */
static int queue_usage(void)
{
	fprintf(stderr, "usage: mxgate queue [-c FILE] list\n"
	                "       mxgate queue [-c FILE] show ID\n"
	                "       mxgate queue [-c FILE] flush [ID]\n"
	                "       mxgate queue [-c FILE] hold ID | release ID | delete ID\n");
	return 2;
}

/* gw_cmd_queue - `mxgate queue SUBCOMMAND [ID] [-c FILE]` (argv[0] = "queue"). */
int gw_cmd_queue(int argc, char **argv)
{
	const char *config_path = NULL;
	const char *pos[3] = {NULL, NULL, NULL};
	int npos = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) {
			if (i + 1 >= argc)
				return queue_usage();
			config_path = argv[++i];
		} else if (argv[i][0] == '-' || npos == 3) {
			return queue_usage();
		} else {
			pos[npos++] = argv[i];
		}
	}
	if (npos == 0)
		return queue_usage();
	static const struct {
		const char *name;
		int min_args, max_args;
	} subs[] = {{"list", 0, 0}, {"show", 1, 1},    {"flush", 0, 1},
	            {"hold", 1, 1}, {"release", 1, 1}, {"delete", 1, 1}};
	size_t k;
	for (k = 0; k < sizeof(subs) / sizeof(subs[0]); k++)
		if (strcmp(pos[0], subs[k].name) == 0)
			break;
	if (k == sizeof(subs) / sizeof(subs[0]) || npos - 1 < subs[k].min_args ||
	    npos - 1 > subs[k].max_args)
		return queue_usage();
	if (npos == 2 && !util_qid_is_valid(pos[1])) {
		fprintf(stderr, "mxgate: %s is not a queue id (16 hex digits)\n", pos[1]);
		return 2;
	}
	char sock[256];
	if (gw_control_socket_for(gw_config_path(config_path), sock, sizeof(sock)) < 0)
		return 2;
	char line[128];
	snprintf(line, sizeof(line), "queue-%s%s%s", pos[0], npos == 2 ? " " : "",
	         npos == 2 ? pos[1] : "");
	return gw_control_request(sock, line);
}
