/*
 * test_content.c - the external-sender warning banner (content/): each
 * MIME shape gets the banner where it belongs, byte-exact elsewhere, or is
 * left alone with the reason (signed, encrypted, charset, already there).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "content.h"

#define H "From: a@example.org\r\nTo: b@example.com\r\nSubject: hi\r\nMIME-Version: 1.0\r\n"

static const struct content_banner_opts opts = {
    .text = "CAUTION: external sender.",
    .html = "<b>CAUTION</b>: external \xc3\xa9sender.",
};

struct banner_case {
	const char *name;
	const char *in;
	enum content_banner_result want;
	const char *out; /* exact rewritten message when want == DONE */
};

static const struct banner_case cases[] = {
    {"plain no MIME", H "\r\nHello\r\n", CONTENT_BANNER_DONE,
     H "\r\nCAUTION: external sender.\r\n\r\nHello\r\n"},
    {"plain 7bit utf-8", H "Content-Type: text/plain; charset=utf-8\r\n\r\nHello\r\n",
     CONTENT_BANNER_DONE,
     H "Content-Type: text/plain; charset=utf-8\r\n\r\nCAUTION: external sender.\r\n\r\nHello\r\n"},
    {"alternative qp + html",
     H "Content-Type: multipart/alternative; boundary=\"b1\"\r\n\r\npre\r\n--b1\r\n"
       "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: "
       "quoted-printable\r\n\r\n"
       "caf=C3=A9\r\n--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
       "<html><BODY class=\"x\"><p>hi</p></body></html>\r\n--b1--\r\nepilogue\r\n",
     CONTENT_BANNER_DONE,
     H "Content-Type: multipart/alternative; boundary=\"b1\"\r\n\r\npre\r\n--b1\r\n"
       "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: "
       "quoted-printable\r\n\r\n"
       "CAUTION: external sender.\r\n\r\ncaf=C3=A9\r\n--b1\r\nContent-Type: text/html; "
       "charset=utf-8\r\n\r\n"
       "<html><BODY class=\"x\">\r\n<div data-mxgate-warning=\"1\"><b>CAUTION</b>: external "
       "&#233;sender.\r\n</div>"
       "<p>hi</p></body></html>\r\n--b1--\r\nepilogue\r\n"},
    {"mixed: first part only, attachment untouched",
     H "Content-Type: multipart/mixed; boundary=b2\r\n\r\n--b2\r\n"
       "Content-Type: text/plain\r\n\r\nbody\r\n--b2\r\n"
       "Content-Type: text/plain\r\nContent-Disposition: attachment; "
       "filename=a.txt\r\n\r\nattached\r\n--b2--\r\n",
     CONTENT_BANNER_DONE,
     H "Content-Type: multipart/mixed; boundary=b2\r\n\r\n--b2\r\n"
       "Content-Type: text/plain\r\n\r\nCAUTION: external sender.\r\n\r\nbody\r\n--b2\r\n"
       "Content-Type: text/plain\r\nContent-Disposition: attachment; "
       "filename=a.txt\r\n\r\nattached\r\n--b2--\r\n"},
    {"base64 plain re-encoded",
     H "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: "
       "base64\r\n\r\nSGVsbG8=\r\n",
     CONTENT_BANNER_DONE,
     H "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
       "Q0FVVElPTjogZXh0ZXJuYWwgc2VuZGVyLg0KDQpIZWxsbw==\r\n"},
    {"iso-8859-1 8bit html gets references",
     H "Content-Type: text/html; charset=ISO-8859-1\r\nContent-Transfer-Encoding: "
       "8bit\r\n\r\n<p>caf\xe9</p>\r\n",
     CONTENT_BANNER_DONE,
     H "Content-Type: text/html; charset=ISO-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
       "<div data-mxgate-warning=\"1\"><b>CAUTION</b>: external "
       "&#233;sender.</div>\r\n<p>caf\xe9</p>\r\n"},
    {"iso-8859-1 qp plain",
     H "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: "
       "quoted-printable\r\n\r\ncaf=E9\r\n",
     CONTENT_BANNER_DONE,
     H "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: "
       "quoted-printable\r\n\r\n"
       "CAUTION: external sender.\r\n\r\ncaf=E9\r\n"},
    {"utf-16 part: charset",
     H "Content-Type: text/plain; charset=utf-16\r\nContent-Transfer-Encoding: "
       "base64\r\n\r\n//5oAGkA\r\n",
     CONTENT_BANNER_CHARSET, NULL},
    {"S/MIME multipart/signed",
     H "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; "
       "boundary=s\r\n\r\n"
       "--s\r\nContent-Type: text/plain\r\n\r\nsigned\r\n--s\r\n"
       "Content-Type: application/pkcs7-signature\r\n\r\nAAAA\r\n--s--\r\n",
     CONTENT_BANNER_PROTECTED, NULL},
    {"S/MIME enveloped",
     H "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n"
       "Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQAx\r\n",
     CONTENT_BANNER_PROTECTED, NULL},
    {"PGP/MIME encrypted",
     H
     "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=e\r\n\r\n"
     "--e\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--e\r\n"
     "Content-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\nx\r\n-----END "
     "PGP MESSAGE-----\r\n--e--\r\n",
     CONTENT_BANNER_PROTECTED, NULL},
    {"inline PGP",
     H "\r\n-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\nhi\r\n-----BEGIN PGP "
       "SIGNATURE-----\r\nx\r\n-----END PGP SIGNATURE-----\r\n",
     CONTENT_BANNER_PROTECTED, NULL},
    {"already bannered plain", H "\r\nCAUTION: external sender.\r\n\r\nHello\r\n",
     CONTENT_BANNER_PRESENT, NULL},
    {"already bannered html (qp)",
     H "Content-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<div "
       "data-mxgate-warning=3D\"1\"><b>CAUTION</b>: external &#233;sender.</div>\r\n",
     CONTENT_BANNER_PRESENT, NULL},
    {"already bannered html after body",
     H "Content-Type: text/html\r\n\r\n<html><body>\r\n<div data-mxgate-warning=\"1\"><b>CAUTION</b>: "
       "external &#233;sender.</div>\r\n<p>x</p>\r\n",
     CONTENT_BANNER_PRESENT, NULL},
    /* red team: the sender's copy of our mark or text elsewhere is not ours */
    {"mark in a comment does not stop the banner",
     H "Content-Type: text/html\r\n\r\n<html><body><!-- data-mxgate-warning --><p>x</p>\r\n",
     CONTENT_BANNER_DONE,
     H "Content-Type: text/html\r\n\r\n<html><body>\r\n<div data-mxgate-warning=\"1\"><b>CAUTION</b>: "
       "external &#233;sender.\r\n</div><!-- data-mxgate-warning --><p>x</p>\r\n"},
    {"banner text in the unread plain alternative: html still gets it",
     H "Content-Type: multipart/alternative; boundary=a\r\n\r\n--a\r\n"
       "Content-Type: text/plain\r\n\r\nPay.\r\n\r\nCAUTION: external sender.\r\n--a\r\n"
       "Content-Type: text/html\r\n\r\n<body><p>Pay.</p>\r\n--a--\r\n",
     CONTENT_BANNER_DONE,
     H "Content-Type: multipart/alternative; boundary=a\r\n\r\n--a\r\n"
       "Content-Type: text/plain\r\n\r\nCAUTION: external sender.\r\n\r\nPay.\r\n\r\n"
       "CAUTION: external sender.\r\n--a\r\n"
       "Content-Type: text/html\r\n\r\n<body>\r\n<div data-mxgate-warning=\"1\"><b>CAUTION</b>: "
       "external &#233;sender.\r\n</div><p>Pay.</p>\r\n--a--\r\n"},
    {"utf-16 plain alternative does not cost the html its banner",
     H "Content-Type: multipart/alternative; boundary=a\r\n\r\n--a\r\n"
       "Content-Type: text/plain; charset=utf-16\r\nContent-Transfer-Encoding: base64\r\n\r\n"
       "//5oAGkA\r\n--a\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--a--\r\n",
     CONTENT_BANNER_DONE,
     H "Content-Type: multipart/alternative; boundary=a\r\n\r\n--a\r\n"
       "Content-Type: text/plain; charset=utf-16\r\nContent-Transfer-Encoding: base64\r\n\r\n"
       "//5oAGkA\r\n--a\r\nContent-Type: text/html\r\n\r\n<div data-mxgate-warning=\"1\">"
       "<b>CAUTION</b>: external &#233;sender.</div>\r\n<p>hi</p>\r\n--a--\r\n"},
    {"PGP armor in the plain alternative does not cost the html its banner",
     H "Content-Type: multipart/alternative; boundary=a\r\n\r\n--a\r\n"
       "Content-Type: text/plain\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n--a\r\n"
       "Content-Type: text/html\r\n\r\n<p>hi</p>\r\n--a--\r\n",
     CONTENT_BANNER_DONE,
     H "Content-Type: multipart/alternative; boundary=a\r\n\r\n--a\r\n"
       "Content-Type: text/plain\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n--a\r\n"
       "Content-Type: text/html\r\n\r\n<div data-mxgate-warning=\"1\">"
       "<b>CAUTION</b>: external &#233;sender.</div>\r\n<p>hi</p>\r\n--a--\r\n"},
    {"utf-7 html (Outlook reads it): the ASCII banner goes in as it is",
     H "Content-Type: text/html; charset=UTF-7\r\n\r\n<body><p>hi</p>\r\n", CONTENT_BANNER_DONE,
     H "Content-Type: text/html; charset=UTF-7\r\n\r\n<body>\r\n<div data-mxgate-warning=\"1\">"
       "<b>CAUTION</b>: external &#233;sender.\r\n</div><p>hi</p>\r\n"},
    {"made-up charset: the ASCII html banner goes in",
     H "Content-Type: text/html; charset=x-no-such\r\n\r\n<body><p>hi</p>\r\n",
     CONTENT_BANNER_DONE,
     H "Content-Type: text/html; charset=x-no-such\r\n\r\n<body>\r\n<div data-mxgate-warning=\"1\">"
       "<b>CAUTION</b>: external &#233;sender.\r\n</div><p>hi</p>\r\n"},
#define BODYTRAP(pre)                                                                              \
	{"a <body> inside " pre " is not the body",                                                \
	 H "Content-Type: text/html\r\n\r\n<html><head>" pre "</head><body><p>x</p>\r\n",           \
	 CONTENT_BANNER_DONE,                                                                      \
	 H "Content-Type: text/html\r\n\r\n<html><head>" pre "</head><body>\r\n<div "               \
	   "data-mxgate-warning=\"1\"><b>CAUTION</b>: external &#233;sender.\r\n</div><p>x</p>\r\n"}
    BODYTRAP("<!-- <body> -->"),
    BODYTRAP("<style>/* <body> */ p{}</style>"),
    BODYTRAP("<title><body></title>"),
    BODYTRAP("<script>var s='<body>';</script>"),
    BODYTRAP("<meta name=x content=\"<body>\">"),
    BODYTRAP("<!DOCTYPE html><template><body></template>"),
    {"a '>' in a body attribute value",
     H "Content-Type: text/html\r\n\r\n<body title='a>b'><p>x</p>\r\n", CONTENT_BANNER_DONE,
     H "Content-Type: text/html\r\n\r\n<body title='a>b'>\r\n<div data-mxgate-warning=\"1\"><b>CAUTION</b>: "
       "external &#233;sender.\r\n</div><p>x</p>\r\n"},
    {"quoted-printable html: the body tag found in the decoded text",
     H "Content-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
       "<body title=3D\"a>b\"><p>x</p>\r\n",
     CONTENT_BANNER_DONE,
     H "Content-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
       "<body title=3D\"a>b\"><div data-mxgate-warning=3D\"1\"><b>CAUTION</b>: extern=\r\n"
       "al &#233;sender.</div>\r\n<p>x</p>\r\n"},
    {"empty base64 part: the boundary after it stays a boundary",
     H "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Transfer-Encoding: "
       "base64\r\n\r\n--b--\r\n",
     CONTENT_BANNER_DONE,
     H "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Transfer-Encoding: "
       "base64\r\n\r\nQ0FVVElPTjogZXh0ZXJuYWwgc2VuZGVyLg0KDQo=\r\n--b--\r\n"},
    {"mixed: an inline image first, the html after it still gets the banner",
     H "Content-Type: multipart/mixed; boundary=m\r\n\r\n--m\r\nContent-Type: image/gif\r\n"
       "Content-Disposition: inline\r\n\r\nGIF89a\r\n--m\r\nContent-Type: text/html\r\n\r\n"
       "<body><p>x</p>\r\n--m--\r\n",
     CONTENT_BANNER_DONE,
     H "Content-Type: multipart/mixed; boundary=m\r\n\r\n--m\r\nContent-Type: image/gif\r\n"
       "Content-Disposition: inline\r\n\r\nGIF89a\r\n--m\r\nContent-Type: text/html\r\n\r\n"
       "<body>\r\n<div data-mxgate-warning=\"1\"><b>CAUTION</b>: external &#233;sender.\r\n</div>"
       "<p>x</p>\r\n--m--\r\n"},
    {"an unclosed comment: banner at the top",
     H "Content-Type: text/html\r\n\r\n<!-- <body><p>x</p>\r\n", CONTENT_BANNER_DONE,
     H "Content-Type: text/html\r\n\r\n<div data-mxgate-warning=\"1\"><b>CAUTION</b>: "
       "external &#233;sender.</div>\r\n<!-- <body><p>x</p>\r\n"},
    {"all header block, no blank line", "Subject: x\r\nllo\r\n", CONTENT_BANNER_NONE, NULL},
    {"only an image",
     H "Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n",
     CONTENT_BANNER_NONE, NULL},
};

static void test_banner_cases(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct banner_case *c = &cases[i];
		struct util_buf out;
		util_buf_init(&out);
		enum content_banner_result r =
		    content_banner_apply(c->in, strlen(c->in), &opts, &out);
		if (r != c->want)
			fail_msg("%s: result %s, want %s", c->name, content_banner_result_name(r),
			         content_banner_result_name(c->want));
		if (c->out) {
			if (!out.data || out.len != strlen(c->out) ||
			    memcmp(out.data, c->out, out.len) != 0)
				fail_msg("%s: got\n%.*s\nwant\n%s", c->name, (int)out.len,
				         out.data ? out.data : "", c->out);
			/* a second pass finds the banner and leaves the message alone */
			struct util_buf again;
			util_buf_init(&again);
			r = content_banner_apply(out.data, out.len, &opts, &again);
			if (r != CONTENT_BANNER_PRESENT)
				fail_msg("%s: second pass %s", c->name,
				         content_banner_result_name(r));
			assert_int_equal(again.len, 0);
			util_buf_free(&again);
		} else {
			assert_int_equal(out.len, 0);
		}
		util_buf_free(&out);
	}
}

/* test_banner_no_smuggled_part - the banner's rewrite never turns encoded
 * text into MIME structure: a quoted-printable HTML part whose text
 * decodes to "--b" and an .exe part behind it (the attachment policy,
 * which runs first, sees only text) must not come out with a boundary
 * line - re-encoded as is, the .exe became a real part downstream (red
 * team, found by fuzz_content_banner); nor a 7bit HTML part whose <body>
 * line goes on with "--b" (the banner's line break after the tag made it
 * a boundary line - red team). */
static void test_banner_no_smuggled_part(void **state)
{
	(void)state;
	static const char *const msgs[] = {
	    /* quoted-printable: "=2D-b" decodes to "--b" */
	    H "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n"
	      "Content-Transfer-Encoding: quoted-printable\r\n\r\n<html><body>Invoice</body></html>\r\n"
	      "=2D-b\r\nContent-Type: application/octet-stream; name=3D\"evil.exe\"\r\n"
	      "Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--b--\r\n",
	    /* 7bit: "--b" in the middle of the <body> line, right after the tag */
	    H "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n"
	      "\r\n<html><body>--b\r\nContent-Type: application/octet-stream; name=\"evil.exe\"\r\n"
	      "Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--b--\r\n",
	};
	struct util_strlist ext = {0};
	util_strlist_add(&ext, "exe");
	struct content_attach_opts ao = {.extensions = &ext, .types = CONTENT_TYPE_PE};
	for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
		const char *msg = msgs[i];
		char why[128];
		assert_int_equal(content_attach_check(msg, strlen(msg), &ao, why, sizeof(why)), 0);
		struct util_buf out;
		util_buf_init(&out);
		assert_int_equal(content_banner_apply(msg, strlen(msg), &opts, &out),
		                 CONTENT_BANNER_DONE);
		assert_non_null(strstr(out.data, "data-mxgate-warning"));
		if (content_attach_check(out.data, out.len, &ao, why, sizeof(why)) != 0)
			fail_msg("message %zu: the rewrite made a part: %s\n%s", i, why, out.data);
		assert_null(strstr(out.data, "\r\n--b\r\nContent-Type: application"));
		util_buf_free(&out);
	}
	util_strlist_free(&ext);
}

/* test_banner_deep - a text part nested 40 multiparts deep still gets its
 * banner (red team: 17 levels shed it; readers show it all the same). */
static void test_banner_deep(void **state)
{
	(void)state;
	struct util_buf in, out;
	util_buf_init(&in);
	util_buf_init(&out);
	util_buf_adds(&in, H);
	for (int i = 0; i < 40; i++)
		util_buf_printf(&in, "Content-Type: multipart/mixed; boundary=n%d\r\n\r\n--n%d\r\n", i, i);
	util_buf_adds(&in, "Content-Type: text/plain\r\n\r\nhello\r\n");
	for (int i = 39; i >= 0; i--)
		util_buf_printf(&in, "--n%d--\r\n", i);
	assert_int_equal(content_banner_apply(in.data, in.len, &opts, &out), CONTENT_BANNER_DONE);
	assert_non_null(strstr(out.data, "\r\n\r\nCAUTION: external sender.\r\n\r\nhello\r\n"));
	util_buf_free(&in);
	util_buf_free(&out);
}

/* test_banner_latin1_once - a non-ASCII banner converted to the part's
 * charset is found again there (found by fuzz_content_banner). */
static void test_banner_latin1_once(void **state)
{
	(void)state;
	static const struct content_banner_opts o = {.text = "Attention exp\xc3\xa9"
	                                                     "diteur."};
	static const char *const in[] = {
	    H "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: "
	      "base64\r\n\r\nZOlq4CB2dQ0K\r\n",
	    H "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: "
	      "8bit\r\n\r\nd\xe9j\xe0\r\n",
	};
	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		struct util_buf one, two;
		util_buf_init(&one);
		util_buf_init(&two);
		assert_int_equal(content_banner_apply(in[i], strlen(in[i]), &o, &one),
		                 CONTENT_BANNER_DONE);
		assert_int_equal(content_banner_apply(one.data, one.len, &o, &two),
		                 CONTENT_BANNER_PRESENT);
		assert_int_equal(two.len, 0);
		util_buf_free(&one);
		util_buf_free(&two);
	}
}

struct from_case {
	const char *value;
	const char *domain; /* NULL = none */
};

static const struct from_case from_cases[] = {
    {" Alice <alice@Example.ORG>", "example.org"},
    {" bob@sub.example.com (Bob)", "sub.example.com"},
    {" \"a@b\" <x@c.example>", "c.example"},
    {" undisclosed-recipients:;", NULL},
    {" <alice@\r\n example.net>", "example.net"},
};

static void test_from_domain(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(from_cases) / sizeof(from_cases[0]); i++) {
		char d[256];
		int rc = content_from_domain(from_cases[i].value, strlen(from_cases[i].value), d,
		                             sizeof(d));
		if (!from_cases[i].domain) {
			assert_int_equal(rc, -1);
			continue;
		}
		assert_int_equal(rc, 0);
		assert_string_equal(d, from_cases[i].domain);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_banner_cases),
	    cmocka_unit_test(test_banner_latin1_once),
	    cmocka_unit_test(test_banner_deep),
	    cmocka_unit_test(test_banner_no_smuggled_part),
	    cmocka_unit_test(test_from_domain),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
