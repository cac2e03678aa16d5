/*
 * hm-ngram.c - train, evaluate, sample and time the evaluation's n-gram
 * models (eval/ngram.h).  Input files hold token ids, one document per
 * line, as printed by 'hallmark tokenize --ids'.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/resource.h>
#include <time.h>

#include "hallmark.h"
#include "ngram.h"

#define EXIT_TROUBLE 2

static void die_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void die_msg(const char *fmt, ...)
{
    va_list ap;
    fputs("hm-ngram: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: hm-ngram train -o MODEL --order N --vocab V FILE...\n"
            "       hm-ngram ppl MODEL FILE...\n"
            "       hm-ngram sample MODEL [--seed S] [-n N] [-T RANKFILE]\n"
            "       hm-ngram bench MODEL [--rows N] [--seed S]\n"
            "\n"
            "Interpolated modified Kneser-Ney n-gram models over token ids,\n"
            "for hallmark's distillation experiment.  FILEs hold token ids, "
            "one\n"
            "document per line ('hallmark tokenize --ids'); '-' is standard "
            "input.\n"
            "\n"
            "  train   count FILEs and write MODEL (order 1-%d, V ids)\n"
            "  ppl     perplexity of the documents in FILEs under MODEL\n"
            "  sample  N ids (default 50) of a new document, sampled from the\n"
            "          full distribution at each step; with -T, as text\n"
            "  bench   microseconds per full log-probability row\n"
            "\n"
            "Errors are reported as FILE:LINE: problem, with exit status 2.\n",
            NG_MAX_ORDER);
}

static int parse_long(const char *what, const char *s, long lo, long hi,
                      long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < lo || v > hi) {
        die_msg("%s: '%s' is not an integer in [%ld, %ld]", what, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

/* ------------------------------------------------------------- reading */

struct doc_reader {
    const char *path;
    FILE *f;
    char *line;
    size_t cap;
    long lineno;
    int32_t *ids;
    size_t n, ids_cap;
};

static int reader_open(struct doc_reader *r, const char *path)
{
    memset(r, 0, sizeof *r);
    r->path = path;
    r->f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (r->f == NULL) {
        die_msg("%s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static void reader_close(struct doc_reader *r)
{
    if (r->f != NULL && r->f != stdin)
        fclose(r->f);
    free(r->line);
    free(r->ids);
}

/* The next document: 1, 0 at the end, -1 after an error (reported). */
static int reader_next(struct doc_reader *r, int32_t vocab)
{
    ssize_t len = getline(&r->line, &r->cap, r->f);
    if (len < 0) {
        if (ferror(r->f)) {
            die_msg("%s: read error", r->path);
            return -1;
        }
        return 0;
    }
    r->lineno++;
    r->n = 0;
    const char *p = r->line;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        if (*p == '\0')
            return 1;
        if (*p < '0' || *p > '9') {
            fprintf(stderr, "%s:%ld: expected a token id, found '%.20s'\n",
                    r->path, r->lineno, p);
            return -1;
        }
        long long v = 0;
        while (*p >= '0' && *p <= '9' && v <= INT32_MAX)
            v = 10 * v + (*p++ - '0');
        if (v >= vocab || (*p >= '0' && *p <= '9')) {
            fprintf(stderr, "%s:%ld: id %lld%s outside the vocabulary "
                    "[0, %ld)\n", r->path, r->lineno, v,
                    *p >= '0' && *p <= '9' ? "..." : "", (long)vocab);
            return -1;
        }
        if (*p != '\0' && *p != ' ' && *p != '\t' && *p != '\n' &&
            *p != '\r') {
            fprintf(stderr, "%s:%ld: expected a token id, found '%.20s'\n",
                    r->path, r->lineno, p);
            return -1;
        }
        if (r->n == r->ids_cap) {
            size_t nc = r->ids_cap ? 2 * r->ids_cap : 4096;
            int32_t *ni = realloc(r->ids, nc * sizeof *ni);
            if (ni == NULL) {
                fprintf(stderr, "%s:%ld: out of memory\n", r->path,
                        r->lineno);
                return -1;
            }
            r->ids = ni;
            r->ids_cap = nc;
        }
        r->ids[r->n++] = (int32_t)v;
    }
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static long peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024;
}

/* --------------------------------------------------------------- train */

static int cmd_train(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'},
        {"order", required_argument, NULL, 'N'},
        {"vocab", required_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *out = NULL;
    long order = 0, vocab = 0;
    int c;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            out = optarg;
            break;
        case 'N':
            if (parse_long("--order", optarg, NG_MIN_ORDER, NG_MAX_ORDER,
                           &order) != 0)
                return EXIT_TROUBLE;
            break;
        case 'V':
            if (parse_long("--vocab", optarg, 1, NG_MAX_VOCAB, &vocab) != 0)
                return EXIT_TROUBLE;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EXIT_TROUBLE;
        }
    }
    if (out == NULL || order == 0 || vocab == 0 || optind == argc) {
        die_msg("train: -o MODEL, --order, --vocab and a FILE are required");
        return EXIT_TROUBLE;
    }
    char err[NG_ERRMSG_SIZE];
    double t0 = now();
    ng_trainer *t = ng_trainer_new((int)order, (int32_t)vocab, err, sizeof err);
    if (t == NULL) {
        die_msg("train: %s", err);
        return EXIT_TROUBLE;
    }
    int status = EXIT_TROUBLE;
    ng_model *m = NULL;
    for (int i = optind; i < argc; i++) {
        struct doc_reader r;
        if (reader_open(&r, argv[i]) != 0)
            goto done;
        int rc;
        while ((rc = reader_next(&r, (int32_t)vocab)) == 1) {
            if (ng_trainer_add(t, r.ids, r.n, NULL, err, sizeof err) != 0) {
                fprintf(stderr, "%s:%ld: %s\n", r.path, r.lineno, err);
                rc = -1;
                break;
            }
        }
        reader_close(&r);
        if (rc != 0)
            goto done;
    }
    double t1 = now();
    if (ng_trainer_finish(t, &m, err, sizeof err) != 0) {
        die_msg("train: %s", err);
        goto done;
    }
    double t2 = now();
    if (ng_save(m, out, err, sizeof err) != 0) {
        die_msg("%s", err);
        goto done;
    }
    double t3 = now();
    printf("%s: order %d, V %ld, %llu tokens in %llu documents\n", out,
           ng_order(m), (long)ng_vocab(m),
           (unsigned long long)ng_trainer_tokens(t),
           (unsigned long long)ng_trainer_docs(t));
    for (int k = 1; k <= ng_order(m); k++)
        printf("  order %d: %10llu %d-grams, D = %.4f %.4f %.4f\n", k,
               (unsigned long long)ng_count(m, k), k, ng_discount(m, k, 1),
               ng_discount(m, k, 2), ng_discount(m, k, 3));
    printf("time: read+count %.2f s, build %.2f s, save %.2f s; model %.1f "
           "MiB, peak RSS %ld MiB\n",
           t1 - t0, t2 - t1, t3 - t2, (double)ng_memory(m) / 1048576.0,
           peak_rss_mib());
    status = 0;
done:
    ng_free(m);
    ng_trainer_free(t);
    return status;
}

static ng_model *load_or_die(const char *path)
{
    char err[NG_ERRMSG_SIZE];
    ng_model *m = NULL;
    if (ng_load(&m, path, err, sizeof err) != 0)
        die_msg("%s", err);
    return m;
}

/* ----------------------------------------------------------------- ppl */

static int cmd_ppl(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "-h") == 0 ||
                      strcmp(argv[1], "--help") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc < 3) {
        die_msg("ppl: MODEL and a FILE are required");
        return EXIT_TROUBLE;
    }
    ng_model *m = load_or_die(argv[1]);
    if (m == NULL)
        return EXIT_TROUBLE;
    double lp = 0;
    unsigned long long tokens = 0, docs = 0;
    int status = 0;
    for (int i = 2; i < argc && status == 0; i++) {
        struct doc_reader r;
        if (reader_open(&r, argv[i]) != 0) {
            status = EXIT_TROUBLE;
            break;
        }
        int rc;
        while ((rc = reader_next(&r, ng_vocab(m))) == 1) {
            lp += ng_logprob(m, r.ids, r.n);
            tokens += r.n;
            docs += r.n > 0;
        }
        reader_close(&r);
        if (rc != 0)
            status = EXIT_TROUBLE;
    }
    if (status == 0) {
        if (tokens == 0) {
            die_msg("ppl: no tokens");
            status = EXIT_TROUBLE;
        } else {
            double h = -lp / (double)tokens;
            printf("tokens %llu docs %llu cross-entropy %.4f bits/token "
                   "perplexity %.3f\n", tokens, docs, h / log(2), exp(h));
        }
    }
    ng_free(m);
    return status;
}

/* -------------------------------------------------------------- sample */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* An id drawn from the distribution exp(row), by inversion; *sum (may be
 * NULL) receives the row's total probability. */
static int32_t draw(const float *row, int32_t v, uint64_t *rng, double *sum)
{
    double total = 0;
    for (int32_t w = 0; w < v; w++)
        total += exp(row[w]);
    if (sum != NULL)
        *sum = total;
    double u = (double)(splitmix64(rng) >> 11) * 0x1p-53 * total, acc = 0;
    for (int32_t w = 0; w < v; w++) {
        acc += exp(row[w]);
        if (u < acc)
            return w;
    }
    return v - 1;
}

struct sample_opts {
    const char *model, *tokenizer;
    long n, seed, rows;
};

static int sample_args(int argc, char **argv, struct sample_opts *o,
                       int bench)
{
    static const struct option opts[] = {
        {"seed", required_argument, NULL, 's'},
        {"tokenizer", required_argument, NULL, 'T'},
        {"rows", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, bench ? "s:h" : "s:n:T:h", opts,
                            NULL)) != -1) {
        switch (c) {
        case 's':
            if (parse_long("--seed", optarg, 0, LONG_MAX, &o->seed) != 0)
                return EXIT_TROUBLE;
            break;
        case 'n':
            if (parse_long("-n", optarg, 0, 100000000, &o->n) != 0)
                return EXIT_TROUBLE;
            break;
        case 'r':
            if (!bench) {
                usage(stderr);
                return EXIT_TROUBLE;
            }
            if (parse_long("--rows", optarg, 1, 100000000, &o->rows) != 0)
                return EXIT_TROUBLE;
            break;
        case 'T':
            if (bench) {
                usage(stderr);
                return EXIT_TROUBLE;
            }
            o->tokenizer = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EXIT_TROUBLE;
        }
    }
    if (argc - optind != 1) {
        die_msg("%s: one MODEL is required", argv[0]);
        return EXIT_TROUBLE;
    }
    o->model = argv[optind];
    return -1;
}

static void print_piece(const hm_tokenizer *tok, int32_t id)
{
    const unsigned char *b;
    size_t len;
    if (hm_tokenizer_piece(tok, id, &b, &len) == HM_OK)
        fwrite(b, 1, len, stdout);
    else
        printf("<%ld>", (long)id);
}

static int cmd_sample(int argc, char **argv)
{
    struct sample_opts o = {NULL, NULL, 50, 0, 0};
    int rc = sample_args(argc, argv, &o, 0);
    if (rc >= 0)
        return rc;
    hm_tokenizer *tok = NULL;
    if (o.tokenizer != NULL) {
        char msg[HM_ERRMSG_SIZE] = "";
        const char *base = strrchr(o.tokenizer, '/');
        base = base ? base + 1 : o.tokenizer;
        char preset[64];
        snprintf(preset, sizeof preset, "%.*s", (int)strcspn(base, "."),
                 base);
        if (hm_tokenizer_load_tiktoken(&tok, preset, o.tokenizer, msg,
                                       sizeof msg) != HM_OK) {
            die_msg("%s: %s", o.tokenizer, msg);
            return EXIT_TROUBLE;
        }
    }
    ng_model *m = load_or_die(o.model);
    int32_t *ids = malloc(((size_t)o.n + 1) * sizeof *ids);
    float *row = m ? malloc((size_t)ng_vocab(m) * sizeof *row) : NULL;
    int status = EXIT_TROUBLE;
    if (m != NULL && (ids == NULL || row == NULL))
        die_msg("sample: out of memory");
    if (m != NULL && ids != NULL && row != NULL) {
        uint64_t rng = (uint64_t)o.seed;
        for (long i = 0; i < o.n; i++) {
            ng_logits(m, ids, (size_t)i, row);
            ids[i] = draw(row, ng_vocab(m), &rng, NULL);
            if (tok != NULL)
                print_piece(tok, ids[i]);
            else
                printf(i ? " %ld" : "%ld", (long)ids[i]);
        }
        putchar('\n');
        status = 0;
    }
    free(row);
    free(ids);
    ng_free(m);
    hm_tokenizer_free(tok);
    return status;
}

/* --------------------------------------------------------------- bench */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmd_bench(int argc, char **argv)
{
    struct sample_opts o = {NULL, NULL, 0, 1, 2000};
    int rc = sample_args(argc, argv, &o, 1);
    if (rc >= 0)
        return rc;
    ng_model *m = load_or_die(o.model);
    if (m == NULL)
        return EXIT_TROUBLE;
    size_t n = (size_t)o.rows, v = (size_t)ng_vocab(m);
    int32_t *ids = malloc(n * sizeof *ids);
    float *row = malloc(v * sizeof *row);
    double *us = malloc(n * sizeof *us);
    if (ids == NULL || row == NULL || us == NULL) {
        die_msg("bench: out of memory");
        free(ids);
        free(row);
        free(us);
        ng_free(m);
        return EXIT_TROUBLE;
    }
    /* Contexts from the model's own samples: documents of 100 tokens, so
     * that document starts (the busiest histories) are represented. */
    uint64_t rng = (uint64_t)o.seed;
    double total = 0, worst_sum = 0;
    for (size_t i = 0; i < n; i++) {
        size_t start = i / 100 * 100;
        double t0 = now();
        ng_logits(m, ids + start, i - start, row);
        double t1 = now();
        us[i] = 1e6 * (t1 - t0);
        total += us[i];
        double sum;
        ids[i] = draw(row, (int32_t)v, &rng, &sum);
        worst_sum = fmax(worst_sum, fabs(sum - 1));
    }
    size_t probes = 0;
    double t0 = now();
    for (size_t i = 0; i < n; i++) {
        size_t start = i / 100 * 100;
        for (int32_t w = 0; w < 1000; w++, probes++)
            (void)ng_prob(m, ids + start, i - start,
                          (int32_t)((size_t)w * 7919 % v));
    }
    double prob_ns = 1e9 * (now() - t0) / (double)probes;
    qsort(us, n, sizeof *us, cmp_double);
    printf("V %zu, order %d, %zu rows: ng_logits %.1f us/row median, "
           "%.1f mean, %.1f min, %.1f p99; ng_prob %.0f ns; "
           "max |row sum - 1| %.1e\n",
           v, ng_order(m), n, us[n / 2], total / (double)n, us[0],
           us[n * 99 / 100], prob_ns, worst_sum);
    free(ids);
    free(row);
    free(us);
    ng_free(m);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*run)(int, char **);
    } cmds[] = {{"train", cmd_train},
                {"ppl", cmd_ppl},
                {"sample", cmd_sample},
                {"bench", cmd_bench}};
    if (argc < 2) {
        usage(stderr);
        return EXIT_TROUBLE;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(argv[1], cmds[i].name) == 0) {
            optind = 1;
            return cmds[i].run(argc - 1, argv + 1);
        }
    die_msg("unknown command '%s' (try 'hm-ngram --help')", argv[1]);
    return EXIT_TROUBLE;
}
