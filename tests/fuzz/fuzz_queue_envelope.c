/*
 * fuzz_queue_envelope.c - libFuzzer target: the queue file reader
 * (queue_envelope_parse).  The start-up scan reads every envelope left on
 * disk, including ones a crash or a full disk cut short: the reader must
 * refuse anything malformed without crashing (the store then moves the
 * file to corrupt/).
 *
 * Invariants besides memory safety:
 *  - a refusal comes with a message;
 *  - an accepted envelope serialises, the result parses again, and
 *    serialising that gives the same bytes (the writer and the reader
 *    agree, so an envelope update never changes a message's meaning);
 *  - every truncation of a serialised envelope either parses to the same
 *    thing or is refused (a half-written file is never read as a different
 *    envelope).
 */
#include <stdbool.h>

#include "fuzz-common.h"
#include "queue.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1 << 16)
		return 0;
	char *text = malloc(size ? size : 1);
	if (!text)
		abort();
	if (size)
		memcpy(text, data, size);
	char err[256];
	err[0] = 0;
	struct queue_envelope *env = queue_envelope_parse(text, size, err, sizeof(err));
	if (!env) {
		FUZZ_CHECK(err[0] != 0);
		free(text);
		return 0;
	}
	size_t l1 = 0, l2 = 0;
	char *s1 = queue_envelope_serialize(env, &l1);
	FUZZ_CHECK(s1 != NULL);
	struct queue_envelope *back = queue_envelope_parse(s1, l1, err, sizeof(err));
	if (!back) {
		fprintf(stderr, "re-parse failed: %s\n", err);
		FUZZ_CHECK(back != NULL);
	}
	char *s2 = queue_envelope_serialize(back, &l2);
	FUZZ_CHECK(l1 == l2 && memcmp(s1, s2, l1) == 0);
	/* Truncations of a good file: refused, or the same envelope. */
	size_t cuts[3] = {l1 - 1, l1 / 2, l1 > 8 ? l1 - 8 : 0};
	for (int i = 0; i < 3; i++) {
		if (cuts[i] == 0 || cuts[i] >= l1)
			continue;
		char *t = malloc(cuts[i]);
		if (!t)
			abort();
		memcpy(t, s1, cuts[i]);
		struct queue_envelope *e = queue_envelope_parse(t, cuts[i], err, sizeof(err));
		if (e) {
			size_t l3 = 0;
			char *s3 = queue_envelope_serialize(e, &l3);
			FUZZ_CHECK(l3 == l1 && memcmp(s3, s1, l1) == 0);
			free(s3);
			queue_envelope_free(e);
		}
		free(t);
	}
	free(s1);
	free(s2);
	queue_envelope_free(back);
	queue_envelope_free(env);
	free(text);
	return 0;
}
