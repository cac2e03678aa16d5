/*
 * fuzz_tokenizer.c - fuzz target for the tokenizer's parsers and encoder.
 * The first byte picks what the rest is:
 *   'j': a tokenizer.json, 'r': a tiktoken rank file (preset cl100k_base);
 *        either loads and then encodes a fixed text whose pieces must
 *        spell it, or fails with a message naming the file;
 *   anything else: text, encoded with tests/vectors/tok-mini.tiktoken and
 *        tok-mini.json (the same vocabulary), with and without special
 *        tokens: both give the same ids, and the pieces spell the text.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hallmark.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The pieces of ids, concatenated, are text. */
static void check_spells(const hm_tokenizer *t, const char *text, size_t n,
                         const int32_t *ids, size_t n_ids)
{
    size_t at = 0;
    for (size_t i = 0; i < n_ids; i++) {
        const unsigned char *b;
        size_t bl;
        if (hm_tokenizer_piece(t, ids[i], &b, &bl) != HM_OK || at + bl > n ||
            memcmp(b, text + at, bl) != 0)
            abort();
        at += bl;
    }
    if (at != n)
        abort();
}

static void encode_checked(const hm_tokenizer *t, const char *text, size_t n,
                           unsigned flags, int32_t **ids, size_t *n_ids)
{
    if (hm_tokenizer_encode(t, text, n, flags, ids, n_ids, NULL) != HM_OK)
        abort();
    check_spells(t, text, n, *ids, *n_ids);
}

static hm_tokenizer *mini(int json)
{
    const char *dir = getenv("HM_TEST_VECTORS");
    char path[4096], msg[HM_ERRMSG_SIZE];
    hm_tokenizer *t = NULL;
    snprintf(path, sizeof path, "%s/tok-mini.%s", dir ? dir : "tests/vectors",
             json ? "json" : "tiktoken");
    if ((json ? hm_tokenizer_load_hf(&t, path, msg, sizeof msg)
              : hm_tokenizer_load_tiktoken(&t, "cl100k_base", path, msg,
                                           sizeof msg)) != HM_OK) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", msg);
        abort();
    }
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static hm_tokenizer *tk, *hf;
    static char path[64];
    if (tk == NULL) {
        tk = mini(0);
        hf = mini(1);
        snprintf(path, sizeof path, "/tmp/hm-fuzz-tok-%ld", (long)getpid());
    }
    if (size == 0)
        return 0;
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    if (data[0] == 'j' || data[0] == 'r') {
        FILE *f = fopen(path, "wb");
        if (f == NULL || (n && fwrite(text, 1, n, f) != n))
            abort();
        fclose(f);
        char msg[HM_ERRMSG_SIZE] = "";
        hm_tokenizer *t = NULL;
        int rc = data[0] == 'j'
                     ? hm_tokenizer_load_hf(&t, path, msg, sizeof msg)
                     : hm_tokenizer_load_tiktoken(&t, "cl100k_base", path,
                                                  msg, sizeof msg);
        unlink(path);
        if (rc == HM_OK) {
            static const char sample[] =
                "Hello, world! It's 1234 caf\xc3\xa9 \xff\n\n  <|endoftext|>";
            int32_t *ids;
            size_t n_ids;
            if (t == NULL)
                abort();
            for (unsigned flags = 0; flags < 2; flags++) {
                /* HM_ERANGE: a fuzzed pattern hit PCRE2's match limit.
                 * (Pieces need not spell the text: added tokens with
                 * lstrip or rstrip take the spaces around them.) */
                rc = hm_tokenizer_encode(t, sample, sizeof sample - 1, flags,
                                         &ids, &n_ids, NULL);
                if (rc == HM_OK)
                    hm_tokens_free(ids);
                else if (rc != HM_ERANGE)
                    abort();
            }
            hm_tokenizer_free(t);
        } else if (t != NULL || msg[0] == '\0' ||
                   strncmp(msg, path, strlen(path)) != 0) {
            abort();
        }
        return 0;
    }
    for (unsigned flags = 0; flags < 2; flags++) {
        int32_t *a, *b;
        size_t na, nb;
        encode_checked(tk, text, n, flags, &a, &na);
        encode_checked(hf, text, n, flags, &b, &nb);
        if (flags == 0 && (na != nb || (na && memcmp(a, b, na * sizeof *a) != 0)))
            abort();
        hm_tokens_free(a);
        hm_tokens_free(b);
    }
    return 0;
}
