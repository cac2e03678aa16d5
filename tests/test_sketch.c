/*
 * test_sketch.c - the served-window sketch: parameters, no false negatives,
 * the false-positive rate against its stated value, concurrent adders,
 * files (round trip, refusals), merge, and the filtered audit: the same
 * test as a window filter, and a calibrated null.
 */
#include <math.h>
#include <pthread.h>
#include <unistd.h>

#include "testutil.h"

#define V 5000

static hm_sketch *sketch(const hm_key *k, const char *spec,
                         const char *tenant)
{
    hm_sketch *s = NULL;
    char msg[HM_ERRMSG_SIZE] = "";
    int rc = hm_sketch_new(&s, k, spec, tenant, msg, sizeof msg);
    ck_assert_msg(rc == HM_OK, "hm_sketch_new(%s): %s", spec, msg);
    return s;
}

static double param(const hm_sketch *s, const char *name)
{
    double v;
    ck_assert_int_eq(hm_sketch_param(s, name, &v), HM_OK);
    return v;
}

static void digest(const hm_sketch *s, char hex[65])
{
    ck_assert_int_eq(hm_sketch_digest(s, hex, 65), HM_OK);
}

/* ------------------------------------------------------- parameters */

START_TEST(test_params)
{
    hm_key *k = test_key(1);
    hm_sketch *s = sketch(k, NULL, NULL);
    char buf[256], msg[HM_ERRMSG_SIZE];
    hm_sketch_spec(s, buf, sizeof buf);
    ck_assert_str_eq(buf, "expected=10000000,fp=0.001,windows=1/4");
    ck_assert(hm_sketch_has_width(s, 1) && hm_sketch_has_width(s, 4));
    ck_assert(!hm_sketch_has_width(s, 2) && !hm_sketch_has_width(s, 0));
    ck_assert_double_le(param(s, "fp_bound"), 0.001);
    ck_assert_double_eq(param(s, "fp_rate"), 0);
    ck_assert_double_eq(param(s, "count"), 0);
    /* near the standard Bloom filter's size: 2e7 windows at 1e-3 would
     * take 14.4 bits each; blocking costs a little more */
    double bits = param(s, "bytes") * 8 / 2e7;
    ck_assert_msg(bits > 14.3 && bits < 18, "%g bits per window", bits);
    ck_assert_str_eq(hm_sketch_tenant(s), "");
    hm_sketch_free(s);

    s = sketch(k, "windows=4/2/3,fp=1e-6,expected=5000", "acme");
    hm_sketch_spec(s, buf, sizeof buf);
    ck_assert_str_eq(buf, "expected=5000,fp=1e-06,windows=2/3/4");
    ck_assert_double_le(param(s, "fp_bound"), 1e-6);
    ck_assert_str_eq(hm_sketch_tenant(s), "acme");
    hm_sketch_free(s);

    static const char *const bad[] = {
        "fp=0", "fp=0.6", "fp=x", "expected=0", "expected=-1",
        "windows=0", "windows=17", "windows=1/1", "windows=", "windows=1/",
        "size=3", "fp", "fp=0.1,", "expected=1e6"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        s = NULL;
        msg[0] = '\0';
        ck_assert_msg(hm_sketch_new(&s, k, bad[i], NULL, msg, sizeof msg) ==
                          HM_EFORMAT,
                      "%s accepted", bad[i]);
        ck_assert_ptr_null(s);
        ck_assert_msg(msg[0] != '\0', "no message for %s", bad[i]);
    }
    ck_assert_int_eq(hm_sketch_param(s, "k", NULL), HM_EINVAL);
    hm_sketch_free(NULL);
    hm_key_free(k);
}
END_TEST

/* ------------------------------------------- membership and FP rate */

/* 20000 windows of width 3 added, 400000 never added (ids >= 10^8)
 * queried.  The hits X are Binomial(M, f) with f the rate the sketch
 * states from its content (for hashes modelled as random), so
 * |X - M f| <= 5 sd fails by chance with probability below 1e-6; and f
 * itself is close to the design bound, since 20000 windows fill the
 * blocks evenly (relative sd of f about 1/sqrt(blocks), 2%). */
START_TEST(test_fp_rate)
{
    hm_key *k = test_key(2);
    hm_sketch *s = sketch(k, "expected=20000,fp=0.01,windows=3", NULL);
    enum { N = 20000, M = 400000 };
    uint64_t r = 5;
    static int32_t w[N][3];
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < 3; j++)
            w[i][j] = (int32_t)(test_rand(&r) % 100000000);
        hm_row row = {w[i], 3, NULL, 0, 0};
        ck_assert_int_eq(hm_sketch_add(s, &row), HM_OK);
    }
    for (int i = 0; i < N; i++) /* no false negatives */
        ck_assert_int_eq(hm_sketch_query(s, w[i], 3, 3), 1);
    long hits = 0;
    for (int i = 0; i < M; i++) {
        int32_t q[3];
        for (int j = 0; j < 3; j++)
            q[j] = (int32_t)(100000000 + test_rand(&r) % 1000000000);
        int h = hm_sketch_query(s, q, 3, 3);
        ck_assert_int_ge(h, 0);
        hits += h;
    }
    double f = param(s, "fp_rate"), bound = param(s, "fp_bound");
    double sd = sqrt(M * f * (1 - f));
    printf("sketch FP: measured %.5f (%ld of %d), stated %.5f, bound at "
           "the expected count %.5f, target 0.01; k %g, %g bytes\n",
           (double)hits / M, hits, M, f, bound, param(s, "k"),
           param(s, "bytes"));
    ck_assert_msg(fabs((double)hits - M * f) <= 5 * sd,
                  "%ld hits, expected %g +- %g", hits, M * f, sd);
    ck_assert_double_le(bound, 0.01);
    ck_assert_msg(fabs(f - bound) <= 0.15 * bound, "rate %g, bound %g", f,
                  bound);
    /* the count estimate is close to the truth */
    ck_assert_msg(fabs(param(s, "count") - N) < 0.03 * N, "count %g",
                  param(s, "count"));
    /* a width it does not record */
    ck_assert_int_eq(hm_sketch_query(s, w[0], 3, 2), HM_ERANGE);
    int32_t neg[3] = {1, -2, 3};
    hm_row row = {neg, 3, NULL, 0, 0};
    ck_assert_int_eq(hm_sketch_add(s, &row), HM_ERANGE);
    hm_sketch_free(s);
    hm_key_free(k);
}
END_TEST

/* add (explicit context), add (sequence state) and add_doc record the
 * same windows; padding before the start of a sequence as the PRF pads. */
START_TEST(test_add_paths)
{
    hm_key *k = test_key(3);
    hm_ctx *ctx = test_ctx(k, "gumbel:h=4");
    hm_sketch *a = sketch(k, "expected=1000,windows=1/4", NULL),
              *b = sketch(k, "expected=1000,windows=1/4", NULL),
              *c = sketch(k, "expected=1000,windows=1/4", NULL);
    int32_t prompt[3] = {10, 11, 12}, all[40];
    uint64_t r = 9;
    memcpy(all, prompt, sizeof prompt);
    for (int i = 3; i < 40; i++)
        all[i] = (int32_t)(test_rand(&r) % 1000);
    hm_seq *seq;
    ck_assert_int_eq(hm_seq_new(&seq, ctx, 0), HM_OK);
    ck_assert_int_eq(hm_seq_reset(seq, prompt, 3), HM_OK);
    for (int i = 3; i < 40; i++) {
        hm_row ra = {all, (size_t)i, NULL, 0, 0};
        hm_row rb = {NULL, 0, seq, 0, 0};
        ck_assert_int_eq(hm_sketch_add(a, &ra), HM_OK);
        ck_assert_int_eq(hm_sketch_add(b, &rb), HM_OK);
        ck_assert_int_eq(hm_seq_accept(seq, all[i]), HM_OK);
    }
    ck_assert_int_eq(hm_sketch_add_doc(c, prompt, 3, all + 3, 37), HM_OK);
    char da[65], db[65], dc[65];
    digest(a, da);
    digest(b, db);
    digest(c, dc);
    ck_assert_str_eq(da, db);
    ck_assert_str_eq(da, dc);
    /* the first served token's 4-window is (pad, 10, 11, 12) */
    ck_assert_int_eq(hm_sketch_query(a, prompt, 3, 4), 1);
    ck_assert_int_eq(hm_sketch_query(a, prompt, 3, 1), 1);
    /* the windows after the last token and inside the prompt were not
     * served after */
    ck_assert_int_eq(hm_sketch_query(a, all, 40, 4), 0);
    ck_assert_int_eq(hm_sketch_query(a, prompt, 2, 4), 0);
    ck_assert_int_eq(hm_sketch_add_doc(c, NULL, 1, NULL, 0), HM_EINVAL);
    int32_t neg = -1;
    ck_assert_int_eq(hm_sketch_add_doc(c, NULL, 0, &neg, 1), HM_ERANGE);
    hm_seq_free(seq);
    hm_sketch_free(a);
    hm_sketch_free(b);
    hm_sketch_free(c);
    hm_ctx_free(ctx);
    hm_key_free(k);
}
END_TEST

/* Concurrent adders lose nothing: the bits equal a sequential build's. */
typedef struct job {
    hm_sketch *s;
    int part;
} job;

static void *adder(void *arg)
{
    job *j = arg;
    uint64_t r = 100 + (uint64_t)j->part;
    int32_t w[4];
    for (int i = 0; i < 50000; i++) {
        for (int q = 0; q < 4; q++)
            w[q] = (int32_t)(test_rand(&r) % 3000);
        hm_row row = {w, 4, NULL, 0, 0};
        if (hm_sketch_add(j->s, &row) != HM_OK)
            return arg;
    }
    return NULL;
}

START_TEST(test_threads)
{
    hm_key *k = test_key(4);
    hm_sketch *par = sketch(k, "expected=200000,windows=1/4", NULL),
              *seq = sketch(k, "expected=200000,windows=1/4", NULL);
    pthread_t th[4];
    job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (job){par, i};
        ck_assert_int_eq(pthread_create(&th[i], NULL, adder, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        void *ret;
        ck_assert_int_eq(pthread_join(th[i], &ret), 0);
        ck_assert_ptr_null(ret);
        job j = {seq, i};
        ck_assert_ptr_null(adder(&j));
    }
    char a[65], b[65];
    digest(par, a);
    digest(seq, b);
    ck_assert_str_eq(a, b);
    hm_sketch_free(par);
    hm_sketch_free(seq);
    hm_key_free(k);
}
END_TEST

/* ----------------------------------------------------- files, merge */

static void corrupt(const char *src, const char *dst, long off, int byte,
                    long truncate_to)
{
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    ck_assert(in != NULL && out != NULL);
    int c;
    long i = 0;
    while ((c = fgetc(in)) != EOF && (truncate_to < 0 || i < truncate_to)) {
        fputc(i == off ? byte : c, out);
        i++;
    }
    fclose(in);
    fclose(out);
}

static void refused(const hm_key *k, const char *path, const char *what)
{
    hm_sketch *s = NULL;
    char msg[HM_ERRMSG_SIZE] = "";
    ck_assert_int_ne(hm_sketch_load(&s, k, path, msg, sizeof msg), HM_OK);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(msg, what) != NULL && strstr(msg, path) == msg,
                  "'%s' lacks '%s'", msg, what);
}

START_TEST(test_files)
{
    hm_key *k = test_key(5), *k2 = test_key(6);
    hm_sketch *a = sketch(k, "expected=3000,windows=2", "acme"),
              *b = sketch(k, "expected=3000,windows=2", "beta"),
              *c = sketch(k, "expected=3001,windows=2", "acme"),
              *x = sketch(k2, "expected=3000,windows=2", "acme");
    uint64_t r = 11;
    int32_t da[500], db[500];
    for (int i = 0; i < 500; i++) {
        da[i] = (int32_t)(test_rand(&r) % 50000);
        db[i] = (int32_t)(test_rand(&r) % 50000);
    }
    ck_assert_int_eq(hm_sketch_add_doc(a, NULL, 0, da, 500), HM_OK);
    ck_assert_int_eq(hm_sketch_add_doc(b, NULL, 0, db, 500), HM_OK);
    char dir[] = "/tmp/hm-sketch-XXXXXX", p[64], q[64], msg[HM_ERRMSG_SIZE];
    char d1[65], d2[65];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(p, sizeof p, "%s/a.sketch", dir);
    snprintf(q, sizeof q, "%s/bad.sketch", dir);
    ck_assert_int_eq(hm_sketch_save(a, p, msg, sizeof msg), HM_OK);
    ck_assert_int_eq(hm_sketch_file_magic(p), 1);
    hm_sketch *l = NULL;
    ck_assert_msg(hm_sketch_load(&l, k, p, msg, sizeof msg) == HM_OK, "%s",
                  msg);
    digest(a, d1);
    digest(l, d2);
    ck_assert_str_eq(d1, d2);
    ck_assert_str_eq(hm_sketch_tenant(l), "acme");
    ck_assert_str_eq(hm_sketch_fingerprint(l), hm_sketch_fingerprint(a));
    for (int i = 1; i < 500; i++)
        ck_assert_int_eq(hm_sketch_query(l, da, (size_t)i, 2), 1);
    /* the file's SHA-256 trailer is the digest */
    FILE *f = fopen(p, "rb");
    unsigned char tr[32];
    ck_assert(fseek(f, -32, SEEK_END) == 0 && fread(tr, 1, 32, f) == 32);
    fclose(f);
    char th[65];
    for (int i = 0; i < 32; i++)
        snprintf(th + 2 * i, 3, "%02x", tr[i]);
    ck_assert_str_eq(th, d1);

    /* refusals, each with "path: problem" */
    refused(k2, p, "made with key");
    long size;
    f = fopen(p, "rb");
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fclose(f);
    corrupt(p, q, size - 100, 0x55, -1);
    refused(k, q, "checksum mismatch");
    corrupt(p, q, -1, 0, size - 10);
    refused(k, q, "truncated");
    corrupt(p, q, -1, 0, 40);
    refused(k, q, "truncated");
    corrupt(p, q, 16, '9', -1); /* "hallmark-sketch 9" */
    refused(k, q, "unsupported");
    corrupt(p, q, 0, 'H', -1);
    refused(k, q, "not a hallmark sketch");
    ck_assert_int_eq(hm_sketch_file_magic(q), 0);
    refused(k, "/nonexistent/x.sketch", "No such file");
    f = fopen(q, "wb");
    fputs("hallmark-sketch 1\nkey x\ntenant -\nspec fp=7\nblocks 1\nk 3\n"
          "count 0\ndata\n", f);
    fclose(f);
    refused(k, q, "bad spec");
    /* no file is left behind by a failed save */
    ck_assert_int_ne(hm_sketch_save(a, "/nonexistent/x", msg, sizeof msg),
                     HM_OK);

    /* merge: a union; same key and parameters; tenants become '*' */
    ck_assert_int_eq(hm_sketch_merge(a, c, msg, sizeof msg), HM_EINVAL);
    ck_assert_msg(strstr(msg, "parameters") != NULL, "%s", msg);
    ck_assert_int_eq(hm_sketch_merge(a, x, msg, sizeof msg), HM_EINVAL);
    ck_assert_msg(strstr(msg, "keys") != NULL, "%s", msg);
    ck_assert_int_eq(hm_sketch_merge(l, l, msg, sizeof msg), HM_OK);
    digest(l, d2);
    ck_assert_str_eq(d1, d2); /* idempotent */
    ck_assert_int_eq(hm_sketch_merge(l, b, msg, sizeof msg), HM_OK);
    ck_assert_str_eq(hm_sketch_tenant(l), "*");
    for (int i = 1; i < 500; i++) {
        ck_assert_int_eq(hm_sketch_query(l, da, (size_t)i, 2), 1);
        ck_assert_int_eq(hm_sketch_query(l, db, (size_t)i, 2), 1);
    }
    /* commutative: b | a has the same bits */
    ck_assert_int_eq(hm_sketch_merge(b, a, msg, sizeof msg), HM_OK);
    digest(l, d1);
    digest(b, d2);
    ck_assert_str_eq(d1, d2);
    ck_assert_int_eq(hm_sketch_save(l, p, msg, sizeof msg), HM_OK);
    hm_sketch_free(l);
    ck_assert_msg(hm_sketch_load(&l, k, p, msg, sizeof msg) == HM_OK, "%s",
                  msg);
    ck_assert_str_eq(hm_sketch_tenant(l), "*");
    hm_sketch_free(l);
    unlink(p);
    unlink(q);
    ck_assert_int_eq(rmdir(dir), 0);
    hm_sketch_free(a);
    hm_sketch_free(b);
    hm_sketch_free(c);
    hm_sketch_free(x);
    hm_key_free(k);
    hm_key_free(k2);
}
END_TEST

/* ------------------------------------------------ the filtered audit */

/* test_generate (testutil.h) with this file's vocabulary. */
static void generate(const hm_ctx *ctx, const int32_t *prompt, size_t np,
                     int32_t *out, size_t n, uint64_t *rng)
{
    test_generate(ctx, prompt, np, out, n, rng, V);
}

static hm_tally *tally1(const hm_ctx *ctx)
{
    hm_tally *t;
    char msg[HM_ERRMSG_SIZE] = "";
    int rc = hm_tally_new(&t, &ctx, 1, 0, msg, sizeof msg);
    ck_assert_msg(rc == HM_OK, "%s", msg);
    return t;
}

/* With a negligible false-positive rate, the sketch filters exactly as
 * the served documents themselves do (hm_tally_filter_add). */
START_TEST(test_tally_filter)
{
    hm_key *k = test_key(7), *k2 = test_key(8);
    hm_ctx *ctx = test_ctx(k, "kgw:h=1+gumbel:h=2");
    hm_ctx *other = test_ctx(k2, "kgw:h=1+gumbel:h=2");
    hm_sketch *s = sketch(k, "expected=5000,fp=1e-9,windows=1/2", NULL);
    hm_tally *a = tally1(ctx), *b = tally1(ctx);
    char msg[HM_ERRMSG_SIZE];
    uint64_t r = 21;
    for (int i = 0; i < 10; i++) {
        int32_t prompt[4], tok[100];
        for (int j = 0; j < 4; j++)
            prompt[j] = (int32_t)(test_rand(&r) % V);
        generate(ctx, prompt, 4, tok, 100, &r);
        ck_assert_int_eq(hm_sketch_add_doc(s, prompt, 4, tok, 100), HM_OK);
        ck_assert_int_eq(hm_tally_filter_add(b, prompt, 4, tok, 100), HM_OK);
    }
    ck_assert_msg(hm_tally_filter_sketch(a, s, msg, sizeof msg) == HM_OK,
                  "%s", msg);
    ck_assert_int_eq(hm_tally_filter_add(a, NULL, 0, NULL, 0), HM_ENOTSUP);
    ck_assert_int_eq(hm_tally_filter_sketch(b, s, msg, sizeof msg),
                     HM_ENOTSUP);
    for (int i = 0; i < 20; i++) {
        int32_t prompt[4], tok[100];
        for (int j = 0; j < 4; j++)
            prompt[j] = (int32_t)(test_rand(&r) % V);
        generate(i % 2 ? ctx : other, prompt, 4, tok, 100, &r);
        ck_assert_int_eq(hm_tally_add(a, prompt, 4, tok, 100), HM_OK);
        ck_assert_int_eq(hm_tally_add(b, prompt, 4, tok, 100), HM_OK);
    }
    for (unsigned c = 0; c < 2; c++) {
        hm_result ra, rb;
        ck_assert_int_eq(hm_tally_result(a, 0, c, &ra), HM_OK);
        ck_assert_int_eq(hm_tally_result(b, 0, c, &rb), HM_OK);
        ck_assert_uint_gt(ra.dropped_filter, 100);
        ck_assert_uint_eq(ra.dropped_filter, rb.dropped_filter);
        ck_assert_uint_eq(ra.scored, rb.scored);
        ck_assert_double_eq(ra.score, rb.score);
    }
    /* a tally saved with a sketch filter merges only with the same one */
    char dir[] = "/tmp/hm-sketchf-XXXXXX", p[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(p, sizeof p, "%s/t", dir);
    ck_assert_int_eq(hm_tally_save(a, p, msg, sizeof msg), HM_OK);
    hm_tally *l;
    ck_assert_msg(hm_tally_load(&l, p, msg, sizeof msg) == HM_OK, "%s", msg);
    ck_assert_int_eq(hm_tally_merge(l, a, msg, sizeof msg), HM_OK);
    ck_assert_int_eq(hm_tally_merge(l, b, msg, sizeof msg), HM_EINVAL);
    hm_tally_free(l);
    unlink(p);
    rmdir(dir);
    /* every channel's width must be in the sketch */
    hm_ctx *g4 = test_ctx(k, "gumbel:h=4");
    hm_tally *c4 = tally1(g4);
    ck_assert_int_eq(hm_tally_filter_sketch(c4, s, msg, sizeof msg),
                     HM_EINVAL);
    ck_assert_msg(strstr(msg, "4 tokens") != NULL, "%s", msg);
    hm_tally_free(c4);
    hm_ctx_free(g4);
    hm_tally_free(a);
    hm_tally_free(b);
    hm_sketch_free(s);
    hm_ctx_free(ctx);
    hm_ctx_free(other);
    hm_key_free(k);
    hm_key_free(k2);
}
END_TEST

/* The null stays calibrated: for each of R keys, text served under the
 * key fills a sketch, and innocent text from the same model (served under
 * an unrelated key, so its windows overlap the served ones heavily) is
 * audited under the key, filtered by the sketch.  Its p-values must not
 * be smaller than uniform (one-sided exact KS, as the audit's self-check;
 * the binomial tests are discrete, hence super-uniform).  The sketch's
 * false positives use a subkey independent of the channels', so they
 * cannot bias the test either; a generous fp makes them frequent. */
START_TEST(test_null_calibrated)
{
    enum { R = 200 };
    static double p[2][R];
    hm_key *k_other = test_key(9);
    hm_ctx *other = test_ctx(k_other, "kgw:h=1+gumbel:h=2");
    uint64_t rng = 31;
    double kept = 0;
    for (int i = 0; i < R; i++) {
        hm_key *k;
        ck_assert_int_eq(hm_key_from_label(&k, "sketch null", (uint32_t)i),
                         HM_OK);
        hm_ctx *ctx = test_ctx(k, "kgw:h=1+gumbel:h=2");
        hm_sketch *s = sketch(k, "expected=600,fp=0.02,windows=1/2", NULL);
        hm_tally *t = tally1(ctx);
        char msg[HM_ERRMSG_SIZE];
        for (int d = 0; d < 6; d++) {
            int32_t prompt[2], tok[100];
            prompt[0] = (int32_t)(test_rand(&rng) % 50);
            prompt[1] = (int32_t)(test_rand(&rng) % 50);
            generate(ctx, prompt, 2, tok, 100, &rng);
            ck_assert_int_eq(hm_sketch_add_doc(s, prompt, 2, tok, 100),
                             HM_OK);
        }
        ck_assert_msg(hm_tally_filter_sketch(t, s, msg, sizeof msg) == HM_OK,
                      "%s", msg);
        for (int d = 0; d < 6; d++) {
            int32_t prompt[2], tok[100];
            prompt[0] = (int32_t)(test_rand(&rng) % 50);
            prompt[1] = (int32_t)(test_rand(&rng) % 50);
            generate(other, prompt, 2, tok, 100, &rng);
            ck_assert_int_eq(hm_tally_add(t, prompt, 2, tok, 100), HM_OK);
        }
        for (unsigned c = 0; c < 2; c++) {
            hm_result r;
            ck_assert_int_eq(hm_tally_result(t, 0, c, &r), HM_OK);
            p[c][i] = pow(10, r.log10_p);
            kept += (double)r.scored / (r.scored + r.dropped_filter + 1);
        }
        hm_tally_free(t);
        hm_sketch_free(s);
        hm_ctx_free(ctx);
        hm_key_free(k);
    }
    kept /= 2 * R;
    for (unsigned c = 0; c < 2; c++) {
        double dp, lp;
        ck_assert_int_eq(hm_ks_uniform(p[c], R, &dp, &lp), HM_OK);
        printf("sketch null, channel %u: KS D+ = %.4f, log10 p = %.2f "
               "(mean share of tuples kept %.2f)\n",
               c, dp, lp, kept);
        ck_assert_msg(lp > -3, "channel %u: D+ = %g, log10 p = %g", c, dp,
                      lp);
    }
    ck_assert_msg(kept > 0.1 && kept < 0.9, "kept %g", kept);
    hm_ctx_free(other);
    hm_key_free(k_other);
}
END_TEST

static Suite *sketch_suite(void)
{
    Suite *s = suite_create("sketch");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_params);
    tcase_add_test(tc, test_fp_rate);
    tcase_add_test(tc, test_add_paths);
    tcase_add_test(tc, test_threads);
    tcase_add_test(tc, test_files);
    tcase_add_test(tc, test_tally_filter);
    tcase_add_test(tc, test_null_calibrated);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run(sketch_suite());
}
