/*
 * fuzz_input.c - fuzz target for the CLI's reader of suspect data
 * (tools/cli_input.c: cli_input_open, cli_input_next, cli_input_next_lp),
 * what hallmark verify, audit, audit --logprobs, probe and sketch parse.
 * The input is the contents of a file, written to a temporary file (one
 * per process, rewritten for each input, in $TMPDIR, else /dev/shm, else
 * /tmp) under two names: NAME.jsonl and NAME, which with a tokenizer is
 * read as plain text.  It is read to the
 * end or the first error as
 *   documents: without a vocabulary size and with one (VOCAB), without a
 *        tokenizer and with tests/vectors/tok-mini.tiktoken, and as a
 *        plain text file;
 *   log-probability records: without and with the vocabulary size.
 * Inputs of odd length are tokenized with HM_TOKENIZE_SPECIAL.
 * Checked: every call returns 1, 0 or -1, with exactly one message
 * ("NAME:..." and, when it gives a line, the reader's line) on -1 and none
 * otherwise; every returned document has ids in 0..2^31-1, below VOCAB
 * when it is set; every log-probability record has n >= 1 entries, ids
 * distinct and in range, log-probabilities <= 0 whose probabilities sum to
 * at most 1 + HM_GREENMASS_MASS_TOLERANCE, and hm_greenmass_add takes it;
 * record lines increase; at the end every line not returned as a record is
 * blank (spaces, tabs, CR), the line count is the file's, and the SHA-256
 * is the file's.  A stricter pass (a vocabulary size, no tokenizer)
 * returns a prefix of the records of a looser one, and when it stops
 * early, for an id the looser pass returned at or beyond VOCAB.  A plain
 * text file is one document, the tokenizer's encoding of the whole file.
 * Nothing may leak: memory (LeakSanitizer) or file descriptors.  The
 * files are removed at exit, and on a failed check outside libFuzzer.
 * Messages are kept; HM_FUZZ_VERBOSE=1 prints them.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cli.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Below tok-mini's 282 ids: text gives ids on both sides of it. */
#define VOCAB 200

/* What cli_input.c takes from the rest of the CLI (tools/hallmark.c and
 * tools/cli_tokenize.c). */
const char *hm_progname = "fuzz_input";
unsigned cli_tok_flags;

static int n_errors, verbose;
static char last_error[1024];

void cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    n_errors++;
    if (verbose)
        fprintf(stderr, "%s: %s\n", hm_progname, last_error);
}

/* ------------------------------------------------------------ setup */

static char path_jsonl[4096], path_plain[4096];
static int fd = -1;
static hm_tokenizer *tok;
static hm_ctx *gm_ctx;

static void cleanup(void)
{
    if (path_jsonl[0])
        unlink(path_jsonl);
    if (path_plain[0])
        unlink(path_plain);
    if (fd >= 0)
        close(fd);
    hm_tokenizer_free(tok);
    hm_ctx_free(gm_ctx);
}

/* A check failed (abort): the files go too, unless libFuzzer, which
 * handles SIGABRT itself, is running the target. */
static void on_abort(int sig)
{
    unlink(path_jsonl);
    unlink(path_plain);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void setup(void)
{
    const char *vec = getenv("HM_TEST_VECTORS");
    char p[4096], msg[HM_ERRMSG_SIZE];
    verbose = getenv("HM_FUZZ_VERBOSE") != NULL;
    snprintf(p, sizeof p, "%s/tok-mini.tiktoken", vec ? vec : "tests/vectors");
    if (hm_tokenizer_load_tiktoken(&tok, "cl100k_base", p, msg, sizeof msg) !=
        HM_OK) {
        fprintf(stderr, "fuzz_input: %s (set HM_TEST_VECTORS)\n", msg);
        abort();
    }
    hm_key *key = NULL;
    if (hm_key_from_label(&key, "fuzz-input", 0) != HM_OK ||
        hm_ctx_new(&gm_ctx, key, "kgw:h=2", NULL, NULL, 0) != HM_OK)
        abort();
    hm_key_free(key);

    const char *dir = getenv("TMPDIR");
    if (dir == NULL || dir[0] == '\0') /* memory, where there is one */
        dir = access("/dev/shm", W_OK | X_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(path_jsonl, sizeof path_jsonl, "%s/hm-fuzz-input-XXXXXX.jsonl",
             dir);
    fd = mkostemps(path_jsonl, 6, O_CLOEXEC);
    if (fd < 0) {
        perror(path_jsonl);
        abort();
    }
    snprintf(path_plain, sizeof path_plain, "%.*s",
             (int)(strlen(path_jsonl) - 6), path_jsonl);
    if (link(path_jsonl, path_plain) != 0) {
        perror(path_plain);
        path_plain[0] = '\0';
        cleanup();
        abort();
    }
    atexit(cleanup);
    struct sigaction sa;
    if (sigaction(SIGABRT, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
        signal(SIGABRT, on_abort);
}

static void write_input(const uint8_t *data, size_t size)
{
    if (ftruncate(fd, 0) != 0)
        abort();
    for (size_t at = 0; at < size;) {
        ssize_t w = pwrite(fd, data + at, size - at, (off_t)at);
        if (w <= 0)
            abort();
        at += (size_t)w;
    }
}

/* The lowest free descriptor: it moves when one leaks. */
static int lowest_free_fd(void)
{
    int f = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (f < 0)
        abort();
    close(f);
    return f;
}

/* ---------------------------------------------- the file, as a reference */

static const uint8_t *cur;
static size_t cur_size, n_lines;
static size_t *line_start; /* n_lines + 1 entries */
static unsigned char *is_record; /* per line, 1-based */
static unsigned char sha[32];

static void index_lines(const uint8_t *data, size_t size)
{
    cur = data;
    cur_size = size;
    n_lines = 0;
    for (size_t i = 0; i < size; i++)
        if (data[i] == '\n' || i + 1 == size)
            n_lines++;
    line_start = malloc((n_lines + 1) * sizeof *line_start);
    is_record = malloc(n_lines + 2);
    if (line_start == NULL || is_record == NULL)
        abort();
    size_t k = 0;
    line_start[0] = 0;
    for (size_t i = 0; i < size; i++)
        if (data[i] == '\n' || i + 1 == size)
            line_start[++k] = i + 1;
    unsigned int n = 0;
    if (EVP_Digest(data, size, sha, &n, EVP_sha256(), NULL) != 1 || n != 32)
        abort();
}

/* Line i (1-based) has only spaces, tabs, CR and its LF. */
static int blank_line(size_t i)
{
    for (size_t j = line_start[i - 1]; j < line_start[i]; j++)
        if (!strchr(" \t\r\n", cur[j]) || cur[j] == '\0')
            return 0;
    return 1;
}

/* --------------------------------------------------------- one pass */

typedef struct pass {
    int end;    /* 0: read to the end, -1: stopped at an error */
    size_t n;   /* records returned */
    uint64_t *h;      /* per record: a hash of its content */
    long long *maxid; /* per record: its largest id */
} pass;

static uint64_t mix(uint64_t h, const void *p, size_t len)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < len; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static void pass_add(pass *p, uint64_t h, long long maxid)
{
    if (p->n >= n_lines) /* more records than lines */
        abort();
    p->h[p->n] = h;
    p->maxid[p->n++] = maxid;
}

static void pass_init(pass *p)
{
    memset(p, 0, sizeof *p);
    p->h = malloc((n_lines + 1) * sizeof *p->h);
    p->maxid = malloc((n_lines + 1) * sizeof *p->maxid);
    if (p->h == NULL || p->maxid == NULL)
        abort();
    memset(is_record, 0, n_lines + 2);
}

static void pass_free(pass *p)
{
    free(p->h);
    free(p->maxid);
}

/* A call's messages: none on 0 and 1, one naming the file on -1, with
 * the line read last when it gives one. */
static void check_messages(const cli_input *in, int rc)
{
    if (rc != 1 && rc != 0 && rc != -1)
        abort();
    if (n_errors != (rc == -1))
        abort();
    if (rc == -1) {
        size_t nl = strlen(in->name);
        if (strncmp(last_error, in->name, nl) != 0 || last_error[nl] != ':')
            abort();
        const char *s = last_error + nl + 1;
        if (*s >= '0' && *s <= '9') {
            char *end;
            unsigned long l = strtoul(s, &end, 10);
            if (*end != ':' || l != in->line)
                abort();
        }
    }
    n_errors = 0;
}

/* After the last call: the lines read, and what they were. */
static void check_end(cli_input *in, const pass *p)
{
    if (in->records != p->n)
        abort();
    if (p->end == 0) {
        if (in->line != n_lines)
            abort();
        for (size_t i = 1; i <= n_lines; i++)
            if (!is_record[i] && !blank_line(i))
                abort(); /* a line neither read as a record nor blank */
    } else {
        /* stopped at line in->line, which is not blank */
        if (in->line < 1 || in->line > n_lines || is_record[in->line] ||
            blank_line(in->line))
            abort();
        for (size_t i = 1; i < in->line; i++)
            if (!is_record[i] && !blank_line(i))
                abort();
    }
    cli_input_close(in);
    if (p->end == 0 && memcmp(in->sha256, sha, 32) != 0)
        abort();
    if (p->end == 0 && in->sha256_hex[64] != '\0')
        abort();
}

static void check_record_line(const cli_input *in, unsigned long line,
                              unsigned long *prev)
{
    if (line != in->line || line <= *prev || line > n_lines)
        abort();
    *prev = line;
    is_record[line] = 1;
}

static long long check_ids(const int32_t *ids, size_t n, size_t cap,
                           long long vocab, long long maxid)
{
    if (n > cap || (n > 0 && ids == NULL))
        abort();
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (vocab > 0 && ids[i] >= vocab))
            abort();
        if (ids[i] > maxid)
            maxid = ids[i];
    }
    return maxid;
}

static void doc_pass(pass *p, const char *path, long long vocab,
                     const hm_tokenizer *t)
{
    cli_input in;
    cli_doc doc;
    memset(&doc, 0, sizeof doc);
    pass_init(p);
    if (cli_input_open(&in, path, vocab, t) != 0)
        abort();
    check_messages(&in, 0);
    unsigned long prev = 0;
    int rc;
    while ((rc = cli_input_next(&in, &doc)) == 1) {
        check_messages(&in, rc);
        check_record_line(&in, doc.line, &prev);
        if (doc.file != in.name || memchr(doc.id, 0, sizeof doc.id) == NULL)
            abort();
        long long m = check_ids(doc.tokens, doc.n_tokens, doc.cap_tokens,
                                vocab, -1);
        m = check_ids(doc.prompt, doc.n_prompt, doc.cap_prompt, vocab, m);
        uint64_t h = 0xcbf29ce484222325ULL;
        h = mix(h, &doc.n_tokens, sizeof doc.n_tokens);
        h = mix(h, doc.tokens, doc.n_tokens * sizeof *doc.tokens);
        h = mix(h, &doc.n_prompt, sizeof doc.n_prompt);
        h = mix(h, doc.prompt, doc.n_prompt * sizeof *doc.prompt);
        h = mix(h, doc.id, strlen(doc.id) + 1);
        h = mix(h, &doc.line, sizeof doc.line);
        pass_add(p, h, m);
    }
    check_messages(&in, rc);
    p->end = rc;
    cli_doc_free(&doc);
    check_end(&in, p);
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static void lp_pass(pass *p, long long vocab)
{
    cli_input in;
    cli_lp rec;
    hm_greenmass *gm = NULL;
    memset(&rec, 0, sizeof rec);
    pass_init(p);
    if (cli_input_open(&in, path_jsonl, vocab, NULL) != 0)
        abort();
    check_messages(&in, 0);
    unsigned long prev = 0;
    int rc;
    while ((rc = cli_input_next_lp(&in, &rec)) == 1) {
        check_messages(&in, rc);
        check_record_line(&in, rec.line, &prev);
        if (rec.n < 1 || rec.n > rec.cap_lps || rec.logprobs == NULL)
            abort();
        long long m = check_ids(rec.ids, rec.n, rec.cap_ids, vocab, -1);
        m = check_ids(rec.context, rec.n_context, rec.cap_context, vocab, m);
        double mass = 0;
        for (size_t i = 0; i < rec.n; i++) {
            if (!(rec.logprobs[i] <= 0))
                abort();
            mass += exp(rec.logprobs[i]);
        }
        if (!(mass <= 1 + HM_GREENMASS_MASS_TOLERANCE))
            abort();
        int32_t *s = malloc(rec.n * sizeof *s);
        if (s == NULL)
            abort();
        memcpy(s, rec.ids, rec.n * sizeof *s);
        qsort(s, rec.n, sizeof *s, cmp_i32);
        for (size_t i = 1; i < rec.n; i++)
            if (s[i] == s[i - 1])
                abort();
        free(s);
        /* what audit --logprobs does with it next */
        if (gm == NULL && hm_greenmass_new(&gm, (const hm_ctx *const *)&gm_ctx,
                                           1, 0, NULL, 0) != HM_OK)
            abort();
        if (hm_greenmass_add(gm, rec.context, rec.n_context, rec.ids,
                             rec.logprobs, rec.n) != HM_OK)
            abort();
        uint64_t h = 0xcbf29ce484222325ULL;
        h = mix(h, &rec.n_context, sizeof rec.n_context);
        h = mix(h, rec.context, rec.n_context * sizeof *rec.context);
        h = mix(h, &rec.n, sizeof rec.n);
        h = mix(h, rec.ids, rec.n * sizeof *rec.ids);
        h = mix(h, rec.logprobs, rec.n * sizeof *rec.logprobs);
        h = mix(h, &rec.line, sizeof rec.line);
        pass_add(p, h, m);
    }
    check_messages(&in, rc);
    p->end = rc;
    hm_greenmass_free(gm);
    cli_lp_free(&rec);
    check_end(&in, p);
}

/* A plain text file: one document, the encoding of the whole file,
 * refused when an id is at or beyond vocab (> 0). */
static void plain_pass(const uint8_t *data, size_t size, long long vocab)
{
    cli_input in;
    cli_doc doc;
    memset(&doc, 0, sizeof doc);
    if (cli_input_open(&in, path_plain, vocab, tok) != 0 || !in.plain)
        abort();
    int32_t *ids = NULL;
    size_t n = 0, invalid = 0;
    int want = hm_tokenizer_encode(tok, (const char *)data, size,
                                   cli_tok_flags, &ids, &n, &invalid);
    if (want == HM_OK && vocab > 0 && check_ids(ids, n, n, 0, -1) >= vocab) {
        hm_tokens_free(ids);
        want = HM_ERANGE;
    }
    int rc = cli_input_next(&in, &doc);
    check_messages(&in, rc);
    if (want != HM_OK) {
        if (rc != -1)
            abort();
    } else {
        if (rc != 1 || doc.n_tokens != n || doc.n_prompt != 0 ||
            doc.line != 1 || in.line != 1 || in.invalid_utf8 != invalid ||
            (n && memcmp(doc.tokens, ids, n * sizeof *ids) != 0) ||
            strcmp(doc.id, in.name) != 0)
            abort();
        rc = cli_input_next(&in, &doc);
        check_messages(&in, rc);
        if (rc != 0)
            abort();
        cli_input_close(&in);
        if (memcmp(in.sha256, sha, 32) != 0)
            abort();
    }
    if (want == HM_OK)
        hm_tokens_free(ids);
    cli_input_close(&in);
    cli_doc_free(&doc);
}

/* strict returns a prefix of loose's records; when it stops before loose
 * does, at a record loose returned with an id at or beyond vocab (0: no
 * reason to stop early). */
static void check_prefix(const pass *strict, const pass *loose,
                         long long vocab)
{
    if (strict->n > loose->n)
        abort();
    for (size_t i = 0; i < strict->n; i++)
        if (strict->h[i] != loose->h[i])
            abort();
    if (strict->end == 0 && (loose->end != 0 || loose->n != strict->n))
        abort();
    if (strict->end == -1 && loose->n > strict->n && vocab > 0 &&
        loose->maxid[strict->n] < vocab)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int base_fd = -1;
    if (fd < 0) {
        setup();
        base_fd = lowest_free_fd();
    }
    write_input(data, size);
    cli_tok_flags = size % 2 ? HM_TOKENIZE_SPECIAL : 0;
    index_lines(data, size);

    pass d0, dv, dt, dtv, l0, lv;
    doc_pass(&d0, path_jsonl, 0, NULL);
    doc_pass(&dv, path_jsonl, VOCAB, NULL);
    doc_pass(&dt, path_jsonl, 0, tok);
    doc_pass(&dtv, path_jsonl, VOCAB, tok);
    check_prefix(&dv, &d0, VOCAB);
    check_prefix(&d0, &dt, 0);
    check_prefix(&dv, &dtv, 0);
    check_prefix(&dtv, &dt, VOCAB);
    plain_pass(data, size, 0);
    plain_pass(data, size, VOCAB);
    lp_pass(&l0, 0);
    lp_pass(&lv, VOCAB);
    check_prefix(&lv, &l0, VOCAB);

    pass_free(&d0);
    pass_free(&dv);
    pass_free(&dt);
    pass_free(&dtv);
    pass_free(&l0);
    pass_free(&lv);
    free(line_start);
    free(is_record);
    line_start = NULL;
    is_record = NULL;
    if (lowest_free_fd() != base_fd)
        abort(); /* a descriptor leaked */
    return 0;
}
