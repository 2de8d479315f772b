/* snd_post: the sender's post cache. One entry per post that a batch in memory belongs to.
 *
 * Contract: a post is loaded from Redis once (lc:msg:ID and the list field of lc:post:ID, by snd_queue.c) and
 * shared by every batch of the post and every connection sending its body; it is evicted when the last
 * reference goes. The body is built once: line ends made CRLF (a bare CR or LF becomes CRLF), a leading '.'
 * doubled (RFC 5321 4.5.2), a final CRLF added if missing, then ".\r\n". Connections send it from this one
 * buffer, so per-recipient work is only the envelope.
 * Two forms are kept: the dot-stuffed body ending in ".\r\n" (DATA) and the plain CRLF message (BDAT, RFC 3030).
 * The only per-recipient bytes are the envelope and, for list posts (not notices), the List-Unsubscribe and
 * List-Unsubscribe-Post header lines (RFC 2369, RFC 8058) that snd_post_unsub writes into the connection's
 * command buffer ahead of the shared body. A list whose list_unsubscribe setting is `mailto` gets the same
 * "List-Unsubscribe: <mailto:LOCAL-unsubscribe@DOMAIN>" in every copy instead (no List-Unsubscribe-Post: without
 * a per-subscriber URL there is no one-click), so its copies can share one DKIM signature.
 * Limits: the cache holds at most one entry per batch in memory (sender.concurrency*2), so a linear list is
 * enough; the body is at most twice the stored message plus 5 octets.
 */
#include "snd.h"

#include <stdlib.h>
#include <string.h>

#include "lc_addr.h"
#include "lc_log.h"
#include "lc_token.h"

#include <stdio.h>

struct snd_post *snd_post_get(struct snd *snd, uint64_t id)
{
    struct snd_post *p;
    for (p = snd->posts; p; p = p->next)
        if (p->id == id) {
            p->refs++;
            return p;
        }
    p = lc_calloc(1, sizeof *p);
    p->snd = snd;
    p->id = id;
    p->refs = 1;
    p->state = SND_P_NEW;
    p->next = snd->posts;
    if (p->next)
        p->next->prev = p;
    snd->posts = p;
    return p;
}

void snd_post_ref(struct snd_post *p)
{
    p->refs++;
}

static void post_free(struct snd_post *p)
{
    struct snd *snd = p->snd;
    if (p->prev)
        p->prev->next = p->next;
    else
        snd->posts = p->next;
    if (p->next)
        p->next->prev = p->prev;
    snd_dkim_post_free(p);
    free(p->body);
    free(p->raw);
    free(p);
}

void snd_post_unref(struct snd_post *p)
{
    if (!p)
        return;
    if (p->refs <= 0)
        lc_panic("post=%llu: reference count underflow", (unsigned long long)p->id);
    if (--p->refs == 0) {
        lc_debug("post=%llu evicted from the cache", (unsigned long long)p->id);
        post_free(p);
    }
}

void snd_post_set_body(struct snd_post *p, const char *msg, size_t len)
{
    /* Worst case: every line is "." + bare LF, giving "..\r\n" for 2 octets; plus a final CRLF and ".\r\n". */
    char *out = lc_malloc(2 * len + 6);
    char *raw = lc_malloc(2 * len + 3);
    size_t o = 0, ro = 0;
    size_t dots = 0;
    int bol = 1, eight = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)msg[i];
        if (bol && c == '.') {
            out[o++] = '.';
            dots++;
        }
        bol = 0;
        if (c == '\r') {
            out[o++] = '\r';
            out[o++] = '\n';
            raw[ro++] = '\r';
            raw[ro++] = '\n';
            if (i + 1 < len && msg[i + 1] == '\n')
                i++;
            bol = 1;
        } else if (c == '\n') {
            out[o++] = '\r';
            out[o++] = '\n';
            raw[ro++] = '\r';
            raw[ro++] = '\n';
            bol = 1;
        } else {
            if (c >= 0x80)
                eight = 1;
            out[o++] = (char)c;
            raw[ro++] = (char)c;
        }
    }
    if (!bol) {
        out[o++] = '\r';
        out[o++] = '\n';
        raw[ro++] = '\r';
        raw[ro++] = '\n';
    }
    memcpy(out + o, ".\r\n", 3);
    o += 3;
    free(p->body);
    p->body = lc_realloc(out, o);
    p->len = o;
    p->msglen = o - 3 - dots; /* what the server receives once it has unstuffed the dots */
    if (ro != p->msglen)
        lc_panic("post=%llu: body forms disagree (%zu != %zu)", (unsigned long long)p->id, ro, p->msglen);
    free(p->raw);
    p->raw = lc_realloc(raw, ro ? ro : 1);
    p->eightbit = eight;
}

int snd_post_set_list(struct snd_post *p, const char *list, size_t len)
{
    char norm[LC_ADDR_MAX + 1];
    const char *why;
    if (lc_addr_norm(list, len, norm, &why) < 0)
        return -1;
    const char *d = lc_addr_domain(norm);
    if (!d || strlen(d) >= sizeof p->domain)
        return -1;
    strcpy(p->domain, d);
    size_t ll = (size_t)(d - 1 - norm);
    memcpy(p->local, norm, ll);
    p->local[ll] = 0;
    return 0;
}

int snd_post_unsub(const struct snd_post *p, const struct lc_secret *secret, const char *public_url, uint64_t sub,
                   char *out, size_t outlen)
{
    char tok[LC_TOKEN_MAX];
    if (p->notice)
        return 0;
    if (p->unsub == SND_UNSUB_MAILTO) { /* the same for every copy: no token, no one-click (the list's setting) */
        int n = snprintf(out, outlen, "List-Unsubscribe: <mailto:%s-unsubscribe@%s>\r\n", p->local, p->domain);
        return n < 0 || (size_t)n >= outlen ? -1 : n;
    }
    if (lc_token_make(secret, LC_TOK_ONECLICK, sub, 0, tok, sizeof tok) < 0)
        return -1;
    int n = snprintf(out, outlen,
                     "List-Unsubscribe: <mailto:%s-unsubscribe@%s?subject=unsubscribe%%20%s>,\r\n"
                     " <%s/u/%s>\r\n"
                     "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
                     p->local, p->domain, tok, public_url, tok);
    return n < 0 || (size_t)n >= outlen ? -1 : n;
}

void snd_post_free_all(struct snd *snd)
{
    while (snd->posts)
        post_free(snd->posts);
}
