/*
 * cli_input.c - reading suspect outputs (JSON Lines of token ids), keys
 * and contexts for the verifier commands, and writing files atomically.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "atomicfile.h"
#include "cli.h"

/* With a tokenizer, files not named *.jsonl, *.ndjson or *.json are plain
 * text: the whole file is one document. */
static int is_jsonl_name(const char *path)
{
    const char *dot = strrchr(path, '.');
    return strcmp(path, "-") == 0 ||
           (dot && (strcmp(dot, ".jsonl") == 0 || strcmp(dot, ".ndjson") == 0 ||
                    strcmp(dot, ".json") == 0));
}

int cli_input_open(cli_input *in, const char *path, long long vocab,
                   const hm_tokenizer *tok)
{
    memset(in, 0, sizeof *in);
    in->path = path;
    in->vocab = vocab;
    in->tok = tok;
    in->plain = tok != NULL && !is_jsonl_name(path);
    in->is_stdin = strcmp(path, "-") == 0;
    in->name = in->is_stdin ? "(stdin)" : path;
    in->f = in->is_stdin ? stdin : fopen(path, "rb");
    if (in->f == NULL) {
        cli_error("%s: %s", path, strerror(errno));
        return -1;
    }
    in->md = EVP_MD_CTX_new();
    if (in->md == NULL || EVP_DigestInit_ex(in->md, EVP_sha256(), NULL) != 1) {
        cli_error("%s: SHA-256 unavailable", in->name);
        cli_input_close(in);
        return -1;
    }
    return 0;
}

void cli_input_close(cli_input *in)
{
    if (in->md != NULL) {
        unsigned int n = 0;
        if (EVP_DigestFinal_ex(in->md, in->sha256, &n) == 1 && n == 32)
            for (int i = 0; i < 32; i++)
                snprintf(in->sha256_hex + 2 * i, 3, "%02x", in->sha256[i]);
        EVP_MD_CTX_free(in->md);
        in->md = NULL;
    }
    if (in->f != NULL && !in->is_stdin)
        fclose(in->f);
    in->f = NULL;
    free(in->buf);
    in->buf = NULL;
}

/* Does the file start like a tally file?  (Peeks; stdin is never one.) */
int cli_is_tally(const char *path)
{
    char head[16];
    if (strcmp(path, "-") == 0)
        return 0;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return 0;
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    return n == sizeof head && memcmp(head, "hallmark-tally 1", 16) == 0;
}

/* field[i], a token id (0 to 2^31-1, below the vocabulary size when one
 * is given), into *out; -1 after a message. */
static int token_id(const cli_input *in, json_t *v, const char *field,
                    size_t i, int32_t *out)
{
    json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
    if (x < 0 || x > INT32_MAX) {
        cli_error("%s:%lu: '%s'[%zu] is not a token id (0 to 2^31-1)",
                  in->name, in->line, field, i);
        return -1;
    }
    if (in->vocab > 0 && x >= in->vocab) {
        cli_error("%s:%lu: '%s'[%zu]: unknown token id %lld (vocabulary "
                  "size %lld)",
                  in->name, in->line, field, i, (long long)x, in->vocab);
        return -1;
    }
    *out = (int32_t)x;
    return 0;
}

/* Read a JSON array of token ids into a growable array. */
static int read_ids(cli_input *in, json_t *arr, const char *field,
                    int32_t **out, size_t *n, size_t *cap)
{
    *n = 0;
    if (!json_is_array(arr)) {
        cli_error("%s:%lu: '%s' must be an array of token ids", in->name,
                  in->line, field);
        return -1;
    }
    size_t k = json_array_size(arr);
    if (cli_grow((void **)out, cap, k, sizeof **out) != 0) {
        cli_error("%s:%lu: out of memory", in->name, in->line);
        return -1;
    }
    for (size_t i = 0; i < k; i++)
        if (token_id(in, json_array_get(arr, i), field, i, &(*out)[i]) != 0)
            return -1;
    *n = k;
    return 0;
}

/* Tokenize a text into a growable id array. */
static int tokenize_into(cli_input *in, const char *text, size_t len,
                         int32_t **out, size_t *n, size_t *cap)
{
    int32_t *ids;
    size_t m, invalid = 0;
    int rc = hm_tokenizer_encode(in->tok, text, len, cli_tok_flags, &ids, &m, &invalid);
    if (rc != HM_OK) {
        cli_error("%s:%lu: cannot tokenize: %s", in->name, in->line,
                  hm_strerror(rc));
        return -1;
    }
    /* --vocab-size holds for every id, not only those given as ids */
    for (size_t i = 0; in->vocab > 0 && i < m; i++)
        if (ids[i] >= in->vocab) {
            cli_error("%s:%lu: the tokenizer gives token id %ld, beyond "
                      "the vocabulary size %lld",
                      in->name, in->line, (long)ids[i], in->vocab);
            hm_tokens_free(ids);
            return -1;
        }
    in->invalid_utf8 += invalid;
    free(*out);
    *out = malloc((m ? m : 1) * sizeof **out);
    if (*out == NULL) {
        hm_tokens_free(ids);
        cli_error("%s: out of memory", in->name);
        return -1;
    }
    if (m > 0) /* ids may be NULL then, and memcpy must not see it */
        memcpy(*out, ids, m * sizeof *ids);
    hm_tokens_free(ids);
    *n = m;
    *cap = m ? m : 1;
    return 0;
}

/* The next record line of in, parsed: 1 (*o set, to be released), 0 at
 * the end, -1 on an error (message printed).  Blank lines are skipped;
 * every line read goes into the SHA-256. */
static int next_json_line(cli_input *in, json_t **o)
{
    for (;;) {
        ssize_t len = getline(&in->buf, &in->cap, in->f);
        if (len < 0) {
            if (ferror(in->f)) {
                cli_error("%s: read error: %s", in->name, strerror(errno));
                return -1;
            }
            return 0;
        }
        in->line++;
        EVP_DigestUpdate(in->md, in->buf, (size_t)len);
        size_t k = 0; /* (strchr finds a NUL byte: the string's end) */
        while (k < (size_t)len && in->buf[k] != '\0' &&
               strchr(" \t\r\n", in->buf[k]))
            k++;
        if (k == (size_t)len)
            continue; /* blank line */
        json_error_t err;
        *o = json_loadb(in->buf, (size_t)len, JSON_REJECT_DUPLICATES, &err);
        if (*o == NULL) {
            cli_error("%s:%lu: invalid JSON: %s (column %d)", in->name,
                      in->line, err.text, err.column);
            return -1;
        }
        return 1;
    }
}

int cli_input_next(cli_input *in, cli_doc *doc)
{
    if (in->plain) { /* the whole file is one document */
        if (in->line > 0)
            return 0;
        size_t cap = 1 << 16, len = 0;
        char *text = malloc(cap);
        for (size_t r; text && (r = fread(text + len, 1, cap - len, in->f)) > 0;) {
            len += r;
            if (len == cap) {
                char *nt = realloc(text, cap *= 2);
                if (nt == NULL)
                    free(text);
                text = nt;
            }
        }
        if (text == NULL || ferror(in->f)) {
            cli_error("%s: %s", in->name, text ? "read error" : "out of memory");
            free(text);
            return -1;
        }
        in->line = 1;
        EVP_DigestUpdate(in->md, text, len);
        int rc = tokenize_into(in, text, len, &doc->tokens, &doc->n_tokens,
                               &doc->cap_tokens);
        free(text);
        if (rc != 0)
            return -1;
        doc->n_prompt = 0;
        doc->file = in->name;
        doc->line = 1;
        snprintf(doc->id, sizeof doc->id, "%s", in->name);
        in->records++;
        return 1;
    }
    json_t *o;
    int rc = next_json_line(in, &o);
    if (rc != 1)
        return rc;
    rc = -1;
    json_t *tok = json_object_get(o, "tokens");
    json_t *pr = json_object_get(o, "prompt_tokens");
    json_t *id = json_object_get(o, "id");
    json_t *txt = json_object_get(o, "text");
    json_t *ptxt = json_object_get(o, "prompt");
    int from_text = tok == NULL && txt != NULL && in->tok != NULL;
    int prompt_text = pr == NULL && ptxt != NULL && in->tok != NULL;
    if (json_is_object(o) && (from_text || prompt_text) &&
        ((from_text && !json_is_string(txt)) ||
         (prompt_text && !json_is_string(ptxt)))) {
        cli_error("%s:%lu: 'text' and 'prompt' must be strings", in->name,
                  in->line);
        json_decref(o);
        return -1;
    }
    if (!json_is_object(o))
        cli_error("%s:%lu: a record must be a JSON object", in->name,
                  in->line);
    else if (pr == NULL && ptxt != NULL && in->tok == NULL)
        cli_error("%s:%lu: 'prompt' text needs a tokenizer: give "
                  "--tokenizer, or token ids in 'prompt_tokens'",
                  in->name, in->line);
    else if (tok == NULL && txt != NULL && in->tok == NULL)
        cli_error("%s:%lu: 'text' records need --tokenizer, or token "
                  "ids in 'tokens'",
                  in->name, in->line);
    else if (tok == NULL && !from_text)
        cli_error("%s:%lu: record has no 'tokens' or 'text'", in->name,
                  in->line);
    else if ((from_text
                  ? tokenize_into(in, json_string_value(txt),
                                  json_string_length(txt), &doc->tokens,
                                  &doc->n_tokens, &doc->cap_tokens)
                  : read_ids(in, tok, "tokens", &doc->tokens,
                             &doc->n_tokens, &doc->cap_tokens)) == 0 &&
             (prompt_text
                  ? tokenize_into(in, json_string_value(ptxt),
                                  json_string_length(ptxt), &doc->prompt,
                                  &doc->n_prompt, &doc->cap_prompt) == 0
                  : (pr == NULL ||
                     read_ids(in, pr, "prompt_tokens", &doc->prompt,
                              &doc->n_prompt, &doc->cap_prompt) == 0))) {
        if (pr == NULL && !prompt_text)
            doc->n_prompt = 0;
        doc->file = in->name;
        doc->line = in->line;
        if (json_is_string(id))
            snprintf(doc->id, sizeof doc->id, "%s", json_string_value(id));
        else if (json_is_integer(id))
            snprintf(doc->id, sizeof doc->id, "%lld",
                     (long long)json_integer_value(id));
        else if (id == NULL || json_is_null(id))
            snprintf(doc->id, sizeof doc->id, "%s:%lu", in->name,
                     in->line);
        else {
            cli_error("%s:%lu: 'id' must be a string or an integer",
                      in->name, in->line);
            json_decref(o);
            return -1;
        }
        rc = 1;
    }
    json_decref(o);
    if (rc == 1)
        in->records++;
    return rc;
}

void cli_doc_free(cli_doc *doc)
{
    free(doc->prompt);
    free(doc->tokens);
    memset(doc, 0, sizeof *doc);
}

/* --------------------------------------------- log-probability records */

int cli_grow(void **p, size_t *cap, size_t need, size_t elt)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 64;
    while (nc < need)
        nc *= 2;
    void *q = realloc(*p, nc * elt);
    if (q == NULL)
        return -1;
    *p = q;
    *cap = nc;
    return 0;
}

static int cmp_id(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* A token id listed twice, or -1 (-2: out of memory).  Not left to the
 * library: hm_greenmass_add refuses a repeat without saying which id or
 * where, and hm_spectral_share (hallmark probe) does not look. */
static long long repeated_id(const int32_t *ids, size_t n)
{
    if (n <= 64) {
        for (size_t i = 1; i < n; i++)
            for (size_t j = 0; j < i; j++)
                if (ids[i] == ids[j])
                    return ids[i];
        return -1;
    }
    int32_t *s = malloc(n * sizeof *s);
    if (s == NULL)
        return -2;
    memcpy(s, ids, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_id);
    long long r = -1;
    for (size_t i = 1; i < n && r < 0; i++)
        if (s[i] == s[i - 1])
            r = s[i];
    free(s);
    return r;
}

static int lp_record(cli_input *in, json_t *o, cli_lp *rec)
{
    if (!json_is_object(o)) {
        cli_error("%s:%lu: not a JSON object", in->name, in->line);
        return -1;
    }
    json_t *ids = json_object_get(o, "ids");
    json_t *lps = json_object_get(o, "logprobs");
    if (read_ids(in, json_object_get(o, "context"), "context", &rec->context,
                 &rec->n_context, &rec->cap_context) != 0)
        return -1;
    if (!json_is_array(ids) || !json_is_array(lps)) {
        cli_error("%s:%lu: 'ids' and 'logprobs' must be arrays",
                  in->name, in->line);
        return -1;
    }
    size_t k = json_array_size(ids);
    if (k != json_array_size(lps)) {
        cli_error("%s:%lu: 'ids' has %zu entries, 'logprobs' %zu",
                  in->name, in->line, k, json_array_size(lps));
        return -1;
    }
    if (k == 0) {
        cli_error("%s:%lu: no top-k entries", in->name, in->line);
        return -1;
    }
    if (cli_grow((void **)&rec->ids, &rec->cap_ids, k, sizeof *rec->ids) !=
            0 ||
        cli_grow((void **)&rec->logprobs, &rec->cap_lps, k,
                 sizeof *rec->logprobs) != 0) {
        cli_error("%s:%lu: out of memory", in->name, in->line);
        return -1;
    }
    for (size_t i = 0; i < k; i++) {
        json_t *x = json_array_get(lps, i);
        if (token_id(in, json_array_get(ids, i), "ids", i, &rec->ids[i]) != 0)
            return -1;
        if (!json_is_number(x)) {
            cli_error("%s:%lu: 'logprobs'[%zu] is not a number", in->name,
                      in->line, i);
            return -1;
        }
        double l = json_number_value(x);
        if (!(l <= 0)) {
            cli_error("%s:%lu: 'logprobs'[%zu] is %g: log-probabilities "
                      "are <= 0",
                      in->name, in->line, i, l);
            return -1;
        }
        rec->logprobs[i] = l;
    }
    /* the test hm_greenmass_add makes, here for hallmark probe too, whose
     * library calls do not look: a share of mass means nothing in a row
     * that is not part of one distribution */
    double mass = 0;
    for (size_t i = 0; i < k; i++)
        mass += exp(rec->logprobs[i]);
    if (mass > 1 + HM_GREENMASS_MASS_TOLERANCE) {
        cli_error("%s:%lu: the listed probabilities sum to %.6g, more than "
                  "1 (+%g): not log-probabilities of one distribution",
                  in->name, in->line, mass, HM_GREENMASS_MASS_TOLERANCE);
        return -1;
    }
    long long dup = repeated_id(rec->ids, k);
    if (dup != -1) {
        if (dup == -2)
            cli_error("%s:%lu: out of memory", in->name, in->line);
        else
            cli_error("%s:%lu: token %lld appears twice in 'ids'",
                      in->name, in->line, dup);
        return -1;
    }
    rec->n = k;
    rec->line = in->line;
    return 0;
}

int cli_input_next_lp(cli_input *in, cli_lp *rec)
{
    json_t *o;
    int rc = next_json_line(in, &o);
    if (rc != 1)
        return rc;
    rc = lp_record(in, o, rec);
    json_decref(o);
    if (rc != 0)
        return -1;
    in->records++;
    return 1;
}

void cli_lp_free(cli_lp *rec)
{
    free(rec->context);
    free(rec->ids);
    free(rec->logprobs);
    memset(rec, 0, sizeof *rec);
}

/* ------------------------------------------------------------ keys */

int cli_open_key(const char *path, hm_key **key, char *fp)
{
    char msg[HM_ERRMSG_SIZE];
    int rc = hm_key_load(key, path, msg, sizeof msg);
    if (rc != HM_OK) {
        if (rc == HM_EPERM || rc == HM_EFORMAT || rc == HM_EIO)
            cli_error("%s", msg);
        else
            cli_error("%s: %s", path, hm_strerror(rc));
        return -1;
    }
    if (fp != NULL && hm_key_fingerprint(*key, fp, HM_FINGERPRINT_SIZE) != HM_OK) {
        cli_error("%s: cannot compute the fingerprint", path);
        hm_key_free(*key);
        return -1;
    }
    return 0;
}

int cli_make_ctx(const hm_key *key, const char *spec, const char *tenant,
                 hm_ctx **ctx)
{
    char msg[HM_ERRMSG_SIZE] = "";
    int rc = hm_ctx_new(ctx, key, spec, tenant, msg, sizeof msg);
    if (rc != HM_OK) {
        cli_error("--scheme '%s': %s", spec, msg[0] ? msg : hm_strerror(rc));
        return -1;
    }
    return 0;
}

/* Join repeated --scheme options into one spec ("a+b"). */
int cli_add_scheme(char *spec, size_t cap, const char *s)
{
    size_t n = strlen(spec);
    if (n + strlen(s) + 2 > cap) {
        cli_error("--scheme: too long");
        return -1;
    }
    if (n)
        spec[n++] = '+';
    strcpy(spec + n, s);
    return 0;
}

/* ------------------------------------------------------ atomic files */

int cli_write_atomic(const char *path, const char *data, size_t len)
{
    char err[PATH_MAX + 128];
    if (ev_write_atomic(path, data, len, err, sizeof err) != 0) {
        cli_error("%s", err);
        return -1;
    }
    return 0;
}

/* A growable string for reports. */
int cli_buf_printf(cli_buf *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        int n = b->data ? vsnprintf(b->data + b->len, room, fmt, ap) : -2;
        va_end(ap);
        if (n >= 0 && (size_t)n < room) {
            b->len += (size_t)n;
            return 0;
        }
        if (n == -1)
            return -1;
        size_t need = b->len + (n > 0 ? (size_t)n : 0) + 1;
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < need)
            nc *= 2;
        char *nd = realloc(b->data, nc);
        if (nd == NULL)
            return -1;
        b->data = nd;
        b->cap = nc;
    }
}

void cli_buf_free(cli_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* Parse a number option. */
int cli_parse_double(const char *opt, const char *s, double lo, double hi,
                     double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        cli_error("%s: '%s' is not a number in [%g, %g]", opt, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_ll(const char *opt, const char *s, long long lo, long long hi,
                 long long *out)
{
    char *end;
    errno = 0;
    /* digits, after a minus only where negative values are allowed:
     * strtoll alone takes blanks, '+', and "-0" */
    int digits = (s[0] >= '0' && s[0] <= '9') ||
                 (lo < 0 && s[0] == '-' && s[1] >= '0' && s[1] <= '9');
    long long v = digits ? strtoll(s, &end, 10) : 0;
    if (!digits || errno || *end || v < lo || v > hi) {
        cli_error("%s: '%s' is not an integer in [%lld, %lld]", opt, s, lo,
                  hi);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_scoring_option(int c, const char *arg, double *alpha,
                       long long *vocab, unsigned *flags,
                       const char **tokspec)
{
    switch (c) {
    case 'a':
        return cli_parse_double("--alpha", arg, 1e-300, 1, alpha) != 0 ? -1
                                                                       : 1;
    case 'V':
        return cli_parse_ll("--vocab-size", arg, 1, INT32_MAX, vocab) != 0
                   ? -1
                   : 1;
    case 'P':
        *flags |= HM_TALLY_SKIP_PADDED;
        return 1;
    case 'Z':
        *tokspec = arg;
        return 1;
    case 'Y':
        cli_tok_flags |= HM_TOKENIZE_SPECIAL;
        return 1;
    default:
        return 0;
    }
}

/* SHA-256 of a whole file, as lower-case hex. */
int cli_sha256_file(const char *path, char hex[65])
{
    FILE *f = fopen(path, "rb");
    unsigned char buf[1 << 16], md[32];
    unsigned int n = 0;
    if (f == NULL) {
        cli_error("%s: %s", path, strerror(errno));
        return -1;
    }
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    int ok = c != NULL && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1;
    size_t r;
    while (ok && (r = fread(buf, 1, sizeof buf, f)) > 0)
        ok = EVP_DigestUpdate(c, buf, r) == 1;
    ok = ok && !ferror(f) && EVP_DigestFinal_ex(c, md, &n) == 1 && n == 32;
    EVP_MD_CTX_free(c);
    fclose(f);
    if (!ok) {
        cli_error("%s: cannot compute SHA-256", path);
        return -1;
    }
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return 0;
}
