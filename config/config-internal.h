/*
 * config-internal.h - what the files of config/ share and nobody else needs:
 * the declarative directive tables (config-table.c), the value types that
 * parse, print and free one directive (config-types.c), the parse state that
 * remembers where each directive was set (config-parse.c) and the cross-field
 * checks (config-check.c).  Only tests/unit/test_config.c includes it from
 * outside, to walk the tables.
 *
 * Ownership: the tables are static and constant.  Value functions write into
 * and free fields of a struct config / struct config_route they are handed.
 *
 * Diagnostics: everything goes through config_diag_add(); nothing prints.
 */
#ifndef MX_CONFIG_INTERNAL_H
#define MX_CONFIG_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Longest line accepted, without its line ending.  inih's line buffer must be
 * 3 bytes larger (CR, LF, NUL). */
#define CONFIG_LINE_MAX 4096
/* Largest config file (and recipients_file / auth_file) read. */
#define CONFIG_FILE_MAX (8 * 1024 * 1024)

enum config_type {
	CONFIG_T_STRING = 0, /* char *; optional `enums` = allowed values */
	CONFIG_T_PATH,       /* char *; a file that must exist and be readable */
	CONFIG_T_DIR,        /* char *; a directory, created at start when missing */
	CONFIG_T_BOOL,       /* bool */
	CONFIG_T_INT,        /* int or int64_t (by size) */
	CONFIG_T_SIZE,       /* bytes, K/M/G suffix; int or int64_t */
	CONFIG_T_DURATION,   /* seconds, s/m/h/d suffix; int or int64_t */
	CONFIG_T_DOUBLE,     /* double */
	CONFIG_T_ENUM,       /* int-sized enum; value = index in `enums` */
	CONFIG_T_LIST,       /* struct util_strlist */
	CONFIG_T_DOMAINS,    /* struct util_strlist, lower-cased domains */
	CONFIG_T_ADDRS,      /* struct util_strlist, lower-cased local@domain */
	CONFIG_T_CIDRS,      /* struct util_cidr_list */
	CONFIG_T_LISTEN,     /* struct config_listen * at off, size_t count at noff */
	CONFIG_T_HOSTS,      /* struct config_host * at off, size_t count at noff */
	CONFIG_T_DURATIONS,  /* int64_t * at off, size_t count at noff */
	CONFIG_T_COUNT
};

#define CONFIG_F_RELOAD 0x1u /* a SIGHUP reload applies a change */
#define CONFIG_F_SECRET 0x2u /* never printed by config_dump() */

/* A validator sees the raw value (or one list item) after the type accepted
 * it; it returns NULL when fine, or a message (static, or written into buf). */
typedef const char *(*config_validator)(const char *value, char *buf, size_t buflen);

/* One directive: the only place its name, type, storage, default, bounds,
 * validator, reload behaviour and documentation are written down. */
struct config_directive {
	const char *name;
	enum config_type type;
	size_t off;                /* offsetof the field in struct config / config_route */
	size_t noff;               /* offsetof the count, for LISTEN / HOSTS / DURATIONS */
	size_t size;               /* sizeof the field (int vs int64_t) */
	const char *def;           /* default, written as in the file; NULL = none */
	const char *def_doc;       /* shown instead of def when the default is computed */
	int64_t min, max;          /* inclusive bounds (per item for lists); 0,0 = none */
	const char *const *enums;  /* NULL-terminated value names */
	config_validator validate; /* extra check per value / list item, or NULL */
	unsigned flags;            /* CONFIG_F_* */
	const char *doc;           /* one line for check-config and the reference */
};

/* One section kind.  `named` sections ([route NAME]) may appear several times
 * and fill a struct config_route each; the others fill struct config. */
struct config_section {
	const char *name;
	bool named;
	const struct config_directive *dirs;
	size_t ndirs;
	const char *doc;
};

extern const struct config_section config_sections[];
extern const size_t config_nsections;

/* config_section_find - the section kind called name (exact), or NULL. */
const struct config_section *config_section_find(const char *name);
/* config_directive_find - the directive called name in s (exact), or NULL. */
const struct config_directive *config_directive_find(const struct config_section *s,
                                                     const char *name);
/* config_route_section - the [route NAME] section kind. */
const struct config_section *config_route_section(void);

/* ------------------------------------------------------------ diagnostics */

/* config_diag_add - append "file:line: message" (a copy of file is kept). */
void config_diag_add(struct config_diags *d, const char *file, int line, bool warning,
                     const char *fmt, ...) UTIL_PRINTF(5, 6);
/* config_suggest - the candidate closest to word (edit distance, ignoring
 * case) when it is close enough to be a likely typo, else NULL. */
const char *config_suggest(const char *word, const char *const *cands, size_t n);

/* ------------------------------------------------------------ values (config-types.c) */

/* Where a value came from, for the messages about it. */
struct config_loc {
	struct config_diags *diags;
	const char *file;
	int line;
};

/* config_value_parse - parse value into the field of d inside base (list
 * types append).  Every problem is reported at loc; a list keeps its good
 * items.  Returns 0 when nothing was wrong, -1 otherwise. */
int config_value_parse(const struct config_directive *d, void *base, const char *value,
                       const struct config_loc *loc);
/* config_type_is_list - list types append and may be repeated or continued. */
bool config_type_is_list(enum config_type t);
/* config_value_is_set - does the field hold a value (non-NULL, non-empty)?
 * Scalars are always set. */
bool config_value_is_set(const struct config_directive *d, const void *base);
/* config_value_format - the value as it would be written in the file. */
void config_value_format(const struct config_directive *d, const void *base, struct util_buf *out);
/* config_value_free - free what the field owns and zero it. */
void config_value_free(const struct config_directive *d, void *base);
/* config_type_name - "duration", "CIDR list", ... for the reference. */
const char *config_type_name(const struct config_directive *d);
/* config_type_form - the expected form, quoted in "bad value" messages. */
const char *config_type_form(const struct config_directive *d);
/* config_range_format - "1..1000", "1s..1h", "a | b" or "" into out. */
void config_range_format(const struct config_directive *d, char *out, size_t outlen);
/* config_format_duration / config_format_size - "5m", "35M" (exact units). */
void config_format_duration(int64_t secs, char *out, size_t outlen);
void config_format_size(int64_t bytes, char *out, size_t outlen);

/* Syntax checks shared by types, validators and cross-field checks; each
 * returns NULL when fine or a message (static or in buf). */
const char *config_check_domain(const char *s, char *buf, size_t buflen);
const char *config_check_fqdn(const char *s, char *buf, size_t buflen);
const char *config_check_address(const char *s, char *buf, size_t buflen);

/* ------------------------------------------------------------ parse state (config-parse.c) */

/* What the parser knows after reading the file: for every directive the line
 * that first set it (0 = not set, default applied), and the line of the
 * first rejected attempt at it: a bad or empty value, a misspelt name
 * ("did you mean"), a misspelt section header it stood under, or the
 * wrong section - so that checks that depend on it stay quiet (one typo,
 * one error). */
struct config_parse {
	struct config *cfg;
	struct config_diags *diags;
	const char *file;
	int **seen;       /* per section kind (index in config_sections), per directive */
	int **route_seen; /* per route, per route directive */
	int **bad;        /* like seen: line of the first rejected attempt, 0 = none */
	int **route_bad;
	int route_typo;   /* line of a misspelt [route NAME] header ("did you mean"), 0 */
	bool host;        /* CONFIG_LOAD_HOST: check the machine too (config-start.c) */
};

/* config_seen_line - line that set directive name of section sname (for
 * route sections: of route ri); else the line of a rejected attempt at it
 * (config_rejected_line), whose error is already reported; 0 when the file
 * does not mention it (default applied). */
int config_seen_line(const struct config_parse *p, const char *sname, size_t ri, const char *name);
/* config_rejected_line - line of the first rejected attempt at the
 * directive (see struct config_parse), 0 when none: its value is the
 * default, which checks that depend on it must not judge. */
int config_rejected_line(const struct config_parse *p, const char *sname, size_t ri,
                         const char *name);
/* config_check_all - cross-field checks and computed defaults, after parsing. */
void config_check_all(struct config_parse *p);
/* config_check_start - what would fail at start-up (config-start.c): run by
 * config_check_all() after its own checks. */
void config_check_start(struct config_parse *p);

#endif
