/*
 * cli.h - shared pieces of the hallmark command-line tool.  The CLI uses
 * only the public API (hallmark.h).
 */
#ifndef HM_CLI_H
#define HM_CLI_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "hallmark.h"

/* Exit codes, as grep: 0 nothing found, 1 watermark detected, 2 error. */
#define EXIT_NOEVIDENCE 0
#define EXIT_DETECTED 1
#define EXIT_TROUBLE 2

extern const char *hm_progname;

void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

int cmd_keygen(int argc, char **argv);
int cmd_fingerprint(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_audit(int argc, char **argv);
/* hallmark audit --logprobs (cli_audit_lp.c) */
int cmd_audit_logprobs(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_probe(int argc, char **argv); /* spectral fingerprint (cli_probe.c) */
int cmd_sketch(int argc, char **argv);
int cli_open_tokenizer(const char *spec, hm_tokenizer **tok);
/* hm_tokenizer_encode flags for every text input (--parse-special). */
extern unsigned cli_tok_flags;
int cli_read_all(const char *path, char **data, size_t *len);

/* One suspect document: token ids, the prompt when known, and a name. */
typedef struct cli_doc {
    int32_t *prompt, *tokens;
    size_t n_prompt, cap_prompt, n_tokens, cap_tokens;
    char id[256];
    const char *file;
    unsigned long line;
} cli_doc;

/* A JSON Lines input: records {"tokens": [...], "prompt_tokens": [...],
 * "id": ...}; its SHA-256 is computed while reading. */
typedef struct cli_input {
    const char *path, *name;
    FILE *f;
    int is_stdin;
    unsigned long line;
    unsigned long long records;
    long long vocab; /* > 0: ids must be below it */
    const hm_tokenizer *tok; /* text records and plain files, or NULL */
    int plain;               /* a plain text file: one document */
    size_t invalid_utf8;     /* bytes tokenized byte-wise */
    EVP_MD_CTX *md;
    char *buf;
    size_t cap;
    unsigned char sha256[32];
    char sha256_hex[65];
} cli_input;

int cli_input_open(cli_input *in, const char *path, long long vocab,
                   const hm_tokenizer *tok);
/* 1: a document, 0: end of input, -1: error (message printed). */
int cli_input_next(cli_input *in, cli_doc *doc);
/* Closes and finalises sha256_hex (read to the end first). */
void cli_input_close(cli_input *in);
void cli_doc_free(cli_doc *doc);
int cli_is_tally(const char *path);
int cli_sha256_file(const char *path, char hex[65]);

int cli_open_key(const char *path, hm_key **key, char *fingerprint);
int cli_make_ctx(const hm_key *key, const char *spec, const char *tenant,
                 hm_ctx **ctx);
int cli_add_scheme(char *spec, size_t cap, const char *s);
/* ev_write_atomic (eval/atomicfile.h) with the message printed. */
int cli_write_atomic(const char *path, const char *data, size_t len);
int cli_parse_double(const char *opt, const char *s, double lo, double hi,
                     double *out);
int cli_parse_ll(const char *opt, const char *s, long long lo, long long hi,
                 long long *out);
/* The options verify and audit share: -a/--alpha, --vocab-size,
 * --skip-padded, --tokenizer and --parse-special (getopt codes 'a', 'V',
 * 'P', 'Z', 'Y').  1: c was one of them and is applied; 0: it is not one;
 * -1: a bad value (message printed). */
int cli_scoring_option(int c, const char *arg, double *alpha,
                       long long *vocab, unsigned *flags,
                       const char **tokspec);

typedef struct cli_buf {
    char *data;
    size_t len, cap;
} cli_buf;
int cli_buf_printf(cli_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void cli_buf_free(cli_buf *b);

/* One record of a suspect's log-probabilities (hallmark probe and audit
 * --logprobs): {"context": [ids], "ids": [ids], "logprobs": [numbers]},
 * at least one entry, ids distinct, log-probabilities <= 0. */
typedef struct cli_lp {
    int32_t *context, *ids;
    double *logprobs;
    size_t n_context, cap_context, n, cap_ids, cap_lps;
    unsigned long line;
} cli_lp;
/* 1: a record, 0: end of input, -1: error ("FILE:LINE: problem" printed).
 * Ids must be below in->vocab when it is > 0. */
int cli_input_next_lp(cli_input *in, cli_lp *rec);
/* *p to room for need elements of elt bytes (capacity *cap, doubled as
 * needed); -1 without memory, *p unchanged. */
int cli_grow(void **p, size_t *cap, size_t need, size_t elt);
void cli_lp_free(cli_lp *rec);

/* hallmark audit and audit --logprobs: the tenants to test (cli_audit.c)
 * and what both audits share (cli_report.c). */
int cli_read_tenants(const char *path, int with_default, char ***out,
                     size_t *n);

/* The options both audits take: -k/--key, -s/--scheme, -T/--tenants,
 * --default-tenant, --correction, -R/--self-check, --self-check-label and
 * -o/--output (getopt codes 'k', 's', 'T', 'E', 'C', 'R', 'L', 'o').  The
 * caller sets the defaults. */
typedef struct cli_audit_opts {
    const char *keyfile, *tenants_file, *output, *label;
    char spec[1024];
    long long n_self;
    int corr, with_default;
} cli_audit_opts;
/* 1: c was one of them and is applied; 0: it is not one; -1: a bad value
 * (message printed). */
int cli_audit_option(int c, const char *arg, cli_audit_opts *o);
/* Their getopt_long entries, with --alpha, --vocab-size, --skip-padded
 * and --help, which both take too. */
#define CLI_AUDIT_LONGOPTS                              \
    {"key", required_argument, NULL, 'k'},              \
    {"scheme", required_argument, NULL, 's'},           \
    {"tenants", required_argument, NULL, 'T'},          \
    {"default-tenant", no_argument, NULL, 'E'},         \
    {"correction", required_argument, NULL, 'C'},       \
    {"self-check", required_argument, NULL, 'R'},       \
    {"self-check-label", required_argument, NULL, 'L'}, \
    {"alpha", required_argument, NULL, 'a'},            \
    {"vocab-size", required_argument, NULL, 'V'},       \
    {"skip-padded", no_argument, NULL, 'P'},            \
    {"output", required_argument, NULL, 'o'},           \
    {"help", no_argument, NULL, 'h'}
/* After the options: -1 (message printed; the caller prints its usage)
 * when --key, -o or the inputs are missing; the default spec is set. */
int cli_audit_opts_done(cli_audit_opts *o, int argc, int first_input,
                        const char *default_spec);

/* The keys an audit tests: ctxs[0..n_tenants) the master key's context
 * for each tenant, then ctxs[n_tenants..n_keys) those of the n_self
 * never-deployed keys derived from the self-check label. */
typedef struct cli_audit_keys {
    hm_key *key;
    char fp[HM_FINGERPRINT_SIZE];
    char canon[1024]; /* the canonical spec */
    unsigned nch;     /* channels */
    char **tenants;   /* "" is the default tenant */
    size_t n_tenants, n_self, n_keys;
    hm_ctx **ctxs;
    hm_key **self_keys;
} cli_audit_keys;
/* Reads the tenants file and the key file and makes the contexts.  -1: an
 * error (message printed); cli_audit_keys_free in any case. */
int cli_audit_keys_open(cli_audit_keys *k, const cli_audit_opts *o);
void cli_audit_keys_free(cli_audit_keys *k);

/* The tests of an audit: each tenant's log10 p (lp, filled by the caller)
 * adjusted over the tenants (adj), and the self-check: the never-deployed
 * keys' p-values (selfp, filled by the caller) against uniform. */
typedef struct cli_tests {
    size_t n_tenants, n_self;
    double alpha;
    int corr; /* HM_ADJUST_* */
    const char *label;
    double *lp, *adj, *selfp; /* n_tenants, n_tenants, n_self */
    /* set by cli_tests_run */
    double ks_d, ks_lp;
    int calibrated;
    size_t n_detected;
    const char *verdict;
} cli_tests;
int cli_tests_init(cli_tests *t, size_t n_tenants, size_t n_self,
                   double alpha, int corr, const char *label);
/* Adjusts, runs the KS test (sorting selfp) and decides the verdict. */
int cli_tests_run(cli_tests *t);
int cli_tests_detected(const cli_tests *t, size_t k);
void cli_tests_free(cli_tests *t);

/* The report: "YYYY-MM-DDTHH:MM:SSZ", now or SOURCE_DATE_EPOCH. */
void cli_report_date(char date[64]);
/* The JSON report's head: version, command, date, mode (when not NULL),
 * spec, key, flags and inputs (stolen).  NULL: out of memory. */
json_t *cli_report_new(int argc, char **argv, const char *date,
                       const char *mode, const char *canon, const char *fp,
                       int skip_padded, json_t *inputs);
/* One entry of the report's "tenants" (channels stolen). */
json_t *cli_report_tenant(const cli_tests *t, size_t k, const char *tenant,
                          json_t *channels);
/* The JSON report's tail: alpha, tenant correction, counts, tenants,
 * self-check, curve (when not NULL) and verdict; counts, tenants and curve
 * are stolen.  -1: the report cannot be built (message printed). */
int cli_report_finish(json_t *report, const cli_tests *t, json_t *counts,
                      json_t *tenants, json_t *curve);
void cli_html_escape(cli_buf *b, const char *s);
/* The HTML report's head, verdict and facts table; rows: more rows after
 * the alpha (or NULL). */
void cli_html_head(cli_buf *b, const char *title, const char *h1,
                   const cli_tests *t, const char *date, const char *fp,
                   const char *canon, unsigned nch, const char *rows,
                   int argc, char **argv);
/* The inputs table, from the JSON report's "inputs". */
void cli_html_inputs(cli_buf *b, const json_t *inputs, int with_kind);
/* The self-check section ("were tested on the same EXPECT: one-sided KS
 * ...") and the end of the page. */
void cli_html_finish(cli_buf *b, const cli_tests *t, const char *expect);
/* Q-Q plot of n sorted p-values against uniform, as SVG. */
void cli_svg_qq(cli_buf *b, const double *sorted_p, size_t n);
const char *cli_correction_name(int method);
/* "gumbel", "kgw" or "tournament" for an HM_SCHEME_* value. */
const char *cli_scheme_name(int scheme);
/* A key's log10 p over its n channels' log10 p: the smallest, Bonferroni-
 * corrected over the channels (at most 0). */
double cli_channels_log10p(const double *lp, unsigned n);
/* Writes REPORT.html and REPORT.json atomically (REPORT: output without
 * a final .json) and prints the verdict line; returns the exit status. */
int cli_report_write(const char *output, const json_t *report,
                     const cli_buf *html, const cli_tests *t);

#endif
