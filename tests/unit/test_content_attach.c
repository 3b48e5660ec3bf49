/*
 * test_content_attach.c - the attachment policy (content/content-attach.c):
 * names (extensions, double extensions, RFC 2231 and encoded-word names,
 * trailing dots), detected types (PE, ELF, scripts), zip archives one level
 * deep, attached messages; table-driven.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "content.h"

/* zip archives written by Python's zipfile (deflate), base64 */
#define ZIP_EVIL                                                                                   \
	"UEsDBBQAAAAAAAAAIVyGphA2BQAAAAUAAAAKAAAAcmVhZG1lLnR4dGhlbGxvUEsDBBQAAAAAAAAA\r\n"         \
	"IVyAflBYBAAAAAQAAAAIAAAAZXZpbC5leGVNWpAAUEsBAhQDFAAAAAAAAAAhXIamEDYFAAAABQAA\r\n"         \
	"AAoAAAAAAAAAAAAAAIABAAAAAHJlYWRtZS50eHRQSwECFAMUAAAAAAAAACFcgH5QWAQAAAAEAAAA\r\n"         \
	"CAAAAAAAAAAAAAAAgAEtAAAAZXZpbC5leGVQSwUGAAAAAAIAAgBuAAAAVwAAAAAA\r\n"
#define ZIP_MZDOC                                                                                  \
	"UEsDBBQAAAAAAAAAIVwjVimRCAAAAAgAAAAHAAAAZG9jLnR4dE1akAByZXN0UEsBAhQDFAAAAAAA\r\n"         \
	"AAAhXCNWKZEIAAAACAAAAAcAAAAAAAAAAAAAAIABAAAAAGRvYy50eHRQSwUGAAAAAAEAAQA1AAAA\r\n"         \
	"LQAAAAAA\r\n"
#define ZIP_NESTED                                                                                 \
	"UEsDBBQAAAAAAAAAIVxzpXzM2wAAANsAAAAJAAAAaW5uZXIuemlwUEsDBBQAAAAAAAAAIVyGphA2\r\n"         \
	"BQAAAAUAAAAKAAAAcmVhZG1lLnR4dGhlbGxvUEsDBBQAAAAAAAAAIVyAflBYBAAAAAQAAAAIAAAA\r\n"         \
	"ZXZpbC5leGVNWpAAUEsBAhQDFAAAAAAAAAAhXIamEDYFAAAABQAAAAoAAAAAAAAAAAAAAIABAAAA\r\n"         \
	"AHJlYWRtZS50eHRQSwECFAMUAAAAAAAAACFcgH5QWAQAAAAEAAAACAAAAAAAAAAAAAAAgAEtAAAA\r\n"         \
	"ZXZpbC5leGVQSwUGAAAAAAIAAgBuAAAAVwAAAAAAUEsBAhQDFAAAAAAAAAAhXHOlfMzbAAAA2wAA\r\n"         \
	"AAkAAAAAAAAAAAAAAIABAAAAAGlubmVyLnppcFBLBQYAAAAAAQABADcAAAACAQAAAAA=\r\n"
#define ZIP_CLEAN                                                                                  \
	"UEsDBBQAAAAAAAAAIVzeUsldCQAAAAkAAAAFAAAAYS50eHRqdXN0IHRleHRQSwMEFAAAAAAAAAAh\r\n"         \
	"XKK6WekIAAAACAAAAAUAAABiLnBkZiVQREYtMS40UEsBAhQDFAAAAAAAAAAhXN5SyV0JAAAACQAA\r\n"         \
	"AAUAAAAAAAAAAAAAAIABAAAAAGEudHh0UEsBAhQDFAAAAAAAAAAhXKK6WekIAAAACAAAAAUAAAAA\r\n"         \
	"AAAAAAAAAIABLAAAAGIucGRmUEsFBgAAAAACAAIAZgAAAFcAAAAAAA==\r\n"

#define H                                                                                          \
	"From: a@example.org\r\nTo: b@example.com\r\nSubject: hi\r\nMIME-Version: 1.0\r\n"         \
	"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: "                   \
	"text/plain\r\n\r\nhi\r\n--b\r\n"
#define T "\r\n--b--\r\n"
#define ATT(disp, type, enc, body)                                                                 \
	H "Content-Type: " type "\r\nContent-Disposition: attachment; " disp "\r\n"                \
	  "Content-Transfer-Encoding: " enc "\r\n\r\n" body T

struct attach_case {
	const char *name;
	const char *msg;
	int want;
	const char *why; /* expected reason when blocked */
};

static const struct attach_case cases[] = {
    {"plain exe", ATT("filename=\"setup.EXE\"", "application/octet-stream", "base64", "AAAA"), 1,
     "name=setup.EXE"},
    {"double extension", ATT("filename=\"invoice.pdf.exe\"", "application/pdf", "base64", "AAAA"),
     1, "name=invoice.pdf.exe"},
    {"trailing dot and blank", ATT("filename=\"run.bat. \"", "text/plain", "7bit", "echo"), 1,
     "name=run.bat.?"},
    {"RFC 2231 name", ATT("filename*=UTF-8''invoice%2Epdf%2Ejs", "text/plain", "7bit", "x"), 1,
     "name=invoice.pdf.js"},
    {"RFC 2231 continuations",
     ATT("filename*0=\"fact\"; filename*1=\"ure.vbs\"", "text/plain", "7bit", "x"), 1,
     "name=facture.vbs"},
    {"encoded-word name",
     ATT("filename=\"=?UTF-8?B?cmVjaOKAjGV1LnNjcg==?=\"", "application/octet-stream", "base64",
         "AAAA"),
     1, "name=rech???eu.scr"},
    {"Content-Type name only",
     H "Content-Type: application/octet-stream; name=\"tool.msi\"\r\nContent-Transfer-Encoding: "
       "base64\r\n\r\nAAAA" T,
     1, "name=tool.msi"},
    {"PE under a pdf name",
     ATT("filename=\"report.pdf\"", "application/pdf", "base64", "TVqQAAMAAAAEAAAA"), 1,
     "type=pe name=report.pdf"},
    {"ELF", ATT("filename=\"data.bin\"", "application/octet-stream", "base64", "f0VMRgIBAQ=="), 1,
     "type=elf name=data.bin"},
    {"script", ATT("filename=\"notes.txt\"", "text/plain", "7bit", "#!/bin/sh\r\nrm -rf ~"), 1,
     "type=script name=notes.txt"},
    {"zip with an exe", ATT("filename=\"docs.zip\"", "application/zip", "base64", ZIP_EVIL), 1,
     "zip=docs.zip entry=evil.exe"},
    {"zip with a PE under a txt name",
     ATT("filename=\"docs.zip\"", "application/zip", "base64", ZIP_MZDOC), 1,
     "type=pe zip=docs.zip entry=doc.txt"},
    {"zip in a zip: one level only",
     ATT("filename=\"outer.zip\"", "application/zip", "base64", ZIP_NESTED), 0, NULL},
    {"clean zip", ATT("filename=\"docs.zip\"", "application/zip", "base64", ZIP_CLEAN), 0, NULL},
    {"not a zip after all",
     ATT("filename=\"docs.zip\"", "application/zip", "base64", "UEsDBAAAAA=="), 0, NULL},
    {"clean pdf", ATT("filename=\"report.pdf\"", "application/pdf", "base64", "JVBERi0xLjQ="), 0,
     NULL},
    {"exe in an attached message",
     H "Content-Type: message/rfc822\r\n\r\nFrom: x@y.z\r\nMIME-Version: 1.0\r\n"
       "Content-Type: multipart/mixed; boundary=i\r\n\r\n--i\r\nContent-Type: "
       "application/octet-stream; name=a.exe\r\n"
       "Content-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--i--\r\n" T,
     1, "name=a.exe"},
    {"no attachment", "From: a@b.c\r\n\r\nhello\r\n", 0, NULL},
};

static void test_attach_cases(void **state)
{
	(void)state;
	struct util_strlist ext = {0};
	static const char *const exts[] = {"exe", "bat", "js", "vbs", "scr", "msi"};
	for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++)
		util_strlist_add(&ext, exts[i]);
	struct content_attach_opts o = {.extensions = &ext,
	                                .types = CONTENT_TYPE_PE | CONTENT_TYPE_ELF |
	                                         CONTENT_TYPE_SCRIPT,
	                                .zip = true,
	                                .max_zip_entries = 100};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char why[256];
		int rc =
		    content_attach_check(cases[i].msg, strlen(cases[i].msg), &o, why, sizeof(why));
		if (rc != cases[i].want)
			fail_msg("%s: %d (%s), want %d", cases[i].name, rc, why, cases[i].want);
		if (cases[i].why && strcmp(why, cases[i].why) != 0)
			fail_msg("%s: why \"%s\", want \"%s\"", cases[i].name, why, cases[i].why);
	}
	/* zip off: the archive's contents are not judged; entry limit */
	o.zip = false;
	assert_int_equal(
	    content_attach_check(cases[10].msg, strlen(cases[10].msg), &o, (char[64]){0}, 64), 0);
	o.zip = true;
	o.max_zip_entries = 1;
	char why[128];
	assert_int_equal(
	    content_attach_check(cases[13].msg, strlen(cases[13].msg), &o, why, sizeof(why)), 1);
	assert_string_equal(why, "zip=docs.zip entries=over_limit");
	util_strlist_free(&ext);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_attach_cases),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
