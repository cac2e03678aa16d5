/*
 * bench_sketch.c - the served-window sketch: cost per served token of
 * hm_sketch_add (one thread, and four threads on one sketch), and the
 * power an audit gains from filtering by it, on a simulated student.
 *
 * The student: a teacher (a synthetic bigram-like model over 2000 ids)
 * serves text with kgw:h=1 under a key; the sketch records its windows.
 * The student is a bigram model trained on that served text (counts),
 * and writes two kinds of documents: half on the teacher's topics (at
 * each step it follows its learned counts with probability 0.7 when it
 * has any for the last token, otherwise it samples the teacher's clean
 * distribution), half on unrelated topics (another model over other ids,
 * whose windows the teacher never served).  The audit of the student's
 * text is run with and without the sketch filter; both p-values are
 * exact, the filter only drops tuples that cannot carry the watermark.
 *
 *   tools/bench-sketch            both parts
 *   tools/bench-sketch --cost     cost only
 *   tools/bench-sketch --power    power only
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hallmark.h"

#define V 2000

static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static double unif(uint64_t *s)
{
    return (double)(rnd(s) >> 11) * 0x1p-53;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench-sketch: %s: %s\n", what, hm_strerror(rc));
    exit(1);
}

/* ------------------------------------------------------ cost per add */

#define ADDS 2000000
static int32_t *ctxbuf; /* ADDS + 16 random ids */

typedef struct job {
    hm_sketch *s;
    size_t from, to;
} job;

static void *adder(void *arg)
{
    job *j = arg;
    for (size_t i = j->from; i < j->to; i++) {
        hm_row row = {ctxbuf + i, 16, NULL, 0, 0};
        if (hm_sketch_add(j->s, &row) != HM_OK)
            return arg;
    }
    return NULL;
}

static void cost(const hm_key *key)
{
    static const char *const specs[] = {"windows=4", "windows=1/4"};
    uint64_t r = 1;
    ctxbuf = malloc((ADDS + 16) * sizeof *ctxbuf);
    if (ctxbuf == NULL)
        die("malloc", HM_ENOMEM);
    for (size_t i = 0; i < ADDS + 16; i++)
        ctxbuf[i] = (int32_t)(rnd(&r) % 128256);
    for (int sp = 0; sp < 2; sp++) {
        hm_sketch *s;
        char msg[HM_ERRMSG_SIZE];
        double bytes;
        int rc = hm_sketch_new(&s, key, specs[sp], NULL, msg, sizeof msg);
        if (rc != HM_OK)
            die(msg, rc);
        if (hm_sketch_param(s, "bytes", &bytes) != HM_OK)
            die("hm_sketch_param", HM_EINVAL);
        job one = {s, 0, ADDS};
        double t0 = now();
        if (adder(&one) != NULL)
            die("hm_sketch_add", HM_EINVAL);
        double t1 = now();
        pthread_t th[4];
        job jobs[4];
        long nt = sysconf(_SC_NPROCESSORS_ONLN);
        nt = nt < 1 ? 1 : nt > 4 ? 4 : nt;
        for (long i = 0; i < nt; i++) {
            jobs[i] = (job){s, (size_t)i * ADDS / (size_t)nt,
                            (size_t)(i + 1) * ADDS / (size_t)nt};
            pthread_create(&th[i], NULL, adder, &jobs[i]);
        }
        for (long i = 0; i < nt; i++)
            pthread_join(th[i], NULL);
        double t2 = now();
        printf("hm_sketch_add (default size, %s, %.0f MB): %.1f ns per "
               "served token on one thread; %ld threads on one sketch: "
               "%.1f ns per token per thread  (target <= 1000 ns)\n",
               specs[sp], bytes / 1e6, 1e9 * (t1 - t0) / ADDS, nt,
               (double)nt * 1e9 * (t2 - t1) / ADDS);
        hm_sketch_free(s);
    }
    free(ctxbuf);
}

/* ------------------------------------------------------ power gain */

static void teacher_logits(int32_t last, float *out)
{
    uint64_t s = 1469598103934665603u ^ (uint64_t)last * 2654435761u;
    for (int v = 0; v < V; v++)
        out[v] = (float)(-1.0 * log1p(v) + 3.0 * unif(&s));
}

static int32_t sample(const float *l, double u)
{
    double m = -INFINITY, z = 0;
    for (int v = 0; v < V; v++)
        m = fmax(m, l[v]);
    for (int v = 0; v < V; v++)
        z += exp(l[v] - m);
    double acc = 0;
    for (int v = 0; v < V; v++) {
        acc += exp(l[v] - m) / z;
        if (u < acc)
            return v;
    }
    return V - 1;
}

static void audit(const hm_ctx *ctx, const hm_sketch *s, int32_t *docs,
                  size_t n_docs, size_t len, const char *label)
{
    hm_tally *t;
    char msg[HM_ERRMSG_SIZE];
    int rc = hm_tally_new(&t, &ctx, 1, 0, msg, sizeof msg);
    if (rc != HM_OK)
        die(msg, rc);
    if (s != NULL && (rc = hm_tally_filter_sketch(t, s, msg, sizeof msg)) !=
                         HM_OK)
        die(msg, rc);
    for (size_t d = 0; d < n_docs; d++)
        if ((rc = hm_tally_add(t, docs + d * len, 1, docs + d * len + 1,
                               len - 1)) != HM_OK)
            die("hm_tally_add", rc);
    hm_result r;
    if ((rc = hm_tally_result(t, 0, 0, &r)) != HM_OK)
        die("hm_tally_result", rc);
    printf("  %-22s scored %7llu tuples (filter dropped %7llu), "
           "green %.4f (null 0.25), log10 p = %.1f\n",
           label, (unsigned long long)r.scored,
           (unsigned long long)r.dropped_filter, r.score / (double)r.scored,
           r.log10_p);
    hm_tally_free(t);
}

static void power(const hm_key *key)
{
    enum { SERVED = 300, STUDENT = 600, LEN = 101 };
    hm_ctx *ctx;
    hm_sketch *s;
    hm_seq *seq;
    char msg[HM_ERRMSG_SIZE];
    int rc = hm_ctx_new(&ctx, key, "kgw:h=1", NULL, msg, sizeof msg);
    if (rc == HM_OK)
        rc = hm_sketch_new(&s, key, "expected=100000,windows=1", NULL, msg,
                           sizeof msg);
    if (rc == HM_OK)
        rc = hm_seq_new(&seq, ctx, 0);
    if (rc != HM_OK)
        die(msg, rc);
    static float logits[V];
    static uint32_t counts[V][64]; /* the student: followers of each id */
    static uint32_t n_follow[V];
    static int32_t student[STUDENT * LEN];
    uint64_t r = 42;
    /* the teacher serves, the server sketches */
    for (int d = 0; d < SERVED; d++) {
        int32_t prev = (int32_t)(rnd(&r) % 50);
        if ((rc = hm_seq_reset(seq, &prev, 1)) != HM_OK)
            die("hm_seq_reset", rc);
        for (int i = 1; i < LEN; i++) {
            hm_row row = {NULL, 0, seq, 1.0f, unif(&r)};
            int32_t tok;
            teacher_logits(prev, logits);
            if ((rc = hm_bias_dense(ctx, logits, 1, V, V, &row, NULL)) !=
                    HM_OK ||
                (rc = hm_select_dense(ctx, logits, 1, V, V, &row, &tok,
                                      NULL)) != HM_OK ||
                (rc = hm_sketch_add(s, &row)) != HM_OK ||
                (rc = hm_seq_accept(seq, tok)) != HM_OK)
                die("serving", rc);
            if (n_follow[prev] < 64)
                counts[prev][n_follow[prev]++] = (uint32_t)tok;
            prev = tok;
        }
    }
    /* the student writes */
    for (int d = 0; d < STUDENT; d++) {
        int32_t *doc = student + (size_t)d * LEN;
        int on_topic = d % 2 == 0;
        doc[0] = on_topic ? (int32_t)(rnd(&r) % 50)
                          : (int32_t)(V + rnd(&r) % 50);
        for (int i = 1; i < LEN; i++) {
            int32_t prev = doc[i - 1];
            if (on_topic && n_follow[prev] > 0 && unif(&r) < 0.7) {
                doc[i] = (int32_t)counts[prev][rnd(&r) % n_follow[prev]];
                continue;
            }
            /* clean text: the teacher's own distribution, or another
             * model over ids V..2V-1 */
            teacher_logits(on_topic ? prev : prev * 7 + 3, logits);
            doc[i] = sample(logits, unif(&r)) + (on_topic ? 0 : V);
        }
    }
    double fp, count;
    if (hm_sketch_param(s, "fp_rate", &fp) != HM_OK ||
        hm_sketch_param(s, "count", &count) != HM_OK)
        die("hm_sketch_param", HM_EINVAL);
    printf("power gain on a simulated student (kgw:h=1; %d served and %d "
           "student documents of %d tokens; sketch of ~%.0f windows, "
           "fp rate %.2g):\n",
           SERVED, STUDENT, LEN - 1, count, fp);
    audit(ctx, NULL, student, STUDENT, LEN, "without the filter:");
    audit(ctx, s, student, STUDENT, LEN, "filtered by the sketch:");
    hm_seq_free(seq);
    hm_sketch_free(s);
    hm_ctx_free(ctx);
}

int main(int argc, char **argv)
{
    int cost_only = 0, power_only = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--cost") == 0)
            cost_only = 1;
        else if (strcmp(argv[i], "--power") == 0)
            power_only = 1;
        else {
            int help = strcmp(argv[i], "--help") == 0;
            fprintf(help ? stdout : stderr,
                    "usage: bench-sketch [--cost | --power]\n"
                    "  --cost   the cost of hm_sketch_add per served token "
                    "only\n"
                    "  --power  the simulated student's audit with and "
                    "without the filter only\n");
            return help ? 0 : 2;
        }
    }
    if (!cost_only && !power_only)
        cost_only = power_only = 1;
    hm_key *key;
    int rc = hm_key_from_label(&key, "bench-sketch", 0);
    if (rc != HM_OK)
        die("key", rc);
    if (cost_only)
        cost(key);
    if (power_only)
        power(key);
    hm_key_free(key);
    return 0;
}
