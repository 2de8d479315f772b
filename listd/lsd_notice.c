/* lsd_notice: notices, the one-off mail listd sends (confirmation requests, help, "already subscribed",
 * moderation requests, forwards to list owners), stored as post hashes with kind=notice (SCHEMA.md "Notices").
 *
 * Every notice has From: L-request@D (replies reach the command address), To:, Subject:, Date:, a fresh
 * Message-ID:, Auto-Submitted: (RFC 3834: auto-replied for answers to a request, auto-generated otherwise),
 * X-Loop: L@D (a notice that comes back to the list is refused as a loop) and a UTF-8 text/plain body. Its
 * envelope sender is always empty (<>): nothing bounces back to listd, and no auto-responder answers it.
 * Storage: SET lc:msg:ID, HSET lc:post:ID {id, list, kind=notice, to, sub, envelope_from, from, size, created,
 * state, counters}, XADD lc:stream:posts {post ID}, queued by the caller inside its MULTI/EXEC, so a notice is
 * stored together with the state change it reports. Notices are not added to lc:posts:LIST (not list posts).
 */
#include "lsd.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "lc_buf.h"
#include "lc_schema.h"

void lsd_notice_head(struct lc_buf *b, const char *list, const char *rcpt, const char *subject,
                     const char *reply_to, int auto_replied)
{
    char from[LC_ADDR_MAX + 32], date[64];
    lsd_addr_make(list, LSD_A_REQUEST, NULL, from, sizeof from);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    uint64_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd)
        rnd = (uint64_t)now ^ ((uint64_t)getpid() << 32);
    const char *dom = lc_addr_domain(list);
    lc_buf_printf(b, "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <notice.%lld.%016" PRIx64 "@%s>\r\n",
                  from, rcpt, subject, date, (long long)now, rnd, dom);
    if (reply_to)
        lc_buf_printf(b, "Reply-To: <%s>\r\n", reply_to);
    lc_buf_printf(b, "Auto-Submitted: %s\r\nX-Loop: %s\r\nMIME-Version: 1.0\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
                  auto_replied ? "auto-replied" : "auto-generated", list);
}

void lsd_notice_queue(struct lsd_job *j, uint64_t id, const char *list, const char *rcpt, uint64_t sub,
                      const char *msg, size_t len)
{
    char ids[24], subs[24], size[24], created[24], kmsg[LC_KEY_MAX], kpost[LC_KEY_MAX];
    snprintf(ids, sizeof ids, "%" PRIu64, id);
    snprintf(subs, sizeof subs, "%" PRIu64, sub);
    snprintf(size, sizeof size, "%zu", len);
    snprintf(created, sizeof created, "%lld", (long long)time(NULL));
    if (lc_key_msg(kmsg, sizeof kmsg, id) < 0 || lc_key_post(kpost, sizeof kpost, id) < 0)
        lc_panic("key too long");
    const char *set[] = {"SET", kmsg, msg};
    size_t setl[] = {3, strlen(kmsg), len};
    lsd_job_cmd(j, 3, set, setl);
    const char *hset[] = {"HSET", kpost, "id", ids, "list", list, "kind", "notice", "to", rcpt, "sub", subs,
                          "envelope_from", "", "from", "", "size", size, "created", created, "state", LC_PS_QUEUED,
                          "recipients", "0", "delivered", "0", "deferred", "0", "bounced", "0"};
    lsd_job_cmd(j, (int)(sizeof hset / sizeof hset[0]), hset, NULL);
    const char *xadd[] = {"XADD", LC_S_POSTS, "*", "post", ids};
    lsd_job_cmd(j, 5, xadd, NULL);
    lc_info("notice=%" PRIu64 " list=%s to=<%s> sub=%" PRIu64 " size=%zu queued", id, list, rcpt, sub, len);
}
