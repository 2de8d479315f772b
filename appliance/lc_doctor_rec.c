/* lc_doctor_rec: bounded parsers of the SPF, DMARC and DKIM TXT records `listcast doctor` reads from the DNS
 * (untrusted input: any octets). See lc_doctor.h.
 *
 * Contract: syntax per RFC 7208 section 4.6.1 and 12 (SPF terms: mechanisms all, include, a, mx, ptr, ip4, ip6,
 * exists with an optional qualifier; modifiers name=value), RFC 6376 3.2 (tag-lists: tag=value separated by ';',
 * white space around tags and values ignored, a duplicate tag is an error) and RFC 7489 6.3 (DMARC tags).
 * Limits: DR_REC_MAX octets, DR_TERMS_MAX terms or tags; names longer than DR_NAME_MAX-1 are refused; no
 * macro expansion (a term with '%' is taken literally and its name kept as written).
 */
#include "lc_doctor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int lc(int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static int ieq(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    if (alen != blen)
        return 0;
    for (size_t i = 0; i < alen; i++)
        if (lc((unsigned char)a[i]) != lc((unsigned char)b[i]))
            return 0;
    return 1;
}

int dr_is_printable(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return 0;
    return 1;
}

void dr_escape(const char *s, size_t len, char *out, size_t outlen)
{
    size_t o = 0;
    if (outlen == 0)
        return;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        size_t need = (c >= 0x20 && c <= 0x7e) ? 1 : 4;
        if (o + need + 4 > outlen) {
            if (o + 4 <= outlen) {
                memcpy(out + o, "...", 3);
                o += 3;
            }
            break;
        }
        if (need == 1)
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
    }
    out[o] = 0;
}

int dr_starts_tag(const char *s, size_t len, const char *tag, int semi)
{
    size_t t = strlen(tag);
    if (len < t || !ieq(s, t, tag))
        return 0;
    if (len == t || s[t] == ' ')
        return 1;
    if (!semi)
        return 0;
    size_t i = t;
    while (i < len && (s[i] == ' ' || s[i] == '\t'))
        i++;
    return i == len || s[i] == ';';
}

/* ---- SPF ---- */

static int copy_name(const char *s, size_t len, char *out)
{
    if (len >= DR_NAME_MAX || !dr_is_printable(s, len))
        return -1;
    memcpy(out, s, len);
    out[len] = 0;
    return 0;
}

static int parse_ip4(const char *s, size_t len, uint32_t *ip)
{
    uint32_t v = 0;
    int parts = 0;
    size_t i = 0;
    while (parts < 4) {
        if (i >= len || s[i] < '0' || s[i] > '9')
            return -1;
        unsigned n = 0;
        size_t digits = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9' && digits < 4) {
            n = n * 10 + (unsigned)(s[i++] - '0');
            digits++;
        }
        if (n > 255 || digits > 3)
            return -1;
        v = v << 8 | n;
        if (++parts < 4) {
            if (i >= len || s[i] != '.')
                return -1;
            i++;
        }
    }
    if (i != len)
        return -1;
    *ip = v;
    return 0;
}

static int parse_prefix(const char *s, size_t len, int max, int *out)
{
    if (len == 0 || len > 3)
        return -1;
    int v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

int dr_spf_covers(const struct dr_spf *spf, uint32_t ip)
{
    for (int i = 0; i < spf->nnets; i++) {
        uint32_t mask = spf->prefix[i] == 0 ? 0 : 0xffffffffu << (32 - spf->prefix[i]);
        if ((ip & mask) == (spf->net[i] & mask))
            return 1;
    }
    return 0;
}

/* spf_term handles one term t[0..n); 0 or -1 (why set). */
static int spf_term(struct dr_spf *o, const char *t, size_t n)
{
    char q = '+';
    if (n && (t[0] == '+' || t[0] == '-' || t[0] == '~' || t[0] == '?')) {
        q = t[0];
        t++;
        n--;
    }
    size_t nl = 0;
    while (nl < n && t[nl] != ':' && t[nl] != '/' && t[nl] != '=')
        nl++;
    const char *arg = nl < n ? t + nl + 1 : NULL;
    size_t alen = arg ? n - nl - 1 : 0;
    char shown[80];
    dr_escape(t, n, shown, sizeof shown);
    if (nl < n && t[nl] == '=') { /* modifier */
        if (q != '+' || t == t + nl || nl == 0) {
            snprintf(o->why, sizeof o->why, "bad modifier '%s'", shown);
            return -1;
        }
        if (ieq(t, nl, "redirect")) {
            if (o->redirect[0] || copy_name(arg, alen, o->redirect) < 0 || alen == 0) {
                snprintf(o->why, sizeof o->why, "bad or repeated redirect '%s'", shown);
                return -1;
            }
            o->lookups++;
        }
        return 0; /* exp= and unknown modifiers are allowed (RFC 7208 6) */
    }
    if (ieq(t, nl, "all")) {
        if (nl != n) {
            snprintf(o->why, sizeof o->why, "'all' takes no argument: '%s'", shown);
            return -1;
        }
        if (o->all) {
            snprintf(o->why, sizeof o->why, "more than one 'all'");
            return -1;
        }
        o->all = q;
        return 0;
    }
    if (ieq(t, nl, "ip4")) {
        uint32_t ip;
        int prefix = 32;
        if (!arg || t[nl] != ':') {
            snprintf(o->why, sizeof o->why, "ip4 needs an address: '%s'", shown);
            return -1;
        }
        const char *slash = memchr(arg, '/', alen);
        size_t iplen = slash ? (size_t)(slash - arg) : alen;
        if (parse_ip4(arg, iplen, &ip) < 0 ||
            (slash && parse_prefix(slash + 1, alen - iplen - 1, 32, &prefix) < 0)) {
            snprintf(o->why, sizeof o->why, "bad ip4 '%s'", shown);
            return -1;
        }
        if (o->nnets < DR_NETS_MAX) {
            o->net[o->nnets] = ip;
            o->prefix[o->nnets++] = prefix;
        }
        return 0;
    }
    if (ieq(t, nl, "ip6")) {
        if (!arg || t[nl] != ':' || alen < 2) {
            snprintf(o->why, sizeof o->why, "ip6 needs an address: '%s'", shown);
            return -1;
        }
        return 0;
    }
    int is_a = ieq(t, nl, "a"), is_mx = ieq(t, nl, "mx"), is_inc = ieq(t, nl, "include");
    if (is_a || is_mx || is_inc || ieq(t, nl, "ptr") || ieq(t, nl, "exists")) {
        o->lookups++;
        char name[DR_NAME_MAX] = "";
        if (arg && t[nl] == ':') {
            const char *slash = memchr(arg, '/', alen);
            size_t dl = slash ? (size_t)(slash - arg) : alen;
            if (dl == 0 || copy_name(arg, dl, name) < 0) {
                snprintf(o->why, sizeof o->why, "bad domain in '%s'", shown);
                return -1;
            }
        } else if ((is_inc || ieq(t, nl, "exists"))) {
            snprintf(o->why, sizeof o->why, "'%.*s' needs a domain: '%s'", (int)nl, t, shown);
            return -1;
        }
        if (is_a && o->na < DR_NAMES_MAX)
            memcpy(o->a[o->na++], name, sizeof name);
        else if (is_mx && o->nmx < DR_NAMES_MAX)
            memcpy(o->mx[o->nmx++], name, sizeof name);
        else if (is_inc && o->ninc < DR_NAMES_MAX)
            memcpy(o->inc[o->ninc++], name, sizeof name);
        return 0;
    }
    snprintf(o->why, sizeof o->why, "unknown mechanism '%s'", shown);
    return -1;
}

int dr_spf_parse(const char *s, size_t len, struct dr_spf *o)
{
    memset(o, 0, sizeof *o);
    if (len > DR_REC_MAX) {
        snprintf(o->why, sizeof o->why, "record longer than %d octets", DR_REC_MAX);
        return -1;
    }
    if (!dr_is_printable(s, len)) {
        snprintf(o->why, sizeof o->why, "record holds non-printable octets");
        return -1;
    }
    if (!dr_starts_tag(s, len, "v=spf1", 0)) {
        snprintf(o->why, sizeof o->why, "record does not start with 'v=spf1 '");
        return -1;
    }
    size_t i = 6;
    int terms = 0;
    while (i < len) {
        while (i < len && s[i] == ' ')
            i++;
        size_t st = i;
        while (i < len && s[i] != ' ')
            i++;
        if (i == st)
            break;
        if (++terms > DR_TERMS_MAX) {
            snprintf(o->why, sizeof o->why, "more than %d terms", DR_TERMS_MAX);
            return -1;
        }
        if (spf_term(o, s + st, i - st) < 0)
            return -1;
    }
    return 0;
}

/* ---- tag-lists (DKIM, DMARC) ---- */

struct tag {
    const char *name, *val;
    size_t nlen, vlen;
};

/* tags splits a tag-list; returns the number of tags or -1 (why set). */
static int tags(const char *s, size_t len, struct tag *t, int max, char *why, size_t whylen)
{
    int n = 0;
    size_t i = 0;
    while (i < len) {
        size_t st = i;
        while (i < len && s[i] != ';')
            i++;
        const char *a = s + st, *b = s + i;
        if (i < len)
            i++;
        while (a < b && (*a == ' ' || *a == '\t' || *a == '\r' || *a == '\n'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r' || b[-1] == '\n'))
            b--;
        if (a == b)
            continue; /* empty (a trailing ';') */
        const char *eq = memchr(a, '=', (size_t)(b - a));
        if (!eq) {
            char shown[60];
            dr_escape(a, (size_t)(b - a), shown, sizeof shown);
            snprintf(why, whylen, "'%s' is not tag=value", shown);
            return -1;
        }
        const char *ne = eq;
        while (ne > a && (ne[-1] == ' ' || ne[-1] == '\t'))
            ne--;
        const char *v = eq + 1;
        while (v < b && (*v == ' ' || *v == '\t'))
            v++;
        if (ne == a) {
            snprintf(why, whylen, "a tag without a name");
            return -1;
        }
        for (const char *c = a; c < ne; c++)
            if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_')) {
                snprintf(why, whylen, "bad tag name");
                return -1;
            }
        if (n >= max) {
            snprintf(why, whylen, "more than %d tags", max);
            return -1;
        }
        for (int k = 0; k < n; k++)
            if (t[k].nlen == (size_t)(ne - a) && !memcmp(t[k].name, a, t[k].nlen)) {
                snprintf(why, whylen, "tag '%.*s' given twice", (int)t[k].nlen, a);
                return -1;
            }
        t[n++] = (struct tag){a, v, (size_t)(ne - a), (size_t)(b - v)};
    }
    return n;
}

static const struct tag *find(const struct tag *t, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (t[i].nlen == strlen(name) && !memcmp(t[i].name, name, t[i].nlen))
            return &t[i];
    return NULL;
}

int dr_dmarc_parse(const char *s, size_t len, struct dr_dmarc *o)
{
    struct tag t[DR_TERMS_MAX];
    memset(o, 0, sizeof *o);
    o->pct = 100;
    if (len > DR_REC_MAX || !dr_is_printable(s, len)) {
        snprintf(o->why, sizeof o->why, len > DR_REC_MAX ? "record too long" : "record holds non-printable octets");
        return -1;
    }
    int n = tags(s, len, t, DR_TERMS_MAX, o->why, sizeof o->why);
    if (n < 0)
        return -1;
    if (n == 0 || t[0].nlen != 1 || t[0].name[0] != 'v' || !ieq(t[0].val, t[0].vlen, "DMARC1")) {
        snprintf(o->why, sizeof o->why, "the first tag is not v=DMARC1");
        return -1;
    }
    const struct tag *p = find(t, n, "p"), *sp = find(t, n, "sp"), *rua = find(t, n, "rua"), *pct = find(t, n, "pct");
    if (!p) {
        snprintf(o->why, sizeof o->why, "no p= tag (the policy is required)");
        return -1;
    }
    static const char *const pols[] = {"none", "quarantine", "reject"};
    for (int k = 0; k < 2; k++) {
        const struct tag *x = k ? sp : p;
        char *dst = k ? o->sp : o->p;
        if (!x)
            continue;
        int ok = 0;
        for (int j = 0; j < 3 && !ok; j++)
            if (ieq(x->val, x->vlen, pols[j])) {
                snprintf(dst, 16, "%s", pols[j]);
                ok = 1;
            }
        if (!ok) {
            char shown[40];
            dr_escape(x->val, x->vlen, shown, sizeof shown);
            snprintf(o->why, sizeof o->why, "%s=%s is not none, quarantine or reject", k ? "sp" : "p", shown);
            return -1;
        }
    }
    if (pct && parse_prefix(pct->val, pct->vlen, 100, &o->pct) < 0) {
        snprintf(o->why, sizeof o->why, "pct= is not a number from 0 to 100");
        return -1;
    }
    if (rua) {
        if (rua->vlen >= sizeof o->rua) {
            snprintf(o->why, sizeof o->why, "rua= too long");
            return -1;
        }
        size_t i = 0;
        while (i < rua->vlen) { /* every comma-separated URI is mailto: */
            while (i < rua->vlen && rua->val[i] == ' ')
                i++;
            if (rua->vlen - i < 8 || !ieq(rua->val + i, 7, "mailto:") || rua->val[i + 7] == ',') {
                snprintf(o->why, sizeof o->why, "rua= holds a URI that is not mailto:ADDRESS");
                return -1;
            }
            const char *c = memchr(rua->val + i, ',', rua->vlen - i);
            i = c ? (size_t)(c - rua->val) + 1 : rua->vlen;
        }
        memcpy(o->rua, rua->val, rua->vlen);
        o->rua[rua->vlen] = 0;
    }
    return 0;
}

int dr_dkim_parse(const char *s, size_t len, struct dr_dkim *o)
{
    struct tag t[DR_TERMS_MAX];
    memset(o, 0, sizeof *o);
    snprintf(o->k, sizeof o->k, "rsa");
    if (len > DR_REC_MAX || !dr_is_printable(s, len)) {
        snprintf(o->why, sizeof o->why, len > DR_REC_MAX ? "record too long" : "record holds non-printable octets");
        return -1;
    }
    int n = tags(s, len, t, DR_TERMS_MAX, o->why, sizeof o->why);
    if (n < 0)
        return -1;
    const struct tag *v = find(t, n, "v"), *k = find(t, n, "k"), *p = find(t, n, "p");
    if (v && (v != &t[0] || !ieq(v->val, v->vlen, "DKIM1"))) {
        snprintf(o->why, sizeof o->why, "v= is not DKIM1 or not the first tag");
        return -1;
    }
    if (k) {
        if (!ieq(k->val, k->vlen, "rsa") && !ieq(k->val, k->vlen, "ed25519")) {
            char shown[40];
            dr_escape(k->val, k->vlen, shown, sizeof shown);
            snprintf(o->why, sizeof o->why, "unknown key type k=%s", shown);
            return -1;
        }
        snprintf(o->k, sizeof o->k, "%.*s", (int)k->vlen, k->val);
        for (char *c = o->k; *c; c++)
            *c = (char)lc((unsigned char)*c);
    }
    if (!p) {
        snprintf(o->why, sizeof o->why, "no p= tag (the public key)");
        return -1;
    }
    o->has_p = 1;
    size_t w = 0;
    for (size_t i = 0; i < p->vlen; i++) {
        char c = p->val[i];
        if (c == ' ' || c == '\t')
            continue;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/' ||
              c == '=')) {
            snprintf(o->why, sizeof o->why, "p= is not base64");
            return -1;
        }
        o->p[w++] = c; /* w < p->vlen <= DR_REC_MAX - 1 */
    }
    o->p[w] = 0;
    return 0;
}
