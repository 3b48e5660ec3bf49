/*
 * util-qid.c - queue ids and session ids.
 *
 * A queue id is 16 upper-case hex digits: 13 digits of microseconds since
 * the epoch then 3 digits of sequence within that microsecond, so ids sort
 * by arrival time.  The generator remembers the last (time, sequence) pair
 * and never goes backwards: when the wall clock steps back, or more than
 * 4096 ids are asked for within one microsecond, it borrows from the next
 * microsecond instead.  A mutex makes it thread-safe.
 *
 * A session id is 64 bits: the process's start time (seconds) in the upper
 * 32 bits, 16 random bits, then a counter - so ids are unique across
 * restarts and increase within one run.
 *
 * Ownership: callers pass their own output buffers; nothing is allocated.
 * Diagnostics: none; the functions cannot fail.
 */
#include "util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/random.h>

#define QID_SEQ_MAX 0xfff

static pthread_mutex_t qid_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t qid_last_us;
static unsigned qid_seq;
static atomic_uint_fast64_t session_next;
static pthread_once_t session_once = PTHREAD_ONCE_INIT;

/* util_qid_new - next queue id, strictly greater than every earlier one. */
void util_qid_new(char out[UTIL_QID_LEN + 1])
{
	static const char hex[] = "0123456789ABCDEF";
	int64_t now = util_now_us();
	uint64_t us;
	unsigned seq;
	int i;

	pthread_mutex_lock(&qid_lock);
	if (now > qid_last_us) {
		qid_last_us = now;
		qid_seq = 0;
	} else if (qid_seq < QID_SEQ_MAX) {
		qid_seq++;
	} else {
		qid_last_us++;
		qid_seq = 0;
	}
	us = (uint64_t)qid_last_us;
	seq = qid_seq;
	pthread_mutex_unlock(&qid_lock);

	for (i = 12; i >= 0; i--) {
		out[i] = hex[us & 0xf];
		us >>= 4;
	}
	for (i = 15; i >= 13; i--) {
		out[i] = hex[seq & 0xf];
		seq >>= 4;
	}
	out[UTIL_QID_LEN] = '\0';
}

/* util_qid_is_valid - exactly 16 upper-case hex digits (safe as a file name). */
bool util_qid_is_valid(const char *s)
{
	size_t i;

	if (s == NULL)
		return false;
	for (i = 0; i < UTIL_QID_LEN; i++) {
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F')))
			return false;
	}
	return s[UTIL_QID_LEN] == '\0';
}

/* session_seed - the first session id of this process: the start time in
 * seconds in the upper 32 bits and 16 random bits above the counter, so ids
 * do not start again at 1 after a restart (logs of several runs can be
 * searched by session id). */
static void session_seed(void)
{
	uint16_t r = 0;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
		r = (uint16_t)(util_now_us() & 0xffff);
	atomic_store(&session_next, ((uint64_t)(util_now_us() / 1000000) << 32) |
	                                ((uint64_t)r << 16) | 1u);
}

/* util_session_id_next - unique across the process's life and its restarts,
 * increasing, never 0 (0 means "no session"). */
uint64_t util_session_id_next(void)
{
	uint64_t id;

	pthread_once(&session_once, session_seed);
	do
		id = atomic_fetch_add(&session_next, 1);
	while (id == 0);
	return id;
}
