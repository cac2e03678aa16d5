/*
 * cli_audit_lp.c - hallmark audit --logprobs: the open-model audit
 * (hm_greenmass_new(3)).  When the suspect exposes log-probabilities, its
 * probability mass on the green tokens of each kgw (lefthash) window is
 * scored instead of sampled tokens, with a conservative bound; per tenant
 * under family-wise error control, a self-check with never-deployed keys,
 * and a report (JSON and HTML) written atomically, like the corpus audit.
 */
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"

#define DEFAULT_SPEC "kgw"
#define DEFAULT_SELF_CHECK 32
#define DEFAULT_LABEL "hallmark audit self-check"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: hallmark audit --logprobs --key KEYFILE [--scheme "
            "SPEC]... [OPTIONS]\n"
            "                      -o REPORT FILE...\n"
            "\n"
            "Open-model audit: test a suspect model's log-probabilities for "
            "the kgw\n"
            "watermark of KEYFILE by its probability mass on green tokens, "
            "one term per\n"
            "distinct window, with a conservative bound (the smallest of "
            "Hoeffding,\n"
            "Bernstein and Chernoff).  FILE holds JSON Lines records "
            "{\"context\": [ids],\n"
            "\"ids\": [ids], \"logprobs\": [numbers]} as for hallmark "
            "probe; '-' is standard\n"
            "input.  Writes REPORT.json and REPORT.html.\n"
            "\n"
            "  -k, --key FILE          master key file (mode 0600)\n"
            "  -s, --scheme SPEC       kgw channel(s) as served, seeding="
            "lefthash\n"
            "                          (default %s)\n"
            "  -T, --tenants FILE      tenant ids, one per line: attribute "
            "the leak\n"
            "      --default-tenant    test the default tenant (no tenant id) "
            "too\n"
            "      --correction M      holm (default), bonferroni or sidak "
            "over tenants\n"
            "  -R, --self-check R      never-deployed keys to test "
            "(default %d, 0: off)\n"
            "      --self-check-label L  their public label (default "
            "'%s')\n"
            "  -a, --alpha A           significance level (default 1e-3)\n"
            "      --vocab-size N      reject token ids >= N\n"
            "      --skip-padded       do not score contexts shorter than "
            "the window\n"
            "  -o, --output REPORT     report name (REPORT.json, "
            "REPORT.html)\n"
            "  -h, --help              this help\n"
            "\n"
            "Exit status: 0 no evidence at alpha (or an uncalibrated "
            "self-check),\n"
            "1 watermark detected, 2 error (then no report is written).\n",
            DEFAULT_SPEC, DEFAULT_SELF_CHECK, DEFAULT_LABEL);
}

/* A key's log10 p over its channels (Bonferroni across channels). */
static double key_log10p(const hm_greenmass_stats *st, unsigned nch)
{
    double best = 0;
    for (unsigned c = 0; c < nch; c++)
        best = fmin(best, st[c].log10_p);
    best += log10((double)nch);
    return best < 0 ? best : 0;
}

static const char *verdict_of(int calibrated, size_t detected)
{
    return !calibrated  ? "uncalibrated"
           : detected   ? "watermark detected"
                        : "no evidence";
}

int cmd_audit_logprobs(int argc, char **argv)
{
    static const struct option opts[] = {
        {"logprobs", no_argument, NULL, 'G'},
        {"key", required_argument, NULL, 'k'},
        {"scheme", required_argument, NULL, 's'},
        {"tenants", required_argument, NULL, 'T'},
        {"default-tenant", no_argument, NULL, 'E'},
        {"correction", required_argument, NULL, 'C'},
        {"self-check", required_argument, NULL, 'R'},
        {"self-check-label", required_argument, NULL, 'L'},
        {"alpha", required_argument, NULL, 'a'},
        {"vocab-size", required_argument, NULL, 'V'},
        {"skip-padded", no_argument, NULL, 'P'},
        {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        /* the corpus audit's options that do not apply here */
        {"filter", required_argument, NULL, 'x'},
        {"tokenizer", required_argument, NULL, 'x'},
        {"parse-special", no_argument, NULL, 'x'},
        {"save-tally", required_argument, NULL, 'x'},
        {NULL, 0, NULL, 0}};
    const char *keyfile = NULL, *tenants_file = NULL, *output = NULL,
               *label = DEFAULT_LABEL, *tokspec = NULL;
    char spec[1024] = "";
    double alpha = 1e-3;
    long long vocab = 0, n_self_ll = DEFAULT_SELF_CHECK;
    int corr = HM_ADJUST_HOLM, c, li, with_default = 0;
    unsigned flags = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "k:s:T:F:R:a:o:h", opts, &li)) !=
           -1) {
        if (c == 'V' || c == 'a') {
            if (cli_scoring_option(c, optarg, &alpha, &vocab, &flags,
                                   &tokspec) < 0)
                return EXIT_TROUBLE;
            continue;
        }
        switch (c) {
        case 'G':
            break;
        case 'k':
            keyfile = optarg;
            break;
        case 's':
            if (cli_add_scheme(spec, sizeof spec, optarg) != 0)
                return EXIT_TROUBLE;
            break;
        case 'T':
            tenants_file = optarg;
            break;
        case 'E':
            with_default = 1;
            break;
        case 'C':
            if (strcmp(optarg, "holm") == 0)
                corr = HM_ADJUST_HOLM;
            else if (strcmp(optarg, "bonferroni") == 0)
                corr = HM_ADJUST_BONFERRONI;
            else if (strcmp(optarg, "sidak") == 0)
                corr = HM_ADJUST_SIDAK;
            else {
                cli_error("--correction: '%s' is not holm, bonferroni or "
                          "sidak",
                          optarg);
                return EXIT_TROUBLE;
            }
            break;
        case 'R':
            if (cli_parse_ll("--self-check", optarg, 0, 10000, &n_self_ll) !=
                0)
                return EXIT_TROUBLE;
            break;
        case 'L':
            label = optarg;
            break;
        case 'P':
            flags |= HM_GREENMASS_SKIP_PADDED;
            break;
        case 'o':
            output = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'F':
        case 'x':
            cli_error("audit --logprobs: --%s does not apply to "
                      "log-probability records",
                      c == 'F' ? "filter" : opts[li].name);
            return EXIT_TROUBLE;
        default:
            usage(stderr);
            return EXIT_TROUBLE;
        }
    }
    if (keyfile == NULL || output == NULL || optind >= argc) {
        cli_error(keyfile == NULL   ? "audit: --key KEYFILE is required"
                  : output == NULL ? "audit: -o REPORT is required"
                                   : "audit: no input files");
        usage(stderr);
        return EXIT_TROUBLE;
    }
    if (spec[0] == '\0')
        strcpy(spec, DEFAULT_SPEC);

    int status = EXIT_TROUBLE;
    hm_key *key = NULL;
    hm_ctx **ctxs = NULL;
    hm_key **self_keys = NULL;
    hm_greenmass *gm = NULL;
    hm_greenmass_stats *st = NULL; /* n_keys x nch */
    json_t *inputs = json_array(), *report = NULL;
    cli_buf html = {0};
    cli_lp rec = {0};
    char *json_text = NULL, *jpath = NULL, *hpath = NULL;
    char fp[HM_FINGERPRINT_SIZE], canon[1024], msg[HM_ERRMSG_SIZE] = "";
    double *lp = NULL, *adj = NULL, *selfp = NULL;
    char **tenants = NULL;
    size_t n_tenants = 0, n_self = (size_t)n_self_ll, n_keys = 0;
    unsigned nch = 0;

    if (cli_read_tenants(tenants_file, with_default, &tenants, &n_tenants) !=
        0)
        goto done;
    n_keys = n_tenants + n_self;
    ctxs = calloc(n_keys, sizeof *ctxs);
    self_keys = calloc(n_self + 1, sizeof *self_keys);
    if (ctxs == NULL || self_keys == NULL || inputs == NULL)
        goto done;
    if (cli_open_key(keyfile, &key, fp) != 0)
        goto done;
    for (size_t i = 0; i < n_tenants; i++)
        if (cli_make_ctx(key, spec, tenants[i], &ctxs[i]) != 0)
            goto done;
    for (size_t i = 0; i < n_self; i++) {
        if (hm_key_from_label(&self_keys[i], label, (uint32_t)i) != HM_OK) {
            cli_error("--self-check-label: cannot derive key %zu", i);
            goto done;
        }
        if (cli_make_ctx(self_keys[i], spec, NULL, &ctxs[n_tenants + i]) != 0)
            goto done;
    }
    hm_ctx_spec(ctxs[0], canon, sizeof canon);
    nch = hm_ctx_channels(ctxs[0]);
    int rc = hm_greenmass_new(&gm, (const hm_ctx *const *)ctxs, n_keys, flags,
                              msg, sizeof msg);
    if (rc != HM_OK) {
        cli_error("--scheme '%s': %s", spec, msg[0] ? msg : hm_strerror(rc));
        goto done;
    }

    /* --------------------------------------------------------- inputs */
    int progress = isatty(STDERR_FILENO);
    unsigned long long seen = 0;
    for (int i = optind; i < argc; i++) {
        cli_input in;
        if (cli_input_open(&in, argv[i], vocab, NULL) != 0)
            goto done;
        while ((rc = cli_input_next_lp(&in, &rec)) == 1) {
            int r = hm_greenmass_add(gm, rec.context, rec.n_context, rec.ids,
                                     rec.logprobs, rec.n);
            if (r == HM_ERANGE) { /* the record's format is checked */
                double m = 0;
                for (size_t j = 0; j < rec.n; j++)
                    m += exp(rec.logprobs[j]);
                cli_error("%s:%lu: the listed probabilities sum to %.6g, "
                          "more than 1 (+%g): not log-probabilities of one "
                          "distribution",
                          in.name, rec.line, m, HM_GREENMASS_MASS_TOLERANCE);
            } else if (r != HM_OK)
                cli_error("%s:%lu: cannot score the record: %s", in.name,
                          rec.line, hm_strerror(r));
            if (r != HM_OK) {
                rc = -1;
                break;
            }
            if (progress && ++seen % 10000 == 0)
                fprintf(stderr, "\rhallmark audit: %s: %llu records", in.name,
                        seen);
        }
        cli_input_close(&in);
        if (rc < 0)
            goto done;
        json_array_append_new(
            inputs, json_pack("{s:s,s:s,s:s,s:I}", "path", argv[i], "kind",
                              "logprobs", "sha256", in.sha256_hex, "records",
                              (json_int_t)in.records));
    }
    if (progress && seen >= 10000)
        fputc('\n', stderr);

    /* ---------------------------------------------------------- tests */
    st = calloc(n_keys * nch, sizeof *st);
    lp = calloc(n_tenants, sizeof *lp);
    adj = calloc(n_tenants, sizeof *adj);
    selfp = calloc(n_self + 1, sizeof *selfp);
    if (st == NULL || lp == NULL || adj == NULL || selfp == NULL)
        goto done;
    for (size_t k = 0; k < n_keys; k++)
        for (unsigned ch = 0; ch < nch; ch++)
            if (hm_greenmass_result(gm, k, ch, &st[k * nch + ch]) != HM_OK)
                goto done;
    for (size_t k = 0; k < n_tenants; k++)
        lp[k] = key_log10p(st + k * nch, nch);
    if (hm_log10_adjust(lp, adj, n_tenants, corr) != HM_OK)
        goto done;
    double ks_d = 0, ks_lp = 0;
    int calibrated = 1;
    for (size_t j = 0; j < n_self; j++)
        selfp[j] = pow(10, key_log10p(st + (n_tenants + j) * nch, nch));
    if (n_self > 0) {
        if (hm_ks_uniform(selfp, n_self, &ks_d, &ks_lp) != HM_OK)
            goto done;
        calibrated = ks_lp > -2; /* KS p-value above 0.01 */
    }
    size_t n_detected = 0;
    for (size_t k = 0; k < n_tenants; k++)
        n_detected += adj[k] <= log10(alpha);
    const char *verdict = verdict_of(calibrated, n_detected);

    /* --------------------------------------------------------- report */
    char date[64];
    time_t now = time(NULL);
    const char *sde = getenv("SOURCE_DATE_EPOCH");
    if (sde != NULL && *sde)
        now = (time_t)strtoll(sde, NULL, 10);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    json_t *cmd = json_array();
    json_array_append_new(cmd, json_string("hallmark"));
    for (int i = 0; i < argc; i++)
        json_array_append_new(cmd, json_string(argv[i]));
    json_t *counts = json_array(), *tj = json_array();
    for (unsigned ch = 0; ch < nch; ch++) {
        const hm_greenmass_stats *r = &st[ch];
        json_array_append_new(
            counts,
            json_pack("{s:I,s:s,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f}",
                      "channel", (json_int_t)ch, "scheme", "kgw", "gamma",
                      r->gamma, "records", (json_int_t)r->records,
                      "dropped_repeat", (json_int_t)r->dropped_repeat,
                      "padded", (json_int_t)r->padded, "dropped_padded",
                      (json_int_t)r->dropped_padded, "contexts",
                      (json_int_t)r->contexts, "listed",
                      (json_int_t)r->listed, "windows",
                      (json_int_t)r->windows, "pairs", (json_int_t)r->pairs,
                      "mass", r->mass));
    }
    for (size_t k = 0; k < n_tenants; k++) {
        json_t *chs = json_array();
        for (unsigned ch = 0; ch < nch; ch++) {
            const hm_greenmass_stats *r = &st[k * nch + ch];
            json_array_append_new(
                chs,
                json_pack("{s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:s}",
                          "channel", (json_int_t)ch, "score", r->score,
                          "expected", r->expected, "range_sq", r->range_sq,
                          "variance", r->variance, "max_excess",
                          r->max_excess, "log10_p_hoeffding",
                          r->log10_p_hoeffding, "log10_p_bernstein",
                          r->log10_p_bernstein, "log10_p_chernoff",
                          r->log10_p_chernoff, "log10_p", r->log10_p,
                          "bound", hm_greenmass_bound_name(r->bound)));
        }
        json_array_append_new(
            tj, json_pack("{s:s,s:o,s:f,s:f,s:b}", "tenant", tenants[k],
                          "channels", chs, "log10_p", lp[k],
                          "log10_p_adjusted", adj[k], "detected",
                          adj[k] <= log10(alpha)));
    }
    json_t *selfj = json_array();
    for (size_t j = 0; j < n_self; j++)
        json_array_append_new(selfj, json_real(selfp[j]));
    report = json_pack(
        "{s:{s:s,s:I},s:o,s:s,s:s,s:s,s:{s:s},s:s,s:{s:b},s:o,"
        "s:{s:s,s:s,s:s,s:s,s:f},s:f,s:{s:s,s:I},s:o,s:o,"
        "s:{s:s,s:I,s:o,s:f,s:f,s:b},s:s}",
        "hallmark", "version", hm_version_string(), "prf_version",
        (json_int_t)hm_prf_version(), "command", cmd, "date", date, "mode",
        "logprobs", "spec", canon, "key", "fingerprint", fp, "channel_test",
        "bonferroni over channels", "flags", "skip_padded",
        (flags & HM_GREENMASS_SKIP_PADDED) != 0, "inputs", inputs,
        "statistic", "name", "green mass",
        "definition",
        "S = sum over distinct windows w of sum over listed tokens v of "
        "q_w(v) green(w,v), q_w the mean of the listed probabilities of the "
        "distinct contexts with window w",
        "null",
        "green(w,v) iid Bernoulli(gamma) under an ideal PRF (suspect "
        "independent of the key)",
        "p_value",
        "conservative: the smallest of the Hoeffding, Bernstein (null "
        "variance) and exact-MGF Chernoff upper bounds on P[S >= observed]",
        "mass_tolerance", HM_GREENMASS_MASS_TOLERANCE, "alpha", alpha,
        "tenant_correction", "method", cli_correction_name(corr), "tenants",
        (json_int_t)n_tenants, "counts", counts, "tenants", tj, "self_check",
        "label", label, "keys", (json_int_t)n_self, "p_values", selfj,
        "ks_d_plus", ks_d, "ks_log10_p", ks_lp, "calibrated", calibrated,
        "verdict", verdict);
    inputs = NULL; /* owned by report */
    if (report == NULL) {
        cli_error("cannot build the report");
        goto done;
    }
    json_text = json_dumps(report, JSON_INDENT(2) | JSON_REAL_PRECISION(17) |
                                       JSON_ENSURE_ASCII);

    /* HTML: the same facts for people. */
    cli_buf_printf(&html,
                   "<!DOCTYPE html>\n<html lang=\"en\"><head><meta "
                   "charset=\"utf-8\"><title>hallmark audit "
                   "(log-probabilities)</title>\n"
                   "<style>body{font-family:sans-serif;max-width:60em;"
                   "margin:2em auto}td,th{padding:2px 8px;text-align:left}"
                   "table{border-collapse:collapse}tr:nth-child(even)"
                   "{background:#f4f4f4}.v{font-size:1.4em}</style></head>"
                   "<body>\n<h1>hallmark audit: log-probabilities</h1>\n"
                   "<p class=\"v\">Verdict: <b>%s</b></p>\n<table>\n",
                   verdict);
    cli_buf_printf(&html, "<tr><th>hallmark</th><td>%s (PRF v%u)</td></tr>\n",
                   hm_version_string(), hm_prf_version());
    cli_buf_printf(&html, "<tr><th>date</th><td>%s</td></tr>\n", date);
    cli_buf_printf(&html, "<tr><th>key fingerprint</th><td>%s</td></tr>\n",
                   fp);
    cli_buf_printf(&html, "<tr><th>spec</th><td>");
    cli_html_escape(&html, canon);
    cli_buf_printf(&html,
                   "</td></tr>\n<tr><th>alpha</th><td>%g (%s over %zu "
                   "tenants; Bonferroni over %u channels)</td></tr>\n"
                   "<tr><th>p-value</th><td>conservative: the smallest of "
                   "the Hoeffding, Bernstein and exact-MGF Chernoff upper "
                   "bounds on the null tail of the green mass</td></tr>\n",
                   alpha, cli_correction_name(corr), n_tenants, nch);
    cli_buf_printf(&html, "<tr><th>command</th><td><code>hallmark");
    for (int i = 0; i < argc; i++) {
        cli_buf_printf(&html, " ");
        cli_html_escape(&html, argv[i]);
    }
    cli_buf_printf(&html, "</code></td></tr>\n</table>\n<h2>Inputs</h2>\n"
                          "<table><tr><th>file</th><th>records</th>"
                          "<th>SHA-256</th></tr>\n");
    size_t ii;
    json_t *inp;
    json_array_foreach(json_object_get(report, "inputs"), ii, inp)
    {
        cli_buf_printf(&html, "<tr><td>");
        cli_html_escape(&html,
                        json_string_value(json_object_get(inp, "path")));
        cli_buf_printf(
            &html, "</td><td>%lld</td><td><code>%s</code></td></tr>\n",
            (long long)json_integer_value(json_object_get(inp, "records")),
            json_string_value(json_object_get(inp, "sha256")));
    }
    cli_buf_printf(&html, "</table>\n<h2>Counts</h2>\n<table><tr><th>channel"
                          "</th><th>gamma</th><th>records</th><th>dropped: "
                          "repeat</th><th>padded</th><th>dropped: padded"
                          "</th><th>scored</th><th>windows</th><th>listed "
                          "mass</th></tr>\n");
    for (unsigned ch = 0; ch < nch; ch++) {
        const hm_greenmass_stats *r = &st[ch];
        cli_buf_printf(&html,
                       "<tr><td>%u kgw</td><td>%g</td><td>%llu</td><td>%llu"
                       "</td><td>%llu</td><td>%llu</td><td>%llu</td><td>%llu"
                       "</td><td>%.4f</td></tr>\n",
                       ch, r->gamma, (unsigned long long)r->records,
                       (unsigned long long)r->dropped_repeat,
                       (unsigned long long)r->padded,
                       (unsigned long long)r->dropped_padded,
                       (unsigned long long)r->contexts,
                       (unsigned long long)r->windows, r->mass);
    }
    cli_buf_printf(&html, "</table>\n<h2>Tenants</h2>\n<table><tr><th>tenant"
                          "</th><th>channel</th><th>green mass</th><th>"
                          "expected</th><th>log10 p (bound)</th><th>log10 p "
                          "adjusted</th><th>detected</th></tr>\n");
    for (size_t k = 0; k < n_tenants; k++)
        for (unsigned ch = 0; ch < nch; ch++) {
            const hm_greenmass_stats *r = &st[k * nch + ch];
            cli_buf_printf(&html, "<tr><td>");
            cli_html_escape(&html,
                            tenants[k][0] ? tenants[k] : "(default tenant)");
            cli_buf_printf(&html,
                           "</td><td>%u</td><td>%.4f</td><td>%.4f</td><td>"
                           "%.2f (%s)</td><td>%.2f</td><td>%s</td></tr>\n",
                           ch, r->score, r->expected, r->log10_p,
                           hm_greenmass_bound_name(r->bound), adj[k],
                           adj[k] <= log10(alpha) ? "yes" : "no");
        }
    cli_buf_printf(&html, "</table>\n<h2>Self-check</h2>\n");
    if (n_self > 0) {
        cli_buf_printf(&html,
                       "<p>%zu never-deployed keys derived from the public "
                       "label &ldquo;",
                       n_self);
        cli_html_escape(&html, label);
        cli_buf_printf(&html,
                       "&rdquo; were tested on the same records.  The bounds "
                       "are conservative, so their p-values should lie on or "
                       "above the diagonal: one-sided KS D+ = %.4f, log10 p = "
                       "%.2f: <b>%s</b>.</p>\n",
                       ks_d, ks_lp,
                       calibrated ? "calibrated" : "NOT calibrated");
        cli_svg_qq(&html, selfp, n_self); /* sorted by hm_ks_uniform */
    } else
        cli_buf_printf(&html, "<p>Not run (--self-check 0).</p>\n");
    cli_buf_printf(&html, "</body></html>\n");

    /* -------------------------------------------------- write, atomically */
    size_t ol = strlen(output);
    if (ol > 5 && strcmp(output + ol - 5, ".json") == 0)
        ol -= 5;
    jpath = malloc(ol + 8);
    hpath = malloc(ol + 8);
    if (json_text == NULL || jpath == NULL || hpath == NULL)
        goto done;
    snprintf(jpath, ol + 8, "%.*s.json", (int)ol, output);
    snprintf(hpath, ol + 8, "%.*s.html", (int)ol, output);
    if (cli_write_atomic(hpath, html.data, html.len) != 0)
        goto done;
    size_t jl = strlen(json_text);
    json_text[jl] = '\n';
    if (cli_write_atomic(jpath, json_text, jl + 1) != 0) {
        unlink(hpath);
        goto done;
    }
    printf("%s: %s (%s)\n", jpath, verdict,
           n_tenants == 1 ? "one key" : "see the tenants table");
    status = !calibrated ? EXIT_NOEVIDENCE
             : n_detected ? EXIT_DETECTED
                          : EXIT_NOEVIDENCE;
done:
    free(jpath);
    free(hpath);
    free(json_text);
    json_decref(report);
    json_decref(inputs);
    cli_buf_free(&html);
    cli_lp_free(&rec);
    free(st);
    free(lp);
    free(adj);
    free(selfp);
    hm_greenmass_free(gm);
    for (size_t i = 0; ctxs && i < n_keys; i++)
        hm_ctx_free(ctxs[i]);
    free(ctxs);
    for (size_t i = 0; self_keys && i < n_self; i++)
        hm_key_free(self_keys[i]);
    free(self_keys);
    hm_key_free(key);
    for (size_t i = 0; tenants && i < n_tenants; i++)
        free(tenants[i]);
    free(tenants);
    return status;
}
