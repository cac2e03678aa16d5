/*
 * evalreport.c - results.json, results.md, rho.svg and fpr.svg from the
 * experiment's JSON; see evalreport.h.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atomicfile.h"
#include "evalreport.h"

#define GET(o, k) json_object_get((o), (k))
#define NUM(o, k) json_number_value(json_object_get((o), (k)))
#define INT(o, k) ((long long)json_integer_value(json_object_get((o), (k))))
#define STR(o, k) \
    (json_string_value(json_object_get((o), (k))) \
         ? json_string_value(json_object_get((o), (k))) \
         : "")

static int write_atomic(const char *dir, const char *name, const char *buf,
                        size_t len, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return ev_write_atomic(path, buf, len, err, errlen);
}

static const char *const COLORS[] = {"#1f77b4", "#d62728", "#2ca02c",
                                     "#9467bd"};

static const char *pct(double rho, char *buf, size_t n)
{
    snprintf(buf, n, "%g%%", 100 * rho);
    return buf;
}

/* ------------------------------------------------------------ markdown */

static void md_students(FILE *f, const json_t *res)
{
    const json_t *st = GET(res, "students"), *s;
    size_t i;
    if (!st)
        return;
    fprintf(f, "## Detection of students\n\n"
               "log10 p of `hallmark audit` on each student's sampled text "
               "(text in, cl100k_base by name).  *filtered*: `--filter` with "
               "the provider's served responses of that scheme; *unfiltered*: "
               "every tuple; *never-deployed key*: the same filtered audit "
               "with a key that never served anything.  rho is the share of "
               "watermarked response tokens in the student's training "
               "tokens.\n\n"
               "| scheme | rho | wm tokens | log10 p filtered | tuples | "
               "log10 p unfiltered | tuples | never-deployed key log10 p | "
               "self-check min p |\n"
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    json_array_foreach(st, i, s) {
        char b[32];
        const json_t *fa = GET(s, "filtered"), *un = GET(s, "unfiltered"),
                     *nd = GET(s, "never_deployed_key");
        fprintf(f, "| %s | %s | %lld | %.2f | %lld | %.2f | %lld | %.2f | "
                   "%.3f |\n",
                STR(s, "scheme"), pct(NUM(s, "rho"), b, sizeof b),
                INT(s, "watermarked_tokens"), NUM(fa, "log10_p"),
                INT(fa, "scored"), NUM(un, "log10_p"), INT(un, "scored"),
                NUM(nd, "log10_p"), NUM(fa, "self_check_min_p"));
    }
    const json_t *ctl = GET(res, "control_student");
    if (ctl) {
        fprintf(f, "\nControl: a student trained on %lld unwatermarked "
                   "teacher tokens only, audited with the deployed key "
                   "(filtered):",
                INT(ctl, "tokens"));
        json_array_foreach(GET(ctl, "audits"), i, s)
            fprintf(f, " %s %.2f (%lld tuples)%s", STR(s, "scheme"),
                    NUM(s, "log10_p"), INT(s, "scored"),
                    i + 1 < json_array_size(GET(ctl, "audits")) ? ";" : ".");
        fprintf(f, "\n");
    }
    /* the target */
    double best = INFINITY;
    const char *bs = NULL;
    long long bt = 0;
    json_array_foreach(st, i, s) {
        if (fabs(NUM(s, "rho") - 0.01) > 1e-12)
            continue;
        double lp = NUM(GET(s, "filtered"), "log10_p");
        if (lp < best) {
            best = lp;
            bs = STR(s, "scheme");
            bt = INT(GET(s, "filtered"), "scored");
        }
    }
    if (bs)
        fprintf(f, "\nTarget (issue 5): at rho = 1%%, p <= 1e-6 from <= 2e5 "
                   "scored tuples for at least one scheme.  Best: %s, "
                   "log10 p = %.2f from %lld tuples: %s.\n",
                bs, best, bt,
                best <= -6 && bt <= 200000 ? "met" : "NOT met");
    fprintf(f, "\n![log10 p against rho](rho.svg)\n\n");
}

static void md_tenants(FILE *f, const json_t *res)
{
    const json_t *t = GET(res, "tenants"), *e, *s;
    size_t i, k;
    if (!t || json_array_size(t) == 0)
        return;
    e = json_array_get(t, 0);
    fprintf(f, "## Tenant attribution\n\n"
               "Responses served under %lld tenant keys (per-tenant subkeys "
               "of one master key); the student learnt only from %s's "
               "responses (%lld of them served, %lld to the other tenants).  "
               "The audit (`--tenants`, filtered) tests every tenant, Holm "
               "over tenants.\n\n"
               "| scheme | rho | wm tokens | tuples | tenant with smallest p "
               "| is target | target log10 p | adjusted | runner-up log10 p | "
               "tenants detected |\n"
               "|---|---:|---:|---:|---|---|---:|---:|---:|---:|\n",
            INT(e, "tenants"), STR(e, "target"), INT(e, "target_responses"),
            INT(e, "other_responses"));
    json_array_foreach(t, k, e)
        json_array_foreach(GET(e, "students"), i, s) {
            char b[32];
            fprintf(f, "| %s | %s | %lld | %lld | %s | %s | %.2f | %.2f | "
                       "%.2f | %lld |\n",
                    STR(e, "scheme"), pct(NUM(s, "rho"), b, sizeof b),
                    INT(s, "watermarked_tokens"), INT(s, "scored"),
                    STR(s, "named"),
                    json_is_true(GET(s, "named_is_target")) ? "yes" : "no",
                    NUM(s, "target_log10_p"),
                    NUM(s, "target_log10_p_adjusted"),
                    NUM(s, "runner_up_log10_p"), INT(s, "tenants_detected"));
        }
    fprintf(f, "\n");
}

static void md_fpr(FILE *f, const json_t *res)
{
    const json_t *fp = GET(res, "false_positives"), *s, *a;
    size_t i, k;
    if (!fp)
        return;
    fprintf(f, "## False positives\n\n"
               "Every document (%lld: SOTU addresses and held-out Brown "
               "samples, %lld tokens) tested on its own under %lld "
               "never-deployed keys (`hm_key_from_label(\"%s\", i)`); "
               "%s intervals at %g%%.\n\n"
               "| scheme | alpha | p <= alpha | trials | FPR | %g%% "
               "interval | alpha inside | exact null rate | inside |\n"
               "|---|---:|---:|---:|---:|---|---|---:|---|\n",
            INT(fp, "documents"), INT(fp, "sotu_and_heldout_brown_tokens"),
            INT(fp, "keys"), STR(fp, "label"), STR(fp, "interval"),
            100 * NUM(fp, "confidence"), 100 * NUM(fp, "confidence"));
    json_array_foreach(GET(fp, "schemes"), i, s)
        json_array_foreach(GET(s, "alphas"), k, a)
            fprintf(f, "| %s | %g | %lld | %lld | %.2e | [%.2e, %.2e] | "
                       "%s | %.3e | %s |\n",
                    STR(s, "scheme"), NUM(a, "alpha"), INT(a, "positives"),
                    INT(a, "trials"), NUM(a, "fpr"), NUM(a, "ci_lo"),
                    NUM(a, "ci_hi"),
                    json_is_true(GET(a, "alpha_inside")) ? "yes" : "NO",
                    NUM(a, "null_rate"),
                    json_is_true(GET(a, "null_rate_inside")) ? "yes" : "NO");
    fprintf(f, "\nThe binomial tests of kgw and tournament are discrete: "
               "P[p <= alpha] sits at or below alpha.  *exact null rate* is "
               "that probability under the null hypothesis, averaged over "
               "the (document, key) pairs (for each pair's number of scored "
               "tuples): the rate a calibrated test must show; for gumbel it "
               "is alpha.\n\n"
               "![FPR against alpha](fpr.svg)\n\n");
}

static void md_quality(FILE *f, const json_t *res)
{
    const json_t *sv = GET(res, "serving"), *s;
    size_t i;
    if (!sv)
        return;
    fprintf(f, "## Serving and quality\n\n"
               "The same prompts and response lengths for every scheme.  "
               "Perplexity per token of the responses (after their prompt) "
               "under a reference model trained on the held-out part, and "
               "under the teacher; distinct-n over token ids (distinct-8: "
               "long spans repeated across responses).\n\n"
               "| scheme | responses | tokens | watermarked steps | masked "
               "| us/token | ppl (reference) | ppl (teacher) | distinct-2 | "
               "distinct-3 | distinct-8 |\n"
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    json_array_foreach(sv, i, s) {
        long long w = INT(s, "steps_watermarked") + INT(s, "steps_biased");
        fprintf(f, "| %s | %lld | %lld | %lld | %lld | %.0f | %.1f | %.2f | "
                   "%.3f | %.3f | %.3f |\n",
                STR(s, "scheme"), INT(s, "responses"), INT(s, "tokens"), w,
                INT(s, "steps_masked"), NUM(s, "us_per_token"),
                NUM(s, "ppl_reference"), NUM(s, "ppl_teacher"),
                NUM(s, "distinct2"), NUM(s, "distinct3"),
                NUM(s, "distinct8"));
    }
    fprintf(f, "\n");
}

static int write_md(const json_t *res, const char *dir, char *err,
                    size_t errlen)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return snprintf(err, errlen, "out of memory"), -1;
    const json_t *p = GET(res, "parameters"), *d = GET(res, "data");
    fprintf(f, "# hallmark distillation experiment (`make eval`)\n\n"
               "Configuration `%s`, seed %lld, hallmark %s.  Command: `%s`; "
               "run time %.0f s on %lld threads.\n\n",
            STR(p, "config"), INT(p, "seed"), STR(res, "hallmark_version"),
            STR(res, "command"), NUM(res, "seconds"), INT(p, "threads"));
    if (d)
        fprintf(f, "Data: Brown (%lld samples; %s): teacher %lld, "
                   "student-clean %lld, held-out %lld cl100k tokens; SOTU "
                   "%lld addresses.  Teacher: order-%lld interpolated "
                   "modified Kneser-Ney on the teacher part.  Sampling: "
                   "temperature %g, top-k %lld, responses of %lld-%lld "
                   "tokens after %lld-word held-out sentence prefixes.  "
                   "Schemes at libhallmark's defaults.\n\n",
                INT(d, "brown_samples"), STR(d, "split"),
                INT(d, "teacher_tokens"), INT(d, "student_clean_tokens"),
                INT(d, "heldout_tokens"), INT(d, "sotu_addresses"),
                INT(p, "order"), NUM(p, "temperature"), INT(p, "top_k"),
                INT(p, "response_min"), INT(p, "response_max"),
                INT(p, "prompt_words"));
    md_students(f, res);
    md_tenants(f, res);
    md_fpr(f, res);
    md_quality(f, res);
    fprintf(f, "Every figure and parameter: `results.json`.\n");
    fclose(f);
    int rc = write_atomic(dir, "results.md", buf, len, err, errlen);
    free(buf);
    return rc;
}

/* ----------------------------------------------------------------- SVG */

#define W 640
#define H 400
#define ML 70
#define MR 150
#define MT 30
#define MB 50

static int write_rho_svg(const json_t *res, const char *dir, char *err,
                         size_t errlen)
{
    const json_t *st = GET(res, "students"), *s;
    size_t i;
    if (!st)
        return 0;
    /* x: the rho values, equally spaced, in order of appearance */
    double rhos[16];
    size_t nr = 0;
    double ymin = -7; /* the smallest log10 p */
    json_array_foreach(st, i, s) {
        double r = NUM(s, "rho");
        size_t k;
        for (k = 0; k < nr && rhos[k] != r; k++)
            ;
        if (k == nr && nr < 16)
            rhos[nr++] = r;
        double lp = NUM(GET(s, "filtered"), "log10_p");
        if (lp < ymin)
            ymin = lp;
    }
    /* y: -log10 p on a log scale, from 1e-2 to the next power of ten */
    const double lmin = -2;
    double lmax = ceil(log10(-ymin));
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return snprintf(err, errlen, "out of memory"), -1;
    double pw = W - ML - MR, ph = H - MT - MB;
#define X(k) (ML + (nr > 1 ? pw * (double)(k) / (double)(nr - 1) : pw / 2))
#define Y(v) \
    (MT + ph * (lmax - log10(fmax(-(v), 1e-2))) / (lmax - lmin))
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
               "height=\"%d\" font-family=\"sans-serif\" font-size=\"12\">\n"
               "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
               "<text x=\"%d\" y=\"18\" font-size=\"14\">-log10 p of the "
               "student audit (filtered, log scale) against rho</text>\n",
            W, H, ML);
    /* grid and axes */
    for (double l = lmin; l <= lmax; l += 1)
        fprintf(f, "<line x1=\"%d\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" "
                   "stroke=\"#ddd\"/><text x=\"%d\" y=\"%.1f\" "
                   "text-anchor=\"end\">%g</text>\n",
                ML, W - MR + 0.0, Y(-pow(10, l)), Y(-pow(10, l)), ML - 6,
                Y(-pow(10, l)) + 4, pow(10, l));
    fprintf(f, "<line x1=\"%d\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" "
               "stroke=\"#888\" stroke-dasharray=\"6,4\"/><text x=\"%.1f\" "
               "y=\"%.1f\" fill=\"#888\">p = 1e-6</text>\n",
            ML, W - MR + 0.0, Y(-6), Y(-6), W - MR + 4.0, Y(-6) + 4);
    for (size_t k = 0; k < nr; k++) {
        char b[32];
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s"
                   "</text>\n",
                X(k), H - MB + 18, pct(rhos[k], b, sizeof b));
    }
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">rho "
               "(share of watermarked tokens in the student's training "
               "data)</text>\n"
               "<text transform=\"translate(16,%.1f) rotate(-90)\" "
               "text-anchor=\"middle\">-log10 p (below 0.01 drawn at "
               "0.01)</text>\n",
            ML + pw / 2, H - 12, MT + ph / 2);
    /* one line per scheme, never-deployed keys as hollow circles */
    const char *names[8];
    size_t ns = 0;
    json_array_foreach(st, i, s) {
        const char *nm = STR(s, "scheme");
        size_t k;
        for (k = 0; k < ns && strcmp(names[k], nm); k++)
            ;
        if (k == ns && ns < 8)
            names[ns++] = nm;
    }
    for (size_t c = 0; c < ns; c++) {
        const char *col = COLORS[c % 4];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" "
                   "points=\"",
                col);
        json_array_foreach(st, i, s) {
            if (strcmp(STR(s, "scheme"), names[c]))
                continue;
            size_t k;
            for (k = 0; k < nr && rhos[k] != NUM(s, "rho"); k++)
                ;
            fprintf(f, "%.1f,%.1f ", X(k),
                    Y(NUM(GET(s, "filtered"), "log10_p")));
        }
        fprintf(f, "\"/>\n");
        json_array_foreach(st, i, s) {
            if (strcmp(STR(s, "scheme"), names[c]))
                continue;
            size_t k;
            for (k = 0; k < nr && rhos[k] != NUM(s, "rho"); k++)
                ;
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"/>"
                       "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"none\" "
                       "stroke=\"%s\"/>\n",
                    X(k), Y(NUM(GET(s, "filtered"), "log10_p")), col,
                    X(k) + 5, Y(NUM(GET(s, "never_deployed_key"), "log10_p")),
                    col);
        }
        fprintf(f, "<rect x=\"%d\" y=\"%zu\" width=\"12\" height=\"3\" "
                   "fill=\"%s\"/><text x=\"%d\" y=\"%zu\">%s</text>\n",
                W - MR + 10, MT + 30 + 20 * c, col, W - MR + 28,
                MT + 35 + 20 * c, names[c]);
    }
    fprintf(f, "<text x=\"%d\" y=\"%zu\">o never-deployed</text>\n"
               "<text x=\"%d\" y=\"%zu\">key</text>\n</svg>\n",
            W - MR + 10, MT + 40 + 20 * ns, W - MR + 22, MT + 55 + 20 * ns);
#undef X
#undef Y
    fclose(f);
    int rc = write_atomic(dir, "rho.svg", buf, len, err, errlen);
    free(buf);
    return rc;
}

static int write_fpr_svg(const json_t *res, const char *dir, char *err,
                         size_t errlen)
{
    const json_t *fp = GET(res, "false_positives"), *s, *a;
    size_t i, k;
    if (!fp)
        return 0;
    const double lx0 = -4.5, lx1 = -1.5; /* log10 alpha */
    double ly0 = -6, ly1 = -1;
    json_array_foreach(GET(fp, "schemes"), i, s)
        json_array_foreach(GET(s, "alphas"), k, a)
            if (NUM(a, "ci_lo") > 0 && log10(NUM(a, "ci_lo")) < ly0)
                ly0 = floor(log10(NUM(a, "ci_lo")));
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return snprintf(err, errlen, "out of memory"), -1;
    double pw = W - ML - MR, ph = H - MT - MB;
#define X(l) (ML + pw * ((l) - lx0) / (lx1 - lx0))
#define Y(l) (MT + ph * (ly1 - (l)) / (ly1 - ly0))
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
               "height=\"%d\" font-family=\"sans-serif\" font-size=\"12\">\n"
               "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
               "<text x=\"%d\" y=\"18\" font-size=\"14\">False-positive rate "
               "against alpha (%g%% exact intervals)</text>\n",
            W, H, ML, 100 * NUM(fp, "confidence"));
    for (double l = ly1; l >= ly0; l -= 1)
        fprintf(f, "<line x1=\"%d\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" "
                   "stroke=\"#ddd\"/><text x=\"%d\" y=\"%.1f\" "
                   "text-anchor=\"end\">1e%g</text>\n",
                ML, W - MR + 0.0, Y(l), Y(l), ML - 6, Y(l) + 4, l);
    for (double l = -4; l <= -2; l += 1)
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%.1f\" "
                   "stroke=\"#ddd\"/><text x=\"%.1f\" y=\"%d\" "
                   "text-anchor=\"middle\">1e%g</text>\n",
                X(l), X(l), MT, H - MB + 0.0, X(l), H - MB + 18, l);
    /* FPR = alpha */
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
               "stroke=\"#888\" stroke-dasharray=\"6,4\"/>\n",
            X(fmax(lx0, ly0)), Y(fmax(lx0, ly0)), X(fmin(lx1, ly1)),
            Y(fmin(lx1, ly1)));
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">alpha"
               "</text><text transform=\"translate(16,%.1f) rotate(-90)\" "
               "text-anchor=\"middle\">fraction of (document, key) with "
               "p &lt;= alpha</text>\n",
            ML + pw / 2, H - 12, MT + ph / 2);
    json_array_foreach(GET(fp, "schemes"), i, s) {
        const char *col = COLORS[i % 4];
        double dx = ((double)i - 1) * 0.06;
        json_array_foreach(GET(s, "alphas"), k, a) {
            double la = log10(NUM(a, "alpha")) + dx;
            double lo = NUM(a, "ci_lo"), hi = NUM(a, "ci_hi"),
                   v = NUM(a, "fpr");
            double llo = lo > 0 ? fmax(log10(lo), ly0) : ly0;
            double lhi = fmin(log10(hi), ly1);
            fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" "
                       "y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/>\n",
                    X(la), X(la), Y(llo), Y(lhi), col);
            if (v > 0)
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" "
                           "fill=\"%s\"/>\n",
                        X(la), Y(fmax(log10(v), ly0)), col);
            else
                fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" fill=\"%s\" "
                           "text-anchor=\"middle\">0</text>\n",
                        X(la), Y(ly0) - 4, col);
        }
        fprintf(f, "<rect x=\"%d\" y=\"%zu\" width=\"12\" height=\"3\" "
                   "fill=\"%s\"/><text x=\"%d\" y=\"%zu\">%s</text>\n",
                W - MR + 10, MT + 30 + 20 * i, col, W - MR + 28,
                MT + 35 + 20 * i, STR(s, "scheme"));
    }
    fprintf(f, "<text x=\"%d\" y=\"%zu\" fill=\"#888\">- - FPR = alpha"
               "</text>\n</svg>\n",
            W - MR + 10, MT + 35 + 20 * json_array_size(GET(fp, "schemes")));
#undef X
#undef Y
    fclose(f);
    int rc = write_atomic(dir, "fpr.svg", buf, len, err, errlen);
    free(buf);
    return rc;
}

int ev_report_write(const json_t *results, const char *dir, char *err,
                    size_t errlen)
{
    char *js = json_dumps(results, JSON_INDENT(2) | JSON_REAL_PRECISION(10) |
                                       JSON_PRESERVE_ORDER);
    if (!js)
        return snprintf(err, errlen, "out of memory"), -1;
    size_t n = strlen(js);
    js[n] = 0;
    char *jl = realloc(js, n + 2);
    if (!jl) {
        free(js);
        return snprintf(err, errlen, "out of memory"), -1;
    }
    jl[n] = '\n';
    int rc = write_atomic(dir, "results.json", jl, n + 1, err, errlen);
    free(jl);
    if (rc == 0)
        rc = write_md(results, dir, err, errlen);
    if (rc == 0)
        rc = write_rho_svg(results, dir, err, errlen);
    if (rc == 0)
        rc = write_fpr_svg(results, dir, err, errlen);
    return rc;
}
