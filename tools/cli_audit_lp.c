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

/* A key's log10 p over its channels (cli_channels_log10p). */
static double key_log10p(const hm_greenmass_stats *st, unsigned nch)
{
    double lp[HM_MAX_CHANNELS];
    for (unsigned c = 0; c < nch; c++)
        lp[c] = st[c].log10_p;
    return cli_channels_log10p(lp, nch);
}

int cmd_audit_logprobs(int argc, char **argv)
{
    static const struct option opts[] = {
        CLI_AUDIT_LONGOPTS,
        {"logprobs", no_argument, NULL, 'G'},
        /* the corpus audit's options that do not apply here */
        {"filter", required_argument, NULL, 'x'},
        {"tokenizer", required_argument, NULL, 'x'},
        {"parse-special", no_argument, NULL, 'x'},
        {"save-tally", required_argument, NULL, 'x'},
        {NULL, 0, NULL, 0}};
    const char *tokspec = NULL;
    cli_audit_opts o = {.label = DEFAULT_LABEL,
                        .n_self = DEFAULT_SELF_CHECK,
                        .corr = HM_ADJUST_HOLM};
    double alpha = 1e-3;
    long long vocab = 0;
    int c, li;
    unsigned flags = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "k:s:T:F:R:a:o:h", opts, &li)) !=
           -1) {
        int r = c == 'V' || c == 'a'
                    ? cli_scoring_option(c, optarg, &alpha, &vocab, &flags,
                                         &tokspec)
                    : cli_audit_option(c, optarg, &o);
        if (r < 0)
            return EXIT_TROUBLE;
        if (r > 0)
            continue;
        switch (c) {
        case 'G':
            break;
        case 'P':
            flags |= HM_GREENMASS_SKIP_PADDED;
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
    if (cli_audit_opts_done(&o, argc, optind, DEFAULT_SPEC) != 0) {
        usage(stderr);
        return EXIT_TROUBLE;
    }

    int status = EXIT_TROUBLE;
    cli_audit_keys ks = {0};
    hm_greenmass *gm = NULL;
    hm_greenmass_stats *st = NULL; /* n_keys x nch */
    json_t *inputs = json_array(), *report = NULL;
    cli_buf html = {0};
    cli_lp rec = {0};
    char msg[HM_ERRMSG_SIZE] = "";
    cli_tests t = {0};

    if (cli_audit_keys_open(&ks, &o) != 0 || inputs == NULL)
        goto done;
    char **tenants = ks.tenants;
    size_t n_tenants = ks.n_tenants, n_self = ks.n_self, n_keys = ks.n_keys;
    unsigned nch = ks.nch;
    int rc = hm_greenmass_new(&gm, (const hm_ctx *const *)ks.ctxs, n_keys,
                              flags, msg, sizeof msg);
    if (rc != HM_OK) {
        cli_error("--scheme '%s': %s", o.spec, msg[0] ? msg : hm_strerror(rc));
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
            /* (the reader refuses what hm_greenmass_add would: negative
             * ids, values above 0, mass past 1 + its tolerance, repeats) */
            if (r != HM_OK)
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
    if (st == NULL) {
        cli_error("out of memory for %zu keys' results", n_keys);
        goto done;
    }
    if (cli_tests_init(&t, n_tenants, n_self, alpha, o.corr, o.label) != 0)
        goto done;
    for (size_t k = 0; k < n_keys; k++)
        for (unsigned ch = 0; ch < nch; ch++)
            if ((rc = hm_greenmass_result(gm, k, ch, &st[k * nch + ch])) !=
                HM_OK) {
                cli_error("cannot compute the result of key %zu, channel "
                          "%u: %s",
                          k, ch, hm_strerror(rc));
                goto done;
            }
    for (size_t k = 0; k < n_tenants; k++)
        t.lp[k] = key_log10p(st + k * nch, nch);
    for (size_t j = 0; j < n_self; j++)
        t.selfp[j] = pow(10, key_log10p(st + (n_tenants + j) * nch, nch));
    if (cli_tests_run(&t) != 0)
        goto done;

    /* --------------------------------------------------------- report */
    char date[64];
    cli_report_date(date);
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
        json_array_append_new(tj, cli_report_tenant(&t, k, tenants[k], chs));
    }
    report = cli_report_new(argc, argv, date, "logprobs", ks.canon, ks.fp,
                            (flags & HM_GREENMASS_SKIP_PADDED) != 0, inputs);
    inputs = NULL; /* owned by report */
    if (report != NULL &&
        json_object_set_new(
            report, "statistic",
            json_pack(
                "{s:s,s:s,s:s,s:s,s:f}", "name", "green mass", "definition",
                "S = sum over distinct windows w of sum over listed tokens v "
                "of q_w(v) green(w,v), q_w the mean of the listed "
                "probabilities of the distinct contexts with window w",
                "null",
                "green(w,v) iid Bernoulli(gamma) under an ideal PRF (suspect "
                "independent of the key)",
                "p_value",
                "conservative: the smallest of the Hoeffding, Bernstein (null "
                "variance) and exact-MGF Chernoff upper bounds on P[S >= "
                "observed]",
                "mass_tolerance", HM_GREENMASS_MASS_TOLERANCE)) != 0) {
        json_decref(report);
        report = NULL;
    }
    if (cli_report_finish(report, &t, counts, tj, NULL) != 0)
        goto done;

    /* HTML: the same facts for people. */
    cli_html_head(&html, "hallmark audit (log-probabilities)",
                  "hallmark audit: log-probabilities", &t, date, ks.fp,
                  ks.canon, nch,
                  "<tr><th>p-value</th><td>conservative: the smallest of "
                  "the Hoeffding, Bernstein and exact-MGF Chernoff upper "
                  "bounds on the null tail of the green mass</td></tr>\n",
                  argc, argv);
    cli_html_inputs(&html, json_object_get(report, "inputs"), 0);
    cli_buf_printf(&html, "<h2>Counts</h2>\n<table><tr><th>channel"
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
                           hm_greenmass_bound_name(r->bound), t.adj[k],
                           cli_tests_detected(&t, k) ? "yes" : "no");
        }
    cli_buf_printf(&html, "</table>\n");
    cli_html_finish(&html, &t,
                    "records.  The bounds are conservative, so their "
                    "p-values should lie on or above the diagonal");

    status = cli_report_write(o.output, report, &html, &t);
done:
    json_decref(report);
    json_decref(inputs);
    cli_buf_free(&html);
    cli_lp_free(&rec);
    free(st);
    cli_tests_free(&t);
    hm_greenmass_free(gm);
    cli_audit_keys_free(&ks);
    return status;
}
