/*
 * mxflood.c - open-loop connection flood for mxgate's benchmark (bench/flood.py).
 *
 *   mxflood -p PORT -r RATE -d SECS -l LISTED -u UNLISTED [-U PERCENT]
 *           [-h HOST] [-m MAX_INFLIGHT] [-t CONN_TIMEOUT] [-L LABEL]
 *
 * Starts RATE new connections per second for SECS seconds on a fixed
 * schedule (open loop: a slow server does not slow the offered load down,
 * it piles up connections in flight, up to MAX_INFLIGHT).  Every connection
 * comes from a source address of its own: PERCENT % (default 10) from
 * UNLISTED.x.y, the rest from LISTED.x.y, where LISTED and UNLISTED are the
 * first two octets of a loopback /16 ("127.20") whose addresses the DNSBL
 * zone lists or does not list.  x.y count up from .0.1,
 * skipping .0 and .255, so no address repeats within a run (a gateway's
 * DNSBL or pass cache never answers for it).
 *
 * One connection: non-blocking connect, read the first complete reply (a
 * multi-line 220- greeting counts when its final line arrives); on 220 send
 * QUIT, read the 221 (or EOF) and close; on anything else close.  The
 * outcome is counted per class (listed / unlisted): served (220), refused
 * (5xx), tempfailed (4xx), error (reset, EOF before a reply, bad reply) or
 * timeout (no complete reply within CONN_TIMEOUT).  The time from connect()
 * to the complete first reply is one sample: "banner wait" for unlisted
 * clients served, "refusal time" for listed clients refused.  The reply's
 * arrival is the kernel's receive timestamp (SO_TIMESTAMPING, software), so
 * a busy machine delaying this program does not count against the gateway;
 * the times this program saw itself are printed too (client_latency).  A connection
 * started more than 10 ms after its slot in the schedule counts as "late"
 * (the client, or MAX_INFLIGHT, could not keep the rate).
 *
 * Prints one JSON object on stdout.  Bounds: the schedule ends after SECS,
 * every connection has CONN_TIMEOUT, and the tail is waited for at most
 * CONN_TIMEOUT + 1 s.  Loopback addresses only (127.0.0.0/8).
 *
 * (A program of its own rather than a mode of mxload: a single-threaded
 * epoll loop with a clock-driven schedule has nothing in common with
 * mxload's thread-per-session sender, and mxload.c is long enough.)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/net_tstamp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum { C_FREE, C_REPLY, C_QUIT };
enum { O_SERVED, O_REFUSED, O_TEMPFAIL, O_ERROR, O_TIMEOUT, O_N };
static const char *const outcome_name[O_N] = {"served", "refused", "tempfailed", "errors",
					      "timeouts"};

struct fconn {
	int fd;
	int state;
	bool listed;
	double t0;  /* CLOCK_MONOTONIC, at connect() */
	double rt0; /* CLOCK_REALTIME, at connect(): the clock of kernel timestamps */
	double rx;  /* kernel receive time (CLOCK_REALTIME) of the last bytes read, 0 = none */
	size_t have;
	char buf[512];
};

struct samples {
	double *v;
	size_t n, cap;
};

struct cls {
	long n;
	long out[O_N];
	struct samples lat;  /* banner wait (unlisted, served) or refusal time (listed, refused) */
	struct samples ulat; /* the same seen by this program (its own scheduling delays included) */
};

static struct cls g_listed, g_unlisted;
static char g_first_error[200];
static long g_late; /* connections started > 10 ms after their slot in the schedule */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now_real(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("mxflood: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
	va_list ap;
	if (g_first_error[0])
		return;
	va_start(ap, fmt);
	vsnprintf(g_first_error, sizeof(g_first_error), fmt, ap);
	va_end(ap);
}

static void add_sample(struct samples *s, double v)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 4096;
		s->v = realloc(s->v, s->cap * sizeof(double));
		if (!s->v)
			die("out of memory");
	}
	s->v[s->n++] = v;
}

/* parse_prefix - "127.20" -> 0x7f140000; loopback only. */
static uint32_t parse_prefix(const char *s)
{
	unsigned a, b;
	char tail;
	if (sscanf(s, "%u.%u%c", &a, &b, &tail) != 2 || a != 127 || b > 255)
		die("%s: want the first two octets of a loopback /16, e.g. 127.20", s);
	return (a << 24) | (b << 16);
}

/* host_addr - the i-th address (from 0) of a /16, skipping .0 and .255. */
static uint32_t host_addr(uint32_t prefix, long i)
{
	long third = i / 254, fourth = i % 254 + 1;
	if (third > 255)
		die("more than 65,024 addresses in one /16");
	return prefix | (uint32_t)(third << 8) | (uint32_t)fourth;
}

/* reply_state - 0: incomplete, -1: malformed, else the code of the final line. */
static int reply_state(const struct fconn *c)
{
	const char *p = c->buf;
	size_t left = c->have;
	for (;;) {
		const char *nl = memchr(p, '\n', left);
		if (!nl)
			return c->have == sizeof(c->buf) ? -1 : 0;
		size_t ll = (size_t)(nl - p) + 1;
		if (ll < 4 || p[0] < '2' || p[0] > '5')
			return -1;
		if (p[3] != '-')
			return (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
		p += ll;
		left -= ll;
	}
}

static void finish(int ep, struct fconn *c, int outcome, long *inflight)
{
	struct cls *k = c->listed ? &g_listed : &g_unlisted;
	k->out[outcome]++;
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	c->state = C_FREE;
	(*inflight)--;
}

/* on_first_reply - the greeting (or the refusal) is complete. */
static void on_first_reply(int ep, struct fconn *c, int code, long *inflight)
{
	/* the kernel's receive time of the reply's last bytes: what the gateway
	 * did, without the delays of this program on a busy machine */
	double ulat = now() - c->t0, lat = c->rx > 0 ? c->rx - c->rt0 : ulat;
	struct cls *k = c->listed ? &g_listed : &g_unlisted;
	if (code == 220) {
		if (!c->listed) {
			add_sample(&k->lat, lat);
			add_sample(&k->ulat, ulat);
		}
		/* served (counted when the connection ends): say goodbye */
		c->state = C_QUIT;
		if (write(c->fd, "QUIT\r\n", 6) != 6)
			finish(ep, c, O_SERVED, inflight);
		return;
	}
	if (code / 100 == 5 && c->listed) {
		add_sample(&k->lat, lat);
		add_sample(&k->ulat, ulat);
	}
	if (code / 100 != 5 || !c->listed)
		note("%s client: %.*s", c->listed ? "listed" : "unlisted", (int)strcspn(c->buf, "\r\n"),
		     c->buf);
	finish(ep, c, code / 100 == 5 ? O_REFUSED : code / 100 == 4 ? O_TEMPFAIL : O_ERROR,
	       inflight);
}

static void on_readable(int ep, struct fconn *c, long *inflight)
{
	for (;;) {
		if (c->state == C_QUIT) {
			/* the 221, or EOF, after QUIT: done */
			char tmp[256];
			ssize_t r = read(c->fd, tmp, sizeof(tmp));
			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				return;
			finish(ep, c, O_SERVED, inflight);
			return;
		}
		struct iovec iov = {.iov_base = c->buf + c->have, .iov_len = sizeof(c->buf) - c->have};
		union {
			char buf[CMSG_SPACE(sizeof(struct timespec) * 3)];
			struct cmsghdr align;
		} ctl;
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
				    .msg_controllen = sizeof(ctl.buf)};
		ssize_t r = recvmsg(c->fd, &mh, 0);
		for (struct cmsghdr *cm = r > 0 ? CMSG_FIRSTHDR(&mh) : NULL; cm;
		     cm = CMSG_NXTHDR(&mh, cm))
			if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SO_TIMESTAMPING) {
				struct timespec ts[3];
				memcpy(ts, CMSG_DATA(cm), sizeof(ts));
				if (ts[0].tv_sec)
					c->rx = (double)ts[0].tv_sec + (double)ts[0].tv_nsec / 1e9;
			}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN)
			return;
		if (r <= 0) {
			note("%s client: %s before a complete reply", c->listed ? "listed" : "unlisted",
			     r == 0 ? "EOF" : strerror(errno));
			finish(ep, c, O_ERROR, inflight);
			return;
		}
		c->have += (size_t)r;
		int code = reply_state(c);
		if (code == 0)
			continue;
		if (code < 0) {
			note("malformed reply: %.*s", (int)c->have, c->buf);
			finish(ep, c, O_ERROR, inflight);
			return;
		}
		on_first_reply(ep, c, code, inflight);
		return;
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(const struct samples *s, double p)
{
	if (s->n == 0)
		return 0;
	size_t i = (size_t)(p * (double)(s->n - 1) + 0.5);
	return s->v[i < s->n ? i : s->n - 1];
}

static void print_cls(const char *name, struct cls *k, double elapsed)
{
	qsort(k->lat.v, k->lat.n, sizeof(double), cmp_double);
	qsort(k->ulat.v, k->ulat.n, sizeof(double), cmp_double);
	printf("\"%s\": {\"n\": %ld", name, k->n);
	for (int o = 0; o < O_N; o++)
		printf(", \"%s\": %ld", outcome_name[o], k->out[o]);
	printf(", \"refused_per_s\": %.2f, \"latency\": {\"n\": %zu, \"p50_ms\": %.3f, "
	       "\"p95_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f}",
	       elapsed > 0 ? (double)k->out[O_REFUSED] / elapsed : 0.0, k->lat.n,
	       pct(&k->lat, 0.50) * 1e3, pct(&k->lat, 0.95) * 1e3, pct(&k->lat, 0.99) * 1e3,
	       k->lat.n ? k->lat.v[k->lat.n - 1] * 1e3 : 0.0);
	printf(", \"client_latency\": {\"n\": %zu, \"p50_ms\": %.3f, \"p99_ms\": %.3f, "
	       "\"max_ms\": %.3f}}",
	       k->ulat.n, pct(&k->ulat, 0.50) * 1e3, pct(&k->ulat, 0.99) * 1e3,
	       k->ulat.n ? k->ulat.v[k->ulat.n - 1] * 1e3 : 0.0);
}

static void usage(void)
{
	fprintf(stderr, "usage: mxflood -p PORT -r RATE -d SECS -l LISTED -u UNLISTED [-U PERCENT]\n"
			"               [-h HOST] [-m MAX_INFLIGHT] [-t CONN_TIMEOUT] [-L LABEL]\n"
			"       LISTED, UNLISTED: first two octets of a loopback /16, e.g. 127.20\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1", *label = "flood", *lpfx = NULL, *upfx = NULL;
	double rate = 0, secs = 0, conn_timeout = 10;
	long max_inflight = 20000;
	int port = 0, unlisted_pct = 10, opt;

	while ((opt = getopt(argc, argv, "p:r:d:l:u:U:h:m:t:L:")) != -1) {
		switch (opt) {
		case 'p': port = atoi(optarg); break;
		case 'r': rate = atof(optarg); break;
		case 'd': secs = atof(optarg); break;
		case 'l': lpfx = optarg; break;
		case 'u': upfx = optarg; break;
		case 'U': unlisted_pct = atoi(optarg); break;
		case 'h': host = optarg; break;
		case 'm': max_inflight = atol(optarg); break;
		case 't': conn_timeout = atof(optarg); break;
		case 'L': label = optarg; break;
		default: usage();
		}
	}
	if (port <= 0 || port > 65535 || rate <= 0 || rate > 100000 || secs <= 0 || secs > 600 ||
	    !lpfx || !upfx || unlisted_pct < 0 || unlisted_pct > 100 || max_inflight < 1 ||
	    max_inflight > 200000 || conn_timeout <= 0 || conn_timeout > 120)
		usage();
	uint32_t lp = parse_prefix(lpfx), up = parse_prefix(upfx);
	struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (inet_pton(AF_INET, host, &dst.sin_addr) != 1 || (ntohl(dst.sin_addr.s_addr) >> 24) != 127)
		die("host %s: not a loopback address", host);

	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    (rlim_t)max_inflight + 64 > rl.rlim_cur)
		max_inflight = (long)rl.rlim_cur - 64;
	signal(SIGPIPE, SIG_IGN);

	struct fconn *cs = calloc((size_t)max_inflight, sizeof(*cs));
	long *freelist = calloc((size_t)max_inflight, sizeof(long));
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (!cs || !freelist || ep < 0)
		die("out of memory");
	long nfree = 0;
	for (long i = max_inflight - 1; i >= 0; i--) {
		cs[i].fd = -1;
		freelist[nfree++] = i;
	}

	struct rusage ru0, ru1;
	getrusage(RUSAGE_SELF, &ru0);
	long started = 0, inflight = 0, nlisted = 0, nunlisted = 0;
	const long total = (long)(rate * secs + 0.5);
	double t0 = now(), t_last = t0, last_scan = t0;
	double t_end = t0 + secs, t_hard = t_end + conn_timeout + 1;
	for (;;) {
		double t = now();
		/* start what the schedule says is due by now */
		long due = (long)((t - t0) * rate) + 1;
		if (due > total)
			due = total;
		while (started < due) {
			if (nfree == 0)
				break;
			if (t - (t0 + (double)started / rate) > 0.010)
				g_late++;
			/* every (100 / PERCENT)-th connection is unlisted, spread evenly */
			bool listed = unlisted_pct == 0 ||
				      (unlisted_pct < 100 && (started * unlisted_pct) / 100 ==
								     ((started + 1) * unlisted_pct) / 100);
			struct cls *k = listed ? &g_listed : &g_unlisted;
			uint32_t src = listed ? host_addr(lp, nlisted++) : host_addr(up, nunlisted++);
			long slot = freelist[--nfree];
			struct fconn *c = &cs[slot];
			int one = 1;
			started++;
			k->n++;
			c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			c->listed = listed;
			c->have = 0;
			c->rx = 0;
			c->t0 = now();
			c->rt0 = now_real();
			struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(src)};
			if (c->fd < 0 ||
			    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) < 0 ||
			    bind(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
			    (connect(c->fd, (struct sockaddr *)&dst, sizeof(dst)) < 0 &&
			     errno != EINPROGRESS)) {
				note("socket/bind/connect: %s", strerror(errno));
				k->out[O_ERROR]++;
				if (c->fd >= 0)
					close(c->fd);
				c->fd = -1;
				freelist[nfree++] = slot;
				continue;
			}
			(void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			int tsflags = SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE;
			(void)setsockopt(c->fd, SOL_SOCKET, SO_TIMESTAMPING, &tsflags, sizeof(tsflags));
			struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = (uint64_t)slot};
			if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
				die("epoll_ctl: %s", strerror(errno));
			c->state = C_REPLY;
			inflight++;
		}
		if (started >= total && inflight == 0)
			break;
		if (t > t_hard)
			break;

		struct epoll_event evs[512];
		int n = epoll_wait(ep, evs, 512, 1);
		for (int i = 0; i < n; i++) {
			struct fconn *c = &cs[evs[i].data.u64];
			if (c->state == C_FREE)
				continue;
			on_readable(ep, c, &inflight);
			if (c->state == C_FREE) {
				freelist[nfree++] = (long)evs[i].data.u64;
				t_last = now();
			}
		}
		/* time out connections that got no complete reply */
		if (t - last_scan > 0.05) {
			last_scan = t;
			for (long i = 0; i < max_inflight; i++) {
				struct fconn *c = &cs[i];
				if (c->state != C_FREE && t - c->t0 > conn_timeout) {
					note("%s client: no reply within %.0f s",
					     c->listed ? "listed" : "unlisted", conn_timeout);
					finish(ep, c, c->state == C_QUIT ? O_SERVED : O_TIMEOUT,
					       &inflight);
					freelist[nfree++] = i;
					t_last = t;
				}
			}
		}
	}
	/* anything still open at the hard end is a timeout */
	for (long i = 0; i < max_inflight; i++)
		if (cs[i].state != C_FREE)
			finish(ep, &cs[i], cs[i].state == C_QUIT ? O_SERVED : O_TIMEOUT, &inflight);
	getrusage(RUSAGE_SELF, &ru1);
	double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
		     (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
		     (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
		     (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
	double elapsed = t_last - t0;

	printf("{\"label\": \"%s\", \"rate_target\": %.1f, \"duration_s\": %.3f, \"started\": %ld, "
	       "\"started_per_s\": %.2f, \"late\": %ld, \"elapsed_s\": %.3f, "
	       "\"client_cpu_s\": %.3f, ",
	       label, rate, secs, started, (double)started / secs, g_late, elapsed, cpu);
	print_cls("listed", &g_listed, elapsed);
	printf(", ");
	print_cls("unlisted", &g_unlisted, elapsed);
	printf(", \"first_error\": \"");
	for (const char *p = g_first_error; *p; p++)
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if ((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f)
			putchar(*p);
	printf("\"}\n");
	free(g_listed.lat.v);
	free(g_unlisted.lat.v);
	free(g_listed.ulat.v);
	free(g_unlisted.ulat.v);
	free(cs);
	free(freelist);
	close(ep);
	return 0;
}
