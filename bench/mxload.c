/*
 * mxload.c - bounded SMTP load client for mxgate's benchmark (bench/).
 *
 * Two modes:
 *
 *   mxload send -p PORT -c SESSIONS -m MSGS -M MANIFEST [-h HOST] [-T SECS]
 *               [-o OUT.json] [-e EHLO] [-s SRC,...] [-L LABEL] [-x]
 *       SESSIONS concurrent sessions (one thread each), MSGS messages per
 *       session, taken round robin from the corpus named in MANIFEST (lines
 *       "size-class sender recipient path"; the files are read once, CRLF,
 *       and dot-stuffed here).  MAIL/RCPT/DATA are pipelined when the server
 *       offers PIPELINING (RFC 2920), the message and its final dot go in as
 *       they would from an MTA, and the time from the last byte of the final
 *       dot being written to the arrival of the reply is one latency sample.
 *       -x sends STARTTLS first (no certificate check) to measure the TLS
 *       path; -r opens a new connection (banner, EHLO, [STARTTLS, EHLO]) for
 *       every message.  Writes one JSON object (counts, elapsed time, accepted msgs/s,
 *       latency p50/p95/p99/max overall and per size class).
 *
 *   mxload idle -p PORT -n CONNS [-h HOST] [-s SRC,...] [-t] [-P PROBES]
 *               [-H HOLD_SECS] [-o OUT.json]
 *       opens CONNS connections that read the banner and then stay idle (with
 *       -t: EHLO, STARTTLS, handshake, EHLO first).  Then, while they are all
 *       open, PROBES fresh connections are timed from connect() to the banner
 *       (every 20 ms).  Prints "READY" with a JSON object on stdout and keeps
 *       every connection open until stdin has a line, stdin closes, or
 *       HOLD_SECS pass; then closes everything and exits.
 *
 * Bounds: every socket has send/receive timeouts, the whole run has a
 * deadline (-T, default 300 s), and the number of messages and connections is
 * fixed on the command line: nothing here loops without end.
 *
 * Only loopback addresses are accepted as HOST and sources (127.0.0.0/8,
 * ::1): this is a benchmark for a machine talking to itself.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define MAX_SRCS 64
#define MAX_CLASSES 8
#define REPLY_MAX 8192

struct msg {
	char cls[16];
	char from[256];
	char rcpt[256];
	char *data; /* dot-stuffed, ends with CRLF.CRLF */
	size_t len;
	int cls_idx;
};

struct sample {
	double lat;
	int cls;
};

static struct {
	const char *host;
	int port;
	int sessions;
	int per_session;
	double deadline; /* monotonic */
	const char *ehlo;
	bool starttls;
	bool reconnect; /* a new connection for every message */
	struct sockaddr_storage srcs[MAX_SRCS];
	int nsrcs;
	struct msg *msgs;
	int nmsgs;
	char classes[MAX_CLASSES][16];
	int nclasses;
	SSL_CTX *tls;
} g = {.host = "127.0.0.1", .ehlo = "load.bench.example"};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sample *g_samples;
static size_t g_nsamples;
static long g_accepted, g_rejected, g_tempfail, g_errors, g_sessions_ok, g_sessions_failed;
static char g_first_error[256];

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("mxload: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

static void note_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note_error(const char *fmt, ...)
{
	va_list ap;
	pthread_mutex_lock(&g_lock);
	g_errors++;
	if (!g_first_error[0]) {
		va_start(ap, fmt);
		vsnprintf(g_first_error, sizeof(g_first_error), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&g_lock);
}

/* is_loopback - only 127.0.0.0/8 and ::1 may be used. */
static bool is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
		return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
	}
	return false;
}

static int parse_addr(const char *s, int port, struct sockaddr_storage *ss, socklen_t *len)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *in = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, s, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		*len = sizeof(*in);
	} else if (inet_pton(AF_INET6, s, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*in6);
	} else {
		return -1;
	}
	return is_loopback(ss) ? 0 : -1;
}

static void parse_srcs(char *list)
{
	for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
		socklen_t len;
		if (g.nsrcs == MAX_SRCS)
			die("too many source addresses");
		if (parse_addr(tok, 0, &g.srcs[g.nsrcs], &len) < 0)
			die("source %s: not a loopback address", tok);
		g.nsrcs++;
	}
}

/* ------------------------------------------------------------ corpus */

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		die("%s: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fileno(f), &st) < 0)
		die("%s: %s", path, strerror(errno));
	char *buf = malloc((size_t)st.st_size + 1);
	if (!buf || fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size)
		die("%s: short read", path);
	fclose(f);
	buf[st.st_size] = 0;
	*len = (size_t)st.st_size;
	return buf;
}

/* stuff - CRLF-normalised, dot-stuffed copy with the final CRLF.CRLF. */
static char *stuff(const char *in, size_t len, size_t *outlen)
{
	char *out = malloc(len * 2 + 8);
	size_t o = 0;
	bool bol = true;
	if (!out)
		die("out of memory");
	for (size_t i = 0; i < len; i++) {
		char c = in[i];
		if (bol && c == '.')
			out[o++] = '.';
		if (c == '\n' && (i == 0 || in[i - 1] != '\r'))
			out[o++] = '\r';
		out[o++] = c;
		bol = (c == '\n');
	}
	if (o < 2 || out[o - 2] != '\r' || out[o - 1] != '\n') {
		out[o++] = '\r';
		out[o++] = '\n';
	}
	memcpy(out + o, ".\r\n", 3);
	o += 3;
	*outlen = o;
	return out;
}

static void load_manifest(const char *path)
{
	FILE *f = fopen(path, "r");
	char line[2048];
	int cap = 0;
	if (!f)
		die("%s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		char cls[16], from[256], rcpt[256], file[1024];
		if (line[0] == '#' || line[0] == '\n')
			continue;
		if (sscanf(line, "%15s %255s %255s %1023s", cls, from, rcpt, file) != 4)
			die("%s: bad line: %s", path, line);
		if (g.nmsgs == cap) {
			cap = cap ? cap * 2 : 64;
			g.msgs = realloc(g.msgs, sizeof(*g.msgs) * (size_t)cap);
			if (!g.msgs)
				die("out of memory");
		}
		struct msg *m = &g.msgs[g.nmsgs++];
		memset(m, 0, sizeof(*m));
		snprintf(m->cls, sizeof(m->cls), "%s", cls);
		snprintf(m->from, sizeof(m->from), "%s", from);
		snprintf(m->rcpt, sizeof(m->rcpt), "%s", rcpt);
		size_t rawlen;
		char *raw = read_file(file, &rawlen);
		m->data = stuff(raw, rawlen, &m->len);
		free(raw);
		m->cls_idx = -1;
		for (int i = 0; i < g.nclasses; i++)
			if (!strcmp(g.classes[i], cls))
				m->cls_idx = i;
		if (m->cls_idx < 0) {
			if (g.nclasses == MAX_CLASSES)
				die("too many size classes");
			snprintf(g.classes[g.nclasses], 16, "%s", cls);
			m->cls_idx = g.nclasses++;
		}
	}
	fclose(f);
	if (g.nmsgs == 0)
		die("%s: no messages", path);
}

/* ------------------------------------------------------------ connection */

struct conn {
	int fd;
	SSL *ssl;
	char buf[REPLY_MAX];
	size_t have;
};

static int set_timeouts(int fd, double secs)
{
	struct timeval tv = {.tv_sec = (time_t)secs, .tv_usec = (suseconds_t)((secs - (time_t)secs) * 1e6)};
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
		return -1;
	return 0;
}

/* open_socket - a socket bound to source index src (or none), not connected. */
static int open_socket(int src, int family, bool nonblock)
{
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
	int one = 1;
	if (fd < 0)
		return -1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (src >= 0 && g.nsrcs > 0) {
		struct sockaddr_storage *ss = &g.srcs[src % g.nsrcs];
		if (ss->ss_family == family) {
#ifdef IP_BIND_ADDRESS_NO_PORT
			(void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
#endif
			socklen_t len = family == AF_INET ? sizeof(struct sockaddr_in)
							  : sizeof(struct sockaddr_in6);
			if (bind(fd, (struct sockaddr *)ss, len) < 0) {
				close(fd);
				return -1;
			}
		}
	}
	return fd;
}

static int conn_read(struct conn *c, char *p, size_t n)
{
	if (c->ssl) {
		int r = SSL_read(c->ssl, p, (int)n);
		return r > 0 ? r : -1;
	}
	ssize_t r;
	do
		r = read(c->fd, p, n);
	while (r < 0 && errno == EINTR);
	return r > 0 ? (int)r : -1;
}

static int conn_write(struct conn *c, const char *p, size_t n)
{
	while (n > 0) {
		if (now() > g.deadline)
			return -1;
		if (c->ssl) {
			int r = SSL_write(c->ssl, p, (int)(n > (1 << 20) ? (1 << 20) : n));
			if (r <= 0)
				return -1;
			p += r;
			n -= (size_t)r;
		} else {
			ssize_t r = write(c->fd, p, n);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				return -1;
			p += r;
			n -= (size_t)r;
		}
	}
	return 0;
}

/* conn_reply - one complete (multi-line) reply; returns the code or -1.
 * text (optional) gets the whole reply. */
static int conn_reply(struct conn *c, char *text, size_t textlen)
{
	size_t start = 0;
	for (;;) {
		char *nl = memchr(c->buf + start, '\n', c->have - start);
		if (nl) {
			size_t linelen = (size_t)(nl - c->buf) + 1 - start;
			char *line = c->buf + start;
			if (linelen < 4 || line[0] < '2' || line[0] > '5')
				return -1;
			if (line[3] == '-') {
				start += linelen;
				continue;
			}
			int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
			size_t total = start + linelen;
			if (text) {
				size_t k = total < textlen - 1 ? total : textlen - 1;
				memcpy(text, c->buf, k);
				text[k] = 0;
			}
			memmove(c->buf, c->buf + total, c->have - total);
			c->have -= total;
			return code;
		}
		if (c->have == sizeof(c->buf))
			return -1;
		if (now() > g.deadline)
			return -1;
		int r = conn_read(c, c->buf + c->have, sizeof(c->buf) - c->have);
		if (r <= 0)
			return -1;
		c->have += (size_t)r;
	}
}

static int conn_cmd(struct conn *c, const char *line, char *text, size_t textlen)
{
	if (conn_write(c, line, strlen(line)) < 0)
		return -1;
	return conn_reply(c, text, textlen);
}

static void conn_close(struct conn *c)
{
	if (c->ssl) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

/* conn_open - connect (blocking, with timeouts) and read the banner. */
static int conn_open(struct conn *c, int src, double *banner_wait)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char text[REPLY_MAX];
	c->fd = -1;
	c->ssl = NULL;
	c->have = 0;
	if (parse_addr(g.host, g.port, &ss, &len) < 0)
		die("host %s: not a loopback address", g.host);
	c->fd = open_socket(src, ss.ss_family, false);
	if (c->fd < 0 || set_timeouts(c->fd, 60) < 0)
		return -1;
	double t0 = now();
	if (connect(c->fd, (struct sockaddr *)&ss, len) < 0)
		return -1;
	int code = conn_reply(c, text, sizeof(text));
	if (banner_wait)
		*banner_wait = now() - t0;
	return code == 220 ? 0 : -1;
}

static int conn_ehlo(struct conn *c, bool *pipelining, bool *starttls)
{
	char line[300], text[REPLY_MAX];
	snprintf(line, sizeof(line), "EHLO %s\r\n", g.ehlo);
	if (conn_cmd(c, line, text, sizeof(text)) != 250)
		return -1;
	if (pipelining)
		*pipelining = strstr(text, "PIPELINING") != NULL;
	if (starttls)
		*starttls = strstr(text, "STARTTLS") != NULL;
	return 0;
}

static int conn_starttls(struct conn *c)
{
	if (conn_cmd(c, "STARTTLS\r\n", NULL, 0) != 220 || c->have != 0)
		return -1;
	c->ssl = SSL_new(g.tls);
	if (!c->ssl || !SSL_set_fd(c->ssl, c->fd) || SSL_connect(c->ssl) != 1)
		return -1;
	return 0;
}

/* ------------------------------------------------------------ send mode */

static void *session_main(void *arg)
{
	long idx = (long)arg;
	struct conn c;
	bool pipelining = false;
	char line[700], text[REPLY_MAX];
	struct sample *local = calloc((size_t)g.per_session, sizeof(*local));
	int nlocal = 0;
	long acc = 0, rej = 0, tmp = 0;
	bool ok = false;

	if (!local)
		die("out of memory");
	c.fd = -1;
	c.ssl = NULL;
	for (int j = 0; j < g.per_session; j++) {
		struct msg *m = &g.msgs[(idx * g.per_session + j) % g.nmsgs];
		int code;
		if (now() > g.deadline) {
			note_error("session %ld: deadline reached", idx);
			goto out;
		}
		if (c.fd >= 0 && g.reconnect) {
			(void)conn_cmd(&c, "QUIT\r\n", NULL, 0);
			conn_close(&c);
		}
		if (c.fd < 0) {
			if (conn_open(&c, (int)idx, NULL) < 0) {
				note_error("session %ld: connect/banner failed: %s", idx, strerror(errno));
				goto out;
			}
			if (conn_ehlo(&c, &pipelining, NULL) < 0) {
				note_error("session %ld: EHLO failed", idx);
				goto out;
			}
			if (g.starttls && (conn_starttls(&c) < 0 || conn_ehlo(&c, &pipelining, NULL) < 0)) {
				note_error("session %ld: STARTTLS failed", idx);
				goto out;
			}
		}
		if (pipelining) {
			snprintf(line, sizeof(line), "MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n",
				 m->from, m->rcpt);
			if (conn_write(&c, line, strlen(line)) < 0)
				goto io;
			int c1 = conn_reply(&c, text, sizeof(text));
			int c2 = c1 < 0 ? -1 : conn_reply(&c, text, sizeof(text));
			int c3 = c2 < 0 ? -1 : conn_reply(&c, text, sizeof(text));
			if (c1 < 0 || c2 < 0 || c3 < 0)
				goto io;
			if (c1 != 250 || c2 != 250 || c3 != 354) {
				if (c3 == 354) { /* should not happen: no valid rcpt */
					if (conn_write(&c, ".\r\n", 3) < 0 || conn_reply(&c, NULL, 0) < 0)
						goto io;
				}
				note_error("session %ld: envelope refused %d/%d/%d: %.120s", idx, c1,
					   c2, c3, text);
				if ((c1 / 100 == 4) || (c2 / 100 == 4) || (c3 / 100 == 4))
					tmp++;
				else
					rej++;
				if (conn_cmd(&c, "RSET\r\n", NULL, 0) != 250)
					goto io;
				continue;
			}
		} else {
			snprintf(line, sizeof(line), "MAIL FROM:<%s>\r\n", m->from);
			code = conn_cmd(&c, line, text, sizeof(text));
			if (code != 250)
				goto refused;
			snprintf(line, sizeof(line), "RCPT TO:<%s>\r\n", m->rcpt);
			code = conn_cmd(&c, line, text, sizeof(text));
			if (code != 250)
				goto refused;
			code = conn_cmd(&c, "DATA\r\n", text, sizeof(text));
			if (code != 354)
				goto refused;
		}
		if (conn_write(&c, m->data, m->len) < 0)
			goto io;
		double t0 = now();
		code = conn_reply(&c, text, sizeof(text));
		double lat = now() - t0;
		if (code < 0)
			goto io;
		if (code == 250) {
			acc++;
			local[nlocal].lat = lat;
			local[nlocal].cls = m->cls_idx;
			nlocal++;
		} else {
			if (code / 100 == 4)
				tmp++;
			else
				rej++;
			note_error("session %ld: message refused: %.160s", idx, text);
		}
		continue;
refused:
		if (code < 0)
			goto io;
		if (code / 100 == 4)
			tmp++;
		else
			rej++;
		note_error("session %ld: refused: %.160s", idx, text);
		if (conn_cmd(&c, "RSET\r\n", NULL, 0) != 250)
			goto io;
	}
	(void)conn_cmd(&c, "QUIT\r\n", NULL, 0);
	ok = true;
	goto out;
io:
	note_error("session %ld: connection lost: %s", idx, strerror(errno));
out:
	conn_close(&c);
	pthread_mutex_lock(&g_lock);
	memcpy(g_samples + g_nsamples, local, sizeof(*local) * (size_t)nlocal);
	g_nsamples += (size_t)nlocal;
	g_accepted += acc;
	g_rejected += rej;
	g_tempfail += tmp;
	if (ok)
		g_sessions_ok++;
	else
		g_sessions_failed++;
	pthread_mutex_unlock(&g_lock);
	free(local);
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p)
{
	if (n == 0)
		return 0;
	size_t i = (size_t)(p * (double)(n - 1) + 0.5);
	return v[i < n ? i : n - 1];
}

static void print_lat(FILE *out, const double *v, size_t n)
{
	fprintf(out, "{\"n\": %zu, \"p50_ms\": %.3f, \"p95_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f}",
		n, pct(v, n, 0.50) * 1e3, pct(v, n, 0.95) * 1e3, pct(v, n, 0.99) * 1e3,
		n ? v[n - 1] * 1e3 : 0.0);
}

static int run_send(const char *manifest, const char *label, FILE *out)
{
	load_manifest(manifest);
	size_t total = (size_t)g.sessions * (size_t)g.per_session;
	g_samples = calloc(total, sizeof(*g_samples));
	pthread_t *th = calloc((size_t)g.sessions, sizeof(*th));
	pthread_attr_t attr;
	if (!g_samples || !th)
		die("out of memory");
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	double t0 = now();
	for (long i = 0; i < g.sessions; i++)
		if (pthread_create(&th[i], &attr, session_main, (void *)i) != 0)
			die("pthread_create failed");
	for (int i = 0; i < g.sessions; i++)
		pthread_join(th[i], NULL);
	double elapsed = now() - t0;

	double *all = malloc(sizeof(double) * (g_nsamples + 1));
	size_t n = g_nsamples;
	long bytes = 0;
	for (size_t i = 0; i < n; i++)
		all[i] = g_samples[i].lat;
	qsort(all, n, sizeof(double), cmp_double);
	for (int i = 0; i < g.nmsgs; i++)
		bytes += (long)g.msgs[i].len;
	fprintf(out, "{\"label\": \"%s\", \"sessions\": %d, \"msgs_per_session\": %d, "
		     "\"sent\": %zu, \"accepted\": %ld, \"rejected\": %ld, \"tempfailed\": %ld, "
		     "\"errors\": %ld, \"sessions_ok\": %ld, \"sessions_failed\": %ld, "
		     "\"elapsed_s\": %.4f, \"accepted_per_s\": %.2f, \"starttls\": %s, \"reconnect\": %s, "
		     "\"first_error\": \"",
		label, g.sessions, g.per_session, total, g_accepted, g_rejected, g_tempfail,
		g_errors, g_sessions_ok, g_sessions_failed, elapsed,
		elapsed > 0 ? (double)g_accepted / elapsed : 0.0, g.starttls ? "true" : "false",
		g.reconnect ? "true" : "false");
	for (const char *p = g_first_error; *p; p++)
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if ((unsigned char)*p >= 0x20)
			fputc(*p, out);
	fprintf(out, "\", \"latency\": ");
	print_lat(out, all, n);
	fprintf(out, ", \"by_class\": {");
	for (int k = 0; k < g.nclasses; k++) {
		size_t m = 0;
		for (size_t i = 0; i < g_nsamples; i++)
			if (g_samples[i].cls == k)
				all[m++] = g_samples[i].lat;
		qsort(all, m, sizeof(double), cmp_double);
		fprintf(out, "%s\"%s\": ", k ? ", " : "", g.classes[k]);
		print_lat(out, all, m);
	}
	fprintf(out, "}}\n");
	free(all);
	free(th);
	return g_accepted == (long)total ? 0 : 1;
}

/* ------------------------------------------------------------ idle mode */

enum { I_CONNECTING, I_BANNER, I_OPEN, I_FAILED };

struct iconn {
	int fd;
	int state;
	double t0;
	char buf[512];
	size_t have;
};

/* banner_complete - the buffer holds a complete final 220 line. */
static int banner_complete(struct iconn *ic)
{
	char *p = ic->buf;
	size_t left = ic->have;
	for (;;) {
		char *nl = memchr(p, '\n', left);
		if (!nl)
			return ic->have == sizeof(ic->buf) ? -1 : 0;
		size_t ll = (size_t)(nl - p) + 1;
		if (ll < 4)
			return -1;
		if (p[3] != '-')
			return strncmp(p, "220", 3) == 0 ? 1 : -1;
		p += ll;
		left -= ll;
	}
}

static int run_idle(int nconns, bool tls, int probes, double hold, FILE *out)
{
	struct sockaddr_storage dst;
	socklen_t dlen;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct iconn *cs = calloc((size_t)nconns, sizeof(*cs));
	double *waits = calloc((size_t)nconns + 1, sizeof(double));
	double *pw = calloc((size_t)probes + 1, sizeof(double));
	struct conn *tcs = NULL;
	int open_ok = 0, failed = 0, nwaits = 0, tls_ok = 0, pending = 0, next = 0;
	char first_err[160] = "";
	const int max_pending = 256;

	if (parse_addr(g.host, g.port, &dst, &dlen) < 0)
		die("host %s: not a loopback address", g.host);
	if (ep < 0 || !cs || !waits || !pw)
		die("out of memory");
	double t_start = now();
	if (!tls) {
		/* non-blocking connects, at most max_pending in flight */
		while ((next < nconns || pending > 0) && now() < g.deadline) {
			while (next < nconns && pending < max_pending) {
				struct iconn *ic = &cs[next];
				ic->fd = open_socket(next, dst.ss_family, true);
				ic->t0 = now();
				if (ic->fd < 0) {
					if (!first_err[0])
						snprintf(first_err, sizeof(first_err), "socket/bind: %s",
							 strerror(errno));
					ic->state = I_FAILED;
					failed++;
					next++;
					continue;
				}
				int r = connect(ic->fd, (struct sockaddr *)&dst, dlen);
				if (r < 0 && errno != EINPROGRESS) {
					if (!first_err[0])
						snprintf(first_err, sizeof(first_err), "connect: %s",
							 strerror(errno));
					close(ic->fd);
					ic->fd = -1;
					ic->state = I_FAILED;
					failed++;
					next++;
					continue;
				}
				ic->state = I_BANNER;
				struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)next};
				epoll_ctl(ep, EPOLL_CTL_ADD, ic->fd, &ev);
				pending++;
				next++;
			}
			struct epoll_event evs[256];
			int n = epoll_wait(ep, evs, 256, 100);
			for (int i = 0; i < n; i++) {
				struct iconn *ic = &cs[evs[i].data.u32];
				ssize_t r = read(ic->fd, ic->buf + ic->have, sizeof(ic->buf) - ic->have);
				int done = r > 0 ? (ic->have += (size_t)r, banner_complete(ic)) : -1;
				if (r < 0 && errno == EAGAIN)
					continue;
				if (done == 0)
					continue;
				epoll_ctl(ep, EPOLL_CTL_DEL, ic->fd, NULL);
				pending--;
				if (done > 0) {
					ic->state = I_OPEN;
					waits[nwaits++] = now() - ic->t0;
					open_ok++;
				} else {
					if (!first_err[0])
						snprintf(first_err, sizeof(first_err), "banner: %.*s",
							 (int)ic->have, ic->buf);
					close(ic->fd);
					ic->fd = -1;
					ic->state = I_FAILED;
					failed++;
				}
			}
		}
	} else {
		tcs = calloc((size_t)nconns, sizeof(*tcs));
		if (!tcs)
			die("out of memory");
		for (int i = 0; i < nconns && now() < g.deadline; i++) {
			double w;
			tcs[i].fd = -1;
			bool st = false;
			if (conn_open(&tcs[i], i, &w) == 0 && conn_ehlo(&tcs[i], NULL, &st) == 0 && st &&
			    conn_starttls(&tcs[i]) == 0 && conn_ehlo(&tcs[i], NULL, NULL) == 0) {
				waits[nwaits++] = w;
				tls_ok++;
				open_ok++;
			} else {
				if (!first_err[0])
					snprintf(first_err, sizeof(first_err), "STARTTLS session %d failed", i);
				failed++;
				conn_close(&tcs[i]);
			}
		}
	}
	double t_open = now() - t_start;

	/* probes: fresh connections while everything above stays open */
	int np = 0;
	for (int i = 0; i < probes && now() < g.deadline; i++) {
		struct conn pc;
		double w;
		if (conn_open(&pc, nconns + i, &w) == 0)
			pw[np++] = w;
		else if (!first_err[0])
			snprintf(first_err, sizeof(first_err), "probe %d failed: %s", i, strerror(errno));
		conn_close(&pc);
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	qsort(waits, (size_t)nwaits, sizeof(double), cmp_double);
	qsort(pw, (size_t)np, sizeof(double), cmp_double);
	fprintf(out, "READY {\"mode\": \"%s\", \"requested\": %d, \"open\": %d, \"failed\": %d, "
		     "\"open_s\": %.3f, \"first_error\": \"%s\", \"banner_while_opening\": ",
		tls ? "starttls" : "idle", nconns, open_ok, failed, t_open, first_err);
	print_lat(out, waits, (size_t)nwaits);
	fprintf(out, ", \"probe_banner\": ");
	print_lat(out, pw, (size_t)np);
	fprintf(out, "}\n");
	fflush(out);

	/* hold until told (a line or EOF on stdin) or hold seconds pass */
	struct pollfd pfd = {.fd = 0, .events = POLLIN};
	(void)poll(&pfd, 1, (int)(hold * 1000));

	for (int i = 0; i < nconns; i++) {
		if (!tls && cs[i].fd >= 0)
			close(cs[i].fd);
		if (tls && tcs)
			conn_close(&tcs[i]);
	}
	free(tcs);
	free(cs);
	free(waits);
	free(pw);
	close(ep);
	return failed ? 1 : 0;
}

/* ------------------------------------------------------------ main */

static void usage(void)
{
	fprintf(stderr,
		"usage: mxload send -p PORT -c SESSIONS -m MSGS -M MANIFEST [-h HOST] [-T SECS]\n"
		"                   [-o OUT] [-e EHLO] [-s SRC,...] [-L LABEL] [-x] [-r]\n"
		"       mxload idle -p PORT -n CONNS [-h HOST] [-s SRC,...] [-t] [-P PROBES]\n"
		"                   [-H HOLD_SECS] [-T SECS] [-o OUT]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *manifest = NULL, *outpath = NULL, *label = "run";
	int nconns = 0, probes = 20, opt;
	double limit = 300, hold = 120;
	bool tls_idle = false;
	FILE *out = stdout;

	if (argc < 2)
		usage();
	const char *mode = argv[1];
	optind = 2;
	while ((opt = getopt(argc, argv, "p:c:m:M:h:T:o:e:s:L:xrn:tP:H:")) != -1) {
		switch (opt) {
		case 'p': g.port = atoi(optarg); break;
		case 'c': g.sessions = atoi(optarg); break;
		case 'm': g.per_session = atoi(optarg); break;
		case 'M': manifest = optarg; break;
		case 'h': g.host = optarg; break;
		case 'T': limit = atof(optarg); break;
		case 'o': outpath = optarg; break;
		case 'e': g.ehlo = optarg; break;
		case 's': parse_srcs(optarg); break;
		case 'L': label = optarg; break;
		case 'x': g.starttls = true; break;
		case 'r': g.reconnect = true; break;
		case 'n': nconns = atoi(optarg); break;
		case 't': tls_idle = true; break;
		case 'P': probes = atoi(optarg); break;
		case 'H': hold = atof(optarg); break;
		default: usage();
		}
	}
	if (g.port <= 0 || g.port > 65535 || limit <= 0 || limit > 3600)
		usage();
	g.deadline = now() + limit;
	signal(SIGPIPE, SIG_IGN);
	if (outpath && !(out = fopen(outpath, "w")))
		die("%s: %s", outpath, strerror(errno));

	g.tls = SSL_CTX_new(TLS_client_method());
	if (!g.tls)
		die("SSL_CTX_new failed");
	SSL_CTX_set_verify(g.tls, SSL_VERIFY_NONE, NULL);

	int rc;
	if (!strcmp(mode, "send")) {
		if (!manifest || g.sessions < 1 || g.sessions > 5000 || g.per_session < 1 ||
		    g.per_session > 1000000)
			usage();
		rc = run_send(manifest, label, out);
	} else if (!strcmp(mode, "idle")) {
		struct rlimit rl;
		if (nconns < 1 || nconns > 100000 || probes < 0 || probes > 10000)
			usage();
		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max;
			(void)setrlimit(RLIMIT_NOFILE, &rl);
		}
		rc = run_idle(nconns, tls_idle, probes, hold, out);
	} else {
		usage();
	}
	if (out != stdout)
		fclose(out);
	SSL_CTX_free(g.tls);
	return rc;
}
