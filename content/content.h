/*
 * content.h - message content edits (issue 13): the external-sender
 * warning banner put at the top of the first text/plain and text/html
 * parts of a message, found with GMime's MIME parser.
 *
 * Only the bytes of the parts that get a banner change: everything else
 * (header block, other parts, boundaries, preambles) stays byte-exact,
 * because the banner is spliced in at the offsets GMime reports instead of
 * re-serialising the parsed tree.
 *
 * Ownership: content_banner_apply() fills a caller-owned util_buf.
 */
#ifndef MXGATE_CONTENT_H
#define MXGATE_CONTENT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "util.h"

/* The attribute that marks mxgate's own HTML banner (never applied twice). */
#define CONTENT_BANNER_HTML_MARK "data-mxgate-warning"
/* The header field mxgate adds to a warned message (and drops on input). */
#define CONTENT_WARNING_FIELD "X-MXGate-Warning"
/* The attachment policy's note on a delivered message (issue 13):
 * "blocked; verdict=..." (action tag/deliver/quarantine) or "unchecked;
 * reason=unparsable|size|setup".  Incoming copies are dropped with every
 * X-Mxgate-* field (scan_is_our_header). */
#define CONTENT_ATTACH_FIELD "X-Mxgate-Attachments"

struct content_banner_opts {
	const char *text; /* borrowed; UTF-8 line for text/plain parts, NULL = none */
	const char *html; /* borrowed; UTF-8 HTML fragment for text/html parts, NULL = none */
};

enum content_banner_result {
	CONTENT_BANNER_ERROR = -1, /* not MIME we can parse */
	CONTENT_BANNER_NONE = 0,   /* no text part to put a banner on */
	CONTENT_BANNER_DONE,       /* out holds the rewritten message */
	CONTENT_BANNER_PROTECTED,  /* signed or encrypted: bodies left alone */
	CONTENT_BANNER_PRESENT,    /* our banner is already there */
	CONTENT_BANNER_CHARSET,    /* a part's charset cannot carry the banner */
};

/* content_banner_apply - msg[0..len) is a whole message (header block and
 * body, CRLF lines).  On CONTENT_BANNER_DONE, out receives the message with
 * the banners; on any other result out is left untouched. Thread-safe. */
enum content_banner_result content_banner_apply(const char *msg, size_t len,
                                                const struct content_banner_opts *o,
                                                struct util_buf *out);
/* content_banner_result_name - "done", "signed_or_encrypted", ... */
const char *content_banner_result_name(enum content_banner_result r);

/* ---------------------------------------------------------- attachments */

/* Detected types (bit set) for content_attach_opts.types. */
enum {
	CONTENT_TYPE_PE = 1 << 0,     /* "MZ": Windows executables and DLLs */
	CONTENT_TYPE_ELF = 1 << 1,    /* "\x7fELF": Unix executables */
	CONTENT_TYPE_SCRIPT = 1 << 2, /* "#!": interpreter scripts */
};

struct content_attach_opts {
	const struct util_strlist *extensions; /* borrowed; lower case, no dot */
	unsigned types;                        /* CONTENT_TYPE_* to block */
	bool zip;                              /* look inside zip archives, one level */
	size_t max_zip_entries;                /* more: the archive is blocked as "zip_entries" */
	const atomic_bool *cancel;             /* borrowed, may be NULL; set: stop early */
};

/* content_attach_check - msg[0..len) against the attachment policy: 1 and
 * why ("name=invoice.pdf.exe", "type=pe name=...", "zip=a.zip entry=x.exe")
 * when blocked, 0 when not, -1 and why ("mime=multipart_without_boundary",
 * "mime=no_message", ...) when it is not MIME we can parse without guessing
 * (nothing blocked among what could be read).  Thread-safe. */
/* Memory: at most 4 times len plus 1 MiB and GMime's objects
 * (content-attach.c); decoded attached messages beyond 2 times len plus
 * 1 MiB: blocked,
 * "decoded=over_limit".  o->cancel set during the check: -1, "cancelled". */
int content_attach_check(const char *msg, size_t len, const struct content_attach_opts *o,
                         char *why, size_t whylen);
/* content_attach_type_name - "pe", "elf", "script" for one CONTENT_TYPE_*. */
const char *content_attach_type_name(unsigned type);

/* content_from_domain - the domain of the first address of a From field
 * value (lower-cased into buf); -1 when there is none. */
int content_from_domain(const char *value, size_t len, char *buf, size_t buflen);

/* ------------------------------------------------- GMime, for any module */

/* content_gmime_init - GMime ready for use; safe from any thread, any time
 * (the one g_mime_init of the process: it is not thread-safe itself). */
void content_gmime_init(void);
/* content_mime_too_complex - msg[0..len) holds more MIME parts or header
 * objects than GMime may be given (content-internal.h: CONTENT_MAX_PARTS,
 * CONTENT_MAX_FIELDS; GMime spends gigabytes on a few MB of empty parts or
 * "a:b" lines): every GMime parse of outside mail asks this first.  A
 * cheap linear scan, no allocation; thread-safe. */
bool content_mime_too_complex(const char *msg, size_t len);

#endif
