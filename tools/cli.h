/*
 * cli.h - shared pieces of the hallmark command-line tool.  The CLI uses
 * only the public API (hallmark.h).
 */
#ifndef HM_CLI_H
#define HM_CLI_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

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
void cli_lp_free(cli_lp *rec);

/* Report pieces shared by the audits (cli_audit.c). */
int cli_read_tenants(const char *path, int with_default, char ***out,
                     size_t *n);
void cli_html_escape(cli_buf *b, const char *s);
/* Q-Q plot of n sorted p-values against uniform, as SVG. */
void cli_svg_qq(cli_buf *b, const double *sorted_p, size_t n);
const char *cli_correction_name(int method);

#endif
