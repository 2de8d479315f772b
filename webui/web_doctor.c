/* web_doctor: the sending-domain checks of `listcast doctor` in the web UI (issue 7 item 3): the admin page
 * /doctor (the appliance's sending domains, a form), /doctor/DOMAIN or /doctor?domain=DOMAIN (one domain's
 * checks: status, what is wrong, the exact record to publish), GET /api/doctor (the domains) and
 * GET /api/doctor/DOMAIN (the array `listcast doctor DOMAIN --json` prints). Both take the optional query
 * arguments ip (sending addresses, the CLI's --ip) and selector (extra DKIM selectors, --selector), each a list
 * separated by commas or spaces.
 *
 * Contract: the checks (lc_doctor library, appliance/lc_doctor_check.c) make DNS queries and SMTP connections
 * that may take seconds, so they never run in a libmicrohttpd thread: a check runs in a thread of its own, and
 * the requests waiting for it are suspended (MHD_suspend_connection) and resumed when it ends, so the web UI
 * keeps serving. Every run is bounded by WEB_DOCTOR_BUDGET_MS in all (each DNS query and SMTP step is cut to
 * what is left), at most WEB_DOCTOR_RUNNING run at once and at most WEB_DOCTOR_STARTS start per minute
 * (beyond: 429 with Retry-After); the result of a run is kept WEB_DOCTOR_TTL_MS per domain (and addresses and
 * selectors), so requests in that time share it without a new lookup. Only the routes after login reach here
 * (session or API token); the GET has no side effect but the lookups themselves. Domains are checked with
 * lc_doctor_domain_ok (a name of letters, digits, '-', '_' and dots) before anything runs; everything shown is
 * HTML-escaped. web_doctor_stop cancels the running checks (each ends within a few hundred ms of a DNS or SMTP
 * wait) and waits for their threads, so the connections waiting on them are resumed before the server stops.
 * Limits: WEB_DOCTOR_CACHE results kept, WEB_DOCTOR_WAITERS requests waiting on one run, WEB_DOCTOR_DOMAINS
 * domains listed.
 */
#include "web.h"
#include "lc_buf.h"
#include "lc_cfg.h"
#include "lc_dkim.h"
#include "lc_doctor.h"
#include "lc_json.h"
#include "lc_log.h"
#include "lc_schema.h"

#include <arpa/inet.h>
#include <ares.h>
#include <dirent.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WEB_DOCTOR_BUDGET_MS 30000 /* one run in all */
#define WEB_DOCTOR_TTL_MS 60000    /* a result is reused this long */
#define WEB_DOCTOR_RUNNING 2       /* runs at once */
#define WEB_DOCTOR_STARTS 30       /* runs started per minute */
#define WEB_DOCTOR_CACHE 32        /* results kept (and runs going on) */
#define WEB_DOCTOR_WAITERS 32      /* requests waiting on one run */
#define WEB_DOCTOR_DOMAINS 1000    /* domains on the /doctor page */
#define WEB_DOCTOR_STACK (4u << 20)

struct web_doctor_job {
    struct web_doctor *owner;
    int refs;           /* the cache slot, the worker, each request holding it; under owner->mu */
    char key[256 + LC_DOCTOR_IPS_MAX * 48 + LC_DOCTOR_SEL_MAX * 64];
    char domain[256];
    char ips[LC_DOCTOR_IPS_MAX][48];
    int nips;
    char sels[LC_DOCTOR_SEL_MAX][64];
    int nsel;
    char user[65];
    int done;
    long long started, finished; /* monotonic ms */
    long long finished_at;       /* unix time */
    struct lc_doctor_report *rep; /* NULL when the run could not start (err) */
    char err[600];
    struct web_req *wait[WEB_DOCTOR_WAITERS]; /* the requests waiting for the run (see web_doctor) */
    int nwait;
};

struct web_doctor {
    pthread_mutex_t mu;
    pthread_cond_t idle;
    const struct lc_cfg *cfg;
    struct web_doctor_job *cache[WEB_DOCTOR_CACHE];
    int running, stopping;
    atomic_int cancel;
    long long window; /* start of the current minute of the start limit (monotonic ms) */
    int starts;
};

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct web_doctor *web_doctor_new(const struct lc_cfg *cfg)
{
    struct web_doctor *d = lc_calloc(1, sizeof *d);
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->idle, NULL);
    d->cfg = cfg;
    atomic_init(&d->cancel, 0);
    int rc = ares_library_init(ARES_LIB_INIT_ALL); /* once, before any thread runs a check */
    if (rc != ARES_SUCCESS)
        lc_warn("doctor: c-ares: %s; the checks will fail", ares_strerror(rc));
    return d;
}

/* job_unref drops a reference; under d->mu. */
static void job_unref(struct web_doctor_job *j)
{
    if (--j->refs > 0)
        return;
    lc_doctor_report_free(j->rep);
    free(j);
}

void web_doctor_stop(struct web_doctor *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->mu);
    d->stopping = 1;
    atomic_store(&d->cancel, 1);
    while (d->running > 0)
        pthread_cond_wait(&d->idle, &d->mu);
    pthread_mutex_unlock(&d->mu);
}

void web_doctor_free(struct web_doctor *d)
{
    if (!d)
        return;
    web_doctor_stop(d);
    pthread_mutex_lock(&d->mu);
    for (int i = 0; i < WEB_DOCTOR_CACHE; i++)
        if (d->cache[i])
            job_unref(d->cache[i]);
    pthread_mutex_unlock(&d->mu);
    ares_library_cleanup();
    pthread_cond_destroy(&d->idle);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

void web_doctor_release(struct web_req *req)
{
    struct web_doctor_job *j = req->doctor;
    if (!j)
        return;
    struct web_doctor *d = j->owner;
    req->doctor = NULL;
    pthread_mutex_lock(&d->mu);
    job_unref(j);
    pthread_mutex_unlock(&d->mu);
}

/* ---- the runs ---------------------------------------------------------------------------------------------- */

static void *worker(void *arg)
{
    struct web_doctor_job *j = arg;
    struct web_doctor *d = j->owner;
    const char *ips[LC_DOCTOR_IPS_MAX], *sels[LC_DOCTOR_SEL_MAX];
    for (int i = 0; i < j->nips; i++)
        ips[i] = j->ips[i];
    for (int i = 0; i < j->nsel; i++)
        sels[i] = j->sels[i];
    struct lc_doctor_opts o = {
        .domain = j->domain,
        .helo = lc_cfg_str(d->cfg, "smtp.hostname"),
        .mx_port = (long)lc_cfg_int(d->cfg, "sender.mx_port"),
        .dns_servers = lc_cfg_str(d->cfg, "dns.servers"),
        .state_dir = lc_cfg_str(d->cfg, "state.dir"),
        .sels = sels,
        .nsel = j->nsel,
        .ips = ips,
        .nips = j->nips,
        .budget_ms = WEB_DOCTOR_BUDGET_MS,
        .cancel = &d->cancel,
    };
    char err[sizeof j->err] = "";
    struct lc_doctor_report *rep = lc_doctor_run(&o, err, sizeof err);
    int nst[3] = {0, 0, 0};
    for (int i = 0; rep && i < rep->n; i++)
        if (rep->c[i].status >= 0 && rep->c[i].status < 3)
            nst[rep->c[i].status]++;
    struct MHD_Connection *wake[WEB_DOCTOR_WAITERS];
    int nwake = 0;
    pthread_mutex_lock(&d->mu);
    j->rep = rep;
    snprintf(j->err, sizeof j->err, "%s", err);
    j->finished = mono_ms();
    j->finished_at = (long long)time(NULL);
    j->done = 1;
    for (int i = 0; i < j->nwait; i++) {
        if (j->wait[i]->doc_wait == WEB_DOC_SUSPENDED)
            wake[nwake++] = j->wait[i]->conn;
        else
            j->wait[i]->doc_wait = WEB_DOC_WAKE; /* not suspended yet: web_doctor resumes it itself */
    }
    j->nwait = 0;
    long long ms = j->finished - j->started;
    if (rep)
        lc_info("doctor domain=%s done ok=%d warn=%d fail=%d ms=%lld%s user=%s", j->domain, nst[0], nst[1], nst[2],
                ms, rep->cut ? " cut=budget" : "", j->user);
    else
        lc_warn("doctor domain=%s cannot run: %s", j->domain, err);
    job_unref(j); /* the worker's reference; the waiters hold theirs */
    pthread_mutex_unlock(&d->mu);
    /* no MHD call under mu (MHD has locks of its own); a suspended connection stays until it is resumed, and
     * web_doctor_stop waits for running == 0, so the server is not stopped before this */
    for (int i = 0; i < nwake; i++)
        MHD_resume_connection(wake[i]);
    pthread_mutex_lock(&d->mu);
    d->running--;
    pthread_cond_broadcast(&d->idle);
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

/* fresh: a finished job whose result may still be shown; under mu. */
static int fresh(const struct web_doctor_job *j, long long now)
{
    return !j->done || now - j->finished < WEB_DOCTOR_TTL_MS;
}

/* start_job finds or starts the run for key; under mu. Returns the job (a reference taken for the caller), or
 * NULL with *status and msg (429 busy, 503 stopping or no thread). */
static struct web_doctor_job *start_job(struct web_doctor *d, const struct web_doctor_job *want, const char *user,
                                        int *status, const char **msg)
{
    long long now = mono_ms();
    int freeslot = -1, oldest = -1;
    for (int i = 0; i < WEB_DOCTOR_CACHE; i++) {
        struct web_doctor_job *j = d->cache[i];
        if (j && !strcmp(j->key, want->key) && fresh(j, now)) {
            j->refs++;
            return j;
        }
        if (j && !fresh(j, now)) { /* expired: drop it */
            job_unref(j);
            d->cache[i] = j = NULL;
        }
        if (!j && freeslot < 0)
            freeslot = i;
        if (j && j->done && (oldest < 0 || j->finished < d->cache[oldest]->finished))
            oldest = i;
    }
    if (d->stopping) {
        *status = 503;
        *msg = "the web UI is stopping; try again later";
        return NULL;
    }
    if (now - d->window >= 60000) {
        d->window = now;
        d->starts = 0;
    }
    if (d->running >= WEB_DOCTOR_RUNNING || d->starts >= WEB_DOCTOR_STARTS || (freeslot < 0 && oldest < 0)) {
        *status = 429;
        *msg = "too many domain checks at once; try again in a minute";
        return NULL;
    }
    if (freeslot < 0) {
        job_unref(d->cache[oldest]);
        d->cache[oldest] = NULL;
        freeslot = oldest;
    }
    struct web_doctor_job *j = lc_calloc(1, sizeof *j);
    memcpy(j, want, sizeof *j);
    j->owner = d;
    j->refs = 3; /* cache, worker, caller */
    j->started = now;
    snprintf(j->user, sizeof j->user, "%s", user);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, WEB_DOCTOR_STACK);
    pthread_t th;
    int rc = pthread_create(&th, &attr, worker, j);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        free(j);
        *status = 503;
        *msg = "cannot start the check (no thread)";
        lc_warn("doctor domain=%s: pthread_create failed (%d)", want->domain, rc);
        return NULL;
    }
    d->cache[freeslot] = j;
    d->running++;
    d->starts++;
    lc_info("doctor domain=%s started ips=%d selectors=%d user=%s", j->domain, j->nips, j->nsel, user);
    return j;
}

/* ---- input ------------------------------------------------------------------------------------------------ */

/* parse_words splits a list separated by commas or spaces into out[max][size]; -1 when there are too many or
 * one does not pass ok (or is too long). */
static int parse_words(const char *s, char *out, size_t size, int max, int *n, int (*ok)(const char *))
{
    *n = 0;
    while (s && *s) {
        s += strspn(s, ", \t");
        size_t k = strcspn(s, ", \t");
        if (!k)
            break;
        if (*n >= max || k >= size)
            return -1;
        char *w = out + (size_t)*n * size;
        memcpy(w, s, k);
        w[k] = 0;
        if (!ok(w))
            return -1;
        (*n)++;
        s += k;
    }
    return 0;
}

static int ip_ok(const char *s)
{
    struct in_addr a4;
    struct in6_addr a6;
    return inet_pton(AF_INET, s, &a4) == 1 || inet_pton(AF_INET6, s, &a6) == 1;
}

static int sel_ok(const char *s)
{
    return strlen(s) <= 63 && lc_dkim_name_ok(s);
}

/* want_of reads the domain and the query arguments into w (with its cache key); 0, or -1 with msg. */
static int want_of(const struct web_req *req, const char *domain, struct web_doctor_job *w, const char **msg)
{
    memset(w, 0, sizeof *w);
    if (!lc_doctor_domain_ok(domain)) {
        *msg = "not a domain name (letters, digits, '-', '_' and dots, with at least one dot)";
        return -1;
    }
    snprintf(w->domain, sizeof w->domain, "%s", domain);
    for (char *c = w->domain; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c + 32);
    if (parse_words(web_query(req, "ip"), w->ips[0], sizeof w->ips[0], LC_DOCTOR_IPS_MAX, &w->nips, ip_ok) < 0) {
        *msg = "ip: at most 16 IPv4 or IPv6 addresses, separated by commas or spaces";
        return -1;
    }
    if (parse_words(web_query(req, "selector"), w->sels[0], sizeof w->sels[0], LC_DOCTOR_SEL_MAX, &w->nsel,
                    sel_ok) < 0) {
        *msg = "selector: at most 16 DKIM selectors, separated by commas or spaces";
        return -1;
    }
    size_t o = (size_t)snprintf(w->key, sizeof w->key, "%s|", w->domain);
    for (int i = 0; i < w->nips; i++)
        o += (size_t)snprintf(w->key + o, sizeof w->key - o, "%s,", w->ips[i]);
    o += (size_t)snprintf(w->key + o, sizeof w->key - o, "|");
    for (int i = 0; i < w->nsel; i++)
        o += (size_t)snprintf(w->key + o, sizeof w->key - o, "%s,", w->sels[i]);
    return 0;
}

/* ---- the sending domains ------------------------------------------------------------------------------------ */

enum { SRC_LIST = 1, SRC_DKIM = 2 };

struct dom {
    char name[256];
    int src;
};

static int cmp_dom(const void *a, const void *b)
{
    return strcmp(((const struct dom *)a)->name, ((const struct dom *)b)->name);
}

static void dom_add(struct dom *v, size_t *n, const char *name, int src)
{
    if (!lc_doctor_domain_ok(name))
        return;
    for (size_t i = 0; i < *n; i++)
        if (!strcasecmp(v[i].name, name)) {
            v[i].src |= src;
            return;
        }
    if (*n >= WEB_DOCTOR_DOMAINS)
        return;
    snprintf(v[*n].name, sizeof v[*n].name, "%s", name);
    for (char *c = v[*n].name; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c + 32);
    v[(*n)++].src = src;
}

/* has_key: 1 if the directory holds a *.key file */
static int has_key(const char *dir)
{
    DIR *dh = opendir(dir);
    struct dirent *de;
    int found = 0;
    while (dh && !found && (de = readdir(dh)) != NULL) {
        size_t l = strlen(de->d_name);
        found = de->d_name[0] != '.' && l > 4 && !strcmp(de->d_name + l - 4, ".key");
    }
    if (dh)
        closedir(dh);
    return found;
}

/* load_domains collects the domains of the lists (lc:domains) and of the DKIM keys (STATE.DIR/dkim/DOMAIN),
 * sorted; returns the count, or -1 (Redis error, err). */
static long load_domains(struct web_app *app, struct dom *v, char *err, size_t errlen)
{
    size_t n = 0;
    redisContext *rc = web_db_get(app->db, err, errlen);
    int ok = rc != NULL;
    char cursor[32] = "0";
    while (ok) {
        redisReply *x = redisCommand(rc, "SSCAN %s %s COUNT 500", LC_K_DOMAINS, cursor);
        if (!x || x->type != REDIS_REPLY_ARRAY || x->elements != 2 || x->element[0]->type != REDIS_REPLY_STRING ||
            x->element[1]->type != REDIS_REPLY_ARRAY) {
            snprintf(err, errlen, "SSCAN %s: %s", LC_K_DOMAINS, rc->errstr[0] ? rc->errstr : "bad reply");
            ok = 0;
            freeReplyObject(x);
            break;
        }
        for (size_t i = 0; i < x->element[1]->elements; i++)
            if (x->element[1]->element[i]->type == REDIS_REPLY_STRING)
                dom_add(v, &n, x->element[1]->element[i]->str, SRC_LIST);
        snprintf(cursor, sizeof cursor, "%s", x->element[0]->str);
        freeReplyObject(x);
        if (!strcmp(cursor, "0") || n >= WEB_DOCTOR_DOMAINS)
            break;
    }
    web_db_put(app->db);
    if (!ok)
        return -1;
    char dir[2400];
    snprintf(dir, sizeof dir, "%s/dkim", lc_cfg_str(app->cfg, "state.dir"));
    DIR *dh = opendir(dir);
    struct dirent *de;
    while (dh && (de = readdir(dh)) != NULL) {
        char sub[2700];
        if (de->d_name[0] == '.' || !lc_doctor_domain_ok(de->d_name))
            continue;
        snprintf(sub, sizeof sub, "%s/%s", dir, de->d_name);
        if (has_key(sub))
            dom_add(v, &n, de->d_name, SRC_DKIM);
    }
    if (dh)
        closedir(dh);
    qsort(v, n, sizeof v[0], cmp_dom);
    return (long)n;
}

/* ---- output ------------------------------------------------------------------------------------------------- */

static void doctor_link(struct lc_buf *b, const char *domain)
{
    lc_buf_puts(b, "/doctor/");
    web_url_esc(b, domain);
}

/* form writes the form that runs a check (a GET: it changes nothing but makes the lookups). */
static void form(struct lc_buf *b, const struct web_doctor_job *w)
{
    lc_buf_puts(b, "<form method=\"get\" action=\"/doctor\" class=\"card\" id=\"doctor-form\"><label>Domain "
                   "<input name=\"domain\" id=\"doctor-domain\" required placeholder=\"lists.example.org\" value=\"");
    if (w)
        web_html_esc(b, w->domain);
    lc_buf_puts(b, "\"></label><label>Sending addresses of this host (optional; checked against SPF and reverse "
                   "DNS) <input name=\"ip\" placeholder=\"203.0.113.5, 203.0.113.6\" value=\"");
    for (int i = 0; w && i < w->nips; i++) {
        lc_buf_puts(b, i ? ", " : "");
        web_html_esc(b, w->ips[i]);
    }
    lc_buf_puts(b, "\"></label><label>Extra DKIM selectors (optional; the local keys are always checked) <input "
                   "name=\"selector\" placeholder=\"s1\" value=\"");
    for (int i = 0; w && i < w->nsel; i++) {
        lc_buf_puts(b, i ? ", " : "");
        web_html_esc(b, w->sels[i]);
    }
    lc_buf_puts(b, "\"></label><button type=\"submit\">Check</button></form>\n");
}

static void summary_counts(const struct lc_doctor_report *rep, int nst[3])
{
    nst[0] = nst[1] = nst[2] = 0;
    for (int i = 0; i < rep->n; i++)
        if (rep->c[i].status >= 0 && rep->c[i].status < 3)
            nst[rep->c[i].status]++;
}

static void page_list(struct web_app *app, struct web_req *req, struct web_resp *r)
{
    struct dom *v = lc_calloc(WEB_DOCTOR_DOMAINS, sizeof *v);
    char err[512];
    long n = load_domains(app, v, err, sizeof err);
    if (web_is_api(req)) {
        if (n < 0) {
            lc_warn("api doctor: %s", err);
            web_json_error(r, 503, "redis unavailable");
        } else {
            r->type = "application/json";
            struct lc_json *j = lc_json_new_buf(r->body, 0);
            lc_json_arr(j);
            for (long i = 0; i < n; i++) {
                lc_json_obj(j);
                lc_json_kstr(j, "domain", v[i].name);
                lc_json_kbool(j, "lists", v[i].src & SRC_LIST);
                lc_json_kbool(j, "dkim", (v[i].src & SRC_DKIM) != 0);
                lc_json_end(j);
            }
            lc_json_end(j);
            if (lc_json_free(j) < 0)
                web_json_error(r, 500, "response too large");
        }
        free(v);
        return;
    }
    web_page_start(r, req, "Domain doctor", 0);
    struct lc_buf *b = r->body;
    lc_buf_printf(b, "<p class=\"hint\">Checks a sending domain against the bulk-sender rules: MX, SPF, DKIM (every "
                     "local key), DMARC, forward-confirmed reverse DNS of the sending addresses and STARTTLS of the "
                     "MX hosts, and says what is missing and the record to publish (as <code>listcast doctor</code>)."
                     " The checks make DNS queries and SMTP connections and take up to %d s; a result is kept for "
                     "%d s.</p>\n<section><h2>Sending domains</h2>\n", WEB_DOCTOR_BUDGET_MS / 1000,
                  WEB_DOCTOR_TTL_MS / 1000);
    if (n < 0) {
        r->status = 503;
        lc_buf_puts(b, "<p class=\"error\">Redis unavailable: ");
        web_html_esc(b, err);
        lc_buf_puts(b, "</p>\n");
    } else if (n == 0) {
        lc_buf_puts(b, "<p class=\"empty\">No list and no DKIM key yet: enter a domain below.</p>\n");
    } else {
        lc_buf_puts(b, "<table id=\"doctor-domains\"><thead><tr><th>Domain</th><th>Has</th><th>Last check</th>"
                       "<th></th></tr></thead><tbody>\n");
        struct web_doctor *d = app->doctor;
        long long now = mono_ms();
        for (long i = 0; i < n; i++) {
            lc_buf_puts(b, "<tr><td>");
            web_html_esc(b, v[i].name);
            lc_buf_printf(b, "</td><td>%s%s%s</td><td>", v[i].src & SRC_LIST ? "lists" : "",
                          v[i].src == (SRC_LIST | SRC_DKIM) ? ", " : "", v[i].src & SRC_DKIM ? "DKIM keys" : "");
            char key[300];
            snprintf(key, sizeof key, "%s||", v[i].name);
            int shown = 0;
            pthread_mutex_lock(&d->mu);
            for (int k = 0; k < WEB_DOCTOR_CACHE && !shown; k++) {
                const struct web_doctor_job *j = d->cache[k];
                if (!j || strcmp(j->key, key) || !fresh(j, now))
                    continue;
                shown = 1;
                if (!j->done) {
                    lc_buf_puts(b, "running");
                } else if (j->rep) {
                    int nst[3];
                    summary_counts(j->rep, nst);
                    lc_buf_printf(b, "%d ok, %d warn, %d fail (%lld s ago)", nst[0], nst[1], nst[2],
                                  (now - j->finished) / 1000);
                } else {
                    lc_buf_puts(b, "could not run");
                }
            }
            pthread_mutex_unlock(&d->mu);
            if (!shown)
                lc_buf_puts(b, "-");
            lc_buf_puts(b, "</td><td><a href=\"");
            doctor_link(b, v[i].name);
            lc_buf_puts(b, "\">check</a></td></tr>\n");
        }
        lc_buf_puts(b, "</tbody></table>\n");
        if (n >= WEB_DOCTOR_DOMAINS)
            lc_buf_printf(b, "<p class=\"empty\">Only the first %d domains are listed.</p>\n", WEB_DOCTOR_DOMAINS);
    }
    lc_buf_puts(b, "</section>\n<section><h2>Check a domain</h2>\n");
    form(b, NULL);
    lc_buf_puts(b, "</section>\n");
    web_page_end(r);
    free(v);
}

static void page_result(struct web_req *req, const struct web_doctor_job *j, struct web_resp *r)
{
    char title[300];
    snprintf(title, sizeof title, "Domain doctor: %s", j->domain);
    web_page_start(r, req, title, 0);
    struct lc_buf *b = r->body;
    lc_buf_puts(b, "<p><a href=\"/doctor\">All sending domains</a></p>\n");
    if (!j->rep) {
        r->status = 503;
        lc_buf_puts(b, "<p class=\"error\" id=\"doctor-error\">The checks could not run: ");
        web_html_esc(b, j->err);
        lc_buf_puts(b, "</p>\n");
        form(b, j);
        web_page_end(r);
        return;
    }
    int nst[3];
    summary_counts(j->rep, nst);
    char when[64] = "-";
    time_t t = (time_t)j->finished_at;
    struct tm tm;
    if (gmtime_r(&t, &tm))
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
    lc_buf_printf(b, "<p class=\"msg\" id=\"doctor-summary\"><strong>%d ok, %d warn, %d fail</strong>. Checked at "
                     "%s in %.1f s",
                  nst[0], nst[1], nst[2], when, (double)(j->finished - j->started) / 1000.0);
    if (j->nips == 0)
        lc_buf_puts(b, "; no sending address given, so SPF authorization and reverse DNS are not checked");
    lc_buf_printf(b, ". The result is kept for %d s.</p>\n", WEB_DOCTOR_TTL_MS / 1000);
    if (j->rep->cut)
        lc_buf_printf(b, "<p class=\"error\" id=\"doctor-cut\">The checks ran out of their %d s budget (or the web UI "
                         "is stopping): the checks after that report a timeout. Run <code>listcast doctor</code> "
                         "for checks without that bound.</p>\n", WEB_DOCTOR_BUDGET_MS / 1000);
    lc_buf_puts(b, "<table id=\"doctor\"><thead><tr><th>Status</th><th>Check</th><th>What was found</th>"
                   "<th>Record to publish</th></tr></thead><tbody>\n");
    for (int i = 0; i < j->rep->n; i++) {
        const struct lc_doctor_check *c = &j->rep->c[i];
        const char *st = lc_doctor_status_name(c->status);
        lc_buf_printf(b, "<tr class=\"doc-%s\"><td><span class=\"state doc-%s\">%s</span></td><td><code>", st, st,
                      st);
        web_html_esc(b, c->name);
        lc_buf_puts(b, "</code></td><td>");
        web_html_esc(b, c->detail);
        lc_buf_puts(b, "</td><td>");
        if (c->fix[0]) {
            lc_buf_puts(b, "<pre class=\"fix\">");
            web_html_esc(b, c->fix);
            lc_buf_puts(b, "</pre>");
        } else {
            lc_buf_puts(b, "-");
        }
        lc_buf_puts(b, "</td></tr>\n");
    }
    lc_buf_puts(b, "</tbody></table>\n<section><h2>Check again</h2>\n");
    form(b, j);
    lc_buf_puts(b, "</section>\n");
    web_page_end(r);
}

static void answer(struct web_req *req, const struct web_doctor_job *j, struct web_resp *r)
{
    if (!web_is_api(req)) {
        page_result(req, j, r);
        return;
    }
    if (!j->rep) {
        web_json_error(r, 503, j->err);
        return;
    }
    r->type = "application/json";
    struct lc_json *js = lc_json_new_buf(r->body, 0);
    lc_doctor_json(js, j->rep);
    if (lc_json_free(js) < 0)
        web_json_error(r, 500, "response too large");
}

/* ---- the route ---------------------------------------------------------------------------------------------- */

void web_doctor(struct web_app *app, struct web_req *req, const char *domain, struct web_resp *r)
{
    struct web_doctor *d = app->doctor;
    if (req->doctor) { /* resumed: the run this request waits on has ended */
        struct web_doctor_job *j = req->doctor;
        pthread_mutex_lock(&d->mu);
        int done = j->done;
        pthread_mutex_unlock(&d->mu);
        if (done)
            answer(req, j, r);
        else
            web_err(r, req, 503, "the check did not end");
        return;
    }
    if (!domain) {
        const char *q = web_query(req, "domain");
        if (!q || !*q) {
            page_list(app, req, r);
            return;
        }
        domain = q;
    }
    struct web_doctor_job *w = lc_calloc(1, sizeof *w);
    const char *msg = NULL;
    if (want_of(req, domain, w, &msg) < 0) {
        free(w);
        web_err(r, req, 400, msg);
        return;
    }
    int status = 0;
    pthread_mutex_lock(&d->mu);
    struct web_doctor_job *j = start_job(d, w, req->user, &status, &msg);
    free(w);
    if (!j) {
        pthread_mutex_unlock(&d->mu);
        web_err(r, req, status, msg);
        return;
    }
    req->doctor = j;
    if (j->done) {
        pthread_mutex_unlock(&d->mu);
        answer(req, j, r);
        return;
    }
    if (j->nwait >= WEB_DOCTOR_WAITERS) {
        pthread_mutex_unlock(&d->mu);
        web_err(r, req, 429, "too many requests waiting for this check; try again in a minute");
        return;
    }
    /* Wait: register, suspend (no MHD call under mu), then tell the worker we are suspended. If the run ended in
     * between, the worker left the resume to us (WEB_DOC_WAKE). */
    j->wait[j->nwait++] = req;
    req->doc_wait = WEB_DOC_REGISTERED;
    pthread_mutex_unlock(&d->mu);
    MHD_suspend_connection(req->conn);
    req->suspended = 1;
    pthread_mutex_lock(&d->mu);
    int wake = req->doc_wait == WEB_DOC_WAKE;
    req->doc_wait = WEB_DOC_SUSPENDED;
    pthread_mutex_unlock(&d->mu);
    if (wake)
        MHD_resume_connection(req->conn);
}
