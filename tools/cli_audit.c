/*
 * cli_audit.c - hallmark audit: the corpus-level ("radioactivity") test
 * of a suspect model's outputs, with global dedup, per-tenant attribution
 * under family-wise error control, a self-check with never-deployed keys,
 * and a self-describing report (JSON and HTML) written atomically.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"

#define DEFAULT_SPEC "gumbel"
#define DEFAULT_SELF_CHECK 32
#define DEFAULT_LABEL "hallmark audit self-check"
#define MAX_TENANTS 10000
#define MAX_POINTS 200

static void audit_usage(FILE *out)
{
    fprintf(out,
            "usage: hallmark audit --key KEYFILE [--scheme SPEC]... "
            "[OPTIONS] -o REPORT FILE...\n"
            "\n"
            "Test a suspect model's outputs as one corpus for the watermark "
            "of KEYFILE:\n"
            "every (window, token) tuple once across all inputs, per tenant, "
            "with a\n"
            "self-check on never-deployed keys.  Writes REPORT.json and "
            "REPORT.html.\n"
            "FILE is JSON Lines of token ids (as for verify) or a tally "
            "file; '-' is\n"
            "standard input.\n"
            "\n"
            "  -k, --key FILE          master key file (mode 0600)\n"
            "  -s, --scheme SPEC       channel spec as served (default "
            "%s)\n"
            "  -T, --tenants FILE      tenant ids, one per line: attribute "
            "the leak\n"
            "      --default-tenant    test the default tenant (no tenant id) "
            "too\n"
            "      --correction M      holm (default), bonferroni or sidak "
            "over tenants\n"
            "      --logprobs          FILEs hold a suspect's log-probabilities "
            "(records as\n"
            "                          for probe): score its mass on green "
            "tokens; see\n"
            "                          hallmark audit --logprobs --help\n"
            "  -F, --filter FILE       score only tuples whose window occurs "
            "in FILE (JSON\n"
            "                          Lines of the provider's own served "
            "outputs, or a\n"
            "                          sketch file from 'hallmark sketch' or "
            "hm_sketch_save)\n"
            "  -R, --self-check R      never-deployed keys to test "
            "(default %d, 0: off)\n"
            "      --self-check-label L  their public label (default "
            "'%s')\n"
            "  -a, --alpha A           significance level (default 1e-3)\n"
            "      --vocab-size N      reject token ids >= N\n"
            "      --skip-padded       do not score windows reaching before "
            "a document\n"
            "      --tokenizer SPEC    tokenize text: plain text files (one "
            "document each)\n"
            "                          and 'text'/'prompt' fields; see "
            "hallmark tokenize\n"
            "      --parse-special     special tokens in text are special "
            "tokens\n"
            "      --save-tally FILE   also write the tally, for 'hallmark "
            "merge'\n"
            "  -o, --output REPORT     report name (REPORT.json, "
            "REPORT.html)\n"
            "  -h, --help              this help\n"
            "\n"
            "Exit status: 0 no evidence at alpha (or an uncalibrated "
            "self-check),\n"
            "1 watermark detected, 2 error (then no report is written).\n",
            DEFAULT_SPEC, DEFAULT_SELF_CHECK, DEFAULT_LABEL);
}

/* ------------------------------------------------------------ tenants */

/* The tenants to test: those listed in path (NULL: none), after the
 * default tenant "" when with_default is set or path is NULL. */
int cli_read_tenants(const char *path, int with_default, char ***out,
                     size_t *n)
{
    FILE *f = path ? fopen(path, "r") : NULL;
    char *line = NULL;
    size_t cap = 0;
    unsigned long no = 0;
    ssize_t len;
    *out = NULL;
    *n = 0;
    if (path != NULL && f == NULL) {
        cli_error("%s: %s", path, strerror(errno));
        return -1;
    }
    char **list = calloc(MAX_TENANTS + 1, sizeof *list);
    int rc = list ? 0 : -1;
    if (rc == 0 && (with_default || path == NULL)) {
        if ((list[0] = strdup("")) == NULL)
            rc = -1;
        else
            *n = 1;
    }
    while (rc == 0 && f != NULL && (len = getline(&line, &cap, f)) >= 0) {
        no++;
        while (len > 0 && strchr("\r\n \t", line[len - 1]))
            line[--len] = '\0';
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        if (*s == '\0' || *s == '#')
            continue;
        if (strlen(s) > 255) {
            cli_error("%s:%lu: tenant id longer than 255 bytes", path, no);
            rc = -1;
        } else if (*n == MAX_TENANTS + (with_default ? 1u : 0u)) {
            cli_error("%s:%lu: more than %d tenants", path, no, MAX_TENANTS);
            rc = -1;
        } else {
            for (size_t i = 0; i < *n && rc == 0; i++)
                if (strcmp(list[i], s) == 0) {
                    cli_error("%s:%lu: duplicate tenant '%s'", path, no, s);
                    rc = -1;
                }
            if (rc == 0 && (list[*n] = strdup(s)) == NULL)
                rc = -1;
            if (rc == 0)
                (*n)++;
        }
    }
    if (rc == 0 && f != NULL && ferror(f)) {
        cli_error("%s: read error", path);
        rc = -1;
    }
    if (rc == 0 && path != NULL && *n == (with_default ? 1u : 0u)) {
        cli_error("%s: no tenants", path);
        rc = -1;
    }
    if (list == NULL)
        cli_error("out of memory");
    free(line);
    if (f != NULL)
        fclose(f);
    *out = list;
    return rc;
}

/* ------------------------------------------------------------ helpers */

/* A key's p-value over its channels (cli_channels_log10p). */
static double key_log10p(const hm_tally *t, size_t k, unsigned nch)
{
    double lp[HM_MAX_CHANNELS] = {0};
    for (unsigned c = 0; c < nch; c++) {
        hm_result r;
        if (hm_tally_result(t, k, c, &r) == HM_OK)
            lp[c] = r.log10_p;
    }
    return cli_channels_log10p(lp, nch);
}

typedef struct point {
    double scored;
    double *lp; /* per tenant */
} point;

typedef struct audit {
    size_t n_tenants, n_self;
    char **tenants;
    const char *label;
    unsigned nch;
    hm_tally *t;
    point pts[MAX_POINTS];
    size_t n_pts;
    double next;
} audit;

static void checkpoint(audit *a, int force)
{
    hm_result r;
    if (hm_tally_result(a->t, 0, 0, &r) != HM_OK)
        return;
    double s = (double)r.scored;
    if (!force && s < a->next)
        return;
    if (a->n_pts == MAX_POINTS || (a->n_pts && a->pts[a->n_pts - 1].scored == s))
        return;
    double *lp = malloc(a->n_tenants * sizeof *lp);
    if (lp == NULL)
        return;
    for (size_t k = 0; k < a->n_tenants; k++)
        lp[k] = key_log10p(a->t, k, a->nch);
    a->pts[a->n_pts].scored = s;
    a->pts[a->n_pts].lp = lp;
    a->n_pts++;
    a->next = s < 64 ? 64 : s * 1.25;
}

/* ------------------------------------------------------------- report */

static void svg_curve(cli_buf *b, const audit *a, double alpha)
{
    const double W = 640, H = 300, L = 60, B = 40;
    double xmax = 1, ymin = -3;
    for (size_t i = 0; i < a->n_pts; i++) {
        xmax = fmax(xmax, log10(fmax(a->pts[i].scored, 1)));
        for (size_t k = 0; k < a->n_tenants; k++)
            if (isfinite(a->pts[i].lp[k]))
                ymin = fmin(ymin, a->pts[i].lp[k]);
    }
    ymin = fmin(ymin, log10(alpha) - 1);
    cli_buf_printf(b,
                   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" "
                   "height=\"%g\" role=\"img\">\n"
                   "<rect x=\"%g\" y=\"0\" width=\"%g\" height=\"%g\" "
                   "fill=\"none\" stroke=\"#999\"/>\n",
                   W + L, H + B, L, W, H);
#define X(v) (L + W * (v) / xmax)
#define Y(v) (H * (v) / ymin)
    cli_buf_printf(b,
                   "<line x1=\"%g\" x2=\"%g\" y1=\"%.2f\" y2=\"%.2f\" "
                   "stroke=\"#c00\" stroke-dasharray=\"4 3\"/>\n"
                   "<text x=\"%g\" y=\"%.2f\" font-size=\"11\" "
                   "fill=\"#c00\">alpha</text>\n",
                   L, L + W, Y(log10(alpha)), Y(log10(alpha)), L + W - 40,
                   Y(log10(alpha)) - 3);
    for (size_t k = 0; k < a->n_tenants && k < 50; k++) {
        cli_buf_printf(b, "<polyline fill=\"none\" stroke=\"hsl(%zu,60%%,40%%)\" "
                          "points=\"",
                       (k * 67) % 360);
        for (size_t i = 0; i < a->n_pts; i++) {
            double y = a->pts[i].lp[k];
            if (!isfinite(y))
                y = ymin;
            cli_buf_printf(b, "%.2f,%.2f ",
                           X(log10(fmax(a->pts[i].scored, 1))), Y(y));
        }
        cli_buf_printf(b, "\"><title>");
        cli_html_escape(b, a->tenants[k][0] ? a->tenants[k] : "(default tenant)");
        cli_buf_printf(b, "</title></polyline>\n");
    }
    cli_buf_printf(b,
                   "<text x=\"%g\" y=\"%g\" font-size=\"12\">log10 of scored "
                   "tuples (0 to %.1f)</text>\n"
                   "<text x=\"4\" y=\"14\" font-size=\"12\">log10 p</text>\n"
                   "<text x=\"4\" y=\"%g\" font-size=\"11\">%.0f</text>\n"
                   "</svg>\n",
                   L + W / 2 - 80, H + 28, xmax, H, ymin);
#undef X
#undef Y
}

/* ---------------------------------------------------------------- main */

int cmd_audit(int argc, char **argv)
{
    static const struct option opts[] = {
        CLI_AUDIT_LONGOPTS,
        {"filter", required_argument, NULL, 'F'},
        {"tokenizer", required_argument, NULL, 'Z'},
        {"parse-special", no_argument, NULL, 'Y'},
        {"save-tally", required_argument, NULL, 'S'},
        {"logprobs", no_argument, NULL, 'G'},
        {NULL, 0, NULL, 0}};
    const char *save_tally = NULL, *filter_file = NULL, *tokspec = NULL;
    cli_audit_opts o = {.label = DEFAULT_LABEL,
                        .n_self = DEFAULT_SELF_CHECK,
                        .corr = HM_ADJUST_HOLM};
    double alpha = 1e-3;
    long long vocab = 0;
    int c;
    unsigned flags = 0;
    audit a = {0};
    optind = 1;
    while ((c = getopt_long(argc, argv, "k:s:T:F:R:a:o:h", opts, NULL)) !=
           -1) {
        int r = cli_scoring_option(c, optarg, &alpha, &vocab, &flags,
                                   &tokspec);
        if (r == 0)
            r = cli_audit_option(c, optarg, &o);
        if (r < 0)
            return EXIT_TROUBLE;
        if (r > 0)
            continue;
        switch (c) {
        case 'F':
            filter_file = optarg;
            break;
        case 'S':
            save_tally = optarg;
            break;
        case 'G': /* open-model audit: its own options (cli_audit_lp.c) */
            return cmd_audit_logprobs(argc, argv);
        case 'h':
            audit_usage(stdout);
            return 0;
        default:
            audit_usage(stderr);
            return EXIT_TROUBLE;
        }
    }
    if (cli_audit_opts_done(&o, argc, optind, DEFAULT_SPEC) != 0) {
        audit_usage(stderr);
        return EXIT_TROUBLE;
    }
    a.label = o.label;

    int status = EXIT_TROUBLE;
    cli_audit_keys ks = {0};
    json_t *inputs = json_array(), *report = NULL;
    cli_buf html = {0};
    char msg[HM_ERRMSG_SIZE] = "";
    cli_tests t = {0};
    cli_doc doc = {0};
    hm_tokenizer *tok = NULL;
    hm_sketch *filter_sketch = NULL;

    if (cli_audit_keys_open(&ks, &o) != 0 || inputs == NULL ||
        (tokspec != NULL && cli_open_tokenizer(tokspec, &tok) != 0))
        goto done;
    a.tenants = ks.tenants; /* borrowed */
    a.n_tenants = ks.n_tenants;
    a.n_self = ks.n_self;
    a.nch = ks.nch;
    if (hm_tally_new(&a.t, (const hm_ctx *const *)ks.ctxs, ks.n_keys, flags,
                     msg, sizeof msg) != HM_OK) {
        cli_error("%s", msg);
        goto done;
    }

    /* The filtered test: the windows of the provider's own outputs,
     * before any suspect document. */
    if (filter_file != NULL && hm_sketch_file_magic(filter_file) == 1) {
        /* ---- served-window sketch (hm_sketch_new(3)) ---- */
        char hex[65], fhex[65], sspec[256];
        double fpr = 0, cnt = 0, blk = 0, kk = 0;
        if (hm_sketch_load(&filter_sketch, ks.key, filter_file, msg,
                           sizeof msg) != HM_OK) {
            cli_error("--filter %s", msg);
            goto done;
        }
        if (hm_tally_filter_sketch(a.t, filter_sketch, msg, sizeof msg) !=
            HM_OK) {
            cli_error("--filter %s: %s", filter_file, msg);
            goto done;
        }
        if (cli_sha256_file(filter_file, fhex) != 0 ||
            hm_sketch_digest(filter_sketch, hex, sizeof hex) != HM_OK ||
            hm_sketch_param(filter_sketch, "fp_rate", &fpr) != HM_OK ||
            hm_sketch_param(filter_sketch, "count", &cnt) != HM_OK ||
            hm_sketch_param(filter_sketch, "blocks", &blk) != HM_OK ||
            hm_sketch_param(filter_sketch, "k", &kk) != HM_OK)
            goto done;
        hm_sketch_spec(filter_sketch, sspec, sizeof sspec);
        /* Any sketch keeps the test exact (its hashes are independent of
         * the watermark's), but one that passes most windows filters
         * little: over capacity, or not what the server wrote. */
        if (fpr > 0.05)
            fprintf(stderr,
                    "hallmark: audit: warning: --filter %s passes a share "
                    "%.3g of windows never served (over capacity or "
                    "altered): the filter removes little\n",
                    filter_file, fpr);
        json_array_append_new(
            inputs,
            json_pack("{s:s,s:s,s:s,s:{s:s,s:s,s:s,s:I,s:I,s:I,s:f}}",
                      "path", filter_file, "kind", "sketch", "sha256", fhex,
                      "sketch", "digest", hex, "spec", sspec, "tenant",
                      hm_sketch_tenant(filter_sketch), "blocks",
                      (json_int_t)blk, "k", (json_int_t)kk, "windows",
                      (json_int_t)cnt, "fp_rate", fpr));
    } else if (filter_file != NULL) {
        cli_input in;
        int rc;
        if (cli_input_open(&in, filter_file, vocab, tok) != 0)
            goto done;
        size_t windows = 0;
        while ((rc = cli_input_next(&in, &doc)) == 1 &&
               (windows += doc.n_tokens, 1))
            if (hm_tally_filter_add(a.t, doc.prompt, doc.n_prompt, doc.tokens,
                                    doc.n_tokens) != HM_OK) {
                cli_error("%s:%lu: cannot read the record into the filter",
                          doc.file, doc.line);
                rc = -1;
                break;
            }
        cli_input_close(&in);
        if (rc < 0)
            goto done;
        if (windows == 0) {
            cli_error("--filter %s: no tokens, so no window to keep", filter_file);
            goto done;
        }
        json_array_append_new(
            inputs, json_pack("{s:s,s:s,s:s,s:I}", "path", filter_file,
                              "kind", "filter", "sha256", in.sha256_hex,
                              "records", (json_int_t)in.records));
    }

    /* --------------------------------------------------------- inputs */
    int progress = isatty(STDERR_FILENO);
    unsigned long long docs = 0;
    for (int i = optind; i < argc; i++) {
        if (cli_is_tally(argv[i])) {
            hm_tally *part = NULL;
            if (hm_tally_load(&part, argv[i], msg, sizeof msg) != HM_OK) {
                cli_error("%s", msg);
                goto done;
            }
            int rc = hm_tally_merge(a.t, part, msg, sizeof msg);
            hm_tally_free(part);
            if (rc != HM_OK) {
                cli_error("%s: does not match this audit: %s", argv[i], msg);
                goto done;
            }
            char hex[65];
            if (cli_sha256_file(argv[i], hex) != 0)
                goto done;
            json_array_append_new(inputs,
                                  json_pack("{s:s,s:s,s:s}", "path", argv[i],
                                            "kind", "tally", "sha256", hex));
            checkpoint(&a, 1);
            continue;
        }
        cli_input in;
        int rc;
        if (cli_input_open(&in, argv[i], vocab, tok) != 0)
            goto done;
        while ((rc = cli_input_next(&in, &doc)) == 1) {
            if (hm_tally_add(a.t, doc.prompt, doc.n_prompt, doc.tokens,
                             doc.n_tokens) != HM_OK) {
                cli_error("%s:%lu: cannot score the record (out of memory?)",
                          doc.file, doc.line);
                rc = -1;
                break;
            }
            checkpoint(&a, 0);
            if (progress && ++docs % 1000 == 0)
                fprintf(stderr, "\rhallmark audit: %s: %llu documents",
                        in.name, docs);
        }
        cli_input_close(&in);
        if (rc < 0)
            goto done;
        json_array_append_new(
            inputs, json_pack("{s:s,s:s,s:s,s:I,s:I}", "path", argv[i],
                              "kind", in.plain ? "text" : "jsonl", "sha256",
                              in.sha256_hex, "records",
                              (json_int_t)in.records, "invalid_utf8_bytes",
                              (json_int_t)in.invalid_utf8));
    }
    if (progress && docs >= 1000)
        fputc('\n', stderr);
    checkpoint(&a, 1);

    if (save_tally != NULL &&
        hm_tally_save(a.t, save_tally, msg, sizeof msg) != HM_OK) {
        cli_error("%s", msg);
        goto done;
    }

    /* ---------------------------------------------------------- tests */
    if (cli_tests_init(&t, a.n_tenants, a.n_self, alpha, o.corr, a.label) !=
        0)
        goto done;
    for (size_t k = 0; k < a.n_tenants; k++)
        t.lp[k] = key_log10p(a.t, k, a.nch);
    for (size_t j = 0; j < a.n_self; j++)
        t.selfp[j] = pow(10, key_log10p(a.t, a.n_tenants + j, a.nch));
    if (cli_tests_run(&t) != 0)
        goto done;

    /* --------------------------------------------------------- report */
    char date[64];
    cli_report_date(date);
    json_t *counts = json_array(), *tj = json_array(), *curve = json_array();
    for (unsigned ch = 0; ch < a.nch; ch++) {
        hm_result r;
        if (hm_tally_result(a.t, 0, ch, &r) != HM_OK)
            goto done;
        json_array_append_new(
            counts,
            json_pack("{s:I,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
                      "channel",
                      (json_int_t)ch, "scheme",
                      cli_scheme_name(hm_ctx_channel_scheme(ks.ctxs[0], ch)),
                      "documents", (json_int_t)r.documents, "tokens",
                      (json_int_t)r.tokens, "padded", (json_int_t)r.padded,
                      "dropped_padded", (json_int_t)r.dropped_padded,
                      "dropped_prompt", (json_int_t)r.dropped_prompt,
                      "dropped_repeat", (json_int_t)r.dropped_repeat,
                      "dropped_filter", (json_int_t)r.dropped_filter,
                      "scored", (json_int_t)r.scored));
    }
    for (size_t k = 0; k < a.n_tenants; k++) {
        json_t *chs = json_array();
        for (unsigned ch = 0; ch < a.nch; ch++) {
            hm_result r;
            if (hm_tally_result(a.t, k, ch, &r) != HM_OK)
                goto done;
            json_array_append_new(
                chs, json_pack("{s:I,s:I,s:f,s:f,s:f}", "channel",
                               (json_int_t)ch, "scored", (json_int_t)r.scored,
                               "score", r.score, "expected", r.expected,
                               "log10_p", r.log10_p));
        }
        json_array_append_new(tj,
                              cli_report_tenant(&t, k, a.tenants[k], chs));
    }
    for (size_t i = 0; i < a.n_pts; i++) {
        json_t *v = json_array();
        for (size_t k = 0; k < a.n_tenants; k++)
            json_array_append_new(v, json_real(a.pts[i].lp[k]));
        json_array_append_new(curve,
                              json_pack("{s:f,s:o}", "scored",
                                        a.pts[i].scored, "log10_p", v));
    }
    report = cli_report_new(argc, argv, date, NULL, ks.canon, ks.fp,
                            (flags & HM_TALLY_SKIP_PADDED) != 0, inputs);
    inputs = NULL; /* owned by report */
    if (report != NULL &&
        json_object_set_new(
            report, "tokenizer",
            tok ? json_pack("{s:s,s:s,s:b}", "name", hm_tokenizer_name(tok),
                            "sha256", hm_tokenizer_digest(tok),
                            "parse_special",
                            (cli_tok_flags & HM_TOKENIZE_SPECIAL) != 0)
                : json_null()) != 0) {
        json_decref(report);
        report = NULL;
    }
    if (cli_report_finish(report, &t, counts, tj, curve) != 0)
        goto done;

    /* HTML: the same facts for people, with two plots. */
    cli_html_head(&html, "hallmark audit", "hallmark audit", &t, date, ks.fp,
                  ks.canon, a.nch, NULL, argc, argv);
    cli_html_inputs(&html, json_object_get(report, "inputs"), 1);
    cli_buf_printf(&html, "<h2>Counts</h2>\n<table><tr><th>channel"
                          "</th><th>tokens</th><th>padded</th><th>dropped: "
                          "padded</th><th>dropped: prompt</th><th>dropped: "
                          "repeat</th><th>dropped: filter</th><th>scored</th></tr>\n");
    size_t ii;
    json_t *cj;
    json_array_foreach(counts, ii, cj)
    {
        cli_buf_printf(
            &html,
            "<tr><td>%zu %s</td><td>%lld</td><td>%lld</td><td>%lld</td><td>"
            "%lld</td><td>%lld</td><td>%lld</td><td>%lld</td></tr>\n",
            ii, json_string_value(json_object_get(cj, "scheme")),
            (long long)json_integer_value(json_object_get(cj, "tokens")),
            (long long)json_integer_value(json_object_get(cj, "padded")),
            (long long)json_integer_value(
                json_object_get(cj, "dropped_padded")),
            (long long)json_integer_value(
                json_object_get(cj, "dropped_prompt")),
            (long long)json_integer_value(
                json_object_get(cj, "dropped_repeat")),
            (long long)json_integer_value(
                json_object_get(cj, "dropped_filter")),
            (long long)json_integer_value(json_object_get(cj, "scored")));
    }
    cli_buf_printf(&html, "</table>\n<h2>Tenants</h2>\n<table><tr><th>tenant"
                          "</th><th>log10 p</th><th>log10 p adjusted</th>"
                          "<th>detected</th></tr>\n");
    for (size_t k = 0; k < a.n_tenants; k++) {
        cli_buf_printf(&html, "<tr><td>");
        cli_html_escape(&html,
                    a.tenants[k][0] ? a.tenants[k] : "(default tenant)");
        cli_buf_printf(&html, "</td><td>%.2f</td><td>%.2f</td><td>%s</td>"
                              "</tr>\n",
                       t.lp[k], t.adj[k],
                       cli_tests_detected(&t, k) ? "yes" : "no");
    }
    cli_buf_printf(&html, "</table>\n<h2>Evidence against the number of "
                          "scored tuples</h2>\n");
    svg_curve(&html, &a, alpha);
    cli_html_finish(&html, &t, "tuples.  Their p-values should be uniform");

    status = cli_report_write(o.output, report, &html, &t);
done:
    json_decref(report);
    json_decref(inputs);
    cli_buf_free(&html);
    cli_doc_free(&doc);
    cli_tests_free(&t);
    for (size_t i = 0; i < a.n_pts; i++)
        free(a.pts[i].lp);
    hm_tally_free(a.t);
    hm_sketch_free(filter_sketch); /* after the tally that reads it */
    hm_tokenizer_free(tok);
    cli_audit_keys_free(&ks);
    return status;
}
