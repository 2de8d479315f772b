/* lc_dkim: DKIM signing (RFC 6376, relaxed/relaxed) with rsa-sha256 and ed25519-sha256 (RFC 8463), on GnuTLS
 * (keys, hashes, Ed25519) and GMP (the RSA private-key operation: blinded CRT with constant-time modular
 * exponentiation and a verification of each signature before it is used; see lc_dkim.c).
 *
 * Contract: a message is prepared once (lc_dkim_msg_new): its header block is parsed (folded lines, duplicate
 * fields), its body hash is computed, the list of signed header fields (h=) is chosen and the SHA-256 state of
 * the header fields common to every copy is computed once. Each copy is then signed with lc_dkim_sign, which
 * adds only the copy's own header fields (the `extra` lines a sender puts above the message's header, e.g. a
 * per-recipient List-Unsubscribe) and the DKIM-Signature field itself to a copy of that state, so the per-copy
 * cost is one hash-state copy, a few hundred octets of hashing and one signature per key.
 * Header selection follows RFC 6376 5.4.2: instances are taken from the bottom of the header up; every signed
 * name is listed once more than it occurs (over-signing: a field added later breaks the signature); From is
 * always signed. Fields whose names are per-copy (given to lc_dkim_msg_new) are hashed last: their instances in
 * the message (if any) first, then the copy's, bottom up. DKIM-Signature fields already in the message are
 * never signed. The new field's b= is hashed empty (RFC 6376 3.7) and placed last.
 * ed25519-sha256 signs the SHA-256 digest of the canonical header hash input with PureEdDSA (RFC 8463 3).
 * Keys are PEM (PKCS#8 or PKCS#1); RSA keys must have 1024..4096 bits (RFC 8301), Ed25519 keys are 256 bits.
 * Limits: a header block of at most LC_DKIM_MAX_HEADER octets and LC_DKIM_MAX_FIELDS fields, header lines that
 * are "name:value" with printable names; the body is any length (hashed in one pass).
 * Threads: lc_dkim_sign may run in several threads at once with the same message and the same keys (both are
 * only read; GnuTLS calls on a key are serialised by a lock of the key). Making and freeing messages and keys
 * is not thread-safe: a message and its keys must outlive every signing thread that uses them.
 */
#ifndef LC_DKIM_H
#define LC_DKIM_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct lc_buf;

#define LC_DKIM_MAX_HEADER (1024 * 1024)
#define LC_DKIM_MAX_FIELDS 2000
#define LC_DKIM_MAX_PERCOPY 8
#define LC_DKIM_RSA_BITS 2048   /* what lc_dkim_key_generate makes */
#define LC_DKIM_RSA_MIN 1024
#define LC_DKIM_RSA_MAX 4096
#define LC_DKIM_TXT_MAX 1024    /* room for "v=DKIM1; k=rsa; p=..." of a 4096-bit key */

enum lc_dkim_alg { LC_DKIM_RSA = 1, LC_DKIM_ED25519 = 2 };

/* lc_dkim_alg_parse maps "rsa"/"ed25519" to the enum; -1 otherwise. lc_dkim_alg_name is the reverse. */
int lc_dkim_alg_parse(const char *s);
const char *lc_dkim_alg_name(int alg);
/* lc_dkim_name_ok: 1 if s is a usable selector or domain (dot-separated labels of [A-Za-z0-9_-], 1..63 octets
 * each, 253 at most, no leading or trailing '-' in a label). */
int lc_dkim_name_ok(const char *s);

/* ---- keys ---- */

struct lc_dkim_key;

/* lc_dkim_key_generate makes a new key (RSA: LC_DKIM_RSA_BITS) for domain d= and selector s=; NULL + err. */
struct lc_dkim_key *lc_dkim_key_generate(int alg, const char *domain, const char *selector, char *err,
                                         size_t errlen);
/* lc_dkim_key_load reads a PEM private key of algorithm alg; a key of another type, or an RSA key outside
 * LC_DKIM_RSA_MIN..MAX bits, is refused. NULL + err (names the file and the reason). */
struct lc_dkim_key *lc_dkim_key_load(const char *path, int alg, const char *domain, const char *selector,
                                     char *err, size_t errlen);
/* lc_dkim_key_from_pem is lc_dkim_key_load from memory. */
struct lc_dkim_key *lc_dkim_key_from_pem(const char *pem, size_t len, int alg, const char *domain,
                                         const char *selector, char *err, size_t errlen);
void lc_dkim_key_free(struct lc_dkim_key *k);
int lc_dkim_key_alg(const struct lc_dkim_key *k);
unsigned lc_dkim_key_bits(const struct lc_dkim_key *k);
const char *lc_dkim_key_domain(const struct lc_dkim_key *k);
const char *lc_dkim_key_selector(const struct lc_dkim_key *k);
/* lc_dkim_key_pem writes the private key as unencrypted PKCS#8 PEM into a new buffer (*out, caller frees). */
int lc_dkim_key_pem(const struct lc_dkim_key *k, char **out, size_t *len);
/* lc_dkim_key_sign_digest signs a SHA-256 digest as DKIM does (RSA: RSASSA-PKCS1-v1_5, computed as via says;
 * Ed25519: PureEdDSA over the digest, GnuTLS whatever via says). Returns the signature's length in octets (at
 * most outlen), or -1 + err. For tests (the RSA paths must agree) and tools. */
enum {
    LC_DKIM_VIA_DEFAULT = 0, /* what lc_dkim_sign uses: AVX-512 IFMA when the CPU and key allow, else GMP */
    LC_DKIM_VIA_GNUTLS = 1,  /* gnutls_privkey_sign_hash2 */
    LC_DKIM_VIA_GMP = 2,     /* GMP's mpz_powm_sec */
};
long lc_dkim_key_sign_digest(struct lc_dkim_key *k, const unsigned char dig[32], int via, unsigned char *out,
                             size_t outlen, char *err, size_t errlen);
/* lc_dkim_key_fast: 1 if the key's RSA signatures take the AVX-512 IFMA path on this CPU (for logs and tests). */
int lc_dkim_key_fast(const struct lc_dkim_key *k);
/* lc_dkim_key_txt writes the DNS TXT record value "v=DKIM1; k=rsa; p=BASE64" (RSA: the DER public key info;
 * Ed25519: the raw 32-octet public key, RFC 8463 4). Returns 0 or -1 (does not fit). */
int lc_dkim_key_txt(const struct lc_dkim_key *k, char *out, size_t outlen);

/* ---- canonicalization (pure; exported for tests) ---- */

/* lc_dkim_canon_header appends the relaxed form "name:value\r\n" of one header field (name, colon, value, any
 * folding, with or without its final CRLF) to out; -1 if the field has no colon or out is full. */
int lc_dkim_canon_header(const char *field, size_t len, struct lc_buf *out);
/* lc_dkim_canon_body appends the relaxed form of a body to out; -1 if out is full. */
int lc_dkim_canon_body(const char *body, size_t len, struct lc_buf *out);
/* lc_dkim_body_hash writes the base64 SHA-256 of the relaxed body (44 characters and a NUL) to out. */
int lc_dkim_body_hash(const char *body, size_t len, char out[45]);

/* ---- messages ---- */

struct lc_dkim_msg;

/* lc_dkim_msg_new prepares a message (CRLF line ends; header, empty line, body) for signing. percopy: NULL-
 * terminated header names (at most LC_DKIM_MAX_PERCOPY) that copies may add above the header and that must be
 * signed; NULL for none. NULL + err on a malformed or oversized header. The message is not kept. */
struct lc_dkim_msg *lc_dkim_msg_new(const char *msg, size_t len, const char *const *percopy, char *err,
                                    size_t errlen);
void lc_dkim_msg_free(struct lc_dkim_msg *m);
/* lc_dkim_msg_bh is the message's body hash (base64). */
const char *lc_dkim_msg_bh(const struct lc_dkim_msg *m);

/* lc_dkim_sign appends to out one DKIM-Signature field (folded, CRLF-ended) per key, for a copy made of the
 * header lines extra (extralen octets of CRLF-ended fields, each of a per-copy name; may be empty) followed by
 * the message. The fields go first, above extra, in key order. t: the t= tag (0: none). 0, or -1 + err (a
 * field of extra with a name not declared per-copy, a signing failure, out full). out is left as it was on -1. */
int lc_dkim_sign(const struct lc_dkim_msg *m, struct lc_dkim_key *const *keys, size_t nkeys, const char *extra,
                 size_t extralen, time_t t, struct lc_buf *out, char *err, size_t errlen);

#endif
