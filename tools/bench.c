/*
 * bench.c - cost of a watermarked sampling step next to the same step
 * without a watermark, at real vocabulary sizes, in one run.
 *
 *   tools/bench                 print the table for this build
 *   tools/bench --raw           machine-readable lines (for --compare)
 *   tools/bench --compare EXE   also run EXE --raw (the -march=native
 *                               build) and print default/native ratios
 *   tools/bench --scoring       only the detection throughput table
 *
 * Timings are the median of several repetitions of many steps on one core.
 * The unwatermarked baseline is what llama.cpp's dist sampler does: a
 * softmax with libm's expf, then an inverse-CDF draw.
 */
#define _GNU_SOURCE 1 /* RUSAGE_THREAD */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

#include "hallmark.h"

#if defined(__x86_64__) && defined(__GNUC__) &&                             \
    (defined(__clang__) || __GNUC__ >= 10)
#include <immintrin.h>
#define HAVE_VAES_CEILING 1
#endif

#define REPS 7

typedef struct result {
    char name[48];
    unsigned vocab;
    double us_step; /* median microseconds per step */
} result;

static result results[64];
static int n_results;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng_state = 12345;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}
static double unif(void)
{
    return (double)(rnd() >> 11) * 0x1p-53;
}

/* The unwatermarked sampler: softmax then inverse CDF. */
static int32_t plain_sample(const float *l, uint32_t n, float inv_t, double u,
                            float *p)
{
    float mx = -INFINITY;
    double sum = 0;
    for (uint32_t v = 0; v < n; v++)
        mx = l[v] > mx ? l[v] : mx;
    for (uint32_t v = 0; v < n; v++) {
        p[v] = expf((l[v] - mx) * inv_t);
        sum += p[v];
    }
    double target = u * sum, acc = 0;
    for (uint32_t v = 0; v < n; v++) {
        acc += p[v];
        if (acc > target)
            return (int32_t)v;
    }
    return (int32_t)n - 1;
}

/* Plain top-k sampling (k = 40), the baseline for the tournament: keep
 * the k largest with a running minimum, then softmax and draw. */
static int32_t plain_topk(const float *l, uint32_t n, float inv_t, double u)
{
    enum { K = 40 };
    float kl[K];
    int32_t ki[K];
    int m = 0, w = 0;
    for (uint32_t v = 0; v < n; v++) {
        if (m < K) {
            kl[m] = l[v];
            ki[m++] = (int32_t)v;
            if (m == K)
                for (int j = 1; j < K; j++)
                    w = kl[j] < kl[w] ? j : w;
        } else if (l[v] > kl[w]) {
            kl[w] = l[v];
            ki[w] = (int32_t)v;
            for (int j = 0; j < K; j++)
                w = kl[j] < kl[w] ? j : w;
        }
    }
    float p[K], mx = -INFINITY;
    double sum = 0, acc = 0;
    for (int j = 0; j < m; j++)
        mx = kl[j] > mx ? kl[j] : mx;
    for (int j = 0; j < m; j++)
        sum += p[j] = expf((kl[j] - mx) * inv_t);
    for (int j = 0; j < m; j++)
        if ((acc += p[j]) > u * sum)
            return ki[j];
    return ki[m - 1];
}

typedef struct fixture {
    unsigned vocab;
    float *logits, *work, *scratch;
    hm_ctx *kgw, *gumbel, *tour;
    int32_t context[4];
} fixture;

enum { PLAIN, PLAIN_TOPK, KGW_BIAS, GUMBEL, TOURNAMENT, GUMBEL_CANDS };
static const char *const names[] = {"plain sampler", "plain top-k sampler",
                                    "kgw bias", "gumbel select",
                                    "tournament select",
                                    "gumbel select (cands)"};

static volatile int32_t sink;

static int one_step(fixture *f, int what, void *cands)
{
    hm_row row = {f->context, 4, NULL, 1.0f, unif()};
    int32_t tok = 0;
    int rc = HM_OK;
    f->context[rnd() & 3] = (int32_t)(rnd() % f->vocab); /* fresh window */
    switch (what) {
    case PLAIN:
        tok = plain_sample(f->logits, f->vocab, 1.0f, row.uniform, f->scratch);
        break;
    case PLAIN_TOPK:
        tok = plain_topk(f->logits, f->vocab, 1.0f, row.uniform);
        break;
    case KGW_BIAS:
        rc = hm_bias_dense(f->kgw, f->work, 1, f->vocab, f->vocab, &row, NULL);
        break;
    case GUMBEL:
        rc = hm_select_dense(f->gumbel, f->logits, 1, f->vocab, f->vocab, &row,
                             &tok, NULL);
        break;
    case TOURNAMENT:
        rc = hm_select_dense(f->tour, f->logits, 1, f->vocab, f->vocab, &row,
                             &tok, NULL);
        break;
    default: {
        hm_cands c = HM_CANDS_LLAMA(cands, f->vocab);
        rc = hm_select_cands(f->gumbel, &c, &row, &tok, NULL, NULL);
    }
    }
    sink = tok;
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double measure(fixture *f, int what, void *cands)
{
    double t[REPS];
    int steps = f->vocab > 100000 ? 100 : 300;
    for (int r = 0; r < REPS; r++) {
        double t0 = now();
        for (int s = 0; s < steps; s++)
            if (one_step(f, what, cands) != HM_OK) {
                fprintf(stderr, "bench: %s failed\n", names[what]);
                exit(2);
            }
        t[r] = (now() - t0) / steps * 1e6;
    }
    qsort(t, REPS, sizeof t[0], cmp_double);
    return t[REPS / 2];
}

static void record(const char *name, unsigned vocab, double us)
{
    result *r = &results[n_results++];
    snprintf(r->name, sizeof r->name, "%s", name);
    r->vocab = vocab;
    r->us_step = us;
}

static void run_vocab(unsigned vocab, const hm_key *key)
{
    fixture f = {0};
    struct {
        int32_t id;
        float logit, p;
    } *cands = malloc(sizeof *cands * vocab);
    f.vocab = vocab;
    f.logits = malloc(sizeof(float) * vocab);
    f.work = malloc(sizeof(float) * vocab);
    f.scratch = malloc(sizeof(float) * vocab);
    if (!cands || !f.logits || !f.work || !f.scratch ||
        hm_ctx_new(&f.kgw, key, "kgw", NULL, NULL, 0) != HM_OK ||
        hm_ctx_new(&f.gumbel, key, "gumbel", NULL, NULL, 0) != HM_OK ||
        hm_ctx_new(&f.tour, key, "tournament", NULL, NULL, 0) != HM_OK) {
        fprintf(stderr, "bench: set-up failed\n");
        exit(2);
    }
    /* Logits shaped like a model's: a Zipf-like prior plus noise. */
    for (unsigned v = 0; v < vocab; v++) {
        f.logits[v] = (float)(-1.2 * log1p((double)v) + 4.0 * unif());
        cands[v].id = (int32_t)v;
        cands[v].logit = f.logits[v];
        cands[v].p = 0;
    }
    memcpy(f.work, f.logits, sizeof(float) * vocab);
    for (int i = 0; i < 4; i++)
        f.context[i] = (int32_t)(rnd() % vocab);
    for (int w = PLAIN; w <= GUMBEL_CANDS; w++)
        record(names[w], vocab, measure(&f, w, cands));
    hm_ctx_free(f.kgw);
    hm_ctx_free(f.gumbel);
    hm_ctx_free(f.tour);
    free(f.logits);
    free(f.work);
    free(f.scratch);
    free(cands);
}

static double find(const result *rs, int n, const char *name, unsigned v)
{
    for (int i = 0; i < n; i++)
        if (rs[i].vocab == v && strcmp(rs[i].name, name) == 0)
            return rs[i].us_step;
    return NAN;
}

static void print_table(void)
{
    static const unsigned vocabs[] = {32000, 128256, 200064};
    printf("hallmark %s sampling-step cost (median of %d runs, one core)\n\n",
           hm_version_string(), REPS);
    printf("%-24s %8s %12s %10s\n", "step", "vocab", "us/step", "ns/token");
    for (int i = 0; i < n_results; i++)
        printf("%-24s %8u %12.2f %10.3f\n", results[i].name, results[i].vocab,
               results[i].us_step, results[i].us_step * 1e3 / results[i].vocab);
    printf("\nwatermark overhead per token (target <= 0.55 ns; gumbel whole "
           "step <= 2 ns):\n");
    printf("%8s %14s %18s %22s %16s\n", "vocab", "kgw bias", "gumbel - plain",
           "tournament - top-k", "gumbel whole");
    for (size_t i = 0; i < sizeof vocabs / sizeof vocabs[0]; i++) {
        unsigned v = vocabs[i];
        double plain = find(results, n_results, names[PLAIN], v);
        double topk = find(results, n_results, names[PLAIN_TOPK], v);
        double kgw = find(results, n_results, names[KGW_BIAS], v);
        double gum = find(results, n_results, names[GUMBEL], v);
        double tour = find(results, n_results, names[TOURNAMENT], v);
        printf("%8u %11.3f ns %15.3f ns %19.3f ns %13.3f ns\n", v,
               kgw * 1e3 / v, (gum - plain) * 1e3 / v,
               (tour - topk) * 1e3 / v, gum * 1e3 / v);
    }
}

static int compare(const char *exe)
{
    char cmd[4096];
    result other[64];
    int n_other = 0;
    snprintf(cmd, sizeof cmd, "'%s' --raw", exe);
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return 2;
    char line[256];
    while (n_other < 64 && fgets(line, sizeof line, p)) {
        result *r = &other[n_other];
        char *tab = strchr(line, '\t');
        if (tab == NULL)
            continue;
        *tab = '\0';
        snprintf(r->name, sizeof r->name, "%.47s", line);
        if (sscanf(tab + 1, "%u %lf", &r->vocab, &r->us_step) == 2)
            n_other++;
    }
    if (pclose(p) != 0 || n_other == 0) {
        fprintf(stderr, "bench: %s failed\n", exe);
        return 2;
    }
    printf("\nportable build (run-time dispatch) vs -march=native build "
           "(target ratio <= 1.25):\n");
    printf("%-24s %8s %12s %12s %8s\n", "step", "vocab", "default us",
           "native us", "ratio");
    for (int i = 0; i < n_results; i++) {
        double nat = find(other, n_other, results[i].name, results[i].vocab);
        printf("%-24s %8u %12.2f %12.2f %8.2f\n", results[i].name,
               results[i].vocab, results[i].us_step, nat,
               results[i].us_step / nat);
    }
    return 0;
}

/* What a tally run took, in seconds: wall clock, and this thread's CPU
 * time, all and in the kernel (page faults: first touches of memory). */
typedef struct run_time {
    double wall, cpu, sys;
} run_time;

static void thread_times(double *cpu, double *sys)
{
#ifndef RUSAGE_THREAD /* not Linux: the process, one thread here */
#define RUSAGE_THREAD RUSAGE_SELF
#endif
    struct rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) != 0) {
        *cpu = *sys = 0; /* the columns then say inf or nan */
        return;
    }
    *sys = (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
    *cpu = *sys + (double)ru.ru_utime.tv_sec +
           1e-6 * (double)ru.ru_utime.tv_usec;
}

/* One whole-corpus tally with global dedup: sized for the corpus
 * (hm_tally_reserve), every document added, the test computed. */
static run_time tally_run(const hm_ctx *ctx, const int32_t *tok, size_t docs,
                          size_t len)
{
    hm_tally *t = NULL;
    double c0, s0, c1, s1;
    thread_times(&c0, &s0);
    double t0 = now();
    if (hm_tally_new(&t, &ctx, 1, 0, NULL, 0) != HM_OK ||
        hm_tally_reserve(t, docs * len) != HM_OK)
        abort();
    for (size_t d = 0; d < docs; d++)
        if (hm_tally_add(t, NULL, 0, tok + d * len, len) != HM_OK)
            abort();
    hm_result r;
    if (hm_tally_result(t, 0, 0, &r) != HM_OK)
        abort();
    double t1 = now();
    thread_times(&c1, &s1);
    sink = (int32_t)r.scored;
    hm_tally_free(t);
    return (run_time){t1 - t0, c1 - c0, s1 - s0};
}

#ifdef HAVE_VAES_CEILING
/* The most PRF v1 step seeds this core can make: 512-bit AES rounds on
 * eight independent registers (four blocks each), nothing else, and ten
 * rounds a seed (hallmark-prf(7): one AES-128 block per window of up to
 * four ids).  Millions of seeds a second, the best of three; 0 without
 * AVX-512 and VAES. */
__attribute__((target("avx512f,vaes"))) static double vaes_rounds(long n)
{
    /* eight named registers: an array would live in memory */
    const __m512i k = _mm512_set1_epi32((int)rnd());
    __m512i x0 = _mm512_set1_epi32((int)rnd()), x1 = _mm512_add_epi32(x0, k),
            x2 = _mm512_add_epi32(x1, k), x3 = _mm512_add_epi32(x2, k),
            x4 = _mm512_add_epi32(x3, k), x5 = _mm512_add_epi32(x4, k),
            x6 = _mm512_add_epi32(x5, k), x7 = _mm512_add_epi32(x6, k);
    double t0 = now();
    for (long i = 0; i < n; i++) {
        x0 = _mm512_aesenc_epi128(x0, k);
        x1 = _mm512_aesenc_epi128(x1, k);
        x2 = _mm512_aesenc_epi128(x2, k);
        x3 = _mm512_aesenc_epi128(x3, k);
        x4 = _mm512_aesenc_epi128(x4, k);
        x5 = _mm512_aesenc_epi128(x5, k);
        x6 = _mm512_aesenc_epi128(x6, k);
        x7 = _mm512_aesenc_epi128(x7, k);
    }
    double t1 = now();
    x0 = _mm512_xor_si512(_mm512_xor_si512(x0, x1), _mm512_xor_si512(x2, x3));
    x4 = _mm512_xor_si512(_mm512_xor_si512(x4, x5), _mm512_xor_si512(x6, x7));
    sink = _mm512_cvtsi512_si32(_mm512_xor_si512(x0, x4));
    return (double)n * 8 * 4 / (t1 - t0); /* 128-bit rounds a second */
}

static double aes_ceiling(void)
{
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("vaes"))
        return 0;
    double best = 0;
    for (int r = 0; r < 3; r++) {
        double v = vaes_rounds(20000000);
        best = v > best ? v : best;
    }
    return best / 10 / 1e6;
}
#else
static double aes_ceiling(void)
{
    return 0;
}
#endif

/* Detection throughput on 10 M in-memory tokens, one core: per-tuple
 * scoring without dedup (hm_sequence_score) and whole-corpus tallies with
 * global dedup (hm_tally_add), next to the targets.  The first
 * tally of a process takes its memory fresh from the system, and in a
 * virtual machine the first touch of a page can cost more than the rest
 * of the work; the tallies after it reuse memory the process has touched
 * and freed.  So that every scheme is measured on the same footing,
 * whatever its place in the table, an untimed tally first brings the
 * memory in; its own figures are printed under the table. */
static void bench_scoring(const hm_key *key)
{
    enum { DOCS = 100, LEN = 100000 };
    static const char *const specs[] = {"gumbel", "kgw", "tournament"};
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)DOCS * LEN);
    if (tok == NULL)
        return;
    for (size_t i = 0; i < (size_t)DOCS * LEN; i++)
        tok[i] = (int32_t)(rnd() % 128256u);
    printf("\ndetection throughput, %d M tokens, one core\n\n",
           DOCS * LEN / 1000000);
    printf("%-12s %11s %14s %12s %11s %12s\n", "", "no dedup",
           "global dedup", "dedup, CPU", "kernel", "dedup, best");
    printf("%-12s %11s %14s %12s %11s %12s\n", "scheme", "(M tok/s)",
           "(M tok/s)", "time", "share", "of three");
    printf("%-12s %11s %14s\n", "target", ">= 400.0", ">= 35.0");
    int missed = 0;
    run_time first = {0, 0, 0};
    /* no dedup: hm_sequence_score (PRF values and the statistic) per doc;
     * global dedup: hm_tally_add of every document into one tally */
    for (size_t s = 0; s < sizeof specs / sizeof specs[0]; s++) {
        hm_ctx *ctx = NULL;
        if (hm_ctx_new(&ctx, key, specs[s], NULL, NULL, 0) != HM_OK) {
            fprintf(stderr, "bench: set-up failed\n");
            break;
        }
        if (s == 0) /* the untimed tally, before anything is timed */
            first = tally_run(ctx, tok, DOCS, LEN);
        double acc = 0, t0 = now();
        for (size_t d = 0; d < DOCS; d++) {
            double sum;
            if (hm_sequence_score(ctx, 0, tok + d * LEN, LEN, 0, &sum) !=
                HM_OK)
                abort();
            acc += sum;
        }
        double t1 = now();
        sink = (int32_t)acc;
        run_time one = tally_run(ctx, tok, DOCS, LEN);
        double best = one.wall, w;
        for (int r = 0; r < 2; r++)
            if ((w = tally_run(ctx, tok, DOCS, LEN).wall) < best)
                best = w;
        const double n = DOCS * (double)LEN;
        double plain = n / (t1 - t0) / 1e6, dedup = n / one.wall / 1e6;
        /* '<' marks a figure below its target */
        printf("%-12s %10.1f%c %13.1f%c %12.1f %9.0f %% %12.1f\n", specs[s],
               plain, plain < 400 ? '<' : ' ', dedup, dedup < 35 ? '<' : ' ',
               n / one.cpu / 1e6, 100 * one.sys / one.cpu, n / best / 1e6);
        missed += (plain < 400) + (dedup < 35);
        hm_ctx_free(ctx);
    }
    printf("\n%s (the targets apply to the first two columns, wall clock;\n"
           "'dedup, CPU time': the same tally per second of this thread's CPU "
           "time, user\nand kernel, which other processes on the machine do "
           "not slow (a busy virtual-\nmachine host still does, unseen); "
           "'kernel share': the part of that CPU time in\nthe kernel; "
           "'dedup, best of three': that tally and two more)\n",
           missed ? "'<': below the target" : "all figures meet the targets");
    printf("before the table, an untimed %s tally brought the process's "
           "memory in:\n%.1f M tok/s, %.1f per second of CPU time, %.0f %% "
           "of it in the kernel, first\ntouches of fresh memory, which a "
           "virtual machine can make costly\n",
           specs[0], DOCS * (double)LEN / first.wall / 1e6,
           DOCS * (double)LEN / first.cpu / 1e6,
           first.cpu > 0 ? 100 * first.sys / first.cpu : 0);
    double ceiling = aes_ceiling();
    if (ceiling > 0)
        printf("AES ceiling: this core makes at most %.1f M step seeds/s "
               "(10 AES-128 rounds\neach, 512-bit VAES, nothing else), "
               "one per scored token without dedup\n",
               ceiling);
    free(tok);
}

int main(int argc, char **argv)
{
    static const unsigned vocabs[] = {32000, 128256, 200064};
    int raw = argc > 1 && strcmp(argv[1], "--raw") == 0;
    int scoring = argc == 2 && strcmp(argv[1], "--scoring") == 0;
    const char *other = argc > 2 && strcmp(argv[1], "--compare") == 0
                            ? argv[2]
                            : NULL;
    if (argc > 1 && !raw && !scoring && other == NULL) {
        fprintf(stderr,
                "usage: bench [--raw | --compare NATIVE-BENCH | --scoring]\n");
        return 2;
    }
    unsigned char kb[HM_KEY_BYTES] = {1, 2, 3};
    hm_key *key = NULL;
    if (hm_key_from_bytes(&key, kb, sizeof kb) != HM_OK)
        return 2;
    if (scoring) {
        bench_scoring(key);
        hm_key_free(key);
        return 0;
    }
    for (size_t i = 0; i < sizeof vocabs / sizeof vocabs[0]; i++)
        run_vocab(vocabs[i], key);
    if (raw) {
        hm_key_free(key);
        for (int i = 0; i < n_results; i++)
            printf("%s\t%u %.6f\n", results[i].name, results[i].vocab,
                   results[i].us_step);
        return 0;
    }
    print_table();
    int rc = other ? compare(other) : 0;
    bench_scoring(key);
    hm_key_free(key);
    return rc;
}
