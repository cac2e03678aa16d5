/*
 * cli_probe.c - hallmark probe: is a suspect model distilled from served
 * log-probabilities that carried the spectral fingerprint channel?
 * (hm_spectral_new(3), hallmark(1)).  Reads the suspect's top-k
 * log-probabilities on probe prompts, takes the Lomb-Scargle power of its
 * share of mass on the key's subset at the key's frequency, and compares it
 * with R alternate keys derived from a public label: p = (1 + #{alternate
 * power >= observed}) / (1 + R).
 */
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"

#define DEFAULT_LABEL "hallmark probe null"
#define DEFAULT_R 999

static void probe_usage(FILE *out)
{
    fprintf(out,
            "usage: hallmark probe --key KEYFILE [OPTIONS] FILE...\n"
            "\n"
            "Test a suspect model's top-k log-probabilities on probe "
            "prompts for the\n"
            "spectral fingerprint of KEYFILE.  FILE holds JSON Lines "
            "records\n"
            "{\"context\": [ids], \"ids\": [ids], \"logprobs\": [numbers]}; "
            "'-' is standard\n"
            "input.  See hallmark(1) for the format.\n"
            "\n"
            "  -k, --key FILE          master key file (mode 0600)\n"
            "  -s, --spec SPEC         spectral parameters as served, e.g. "
            "h=1,id=main\n"
            "  -t, --tenant ID         tenant whose subkeys to test "
            "(default: none)\n"
            "  -R, --self-check R      alternate keys of the null, 1 to "
            "100000 (default %d)\n"
            "      --self-check-label L  their public label (default "
            "\"%s\")\n"
            "  -a, --alpha A           significance level (default 1e-3)\n"
            "  -j, --json              JSON output\n"
            "  -h, --help              this help\n"
            "\n"
            "Exit status: 0 no evidence at alpha, 1 fingerprint detected, 2 "
            "error (then\n"
            "nothing is printed on standard output).\n",
            DEFAULT_R, DEFAULT_LABEL);
}

/* The probes, as read: the last h context ids (or all, when fewer: the
 * library pads) and the top-k records. */
typedef struct probes {
    size_t n, cap;
    int32_t *ctx;    /* HM_MAX_CONTEXT per probe */
    unsigned char *n_ctx;
    size_t *off;     /* start of probe i's records; off[n] the end */
    int32_t *ids;
    double *lps;
    size_t n_rec, cap_rec;
} probes;

static void probes_free(probes *p)
{
    free(p->ctx);
    free(p->n_ctx);
    free(p->off);
    free(p->ids);
    free(p->lps);
}

/* One record into p (its format checked by cli_input_next_lp); returns
 * 0, or -1 with a message printed. */
static int add_probe(probes *p, const cli_input *in, const cli_lp *r,
                     unsigned h)
{
    size_t k = r->n;
    if (k > HM_SPECTRAL_MAX) {
        cli_error("%s:%lu: %zu top-k entries, at most %d", in->name, r->line,
                  k, HM_SPECTRAL_MAX);
        return -1;
    }
    int oom = cli_grow((void **)&p->ctx, &p->cap, p->n + 1,
                   HM_MAX_CONTEXT * sizeof *p->ctx) != 0;
    /* the three per-probe arrays share cap: grow the others to match */
    void *a = oom ? NULL : realloc(p->n_ctx, p->cap * sizeof *p->n_ctx);
    if (a != NULL) {
        p->n_ctx = a;
        a = realloc(p->off, (p->cap + 1) * sizeof *p->off);
        if (a != NULL)
            p->off = a;
    }
    size_t cap_ids = p->cap_rec;
    if (a == NULL ||
        cli_grow((void **)&p->ids, &cap_ids, p->n_rec + k,
                 sizeof *p->ids) != 0 ||
        cli_grow((void **)&p->lps, &p->cap_rec, p->n_rec + k,
                 sizeof *p->lps) != 0) {
        cli_error("%s:%lu: out of memory", in->name, r->line);
        return -1;
    }
    /* the last h context ids (or all, when fewer: the library pads) */
    size_t nc = r->n_context, take = nc < h ? nc : h;
    /* a record without context or entries may hold NULL arrays, which
     * memcpy must not be given even for no bytes */
    if (take > 0)
        memcpy(p->ctx + p->n * HM_MAX_CONTEXT, r->context + (nc - take),
               take * sizeof *p->ctx);
    p->n_ctx[p->n] = (unsigned char)take;
    if (k > 0) {
        memcpy(p->ids + p->n_rec, r->ids, k * sizeof *p->ids);
        memcpy(p->lps + p->n_rec, r->logprobs, k * sizeof *p->lps);
    }
    p->off[p->n] = p->n_rec;
    p->n_rec += k;
    p->n++;
    p->off[p->n] = p->n_rec;
    return 0;
}

/* The probes of the file at path into p, and its path, SHA-256 and
 * number of records to inputs. */
static int read_file(probes *p, const char *path, unsigned h, json_t *inputs)
{
    cli_input in;
    cli_lp r = {0};
    int rc;
    if (cli_input_open(&in, path, 0, NULL) != 0)
        return -1;
    while ((rc = cli_input_next_lp(&in, &r)) == 1)
        if (add_probe(p, &in, &r, h) != 0) {
            rc = -1;
            break;
        }
    cli_input_close(&in);
    cli_lp_free(&r);
    if (rc == 0 &&
        json_array_append_new(
            inputs, json_pack("{s:s,s:s,s:s,s:I}", "path", path, "kind",
                              "logprobs", "sha256", in.sha256_hex,
                              "records", (json_int_t)in.records)) != 0) {
        cli_error("out of memory");
        rc = -1;
    }
    return rc;
}

/* The Lomb-Scargle power of the probes under one key. */
static int power_of(const hm_spectral *sp, const probes *p, double *g,
                    double *y, double *power, double *mean_share)
{
    double f, m = 0;
    if (hm_spectral_param(sp, "freq", &f) != HM_OK)
        return -1;
    for (size_t i = 0; i < p->n; i++) {
        size_t o = p->off[i];
        if (hm_spectral_point(sp, p->ctx + i * HM_MAX_CONTEXT, p->n_ctx[i],
                              &g[i], NULL) != HM_OK ||
            hm_spectral_share(sp, p->ids + o, p->lps + o, p->off[i + 1] - o,
                              &y[i]) != HM_OK)
            return -1;
        m += y[i];
    }
    if (mean_share != NULL)
        *mean_share = m / (double)p->n;
    return hm_lomb_scargle(g, y, p->n, f, power) == HM_OK ? 0 : -1;
}

static hm_spectral *make_sp(const hm_key *key, const char *spec,
                            const char *tenant)
{
    hm_spectral *sp = NULL;
    char msg[HM_ERRMSG_SIZE] = "";
    int rc = hm_spectral_new(&sp, key, spec, tenant, msg, sizeof msg);
    if (rc != HM_OK) {
        cli_error("--spec: %s", msg[0] ? msg : hm_strerror(rc));
        return NULL;
    }
    return sp;
}

int cmd_probe(int argc, char **argv)
{
    static const struct option opts[] = {
        {"key", required_argument, NULL, 'k'},
        {"spec", required_argument, NULL, 's'},
        {"tenant", required_argument, NULL, 't'},
        {"self-check", required_argument, NULL, 'R'},
        {"self-check-label", required_argument, NULL, 'L'},
        {"alpha", required_argument, NULL, 'a'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *keyfile = NULL, *tenant = NULL, *spec = NULL;
    const char *label = DEFAULT_LABEL;
    long long R = DEFAULT_R;
    double alpha = 1e-3;
    int json = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "k:s:t:R:a:jh", opts, NULL)) != -1) {
        switch (c) {
        case 'k':
            keyfile = optarg;
            break;
        case 's':
            spec = optarg;
            break;
        case 't':
            tenant = optarg;
            break;
        case 'R':
            if (cli_parse_ll("--self-check", optarg, 1, 100000, &R) != 0)
                return EXIT_TROUBLE;
            break;
        case 'L':
            label = optarg;
            break;
        case 'a':
            if (cli_parse_double("--alpha", optarg, 1e-300, 1, &alpha) != 0)
                return EXIT_TROUBLE;
            break;
        case 'j':
            json = 1;
            break;
        case 'h':
            probe_usage(stdout);
            return 0;
        default:
            probe_usage(stderr);
            return EXIT_TROUBLE;
        }
    }
    if (keyfile == NULL || optind >= argc) {
        cli_error(keyfile ? "probe: no input files"
                          : "probe: --key KEYFILE is required");
        probe_usage(stderr);
        return EXIT_TROUBLE;
    }
    hm_key *key = NULL;
    hm_spectral *sp = NULL;
    probes p = {0};
    double *g = NULL, *y = NULL;
    char fp[HM_FINGERPRINT_SIZE], canon[256];
    int status = EXIT_TROUBLE;
    cli_buf out = {0};
    json_t *inputs = json_array();
    if (inputs == NULL) {
        cli_error("out of memory");
        return EXIT_TROUBLE;
    }
    if (alpha < 1.0 / (1.0 + (double)R))
        fprintf(stderr,
                "hallmark: probe: warning: --alpha %g is below %g, the "
                "smallest p-value %lld alternate keys can give: the verdict "
                "can only be 'no evidence' (raise --self-check)\n",
                alpha, 1.0 / (1.0 + (double)R), R);
    if (cli_open_key(keyfile, &key, fp) != 0 ||
        (sp = make_sp(key, spec, tenant)) == NULL)
        goto done;
    double hd;
    if (hm_spectral_param(sp, "h", &hd) != HM_OK)
        goto done;
    for (int i = optind; i < argc; i++)
        if (read_file(&p, argv[i], (unsigned)hd, inputs) != 0)
            goto done;
    if (p.n < 2) {
        if (argc - optind == 1)
            cli_error("%s: %zu probe%s, at least 2 are needed",
                      strcmp(argv[optind], "-") == 0 ? "standard input"
                                                     : argv[optind],
                      p.n, p.n == 1 ? "" : "s");
        else
            cli_error("probe: %zu probe%s in the %d input files, at least "
                      "2 are needed",
                      p.n, p.n == 1 ? "" : "s", argc - optind);
        goto done;
    }
    g = malloc(p.n * sizeof *g);
    y = malloc(p.n * sizeof *y);
    if (g == NULL || y == NULL) {
        cli_error("out of memory");
        goto done;
    }
    double power, share, freq;
    if (power_of(sp, &p, g, y, &power, &share) != 0 ||
        hm_spectral_param(sp, "freq", &freq) != HM_OK) {
        cli_error("probe: cannot compute the statistic");
        goto done;
    }
    (void)freq; /* secret: never printed */
    size_t ge = 0;
    double null_sum = 0, null_max = 0;
    for (long long j = 0; j < R; j++) {
        hm_key *alt = NULL;
        hm_spectral *asp = NULL;
        double pj;
        int ok = hm_key_from_label(&alt, label, (uint32_t)j) == HM_OK &&
                 (asp = make_sp(alt, spec, tenant)) != NULL &&
                 power_of(asp, &p, g, y, &pj, NULL) == 0;
        hm_spectral_free(asp);
        hm_key_free(alt);
        if (!ok) {
            cli_error("probe: alternate key %lld failed", j);
            goto done;
        }
        ge += pj >= power;
        null_sum += pj;
        null_max = pj > null_max ? pj : null_max;
    }
    double pval = (1.0 + (double)ge) / (1.0 + (double)R);
    int hit = pval <= alpha;
    hm_spectral_spec(sp, canon, sizeof canon);
    if (json) {
        json_t *o = json_pack(
            "{s:I,s:I,s:f,s:f,s:{s:s,s:I,s:I,s:f,s:f},s:f,s:f,s:b,s:s,s:s,"
            "s:s,s:s,s:I,s:O}",
            "probes", (json_int_t)p.n, "listed", (json_int_t)p.n_rec,
            "mean_share", share, "power", power, "null", "label", label,
            "keys", (json_int_t)R, "at_least_observed", (json_int_t)ge,
            "mean_power", null_sum / (double)R, "max_power", null_max,
            "p_value", pval, "alpha", alpha, "detected", hit, "key", fp,
            "tenant", tenant ? tenant : "", "spec", canon,
            "hallmark_version", hm_version_string(), "prf_version",
            (json_int_t)hm_prf_version(), "inputs", inputs);
        char *s = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17))
                    : NULL;
        json_decref(o);
        if (s == NULL) {
            cli_error("out of memory");
            goto done;
        }
        cli_buf_printf(&out, "%s\n", s);
        free(s);
    } else {
        cli_buf_printf(&out,
                       "# hallmark %s, PRF v%u, key %s%s%s, spec %s, alpha "
                       "%g\n",
                       hm_version_string(), hm_prf_version(), fp,
                       tenant ? ", tenant " : "", tenant ? tenant : "", canon,
                       alpha);
        for (size_t i = 0; i < json_array_size(inputs); i++) {
            json_t *f = json_array_get(inputs, i);
            cli_buf_printf(
                &out, "# input %s: %lld records, sha256 %s\n",
                json_string_value(json_object_get(f, "path")),
                (long long)json_integer_value(json_object_get(f, "records")),
                json_string_value(json_object_get(f, "sha256")));
        }
        cli_buf_printf(&out, "probes          %zu (%zu listed tokens)\n",
                       p.n, p.n_rec);
        cli_buf_printf(&out, "mean share      %.6f\n", share);
        cli_buf_printf(&out, "power           %.6g\n", power);
        cli_buf_printf(&out,
                       "null            %lld keys \"%s\": mean %.6g, max "
                       "%.6g, %zu >= observed\n",
                       R, label, null_sum / (double)R, null_max, ge);
        cli_buf_printf(&out, "p-value         %.6g (smallest possible %.3g)\n",
                       pval, 1.0 / (1.0 + (double)R));
        cli_buf_printf(&out, "verdict         %s\n",
                       hit ? "FINGERPRINT DETECTED" : "no evidence");
    }
    fwrite(out.data, 1, out.len, stdout);
    if (fflush(stdout) != 0) {
        cli_error("standard output: write error");
        goto done;
    }
    status = hit ? EXIT_DETECTED : EXIT_NOEVIDENCE;
done:
    json_decref(inputs);
    cli_buf_free(&out);
    free(g);
    free(y);
    probes_free(&p);
    hm_spectral_free(sp);
    hm_key_free(key);
    return status;
}
