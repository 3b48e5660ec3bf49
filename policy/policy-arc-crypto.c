/*
 * policy-arc-crypto.c - the cryptography of ARC (RFC 8617) on OpenSSL 3
 * EVP: base64, the sealing key (PEM file) and its selector record, DKIM key
 * records (RFC 6376 3.6.1) into public keys, and rsa-sha256
 * (RSASSA-PKCS1-v1_5, RFC 8017 8.2) / ed25519-sha256 (RFC 8463: Ed25519
 * over the SHA-256 of the data) signing and verification.
 *
 * Pure and thread-safe: no DNS, no message state; an EVP_PKEY is only read
 * here, so workers may share the sealing key.
 * Ownership: returned strings and keys belong to the caller (free(),
 * EVP_PKEY_free()).  Diagnostics: reasons in err / *why, never logged.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "policy-arc.h"
#include "policy.h"

/* ------------------------------------------------------------ base64 */

/* policy_arc_b64 - base64 of data, malloc'd. */
char *policy_arc_b64(const unsigned char *p, size_t n)
{
	char *out = util_xmalloc(4 * ((n + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)out, p, (int)n);
	return out;
}

/* policy_arc_unb64 - decode base64 ignoring folding white space; malloc'd, NULL
 * on bad input. */
unsigned char *policy_arc_unb64(const char *s, size_t *outlen)
{
	size_t n = strlen(s), k = 0, pad = 0;
	char *clean = util_xmalloc(n + 1);
	unsigned char *out;
	int r;

	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
			clean[k++] = s[i];
	clean[k] = 0;
	if (k == 0 || k % 4 != 0) {
		free(clean);
		return NULL;
	}
	if (clean[k - 1] == '=')
		pad++;
	if (clean[k - 2] == '=')
		pad++;
	out = util_xmalloc(k / 4 * 3 + 1);
	r = EVP_DecodeBlock(out, (unsigned char *)clean, (int)k);
	free(clean);
	if (r < 0 || (size_t)r < pad) {
		free(out);
		return NULL;
	}
	*outlen = (size_t)r - pad;
	return out;
}

/* ------------------------------------------------------------ keys */

/* policy_arc_load_key - a PEM private key of the configured algorithm. */
EVP_PKEY *policy_arc_load_key(const char *path, int algorithm, char *err, size_t errlen)
{
	FILE *fp = fopen(path, "r");
	EVP_PKEY *k;
	int id;

	if (fp == NULL) {
		snprintf(err, errlen, "[arc] key_file %s: %s", path, strerror(errno));
		return NULL;
	}
	k = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
	fclose(fp);
	if (k == NULL) {
		snprintf(err, errlen, "[arc] key_file %s: not a PEM private key", path);
		return NULL;
	}
	id = EVP_PKEY_get_base_id(k);
	if ((algorithm == 0 && id != EVP_PKEY_RSA) || (algorithm == 1 && id != EVP_PKEY_ED25519)) {
		snprintf(err, errlen, "[arc] key_file %s: not an %s key", path,
		         algorithm == 0 ? "RSA" : "Ed25519");
		EVP_PKEY_free(k);
		return NULL;
	}
	if (algorithm == 0 && EVP_PKEY_get_bits(k) < 1024) {
		snprintf(err, errlen,
		         "[arc] key_file %s: RSA key shorter than 1024 bits (RFC 8301)", path);
		EVP_PKEY_free(k);
		return NULL;
	}
	return k;
}

/* policy_key_create - a new private key in PEM at path: RSA of bits
 * (algorithm 0) or Ed25519 (1), created with O_EXCL (an existing file is
 * never replaced: 1 is returned and the file is left alone) and mode, and
 * fsynced before 0 is returned.  -1 + err; a partial file is removed. */
static char *key_record_of(EVP_PKEY *k, int algorithm);

int policy_key_create(const char *path, int algorithm, int bits, mode_t mode, gid_t gid,
                      char **record, char *err, size_t errlen)
{
	EVP_PKEY *k = NULL;
	FILE *f = NULL;
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);

	if (fd < 0 && errno == EEXIST)
		return 1;
	if (fd < 0) {
		snprintf(err, errlen, "%s: cannot create the key: %s", path, strerror(errno));
		return -1;
	}
	/* the group and mode asked for, whatever the umask - on the file
	 * created, never by its name (which may be swapped meanwhile) */
	if ((gid != (gid_t)-1 && fchown(fd, (uid_t)-1, gid) < 0) || fchmod(fd, mode) < 0)
		goto fail;
	k = algorithm == 0 ? EVP_RSA_gen((unsigned)bits) : EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	if (k == NULL || (f = fdopen(fd, "w")) == NULL)
		goto fail;
	fd = -1;
	if (!PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) || fflush(f) != 0 ||
	    fsync(fileno(f)) != 0)
		goto fail;
	if (fclose(f) != 0) {
		f = NULL;
		goto fail;
	}
	if (record != NULL && (*record = key_record_of(k, algorithm)) == NULL) {
		f = NULL;
		errno = 0;
		goto fail;
	}
	EVP_PKEY_free(k);
	return 0;
fail:
	snprintf(err, errlen, "%s: cannot create the key: %s", path,
	         errno ? strerror(errno) : "key generation failed");
	if (f != NULL)
		fclose(f);
	else if (fd >= 0)
		close(fd);
	EVP_PKEY_free(k);
	unlink(path);
	return -1;
}

/* policy_arc_key_record - "v=DKIM1; k=...; p=..." for the selector TXT. */
char *policy_arc_key_record(const char *key_file, int algorithm, char *err, size_t errlen)
{
	EVP_PKEY *k = policy_arc_load_key(key_file, algorithm, err, errlen);
	char *rec;

	if (k == NULL)
		return NULL;
	rec = key_record_of(k, algorithm);
	if (rec == NULL)
		snprintf(err, errlen, "[arc] key_file %s: cannot derive the public key", key_file);
	EVP_PKEY_free(k);
	return rec;
}

/* key_record_of - "v=DKIM1; k=...; p=..." of k; NULL when the public half
 * cannot be derived. */
static char *key_record_of(EVP_PKEY *k, int algorithm)
{
	unsigned char *der = NULL, raw[32];
	size_t rawlen = sizeof(raw);
	char *b64 = NULL, *rec = NULL;
	int n;

	if (algorithm == 0) {
		n = i2d_PUBKEY(k, &der);
		if (n > 0)
			b64 = policy_arc_b64(der, (size_t)n);
		OPENSSL_free(der);
	} else if (EVP_PKEY_get_raw_public_key(k, raw, &rawlen) == 1) {
		b64 = policy_arc_b64(raw, rawlen);
	}
	if (b64 != NULL)
		rec =
		    util_xasprintf("v=DKIM1; k=%s; p=%s", algorithm == 0 ? "rsa" : "ed25519", b64);
	free(b64);
	return rec;
}

/* policy_arc_selector_record - the record of the configured key. */
char *policy_arc_selector_record(const struct config *cfg, char *err, size_t errlen)
{
	if (cfg->arc_key_file == NULL) {
		snprintf(err, errlen, "[arc] key_file is not set");
		return NULL;
	}
	return policy_arc_key_record(cfg->arc_key_file, cfg->arc_algorithm, err, errlen);
}

/* arc_list_has - a colon-separated tag value (RFC 6376 3.6.1 h=, s=)
 * holds token; an absent list (NULL) allows everything. */
static bool arc_list_has(const char *list, const char *token)
{
	size_t tl = strlen(token);

	if (list == NULL)
		return true;
	for (const char *p = list; *p;) {
		const char *e;
		while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
			p++;
		e = p;
		while (*e && *e != ':' && *e != ' ' && *e != '\t' && *e != '\r' && *e != '\n')
			e++;
		if ((size_t)(e - p) == tl && strncmp(p, token, tl) == 0)
			return true;
		while (*e && *e != ':')
			e++;
		p = *e == ':' ? e + 1 : e;
	}
	return false;
}

/* policy_arc_parse_key - a DKIM key record (RFC 6376 3.6.1) into a public key;
 * NULL with a reason. */
EVP_PKEY *policy_arc_parse_key(const char *txt, int min_rsa_bits, const char **why)
{
	struct policy_arc_tags t;
	char err[80];
	const char *v, *kt, *p;
	unsigned char *der = NULL;
	size_t derlen = 0;
	EVP_PKEY *k = NULL;

	*why = "key record does not parse";
	if (policy_arc_tags_parse(txt, strlen(txt), &t, err, sizeof(err)) < 0)
		goto done;
	v = policy_arc_tag(&t, "v");
	kt = policy_arc_tag(&t, "k");
	p = policy_arc_tag(&t, "p");
	/* v=, when present, is "DKIM1" and the first tag */
	if ((v != NULL && (strcmp(v, "DKIM1") != 0 || strcmp(t.v[0].name, "v") != 0)) || p == NULL)
		goto done;
	if (!arc_list_has(policy_arc_tag(&t, "h"), "sha256")) {
		*why = "key does not allow sha256 (h=)";
		goto done;
	}
	if (!arc_list_has(policy_arc_tag(&t, "s"), "email") &&
	    !arc_list_has(policy_arc_tag(&t, "s"), "*")) {
		*why = "key is not for email (s=)";
		goto done;
	}
	if (p[0] == 0) {
		*why = "key revoked";
		goto done;
	}
	der = policy_arc_unb64(p, &derlen);
	if (der == NULL)
		goto done;
	if (kt == NULL || strcmp(kt, "rsa") == 0) {
		const unsigned char *q = der;
		k = d2i_PUBKEY(NULL, &q, (long)derlen);
		if (k != NULL && EVP_PKEY_get_base_id(k) != EVP_PKEY_RSA) {
			EVP_PKEY_free(k);
			k = NULL;
		}
		if (k != NULL && EVP_PKEY_get_bits(k) < min_rsa_bits) {
			*why = "RSA key too short (RFC 8301)";
			EVP_PKEY_free(k);
			k = NULL;
		}
	} else if (strcmp(kt, "ed25519") == 0 && derlen == 32) {
		k = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, der, derlen);
	} else {
		*why = "unknown key type";
	}
done:
	free(der);
	policy_arc_tags_free(&t);
	if (k != NULL)
		*why = NULL;
	return k;
}

/* ------------------------------------------------------------ sign / verify */

/* policy_arc_alg - 0 rsa-sha256, 1 ed25519-sha256, -1 other. */
int policy_arc_alg(const char *a)
{
	if (a != NULL && strcmp(a, "rsa-sha256") == 0)
		return 0;
	if (a != NULL && strcmp(a, "ed25519-sha256") == 0)
		return 1;
	return -1;
}

/* policy_arc_verify_sig - data signed by key with alg; true when it verifies. */
bool policy_arc_verify_sig(EVP_PKEY *key, int alg, const struct util_buf *data, const char *b)
{
	size_t siglen = 0;
	unsigned char *sig = policy_arc_unb64(b, &siglen);
	unsigned char hash[32];
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool ok = false;
	int id = EVP_PKEY_get_base_id(key);

	if (sig == NULL || ctx == NULL)
		goto done;
	if (alg == 0 && id == EVP_PKEY_RSA) {
		ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
		     EVP_DigestVerify(ctx, sig, siglen, (const unsigned char *)data->data,
		                      data->len) == 1;
	} else if (alg == 1 && id == EVP_PKEY_ED25519) {
		ok = EVP_Digest(data->data, data->len, hash, NULL, EVP_sha256(), NULL) == 1 &&
		     EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, key) == 1 &&
		     EVP_DigestVerify(ctx, sig, siglen, hash, sizeof(hash)) == 1;
	}
done:
	EVP_MD_CTX_free(ctx);
	free(sig);
	return ok;
}

/* policy_arc_sign - base64 signature of data with the sealing key; NULL on error. */
char *policy_arc_sign(EVP_PKEY *key, const struct util_buf *data)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char hash[32], *sig = NULL;
	size_t siglen = 0;
	char *out = NULL;
	bool ed = EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519;
	const unsigned char *msg = (const unsigned char *)data->data;
	size_t msglen = data->len;

	if (ctx == NULL)
		goto done;
	if (ed) {
		if (EVP_Digest(data->data, data->len, hash, NULL, EVP_sha256(), NULL) != 1)
			goto done;
		msg = hash;
		msglen = sizeof(hash);
	}
	if (EVP_DigestSignInit(ctx, NULL, ed ? NULL : EVP_sha256(), NULL, key) != 1 ||
	    EVP_DigestSign(ctx, NULL, &siglen, msg, msglen) != 1)
		goto done;
	sig = util_xmalloc(siglen);
	if (EVP_DigestSign(ctx, sig, &siglen, msg, msglen) != 1)
		goto done;
	out = policy_arc_b64(sig, siglen);
done:
	free(sig);
	EVP_MD_CTX_free(ctx);
	return out;
}
