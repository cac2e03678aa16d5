/*
 * cli_report.c - the pieces the two audits (hallmark audit, cli_audit.c,
 * and hallmark audit --logprobs, cli_audit_lp.c) share: their common
 * options, the tenant and self-check tests, and the report (JSON and
 * HTML) written atomically.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"

/* ------------------------------------------------------------ options */

int cli_audit_option(int c, const char *arg, cli_audit_opts *o)
{
    switch (c) {
    case 'k':
        o->keyfile = arg;
        return 1;
    case 's':
        return cli_add_scheme(o->spec, sizeof o->spec, arg) != 0 ? -1 : 1;
    case 'T':
        o->tenants_file = arg;
        return 1;
    case 'E':
        o->with_default = 1;
        return 1;
    case 'C':
        if (strcmp(arg, "holm") == 0)
            o->corr = HM_ADJUST_HOLM;
        else if (strcmp(arg, "bonferroni") == 0)
            o->corr = HM_ADJUST_BONFERRONI;
        else if (strcmp(arg, "sidak") == 0)
            o->corr = HM_ADJUST_SIDAK;
        else {
            cli_error("--correction: '%s' is not holm, bonferroni or sidak",
                      arg);
            return -1;
        }
        return 1;
    case 'R':
        return cli_parse_ll("--self-check", arg, 0, 10000, &o->n_self) != 0
                   ? -1
                   : 1;
    case 'L':
        o->label = arg;
        return 1;
    case 'o':
        o->output = arg;
        return 1;
    default:
        return 0;
    }
}

int cli_audit_opts_done(cli_audit_opts *o, int argc, int first_input,
                        const char *default_spec)
{
    if (o->keyfile == NULL || o->output == NULL || first_input >= argc) {
        cli_error(o->keyfile == NULL  ? "audit: --key KEYFILE is required"
                  : o->output == NULL ? "audit: -o REPORT is required"
                                      : "audit: no input files");
        return -1;
    }
    if (o->spec[0] == '\0')
        snprintf(o->spec, sizeof o->spec, "%s", default_spec);
    return 0;
}

int cli_audit_keys_open(cli_audit_keys *k, const cli_audit_opts *o)
{
    memset(k, 0, sizeof *k);
    if (cli_read_tenants(o->tenants_file, o->with_default, &k->tenants,
                         &k->n_tenants) != 0)
        return -1;
    k->n_self = (size_t)o->n_self;
    k->n_keys = k->n_tenants + k->n_self;
    k->ctxs = calloc(k->n_keys, sizeof *k->ctxs);
    k->self_keys = calloc(k->n_self + 1, sizeof *k->self_keys);
    if (k->ctxs == NULL || k->self_keys == NULL) {
        cli_error("out of memory");
        return -1;
    }
    if (cli_open_key(o->keyfile, &k->key, k->fp) != 0)
        return -1;
    for (size_t i = 0; i < k->n_tenants; i++)
        if (cli_make_ctx(k->key, o->spec, k->tenants[i], &k->ctxs[i]) != 0)
            return -1;
    for (size_t i = 0; i < k->n_self; i++) {
        if (hm_key_from_label(&k->self_keys[i], o->label, (uint32_t)i) !=
            HM_OK) {
            cli_error("--self-check-label: cannot derive key %zu", i);
            return -1;
        }
        if (cli_make_ctx(k->self_keys[i], o->spec, NULL,
                         &k->ctxs[k->n_tenants + i]) != 0)
            return -1;
    }
    hm_ctx_spec(k->ctxs[0], k->canon, sizeof k->canon);
    k->nch = hm_ctx_channels(k->ctxs[0]);
    return 0;
}

void cli_audit_keys_free(cli_audit_keys *k)
{
    for (size_t i = 0; k->ctxs && i < k->n_keys; i++)
        hm_ctx_free(k->ctxs[i]);
    free(k->ctxs);
    for (size_t i = 0; k->self_keys && i < k->n_self; i++)
        hm_key_free(k->self_keys[i]);
    free(k->self_keys);
    hm_key_free(k->key);
    for (size_t i = 0; k->tenants && i < k->n_tenants; i++)
        free(k->tenants[i]);
    free(k->tenants);
    memset(k, 0, sizeof *k);
}

/* -------------------------------------------------------------- tests */

int cli_tests_init(cli_tests *t, size_t n_tenants, size_t n_self,
                   double alpha, int corr, const char *label)
{
    memset(t, 0, sizeof *t);
    t->n_tenants = n_tenants;
    t->n_self = n_self;
    t->alpha = alpha;
    t->corr = corr;
    t->label = label;
    t->lp = calloc(n_tenants, sizeof *t->lp);
    t->adj = calloc(n_tenants, sizeof *t->adj);
    t->selfp = calloc(n_self + 1, sizeof *t->selfp);
    if (t->lp && t->adj && t->selfp)
        return 0;
    cli_error("out of memory for %zu tenants' tests", n_tenants);
    return -1;
}

int cli_tests_run(cli_tests *t)
{
    int rc = hm_log10_adjust(t->lp, t->adj, t->n_tenants, t->corr);
    if (rc != HM_OK) {
        cli_error("cannot adjust the tenants' p-values: %s", hm_strerror(rc));
        return -1;
    }
    t->ks_d = 0;
    t->ks_lp = 0;
    t->calibrated = 1;
    if (t->n_self > 0) {
        rc = hm_ks_uniform(t->selfp, t->n_self, &t->ks_d, &t->ks_lp);
        if (rc != HM_OK) {
            cli_error("cannot run the self-check's KS test: %s",
                      hm_strerror(rc));
            return -1;
        }
        t->calibrated = t->ks_lp > -2; /* KS p-value above 0.01 */
    }
    t->n_detected = 0;
    for (size_t k = 0; k < t->n_tenants; k++)
        t->n_detected += cli_tests_detected(t, k);
    t->verdict = !t->calibrated    ? "uncalibrated"
                 : t->n_detected ? "watermark detected"
                                 : "no evidence";
    return 0;
}

int cli_tests_detected(const cli_tests *t, size_t k)
{
    return t->adj[k] <= log10(t->alpha);
}

void cli_tests_free(cli_tests *t)
{
    free(t->lp);
    free(t->adj);
    free(t->selfp);
    memset(t, 0, sizeof *t);
}

/* ------------------------------------------------------------- JSON */

void cli_report_date(char date[64])
{
    time_t now = time(NULL);
    const char *sde = getenv("SOURCE_DATE_EPOCH");
    if (sde != NULL && *sde)
        now = (time_t)strtoll(sde, NULL, 10);
    strftime(date, 64, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
}

json_t *cli_report_new(int argc, char **argv, const char *date,
                       const char *mode, const char *canon, const char *fp,
                       int skip_padded, json_t *inputs)
{
    json_t *cmd = json_array();
    json_array_append_new(cmd, json_string("hallmark"));
    for (int i = 0; i < argc; i++)
        json_array_append_new(cmd, json_string(argv[i]));
    json_t *r = json_pack("{s:{s:s,s:I},s:o,s:s}", "hallmark", "version",
                          hm_version_string(), "prf_version",
                          (json_int_t)hm_prf_version(), "command", cmd,
                          "date", date);
    int bad = r == NULL;
    if (mode != NULL)
        bad |= json_object_set_new(r, "mode", json_string(mode)) != 0;
    bad |= json_object_set_new(r, "spec", json_string(canon)) != 0;
    bad |= json_object_set_new(r, "key",
                               json_pack("{s:s}", "fingerprint", fp)) != 0;
    bad |= json_object_set_new(r, "channel_test",
                               json_string("bonferroni over channels")) != 0;
    bad |= json_object_set_new(r, "flags", json_pack("{s:b}", "skip_padded",
                                                     skip_padded)) != 0;
    bad |= json_object_set_new(r, "inputs", inputs) != 0;
    if (bad) {
        json_decref(r);
        return NULL;
    }
    return r;
}

json_t *cli_report_tenant(const cli_tests *t, size_t k, const char *tenant,
                          json_t *channels)
{
    return json_pack("{s:s,s:o,s:f,s:f,s:b}", "tenant", tenant, "channels",
                     channels, "log10_p", t->lp[k], "log10_p_adjusted",
                     t->adj[k], "detected", cli_tests_detected(t, k));
}

int cli_report_finish(json_t *r, const cli_tests *t, json_t *counts,
                      json_t *tenants, json_t *curve)
{
    json_t *selfj = json_array();
    for (size_t j = 0; j < t->n_self; j++)
        json_array_append_new(selfj, json_real(t->selfp[j]));
    int bad = r == NULL;
    bad |= json_object_set_new(r, "alpha", json_real(t->alpha)) != 0;
    bad |= json_object_set_new(
               r, "tenant_correction",
               json_pack("{s:s,s:I}", "method", cli_correction_name(t->corr),
                         "tenants", (json_int_t)t->n_tenants)) != 0;
    bad |= json_object_set_new(r, "counts", counts) != 0;
    bad |= json_object_set_new(r, "tenants", tenants) != 0;
    bad |= json_object_set_new(
               r, "self_check",
               json_pack("{s:s,s:I,s:o,s:f,s:f,s:b}", "label", t->label,
                         "keys", (json_int_t)t->n_self, "p_values", selfj,
                         "ks_d_plus", t->ks_d, "ks_log10_p", t->ks_lp,
                         "calibrated", t->calibrated)) != 0;
    if (curve != NULL)
        bad |= json_object_set_new(r, "curve", curve) != 0;
    bad |= json_object_set_new(r, "verdict", json_string(t->verdict)) != 0;
    if (bad)
        cli_error("cannot build the report");
    return bad ? -1 : 0;
}

/* ------------------------------------------------------------- HTML */

void cli_html_escape(cli_buf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<':
            cli_buf_printf(b, "&lt;");
            break;
        case '>':
            cli_buf_printf(b, "&gt;");
            break;
        case '&':
            cli_buf_printf(b, "&amp;");
            break;
        case '"':
            cli_buf_printf(b, "&quot;");
            break;
        default:
            cli_buf_printf(b, "%c", *s);
        }
    }
}

void cli_html_head(cli_buf *b, const char *title, const char *h1,
                   const cli_tests *t, const char *date, const char *fp,
                   const char *canon, unsigned nch, const char *rows,
                   int argc, char **argv)
{
    cli_buf_printf(b,
                   "<!DOCTYPE html>\n<html lang=\"en\"><head><meta "
                   "charset=\"utf-8\"><title>%s</title>\n"
                   "<style>body{font-family:sans-serif;max-width:60em;"
                   "margin:2em auto}td,th{padding:2px 8px;text-align:left}"
                   "table{border-collapse:collapse}tr:nth-child(even)"
                   "{background:#f4f4f4}.v{font-size:1.4em}</style></head>"
                   "<body>\n<h1>%s</h1>\n<p class=\"v\">Verdict: "
                   "<b>%s</b></p>\n<table>\n",
                   title, h1, t->verdict);
    cli_buf_printf(b, "<tr><th>hallmark</th><td>%s (PRF v%u)</td></tr>\n",
                   hm_version_string(), hm_prf_version());
    cli_buf_printf(b, "<tr><th>date</th><td>%s</td></tr>\n", date);
    cli_buf_printf(b, "<tr><th>key fingerprint</th><td>%s</td></tr>\n", fp);
    cli_buf_printf(b, "<tr><th>spec</th><td>");
    cli_html_escape(b, canon);
    cli_buf_printf(b,
                   "</td></tr>\n<tr><th>alpha</th><td>%g (%s over %zu "
                   "tenants; Bonferroni over %u channels)</td></tr>\n%s",
                   t->alpha, cli_correction_name(t->corr), t->n_tenants, nch,
                   rows ? rows : "");
    cli_buf_printf(b, "<tr><th>command</th><td><code>hallmark");
    for (int i = 0; i < argc; i++) {
        cli_buf_printf(b, " ");
        cli_html_escape(b, argv[i]);
    }
    cli_buf_printf(b, "</code></td></tr>\n</table>\n");
}

void cli_html_inputs(cli_buf *b, const json_t *inputs, int with_kind)
{
    cli_buf_printf(b, "<h2>Inputs</h2>\n<table><tr><th>file</th>%s"
                      "<th>records</th><th>SHA-256</th></tr>\n",
                   with_kind ? "<th>kind</th>" : "");
    size_t i;
    json_t *inp;
    json_array_foreach(inputs, i, inp)
    {
        json_t *sha = json_object_get(inp, "sha256");
        cli_buf_printf(b, "<tr><td>");
        cli_html_escape(b, json_string_value(json_object_get(inp, "path")));
        cli_buf_printf(b, "</td>");
        if (with_kind)
            cli_buf_printf(b, "<td>%s</td>",
                           json_string_value(json_object_get(inp, "kind")));
        cli_buf_printf(
            b, "<td>%lld</td><td><code>%s</code></td></tr>\n",
            (long long)json_integer_value(json_object_get(inp, "records")),
            sha ? json_string_value(sha) : "");
    }
    cli_buf_printf(b, "</table>\n");
}

void cli_html_finish(cli_buf *b, const cli_tests *t, const char *expect)
{
    cli_buf_printf(b, "<h2>Self-check</h2>\n");
    if (t->n_self > 0) {
        cli_buf_printf(b,
                       "<p>%zu never-deployed keys derived from the public "
                       "label &ldquo;",
                       t->n_self);
        cli_html_escape(b, t->label);
        cli_buf_printf(b,
                       "&rdquo; were tested on the same %s: one-sided KS D+ "
                       "= %.4f, log10 p = %.2f: <b>%s</b>.</p>\n",
                       expect, t->ks_d, t->ks_lp,
                       t->calibrated ? "calibrated" : "NOT calibrated");
        cli_svg_qq(b, t->selfp, t->n_self); /* sorted by hm_ks_uniform */
    } else
        cli_buf_printf(b, "<p>Not run (--self-check 0).</p>\n");
    cli_buf_printf(b, "</body></html>\n");
}

void cli_svg_qq(cli_buf *b, const double *sorted_p, size_t n)
{
    const double W = 320, H = 320, L = 50, B = 40;
    double m = -log10(1.0 / ((double)n + 1));
    for (size_t i = 0; i < n; i++)
        if (sorted_p[i] > 0)
            m = fmax(m, -log10(sorted_p[i]));
    m = ceil(m);
    cli_buf_printf(b,
                   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" "
                   "height=\"%g\" role=\"img\">\n"
                   "<rect x=\"%g\" y=\"0\" width=\"%g\" height=\"%g\" "
                   "fill=\"none\" stroke=\"#999\"/>\n"
                   "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"0\" "
                   "stroke=\"#999\" stroke-dasharray=\"4 3\"/>\n",
                   W + L, H + B, L, W, H, L, H, L + W);
    for (size_t i = 0; i < n; i++) {
        double e = -log10(((double)i + 1) / ((double)n + 1));
        double o = sorted_p[i] > 0 ? -log10(sorted_p[i]) : m;
        cli_buf_printf(b, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3\" "
                          "fill=\"#246\"/>\n",
                       L + W * e / m, H - H * o / m);
    }
    cli_buf_printf(b,
                   "<text x=\"%g\" y=\"%g\" font-size=\"12\">expected "
                   "-log10 p (0 to %.0f)</text>\n"
                   "<text x=\"2\" y=\"14\" font-size=\"12\">observed</text>\n"
                   "</svg>\n",
                   L + 40, H + 28, m);
}

/* ------------------------------------------------------------ writing */

int cli_report_write(const char *output, const json_t *report,
                     const cli_buf *html, const cli_tests *t)
{
    char *json_text = json_dumps(report, JSON_INDENT(2) |
                                             JSON_REAL_PRECISION(17) |
                                             JSON_ENSURE_ASCII);
    size_t ol = strlen(output);
    if (ol > 5 && strcmp(output + ol - 5, ".json") == 0)
        ol -= 5;
    char *jpath = malloc(ol + 8), *hpath = malloc(ol + 8);
    int status = EXIT_TROUBLE;
    if (json_text == NULL || jpath == NULL || hpath == NULL) {
        cli_error("out of memory writing the report %s", output);
        goto done;
    }
    snprintf(jpath, ol + 8, "%.*s.json", (int)ol, output);
    snprintf(hpath, ol + 8, "%.*s.html", (int)ol, output);
    if (cli_write_atomic(hpath, html->data, html->len) != 0)
        goto done;
    size_t jl = strlen(json_text);
    json_text[jl] = '\n';
    if (cli_write_atomic(jpath, json_text, jl + 1) != 0) {
        unlink(hpath);
        goto done;
    }
    printf("%s: %s (%s)\n", jpath, t->verdict,
           t->n_tenants == 1 ? "one key" : "see the tenants table");
    status = !t->calibrated ? EXIT_NOEVIDENCE
             : t->n_detected ? EXIT_DETECTED
                             : EXIT_NOEVIDENCE;
done:
    free(jpath);
    free(hpath);
    free(json_text);
    return status;
}

const char *cli_correction_name(int m)
{
    return m == HM_ADJUST_HOLM         ? "holm"
           : m == HM_ADJUST_BONFERRONI ? "bonferroni"
                                       : "sidak";
}

const char *cli_scheme_name(int s)
{
    return s == HM_SCHEME_GUMBEL ? "gumbel"
           : s == HM_SCHEME_KGW  ? "kgw"
                                 : "tournament";
}

double cli_channels_log10p(const double *lp, unsigned n)
{
    double best = 0;
    for (unsigned c = 0; c < n; c++)
        if (lp[c] < best)
            best = lp[c];
    best += log10((double)n);
    return best < 0 ? best : 0;
}
