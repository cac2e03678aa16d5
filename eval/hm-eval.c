/*
 * hm-eval.c - the distillation experiment of issue 5 (../shared/EVAL.md),
 * run by 'make eval' through eval/run-eval.sh:
 *
 *   1. split Brown by sample (sorted file order, index mod 3: teacher,
 *      student-clean, held-out); train the order-4 KN teacher, and a
 *      reference model on the held-out part;
 *   2. serve responses to held-out sentence prefixes through libhallmark,
 *      exactly as a batched host does (ev_generate_batch), with each
 *      scheme and without;
 *   3. train students on student-clean plus a fraction rho of watermarked
 *      responses (by tokens); each samples text from fresh prompts;
 *   4. audit that text with the hallmark CLI (text in, tokenizer by name),
 *      with the right key and with a never-deployed key; a tenant
 *      experiment over 1,000 tenant keys;
 *   5. false positives: every SOTU address and held-out Brown sample under
 *      thousands of never-deployed keys (hm_key_from_label), per document;
 *   6. quality: perplexity under the reference model, distinct-2/3;
 *   7. results.json (every figure and parameter), results.md, SVG plots.
 *
 * Every random choice comes from a stream seeded by (seed, purpose, index):
 * the same command gives the same numbers.  A configuration (--config
 * full|small) fixes every size; 'small' is the reduced run of make check
 * and the size a demo would use.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/sha.h>

#include "evaldata.h"
#include "evallib.h"
#include "evalreport.h"
#include "hallmark.h"
#include "ngram.h"

extern char **environ;

/* ------------------------------------------------------- configuration */

#define MAX_RHO 8
#define N_SCHEMES 3
#define N_ALPHA 3

typedef struct config {
    const char *name;
    int order;
    float temperature;
    unsigned top_k;
    size_t prompt_words, prompt_min_words;
    size_t resp_min, resp_max;   /* response length, uniform */
    size_t serve_responses;      /* served per scheme */
    size_t student_responses;    /* sampled per student */
    size_t n_rho;
    double rho[MAX_RHO];
    size_t self_check;           /* audit --self-check */
    size_t fpr_keys, fpr_batch;  /* never-deployed keys, per tally */
    size_t fpr_max_docs;         /* 0: all */
    size_t tenants, tenant_target;
    size_t tenant_other_responses; /* per tenant other than the target */
    size_t tenant_student_responses;
    size_t n_tenant_rho;
    double tenant_rho[MAX_RHO];
    size_t part_docs;            /* Brown samples per part (0: all) */
} config;

static const config CONFIGS[] = {
    {"full", 4, 0.8f, 50, 6, 10, 100, 200, 600, 1000, 5,
     {0.0, 0.01, 0.05, 0.10, 1.0}, 32, 2000, 100, 0, 1000, 417, 1, 300, 2,
     {0.01, 0.10}, 0},
    /* the reduced run of make check; a demo's size */
    {"small", 3, 0.8f, 50, 6, 10, 40, 60, 120, 80, 3, {0.0, 0.10, 1.0}, 8,
     50, 50, 40, 20, 7, 1, 40, 1, {0.10}, 12},
};

static const char *const SCHEMES[N_SCHEMES] = {"gumbel", "kgw", "tournament"};
static const double ALPHAS[N_ALPHA] = {1e-2, 1e-3, 1e-4};
#define FPR_CONF 0.99
#define FPR_LABEL "hallmark eval never-deployed"

/* ------------------------------------------------------------ utilities */

static int n_threads = 2;
static FILE *logf_;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("hm-eval: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("hm-eval: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory");
    return p;
}

static void *xcalloc(size_t n, size_t s)
{
    void *p = calloc(n ? n : 1, s ? s : 1);
    if (!p)
        die("out of memory");
    return p;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* ----------------------------------------------------------- responses */

typedef ev_requests batch;

static void batch_init(batch *b, size_t n)
{
    if (ev_requests_init(b, n) != 0)
        die("out of memory");
}

/* Fill every response of b (n_resp[i] tokens each, already set). */
static void generate(const ng_model *m, const ev_sampling *s, batch *b)
{
    int rc = ev_serve(m, s, b, n_threads);
    if (rc != HM_OK)
        die("serving %zu requests: %s", b->n, hm_strerror(rc));
}

/* ---------------------------------------------------------- the run */

typedef struct prompts {
    size_t n;
    char **text;
    int32_t **ids;
    size_t *n_ids;
    size_t next; /* first prompt not handed out */
} prompts;

typedef struct run {
    const config *cf;
    uint64_t seed;
    const char *out, *work, *hallmark, *tok_spec;
    hm_tokenizer *tok;
    ev_docs brown, sotu;
    /* Brown split: indices into brown.d */
    size_t *part[3];
    size_t n_part[3];
    uint64_t part_tokens[3];
    ng_model *teacher, *reference;
    ev_sampling samp;
    prompts pr;
    hm_key *key, *never_key;
    char *key_path, *never_key_path;
    hm_ctx *ctx[N_SCHEMES];
    batch served[N_SCHEMES + 1]; /* [N_SCHEMES]: unwatermarked */
    char *served_path[N_SCHEMES + 1];
    size_t student_prompt0; /* the students' fresh prompts */
    json_t *js;
    double t0;
} run;


/* Hand out n prompts (tokenized) from the shuffled pool. */
static size_t take_prompts(run *r, size_t n)
{
    if (r->pr.next + n > r->pr.n)
        die("not enough held-out sentences for prompts (%zu needed, %zu)",
            r->pr.next + n, r->pr.n);
    size_t first = r->pr.next;
    r->pr.next += n;
    return first;
}

static void set_requests(run *r, batch *b, size_t first_prompt,
                         const char *tag, const hm_ctx *ctx)
{
    ev_rng lr = {ev_seed(r->seed, tag, UINT64_MAX)};
    for (size_t i = 0; i < b->n; i++) {
        size_t p = first_prompt + i;
        b->prompt[i] = r->pr.ids[p];
        b->n_prompt[i] = r->pr.n_ids[p];
        b->prompt_text[i] = r->pr.text[p];
        b->n_resp[i] = r->cf->resp_min +
                       (size_t)ev_below(&lr, r->cf->resp_max -
                                                 r->cf->resp_min + 1);
        b->seed[i] = ev_seed(r->seed, tag, i);
        b->ctx[i] = ctx;
    }
}

static void derive_key(run *r, const char *tag, hm_key **key)
{
    unsigned char in[256], md[SHA256_DIGEST_LENGTH];
    int n = snprintf((char *)in, sizeof in, "hallmark eval %s %llu", tag,
                     (unsigned long long)r->seed);
    SHA256(in, (size_t)n, md);
    if (hm_key_from_bytes(key, md, sizeof md) != HM_OK)
        die("hm_key_from_bytes failed");
}

static void load_data(run *r, const char *brown_dir, const char *sotu_dir,
                      const char *rankfile)
{
    char err[512];
    int rc = hm_tokenizer_load_tiktoken(&r->tok, "cl100k_base", rankfile, err,
                                        sizeof err);
    if (rc != HM_OK)
        die("%s", err);
    if (ev_docs_read_dir(&r->brown, brown_dir, ".txt", NULL, err,
                         sizeof err) != 0)
        die("%s", err);
    if (ev_docs_read_dir(&r->sotu, sotu_dir, ".txt", "(Applause.)", err,
                         sizeof err) != 0)
        die("%s", err);
    if (r->brown.n < 3 || r->sotu.n == 0)
        die("too few documents (Brown %zu, SOTU %zu)", r->brown.n,
            r->sotu.n);
    if (ev_docs_tokenize(&r->brown, r->tok) != HM_OK ||
        ev_docs_tokenize(&r->sotu, r->tok) != HM_OK)
        die("tokenizing failed");
    /* The split rule: sample i of the sorted file list (ca01 ... cr09)
     * goes to part i mod 3, so every genre is in every part. */
    for (int p = 0; p < 3; p++)
        r->part[p] = xcalloc(r->brown.n, sizeof(size_t));
    for (size_t i = 0; i < r->brown.n; i++) {
        int p = (int)(i % 3);
        r->part[p][r->n_part[p]++] = i;
    }
    for (int p = 0; p < 3; p++) {
        /* reduced runs: part_docs samples spread evenly over the part */
        size_t keep = r->cf->part_docs && r->cf->part_docs < r->n_part[p]
                          ? r->cf->part_docs
                          : r->n_part[p];
        for (size_t j = 0; j < keep; j++)
            r->part[p][j] = r->part[p][j * r->n_part[p] / keep];
        r->n_part[p] = keep;
        for (size_t j = 0; j < keep; j++)
            r->part_tokens[p] += r->brown.d[r->part[p][j]].n;
    }
    say("Brown: %zu samples, %llu/%llu/%llu tokens (teacher/clean/held-out);"
        " SOTU: %zu addresses, %llu tokens",
        r->brown.n, (unsigned long long)r->part_tokens[0],
        (unsigned long long)r->part_tokens[1],
        (unsigned long long)r->part_tokens[2], r->sotu.n,
        (unsigned long long)ev_docs_tokens(&r->sotu));
}

static ng_model *train_part(run *r, int part, const batch *extra,
                            const size_t *pick, size_t n_pick)
{
    char err[512];
    ng_model *m = ev_train(r->cf->order, (int32_t)hm_tokenizer_vocab(r->tok),
                           &r->brown, part >= 0 ? r->part[part] : NULL,
                           part >= 0 ? r->n_part[part] : 0, extra, pick,
                           n_pick, err, sizeof err);
    if (!m)
        die("%s", err);
    return m;
}

static void make_prompts(run *r)
{
    ev_docs held = {xcalloc(r->n_part[2], sizeof(ev_doc)), r->n_part[2]};
    for (size_t i = 0; i < r->n_part[2]; i++)
        held.d[i] = r->brown.d[r->part[2][i]];
    char **txt = ev_prompts(&held, r->cf->prompt_words,
                            r->cf->prompt_min_words, &r->pr.n);
    free(held.d);
    if (!txt)
        die("out of memory");
    size_t *idx = xmalloc(r->pr.n * sizeof *idx);
    for (size_t i = 0; i < r->pr.n; i++)
        idx[i] = i;
    ev_rng rng = {ev_seed(r->seed, "prompts", 0)};
    ev_shuffle(&rng, idx, r->pr.n);
    r->pr.text = xmalloc(r->pr.n * sizeof(char *));
    r->pr.ids = xmalloc(r->pr.n * sizeof(int32_t *));
    r->pr.n_ids = xmalloc(r->pr.n * sizeof(size_t));
    for (size_t i = 0; i < r->pr.n; i++) {
        r->pr.text[i] = txt[idx[i]];
        if (hm_tokenizer_encode(r->tok, r->pr.text[i], strlen(r->pr.text[i]),
                                0, &r->pr.ids[i], &r->pr.n_ids[i],
                                NULL) != HM_OK)
            die("tokenizing a prompt failed");
    }
    free(idx);
    free(txt);
    say("%zu held-out sentence prefixes of %zu words as prompts", r->pr.n,
        r->cf->prompt_words);
}

/* ------------------------------------------------------------- files */

static void write_tokens_jsonl(const char *path, const batch *b)
{
    char err[512];
    if (ev_write_tokens_jsonl(path, b, err, sizeof err) != 0)
        die("%s", err);
}

/* What a suspect model's API returns: prompt and completion as text. */
static void write_text_jsonl(const char *path, const batch *b,
                             const hm_tokenizer *tok)
{
    char err[512];
    if (ev_write_text_jsonl(path, b, tok, err, sizeof err) != 0)
        die("%s", err);
}

/* ------------------------------------------------------------- audits */

typedef struct audit_out {
    double log10_p;     /* first tenant (the default one) */
    uint64_t scored, tokens, dropped_filter, dropped_repeat, dropped_prompt;
    double self_min_p;  /* smallest self-check p-value */
    int calibrated;
    double seconds;
    json_t *report;     /* the whole report */
} audit_out;

/* hallmark audit as an auditor runs it: text in, tokenizer by name. */
static void run_audit(run *r, const char *name, const char *keyfile,
                      const char *spec, const char *filter,
                      const char *tenants, const char *input,
                      audit_out *ao)
{
    char *report = path_join(r->work, name);
    char *log = xmalloc(strlen(report) + 8);
    sprintf(log, "%s.log", report);
    char selfc[32], tokarg[4096];
    snprintf(selfc, sizeof selfc, "%zu", r->cf->self_check);
    snprintf(tokarg, sizeof tokarg, "%s", r->tok_spec);
    const char *argv[24];
    int a = 0;
    argv[a++] = r->hallmark;
    argv[a++] = "audit";
    argv[a++] = "--key";
    argv[a++] = keyfile;
    argv[a++] = "--scheme";
    argv[a++] = spec;
    argv[a++] = "--tokenizer";
    argv[a++] = tokarg;
    argv[a++] = "--self-check";
    argv[a++] = selfc;
    if (filter) {
        argv[a++] = "--filter";
        argv[a++] = filter;
    }
    if (tenants) {
        argv[a++] = "--tenants";
        argv[a++] = tenants;
    }
    argv[a++] = "-o";
    argv[a++] = report;
    argv[a++] = input;
    argv[a] = NULL;
    fprintf(logf_, "$");
    for (int i = 0; i < a; i++)
        fprintf(logf_, " %s", argv[i]);
    fprintf(logf_, "\n");
    fflush(logf_);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    double t = now();
    int rc = posix_spawn(&pid, r->hallmark, &fa, NULL, (char *const *)argv,
                         environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        die("cannot run %s: %s", r->hallmark, strerror(rc));
    int status;
    if (waitpid(pid, &status, 0) < 0)
        die("waitpid: %s", strerror(errno));
    ao->seconds = now() - t;
    if (!WIFEXITED(status) || WEXITSTATUS(status) > 1)
        die("hallmark audit failed (status %d); see %s", status, log);
    char *jpath = xmalloc(strlen(report) + 8);
    sprintf(jpath, "%s.json", report);
    json_error_t je;
    json_t *rep = json_load_file(jpath, 0, &je);
    if (!rep)
        die("%s: %s", jpath, je.text);
    json_t *ten = json_array_get(json_object_get(rep, "tenants"), 0);
    json_t *cnt = json_array_get(json_object_get(rep, "counts"), 0);
    json_t *sc = json_object_get(rep, "self_check");
    ao->log10_p = json_number_value(json_object_get(ten, "log10_p"));
    ao->scored = (uint64_t)json_integer_value(json_object_get(cnt, "scored"));
    ao->tokens = (uint64_t)json_integer_value(json_object_get(cnt, "tokens"));
    ao->dropped_filter =
        (uint64_t)json_integer_value(json_object_get(cnt, "dropped_filter"));
    ao->dropped_repeat =
        (uint64_t)json_integer_value(json_object_get(cnt, "dropped_repeat"));
    ao->dropped_prompt =
        (uint64_t)json_integer_value(json_object_get(cnt, "dropped_prompt"));
    ao->self_min_p = 1;
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(sc, "p_values"), i, v)
        if (json_number_value(v) < ao->self_min_p)
            ao->self_min_p = json_number_value(v);
    ao->calibrated = json_is_true(json_object_get(sc, "calibrated"));
    ao->report = rep;
    free(jpath);
    free(log);
    free(report);
}

static json_t *audit_json(const audit_out *ao)
{
    return json_pack("{s:f,s:I,s:I,s:I,s:I,s:I,s:f,s:b,s:f}", "log10_p",
                     ao->log10_p, "scored", (json_int_t)ao->scored, "tokens",
                     (json_int_t)ao->tokens, "dropped_filter",
                     (json_int_t)ao->dropped_filter, "dropped_repeat",
                     (json_int_t)ao->dropped_repeat, "dropped_prompt",
                     (json_int_t)ao->dropped_prompt, "self_check_min_p",
                     ao->self_min_p, "self_check_calibrated", ao->calibrated,
                     "seconds", ao->seconds);
}

/* ------------------------------------------------------------ phases */

static void checkpoint(run *r);

static void phase_models(run *r)
{
    double t = now();
    r->teacher = train_part(r, 0, NULL, NULL, 0);
    r->reference = train_part(r, 2, NULL, NULL, 0);
    double tt = now() - t;
    say("teacher (order %d, %llu tokens) and reference model in %.1f s",
        r->cf->order, (unsigned long long)r->part_tokens[0], tt);
    json_object_set_new(
        r->js, "models",
        json_pack("{s:{s:s,s:i,s:I,s:I},s:{s:s,s:i,s:I},s:f}", "teacher",
                  "part", "teacher", "order", r->cf->order, "ngrams",
                  (json_int_t)ng_count(r->teacher, r->cf->order), "bytes",
                  (json_int_t)ng_memory(r->teacher), "reference", "part",
                  "heldout", "order", r->cf->order, "ngrams",
                  (json_int_t)ng_count(r->reference, r->cf->order),
                  "seconds", tt));
}

static void phase_serve(run *r)
{
    size_t first = take_prompts(r, r->cf->serve_responses);
    json_t *arr = json_array();
    for (int s = 0; s <= N_SCHEMES; s++) {
        const char *name = s < N_SCHEMES ? SCHEMES[s] : "unwatermarked";
        batch *b = &r->served[s];
        batch_init(b, r->cf->serve_responses);
        char tag[64];
        snprintf(tag, sizeof tag, "serve/%s", name);
        /* the same prompts and lengths for every scheme: paired quality */
        set_requests(r, b, first, "serve", s < N_SCHEMES ? r->ctx[s] : NULL);
        for (size_t i = 0; i < b->n; i++)
            b->seed[i] = ev_seed(r->seed, tag, i);
        double t = now();
        generate(r->teacher, &r->samp, b);
        t = now() - t;
        char fname[64];
        snprintf(fname, sizeof fname, "served-%s.jsonl", name);
        r->served_path[s] = path_join(r->work, fname);
        write_tokens_jsonl(r->served_path[s], b);
        ev_stepstats st = ev_requests_stats(b);
        uint64_t toks = ev_requests_tokens(b);
        /* quality */
        double ppl = ev_perplexity(r->reference, b->prompt, b->n_prompt,
                                   (const int32_t *const *)b->resp, b->n_resp,
                                   b->n);
        double ppl_t = ev_perplexity(r->teacher, b->prompt, b->n_prompt,
                                     (const int32_t *const *)b->resp,
                                     b->n_resp, b->n);
        uint64_t n2, n3, n8;
        double d2 = ev_distinct((const int32_t *const *)b->resp, b->n_resp,
                                b->n, 2, &n2);
        double d3 = ev_distinct((const int32_t *const *)b->resp, b->n_resp,
                                b->n, 3, &n3);
        /* long n-grams shared between responses: copying, not style */
        double d8 = ev_distinct((const int32_t *const *)b->resp, b->n_resp,
                                b->n, 8, &n8);
        say("served %s: %zu responses, %llu tokens in %.1f s (%.0f us/token);"
            " ppl(ref) %.1f, distinct-2 %.3f",
            name, b->n, (unsigned long long)toks, t, 1e6 * t / (double)toks,
            ppl, d2);
        char spec[256] = "none";
        if (s < N_SCHEMES)
            hm_ctx_spec(r->ctx[s], spec, sizeof spec);
        json_array_append_new(
            arr,
            json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:f,s:f,"
                      "s:f}",
                      "scheme", name, "spec", spec, "responses",
                      (json_int_t)b->n, "tokens", (json_int_t)toks,
                      "steps_watermarked", (json_int_t)st.watermarked,
                      "steps_biased", (json_int_t)st.biased, "steps_masked",
                      (json_int_t)st.masked, "seconds", t, "us_per_token",
                      1e6 * t / (double)toks, "ppl_reference", ppl,
                      "ppl_teacher", ppl_t, "distinct2", d2, "distinct3",
                      d3, "distinct8", d8));
    }
    json_object_set_new(r->js, "serving", arr);
}

/* The responses of b that make up a share rho of a student's training
 * tokens next to clean_tokens of clean text (rho = 1: all of them, no
 * clean text), in a seeded order.  Returns their number; *tokens gets
 * their response tokens. */
static size_t pick_share(run *r, const batch *b, double rho,
                         uint64_t clean_tokens, const char *tag,
                         size_t *pick, uint64_t *tokens)
{
    size_t *idx = xmalloc(b->n * sizeof *idx);
    for (size_t i = 0; i < b->n; i++)
        idx[i] = i;
    ev_rng rng = {ev_seed(r->seed, tag, 0)};
    ev_shuffle(&rng, idx, b->n);
    double want = rho >= 1 ? INFINITY : rho / (1 - rho) * (double)clean_tokens;
    size_t k = 0;
    uint64_t got = 0;
    while (k < b->n && (double)got < want) {
        pick[k] = idx[k];
        got += b->n_resp[idx[k]];
        k++;
    }
    if (rho > 0 && rho < 1 && (double)got < want)
        say("warning: %s: only %llu of %.0f tokens for rho = %g", tag,
            (unsigned long long)got, want, rho);
    free(idx);
    *tokens = got;
    return k;
}

/* A student from clean text and picked responses; it samples from the
 * students' fresh prompts; its text goes to work/NAME.jsonl. */
static char *student(run *r, const char *name, const batch *src,
                     const size_t *pick, size_t n_pick, int with_clean,
                     size_t n_resp, size_t first_prompt, double *ppl_ref)
{
    double t = now();
    ng_model *m = train_part(r, with_clean ? 1 : -1, src, pick, n_pick);
    batch sb;
    batch_init(&sb, n_resp);
    char tag[128];
    snprintf(tag, sizeof tag, "student/%s", name);
    set_requests(r, &sb, first_prompt, "student", NULL);
    for (size_t i = 0; i < sb.n; i++)
        sb.seed[i] = ev_seed(r->seed, tag, i);
    generate(m, &r->samp, &sb);
    *ppl_ref = ev_perplexity(r->reference, sb.prompt, sb.n_prompt,
                             (const int32_t *const *)sb.resp, sb.n_resp,
                             sb.n);
    char fname[160];
    snprintf(fname, sizeof fname, "%s.jsonl", name);
    char *path = path_join(r->work, fname);
    write_text_jsonl(path, &sb, r->tok);
    say("student %s: %llu tokens sampled, %.1f s", name,
        (unsigned long long)ev_requests_tokens(&sb), now() - t);
    ev_requests_free(&sb);
    ng_free(m);
    return path;
}

static void phase_students(run *r)
{
    size_t first = take_prompts(r, r->cf->student_responses);
    r->student_prompt0 = first;
    json_t *arr = json_array();
    size_t *pick = xmalloc((r->cf->serve_responses + 1) * sizeof *pick);
    for (int s = 0; s < N_SCHEMES; s++)
        for (size_t k = 0; k < r->cf->n_rho; k++) {
            double rho = r->cf->rho[k];
            char name[96], tag[96];
            snprintf(name, sizeof name, "student-%s-rho%g", SCHEMES[s],
                     100 * rho);
            snprintf(tag, sizeof tag, "pick/%s", SCHEMES[s]);
            uint64_t wm = 0;
            size_t np = rho > 0 ? pick_share(r, &r->served[s], rho,
                                             r->part_tokens[1], tag, pick,
                                             &wm)
                                : 0;
            double ppl;
            char *text = student(r, name, &r->served[s], pick, np, rho < 1,
                                 r->cf->student_responses, first, &ppl);
            char spec[256];
            hm_ctx_spec(r->ctx[s], spec, sizeof spec);
            audit_out af, an, aw;
            char rn[128];
            snprintf(rn, sizeof rn, "audit-%s-filtered", name);
            run_audit(r, rn, r->key_path, spec, r->served_path[s], NULL,
                      text, &af);
            snprintf(rn, sizeof rn, "audit-%s-unfiltered", name);
            run_audit(r, rn, r->key_path, spec, NULL, NULL, text, &an);
            snprintf(rn, sizeof rn, "audit-%s-never-deployed", name);
            run_audit(r, rn, r->never_key_path, spec, r->served_path[s],
                      NULL, text, &aw);
            say("  %s rho %g%%: log10 p %.2f (filtered, %llu tuples), %.2f "
                "(unfiltered, %llu), never-deployed key %.2f",
                SCHEMES[s], 100 * rho, af.log10_p,
                (unsigned long long)af.scored, an.log10_p,
                (unsigned long long)an.scored, aw.log10_p);
            json_array_append_new(
                arr,
                json_pack("{s:s,s:f,s:I,s:I,s:I,s:f,s:o,s:o,s:o}", "scheme",
                          SCHEMES[s], "rho", rho, "watermarked_responses",
                          (json_int_t)np, "watermarked_tokens",
                          (json_int_t)wm, "clean_tokens",
                          (json_int_t)(rho < 1 ? r->part_tokens[1] : 0),
                          "ppl_reference", ppl, "filtered", audit_json(&af),
                          "unfiltered", audit_json(&an), "never_deployed_key",
                          audit_json(&aw)));
            json_decref(af.report);
            json_decref(an.report);
            json_decref(aw.report);
            free(text);
        }
    /* control: a student of unwatermarked responses only, audited for
     * every scheme with the deployed key */
    uint64_t wm;
    size_t np = pick_share(r, &r->served[N_SCHEMES], 1.0, 0, "pick/none",
                           pick, &wm);
    double ppl;
    char *text = student(r, "student-unwatermarked-rho100",
                         &r->served[N_SCHEMES], pick, np, 0,
                         r->cf->student_responses, first, &ppl);
    json_t *ctl = json_array();
    for (int s = 0; s < N_SCHEMES; s++) {
        char spec[256], rn[128];
        hm_ctx_spec(r->ctx[s], spec, sizeof spec);
        snprintf(rn, sizeof rn, "audit-control-%s", SCHEMES[s]);
        audit_out ao;
        run_audit(r, rn, r->key_path, spec, r->served_path[s], NULL, text,
                  &ao);
        say("  control (unwatermarked teacher data) under %s: log10 p %.2f",
            SCHEMES[s], ao.log10_p);
        json_t *j = audit_json(&ao);
        json_object_set_new(j, "scheme", json_string(SCHEMES[s]));
        json_array_append_new(ctl, j);
        json_decref(ao.report);
    }
    free(text);
    free(pick);
    json_object_set_new(r->js, "students", arr);
    json_object_set_new(r->js, "control_student",
                        json_pack("{s:s,s:I,s:f,s:o}", "data",
                                  "unwatermarked responses only (rho = 100%)",
                                  "tokens", (json_int_t)wm, "ppl_reference",
                                  ppl, "audits", ctl));
}

/* The tenant experiment of one scheme: every tenant served under its own
 * subkeys, one tenant's responses are the student's rho; which tenant does
 * the audit name? */
static json_t *tenant_experiment(run *r, int s, size_t n_target,
                                 size_t first_prompt)
{
    const config *cf = r->cf;
    char spec[256];
    hm_ctx_spec(r->ctx[s], spec, sizeof spec);
    hm_ctx **tc = xcalloc(cf->tenants, sizeof *tc);
    char **tname = xcalloc(cf->tenants, sizeof *tname);
    char *tpath = path_join(r->work, "tenants.txt");
    FILE *tf = fopen(tpath, "w");
    if (!tf)
        die("%s: %s", tpath, strerror(errno));
    for (size_t i = 0; i < cf->tenants; i++) {
        char nm[32], err[HM_ERRMSG_SIZE];
        snprintf(nm, sizeof nm, "tenant-%04zu", i);
        tname[i] = strdup(nm);
        fprintf(tf, "%s\n", nm);
        if (hm_ctx_new(&tc[i], r->key, spec, nm, err, sizeof err) != HM_OK)
            die("%s", err);
    }
    fclose(tf);
    size_t n_other = (cf->tenants - 1) * cf->tenant_other_responses;
    batch b;
    batch_init(&b, n_target + n_other);
    char tag[96];
    snprintf(tag, sizeof tag, "tenant-serve/%s", SCHEMES[s]);
    set_requests(r, &b, first_prompt, "tenant-serve", NULL);
    for (size_t i = 0; i < b.n; i++)
        b.seed[i] = ev_seed(r->seed, tag, i);
    for (size_t i = 0; i < b.n; i++) {
        size_t t = i < n_target ? cf->tenant_target
                                : (i - n_target) / cf->tenant_other_responses;
        if (i >= n_target && t >= cf->tenant_target)
            t++;
        b.ctx[i] = tc[t];
    }
    double t0 = now();
    generate(r->teacher, &r->samp, &b);
    say("tenants, %s: served %zu responses (%zu to %s) under %zu tenant keys "
        "in %.1f s",
        SCHEMES[s], b.n, n_target, tname[cf->tenant_target], cf->tenants, now() - t0);
    char fname[96];
    snprintf(fname, sizeof fname, "served-tenants-%s.jsonl", SCHEMES[s]);
    char *fpath = path_join(r->work, fname);
    write_tokens_jsonl(fpath, &b);
    batch target = b; /* the target's responses are the first n_target */
    target.n = n_target;
    json_t *arr = json_array();
    size_t *pick = xmalloc(n_target * sizeof *pick);
    for (size_t k = 0; k < cf->n_tenant_rho; k++) {
        double rho = cf->tenant_rho[k];
        uint64_t wm;
        snprintf(tag, sizeof tag, "pick/tenant/%s", SCHEMES[s]);
        size_t np = pick_share(r, &target, rho, r->part_tokens[1], tag, pick,
                               &wm);
        char name[96];
        snprintf(name, sizeof name, "student-tenant-%s-rho%g", SCHEMES[s],
                 100 * rho);
        double ppl;
        char *text = student(r, name, &target, pick, np, 1,
                             cf->tenant_student_responses,
                             r->student_prompt0, &ppl);
        char rn[128];
        snprintf(rn, sizeof rn, "audit-%s", name);
        audit_out ao;
        run_audit(r, rn, r->key_path, spec, fpath, tpath, text, &ao);
        /* which tenant does the report name? */
        json_t *ten = json_object_get(ao.report, "tenants"), *v;
        size_t i, best = 0, n_det = 0;
        double bp = INFINITY, second = INFINITY, target_p = NAN,
               target_adj = NAN;
        json_array_foreach(ten, i, v) {
            double p = json_number_value(json_object_get(v, "log10_p"));
            if (json_is_true(json_object_get(v, "detected")))
                n_det++;
            if (p < bp) {
                second = bp;
                bp = p;
                best = i;
            } else if (p < second)
                second = p;
            if (i == cf->tenant_target) {
                target_p = p;
                target_adj = json_number_value(
                    json_object_get(v, "log10_p_adjusted"));
            }
        }
        const char *named = json_string_value(
            json_object_get(json_array_get(ten, best), "tenant"));
        say("  tenant %s rho %g%%: smallest p: %s (log10 p %.2f, target %s "
            "adjusted %.2f), runner-up %.2f, %zu tenants detected",
            SCHEMES[s], 100 * rho, named, bp, tname[cf->tenant_target],
            target_adj,
            second, n_det);
        json_t *j = json_pack(
            "{s:f,s:I,s:I,s:s,s:s,s:b,s:f,s:f,s:f,s:I,s:I,s:f}", "rho", rho,
            "watermarked_responses", (json_int_t)np, "watermarked_tokens",
            (json_int_t)wm, "target", tname[cf->tenant_target], "named",
            named, "named_is_target",
            strcmp(named, tname[cf->tenant_target]) == 0, "target_log10_p",
            target_p, "target_log10_p_adjusted", target_adj,
            "runner_up_log10_p", second, "tenants_detected",
            (json_int_t)n_det, "scored", (json_int_t)ao.scored,
            "audit_seconds", ao.seconds);
        json_array_append_new(arr, j);
        json_decref(ao.report);
        free(text);
    }
    json_t *res = json_pack(
        "{s:s,s:s,s:I,s:s,s:I,s:I,s:o}", "scheme", SCHEMES[s], "spec", spec,
        "tenants",
                  (json_int_t)cf->tenants, "target", tname[cf->tenant_target],
                  "target_responses", (json_int_t)n_target, "other_responses",
                  (json_int_t)n_other, "students", arr);
    free(pick);
    ev_requests_free(&b);
    free(fpath);
    for (size_t i = 0; i < cf->tenants; i++) {
        hm_ctx_free(tc[i]);
        free(tname[i]);
    }
    free(tc);
    free(tname);
    free(tpath);
    return res;
}

static void phase_tenants(run *r)
{
    const config *cf = r->cf;
    if (cf->tenants == 0)
        return;
    /* the target tenant is served enough for the largest rho; every other
     * tenant a few responses; the same prompts for every scheme */
    double rmax = 0;
    for (size_t k = 0; k < cf->n_tenant_rho; k++)
        if (cf->tenant_rho[k] > rmax)
            rmax = cf->tenant_rho[k];
    size_t n_target = (size_t)ceil(rmax / (1 - rmax) *
                                   (double)r->part_tokens[1] /
                                   (double)cf->resp_min) + 1;
    size_t first = take_prompts(r, n_target + (cf->tenants - 1) *
                                                  cf->tenant_other_responses);
    json_t *arr = json_array(); /* borrowed once set */
    json_object_set_new(r->js, "tenants", arr);
    for (int s = 0; s < N_SCHEMES; s++) {
        json_array_append_new(arr, tenant_experiment(r, s, n_target, first));
        checkpoint(r);
    }
}

typedef struct fpr_job {
    const ev_doc **docs;
    size_t n_docs;
    const hm_ctx *const *ctxs;
    size_t n_keys, batch;
    double la[N_ALPHA];
    ev_fpr f[64];
    uint64_t cnt[64][N_ALPHA];
    double exp_[64][N_ALPHA];
} fpr_job;

static void fpr_one(void *arg, size_t i, int w)
{
    fpr_job *j = arg;
    const ev_doc *d = j->docs[i];
    for (size_t k0 = 0; k0 < j->n_keys; k0 += j->batch) {
        size_t nk = j->n_keys - k0 < j->batch ? j->n_keys - k0 : j->batch;
        int rc = ev_fpr_document(&j->f[w], j->ctxs + k0, nk, 0, d->ids, d->n);
        if (rc != HM_OK)
            die("%s: %s", d->name, hm_strerror(rc));
    }
}

static void phase_fpr(run *r)
{
    const config *cf = r->cf;
    size_t nd = r->sotu.n + r->n_part[2];
    const ev_doc **docs = xmalloc(nd * sizeof *docs);
    size_t n = 0;
    for (size_t i = 0; i < r->sotu.n; i++)
        docs[n++] = &r->sotu.d[i];
    for (size_t i = 0; i < r->n_part[2]; i++)
        docs[n++] = &r->brown.d[r->part[2][i]];
    if (cf->fpr_max_docs && n > cf->fpr_max_docs) {
        /* reduced runs: an even spread of both corpora */
        size_t m = 0;
        for (size_t i = 0; i < cf->fpr_max_docs; i++)
            docs[m++] = docs[i * n / cf->fpr_max_docs];
        n = m;
    }
    uint64_t toks = 0;
    for (size_t i = 0; i < n; i++)
        toks += docs[i]->n;
    json_t *arr = json_array();
    for (int s = 0; s < N_SCHEMES; s++) {
        char spec[256], err[HM_ERRMSG_SIZE];
        hm_ctx_spec(r->ctx[s], spec, sizeof spec);
        hm_ctx **ctxs = xcalloc(cf->fpr_keys, sizeof *ctxs);
        for (size_t k = 0; k < cf->fpr_keys; k++) {
            hm_key *key;
            if (hm_key_from_label(&key, FPR_LABEL, (uint32_t)k) != HM_OK ||
                hm_ctx_new(&ctxs[k], key, spec, NULL, err, sizeof err) !=
                    HM_OK)
                die("never-deployed key %zu: %s", k, err);
            hm_key_free(key);
        }
        fpr_job *j = xcalloc(1, sizeof *j);
        j->docs = docs;
        j->n_docs = n;
        j->ctxs = (const hm_ctx *const *)ctxs;
        j->n_keys = cf->fpr_keys;
        j->batch = cf->fpr_batch;
        for (int a = 0; a < N_ALPHA; a++)
            j->la[a] = log10(ALPHAS[a]);
        for (int w = 0; w < n_threads; w++) {
            j->f[w].n_alpha = N_ALPHA;
            j->f[w].log10_alpha = j->la;
            j->f[w].counts = j->cnt[w];
            j->f[w].expected = j->exp_[w];
            j->f[w].min_log10_p = 0;
        }
        double t = now();
        ev_parallel_for(n, n_threads, fpr_one, j);
        t = now() - t;
        ev_fpr tot = {0};
        uint64_t cnt[N_ALPHA] = {0};
        double ex[N_ALPHA] = {0};
        tot.min_log10_p = 0;
        for (int w = 0; w < n_threads; w++) {
            tot.trials += j->f[w].trials;
            tot.empty += j->f[w].empty;
            tot.scored += j->f[w].scored;
            if (j->f[w].min_log10_p < tot.min_log10_p)
                tot.min_log10_p = j->f[w].min_log10_p;
            for (int a = 0; a < N_ALPHA; a++) {
                cnt[a] += j->cnt[w][a];
                ex[a] += j->exp_[w][a];
            }
        }
        json_t *al = json_array();
        for (int a = 0; a < N_ALPHA; a++) {
            double lo, hi;
            ev_clopper_pearson(cnt[a], tot.trials, FPR_CONF, &lo, &hi);
            int inside = lo <= ALPHAS[a] && ALPHAS[a] <= hi;
            double null_rate = ex[a] / (double)tot.trials;
            int null_inside = lo <= null_rate && null_rate <= hi;
            say("  FPR %s alpha %g: %llu / %llu = %.2e, %g%% CI [%.2e, "
                "%.2e] %s; exact null rate %.3e %s",
                SCHEMES[s], ALPHAS[a], (unsigned long long)cnt[a],
                (unsigned long long)tot.trials,
                (double)cnt[a] / (double)tot.trials, 100 * FPR_CONF, lo, hi,
                inside ? "contains alpha" : "DOES NOT contain alpha",
                null_rate, null_inside ? "inside" : "OUTSIDE");
            json_array_append_new(
                al, json_pack("{s:f,s:I,s:I,s:f,s:f,s:f,s:b,s:f,s:b}",
                              "alpha",
                              ALPHAS[a], "positives", (json_int_t)cnt[a],
                              "trials", (json_int_t)tot.trials, "fpr",
                              (double)cnt[a] / (double)tot.trials, "ci_lo",
                              lo, "ci_hi", hi, "alpha_inside", inside,
                              "null_rate", null_rate, "null_rate_inside",
                              null_inside));
        }
        say("FPR %s: %zu documents x %zu keys in %.1f s", SCHEMES[s], n,
            cf->fpr_keys, t);
        json_array_append_new(
            arr, json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:o}",
                           "scheme", SCHEMES[s], "spec", spec, "documents",
                           (json_int_t)n, "keys", (json_int_t)cf->fpr_keys,
                           "trials", (json_int_t)tot.trials, "empty",
                           (json_int_t)tot.empty, "scored",
                           (json_int_t)tot.scored, "min_log10_p",
                           tot.min_log10_p, "seconds", t, "alphas", al));
        for (size_t k = 0; k < cf->fpr_keys; k++)
            hm_ctx_free(ctxs[k]);
        free(ctxs);
        free(j);
    }
    json_object_set_new(
        r->js, "false_positives",
        json_pack("{s:s,s:s,s:f,s:I,s:I,s:I,s:o}", "label", FPR_LABEL,
                  "interval", "Clopper-Pearson (exact binomial), two-sided",
                  "confidence", FPR_CONF, "documents", (json_int_t)n,
                  "sotu_and_heldout_brown_tokens", (json_int_t)toks,
                  "keys", (json_int_t)cf->fpr_keys, "schemes", arr));
    free(docs);
}

/* Everything that fixes the run, recorded before any result. */
static void set_parameters(run *r, const char *command, int argc,
                           char **argv)
{
    const config *cf = r->cf;
    json_t *rho = json_array(), *trho = json_array(), *al = json_array(),
           *specs = json_object(), *cmd = json_array();
    for (size_t k = 0; k < cf->n_rho; k++)
        json_array_append_new(rho, json_real(cf->rho[k]));
    for (size_t k = 0; k < cf->n_tenant_rho; k++)
        json_array_append_new(trho, json_real(cf->tenant_rho[k]));
    for (int a = 0; a < N_ALPHA; a++)
        json_array_append_new(al, json_real(ALPHAS[a]));
    for (int s = 0; s < N_SCHEMES; s++) {
        char spec[256];
        hm_ctx_spec(r->ctx[s], spec, sizeof spec);
        json_object_set_new(specs, SCHEMES[s], json_string(spec));
    }
    for (int i = 0; i < argc; i++)
        json_array_append_new(cmd, json_string(argv[i]));
    char fp[HM_FINGERPRINT_SIZE], nfp[HM_FINGERPRINT_SIZE];
    if (hm_key_fingerprint(r->key, fp, sizeof fp) != HM_OK ||
        hm_key_fingerprint(r->never_key, nfp, sizeof nfp) != HM_OK)
        die("fingerprint failed");
    json_object_set_new(r->js, "command",
                        json_string(command ? command : argv[0]));
    json_object_set_new(r->js, "argv", cmd);
    json_object_set_new(r->js, "hallmark_version",
                        json_string(hm_version_string()));
    json_object_set_new(r->js, "prf_version",
                        json_integer((json_int_t)hm_prf_version()));
    json_object_set_new(
        r->js, "parameters",
        json_pack("{s:s,s:I,s:i,s:i,s:f,s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:o,"
                  "s:I,s:I,s:I,s:s,s:I,s:I,s:I,s:I,s:o,s:o,s:f,s:o,s:s,s:s,"
                  "s:s}",
                  "config", cf->name, "seed", (json_int_t)r->seed, "threads",
                  n_threads, "order", cf->order, "temperature",
                  (double)cf->temperature, "top_k", (int)cf->top_k,
                  "prompt_words", (json_int_t)cf->prompt_words,
                  "prompt_min_words", (json_int_t)cf->prompt_min_words,
                  "response_min", (json_int_t)cf->resp_min, "response_max",
                  (json_int_t)cf->resp_max, "served_per_scheme",
                  (json_int_t)cf->serve_responses, "student_responses",
                  (json_int_t)cf->student_responses, "rho", rho,
                  "self_check_keys", (json_int_t)cf->self_check, "fpr_keys",
                  (json_int_t)cf->fpr_keys, "fpr_keys_per_tally",
                  (json_int_t)cf->fpr_batch, "fpr_label", FPR_LABEL,
                  "tenants", (json_int_t)cf->tenants, "tenant_target",
                  (json_int_t)cf->tenant_target, "tenant_other_responses",
                  (json_int_t)cf->tenant_other_responses,
                  "tenant_student_responses",
                  (json_int_t)cf->tenant_student_responses, "tenant_rho",
                  trho, "alphas", al, "fpr_confidence", FPR_CONF, "specs",
                  specs, "key_fingerprint", fp,
                  "never_deployed_key_fingerprint", nfp, "rho_definition",
                  "watermarked response tokens / (those + student-clean "
                  "tokens); 100% = watermarked responses only"));
    json_t *pj = json_object_get(r->js, "parameters");
    json_object_set_new(pj, "part_docs", json_integer((json_int_t)cf->part_docs));
    json_object_set_new(pj, "serve_rows_per_call", json_integer(EV_SERVE_ROWS));
    json_object_set_new(pj, "fpr_max_docs",
                        json_integer((json_int_t)cf->fpr_max_docs));
    json_object_set_new(
        r->js, "data",
        json_pack("{s:I,s:s,s:I,s:I,s:I,s:I,s:I,s:s,s:s,s:I}",
                  "brown_samples", (json_int_t)(r->n_part[0] + r->n_part[1] +
                                                r->n_part[2]),
                  "split",
                  r->cf->part_docs
                      ? "sorted sample i -> part i mod 3 (0 teacher, 1 "
                        "student-clean, 2 held-out), then part_docs evenly "
                        "spaced samples of each part"
                      : "sorted sample i -> part i mod 3 (0 teacher, 1 "
                        "student-clean, 2 held-out)",
                  "teacher_tokens", (json_int_t)r->part_tokens[0],
                  "student_clean_tokens", (json_int_t)r->part_tokens[1],
                  "heldout_tokens", (json_int_t)r->part_tokens[2],
                  "sotu_addresses", (json_int_t)r->sotu.n, "sotu_tokens",
                  (json_int_t)ev_docs_tokens(&r->sotu), "tokenizer",
                  hm_tokenizer_name(r->tok), "tokenizer_sha256",
                  hm_tokenizer_digest(r->tok), "prompts_available",
                  (json_int_t)r->pr.n));
}

/* The results so far, so that an interrupted run still leaves them. */
static void checkpoint(run *r)
{
    char err[512];
    json_object_set_new(r->js, "seconds", json_real(now() - r->t0));
    if (ev_report_write(r->js, r->out, err, sizeof err) != 0)
        die("%s", err);
}

/* ------------------------------------------------------------- main */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: hm-eval --brown DIR --sotu DIR --rankfile FILE "
            "--hallmark PROG\n"
            "               --out DIR [--config full|small] [--seed N] "
            "[--threads N]\n"
            "               [--skip PHASES] [--command STR]\n"
            "\n"
            "The distillation experiment of hallmark (issue 5).  DIR of "
            "--brown holds\n"
            "one text file per Brown sample (brown2text.awk), --sotu the "
            "SOTU *.txt.\n"
            "Writes results.json, results.md, rho.svg and fpr.svg to --out, "
            "and the\n"
            "served responses, student texts and audit reports to "
            "OUT/work.\n"
            "PHASES: comma-separated of students, tenants, fpr.\n"
            "       hm-eval --report-only DIR   rewrite DIR's tables and "
            "plots from\n"
            "                                   DIR/results.json\n");
}

int main(int argc, char **argv)
{
    const char *brown = NULL, *sotu = NULL, *rank = NULL, *prog = NULL,
               *out = NULL, *cfname = "full", *skip = "", *command = NULL;
    unsigned long long seed = 1;
    static const struct option lo[] = {
        {"brown", 1, 0, 'b'},   {"sotu", 1, 0, 's'},  {"rankfile", 1, 0, 'r'},
        {"hallmark", 1, 0, 'H'}, {"out", 1, 0, 'o'},  {"config", 1, 0, 'c'},
        {"seed", 1, 0, 'S'},    {"threads", 1, 0, 'j'}, {"skip", 1, 0, 'K'},
        {"command", 1, 0, 'C'}, {"help", 0, 0, 'h'},
        {"report-only", 1, 0, 'R'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1)
        switch (c) {
        case 'b': brown = optarg; break;
        case 's': sotu = optarg; break;
        case 'r': rank = optarg; break;
        case 'H': prog = optarg; break;
        case 'o': out = optarg; break;
        case 'c': cfname = optarg; break;
        case 'S': seed = strtoull(optarg, NULL, 10); break;
        case 'j': n_threads = atoi(optarg); break;
        case 'K': skip = optarg; break;
        case 'C': command = optarg; break;
        case 'R': {
            /* the tables and plots again from DIR/results.json */
            char *jp = path_join(optarg, "results.json"), err[512];
            json_error_t je;
            json_t *js = json_load_file(jp, JSON_PRESERVE_ORDER, &je);
            if (!js)
                die("%s: %s", jp, je.text);
            if (ev_report_write(js, optarg, err, sizeof err) != 0)
                die("%s", err);
            json_decref(js);
            free(jp);
            return 0;
        }
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    if (!brown || !sotu || !rank || !prog || !out || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (n_threads < 1 || n_threads > 64)
        die("--threads must be 1 to 64");
    run r;
    memset(&r, 0, sizeof r);
    r.t0 = now();
    for (size_t i = 0; i < sizeof CONFIGS / sizeof *CONFIGS; i++)
        if (strcmp(CONFIGS[i].name, cfname) == 0)
            r.cf = &CONFIGS[i];
    if (!r.cf)
        die("unknown configuration '%s'", cfname);
    r.seed = seed;
    r.out = out;
    r.hallmark = prog;
    char *tokspec = xmalloc(strlen(rank) + 16);
    sprintf(tokspec, "cl100k_base=%s", rank);
    r.tok_spec = tokspec;
    mkdir(out, 0755);
    char *work = path_join(out, "work");
    mkdir(work, 0755);
    r.work = work;
    char *logp = path_join(out, "commands.log");
    if (!(logf_ = fopen(logp, "w")))
        die("%s: %s", logp, strerror(errno));
    r.samp.temperature = r.cf->temperature;
    r.samp.top_k = r.cf->top_k;

    load_data(&r, brown, sotu, rank);
    make_prompts(&r);
    derive_key(&r, "teacher key", &r.key);
    derive_key(&r, "never-deployed key", &r.never_key);
    r.key_path = path_join(work, "teacher.key");
    r.never_key_path = path_join(work, "never-deployed.key");
    char err[HM_ERRMSG_SIZE];
    if (hm_key_save(r.key, r.key_path, HM_KEY_SAVE_FORCE, err, sizeof err) !=
            HM_OK ||
        hm_key_save(r.never_key, r.never_key_path, HM_KEY_SAVE_FORCE, err,
                    sizeof err) != HM_OK)
        die("%s", err);
    for (int s = 0; s < N_SCHEMES; s++)
        if (hm_ctx_new(&r.ctx[s], r.key, SCHEMES[s], NULL, err, sizeof err) !=
            HM_OK)
            die("%s", err);

    r.js = json_object();
    set_parameters(&r, command, argc, argv);
    phase_models(&r);
    phase_serve(&r);
    checkpoint(&r);
    if (!strstr(skip, "students")) {
        phase_students(&r);
        checkpoint(&r);
    }
    if (!strstr(skip, "tenants")) {
        phase_tenants(&r);
        checkpoint(&r);
    }
    if (!strstr(skip, "fpr")) {
        phase_fpr(&r);
        checkpoint(&r);
    }
    say("results in %s (%.0f s)", out, now() - r.t0);
    json_decref(r.js);
    for (int s = 0; s <= N_SCHEMES; s++) {
        ev_requests_free(&r.served[s]);
        free(r.served_path[s]);
    }
    for (int s = 0; s < N_SCHEMES; s++)
        hm_ctx_free(r.ctx[s]);
    for (size_t i = 0; i < r.pr.n; i++) {
        free(r.pr.text[i]);
        hm_tokens_free(r.pr.ids[i]);
    }
    free(r.pr.text);
    free(r.pr.ids);
    free(r.pr.n_ids);
    for (int p = 0; p < 3; p++)
        free(r.part[p]);
    ng_free(r.teacher);
    ng_free(r.reference);
    hm_key_free(r.key);
    hm_key_free(r.never_key);
    hm_tokenizer_free(r.tok);
    ev_docs_free(&r.brown);
    ev_docs_free(&r.sotu);
    free(r.key_path);
    free(r.never_key_path);
    free(tokspec);
    free(work);
    free(logp);
    fclose(logf_);
    return 0;
}
