/*
 * test_tokenizer.c - byte-level BPE on a small committed vocabulary
 * (tests/vectors/tok-mini.tiktoken: every byte, then a few merges):
 * hand-checked encodings, the heap merge against tiktoken's quadratic
 * rule on random pieces, invalid UTF-8, and malformed rank files.  The
 * real vocabularies are compared with tiktoken in tests/tokenizer-diff.sh.
 */
#include <stdint.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "testutil.h"

static hm_tokenizer *mini(const char *preset)
{
    char path[4096], msg[HM_ERRMSG_SIZE] = "";
    hm_tokenizer *t = NULL;
    snprintf(path, sizeof path, "%s/tok-mini.tiktoken", test_vectors_dir());
    int rc = hm_tokenizer_load_tiktoken(&t, preset, path, msg, sizeof msg);
    ck_assert_msg(rc == HM_OK, "load: %s", msg);
    return t;
}

static void expect_ids(const hm_tokenizer *t, const char *text,
                       const int32_t *want, size_t n_want)
{
    int32_t *ids;
    size_t n;
    ck_assert_int_eq(hm_tokenizer_encode(t, text, strlen(text), &ids, &n,
                                         NULL),
                     HM_OK);
    ck_assert_msg(n == n_want, "'%s': %zu ids, wanted %zu", text, n, n_want);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(ids[i] == want[i], "'%s': id %zu is %d, wanted %d",
                      text, i, ids[i], want[i]);
    hm_tokens_free(ids);
}

START_TEST(test_known)
{
    hm_tokenizer *t = mini("r50k_base");
    ck_assert_str_eq(hm_tokenizer_name(t), "r50k_base");
    ck_assert_uint_eq(hm_tokenizer_vocab(t), 282);
    ck_assert_uint_eq(strlen(hm_tokenizer_digest(t)), 64);
    /* whole-piece lookups, merges in rank order, a leading space */
    expect_ids(t, "hello", (int32_t[]){269}, 1);
    expect_ids(t, " hello", (int32_t[]){270}, 1);
    expect_ids(t, "abc", (int32_t[]){258}, 1);
    /* "abcab": ab(256) first, then bc is gone; abc(258) from ab+c */
    expect_ids(t, "abcab", (int32_t[]){258, 256}, 2);
    /* "aaaaa": aa|a|a|a, aa|aa|a, then aaa(260) beats aaaa(261) */
    expect_ids(t, "aaaaa", (int32_t[]){259, 260}, 2);
    /* ties go left: "bab" pieces b,a,b: ab(256) beats ba(271) */
    expect_ids(t, "bab", (int32_t[]){272}, 1);
    expect_ids(t, "cabab", (int32_t[]){265, 256}, 2); /* c,ab,ab; cab */
    /* pre-tokenization: contractions, numbers, whitespace */
    expect_ids(t, "it's", (int32_t[]){105, 116, 281}, 3);
    expect_ids(t, "123 12", (int32_t[]){280, 32, 279}, 3);
    expect_ids(t, "", NULL, 0);
    /* multi-byte UTF-8 merges */
    expect_ids(t, "caf\xc3\xa9", (int32_t[]){276}, 1);
    const unsigned char *b;
    size_t bl;
    ck_assert_int_eq(hm_tokenizer_piece(t, 276, &b, &bl), HM_OK);
    ck_assert_uint_eq(bl, 5);
    ck_assert_mem_eq(b, "caf\xc3\xa9", 5);
    ck_assert_int_eq(hm_tokenizer_piece(t, 282, &b, &bl), HM_ERANGE);
    ck_assert_int_eq(hm_tokenizer_piece(t, -1, &b, &bl), HM_ERANGE);
    hm_tokenizer_free(t);
}
END_TEST

/* tiktoken's rule, the slow way: rescan for the lowest-ranked adjacent
 * pair, leftmost on ties, until none is in the vocabulary. */
static size_t naive_bpe(const hm_tokenizer *t, const unsigned char *p,
                        size_t n, int32_t *out)
{
    static size_t start[4096];
    size_t parts = n;
    for (size_t i = 0; i <= n; i++)
        start[i] = i;
    for (;;) {
        int32_t best = INT32_MAX;
        size_t at = 0;
        for (size_t i = 0; i + 1 < parts; i++) {
            /* rank of parts i and i+1 together: search the vocabulary */
            size_t len = start[i + 2] - start[i];
            for (int32_t r = 0; r < (int32_t)hm_tokenizer_vocab(t); r++) {
                const unsigned char *b;
                size_t bl;
                if (hm_tokenizer_piece(t, r, &b, &bl) == HM_OK &&
                    bl == len && memcmp(b, p + start[i], len) == 0) {
                    if (r < best) {
                        best = r;
                        at = i;
                    }
                    break;
                }
            }
        }
        if (best == INT32_MAX)
            break;
        memmove(&start[at + 1], &start[at + 2],
                (parts - at - 1) * sizeof start[0]);
        parts--;
    }
    for (size_t i = 0; i < parts; i++) {
        size_t len = start[i + 1] - start[i];
        for (int32_t r = 0; r < (int32_t)hm_tokenizer_vocab(t); r++) {
            const unsigned char *b;
            size_t bl;
            if (hm_tokenizer_piece(t, r, &b, &bl) == HM_OK && bl == len &&
                memcmp(b, p + start[i], len) == 0) {
                out[i] = r;
                break;
            }
        }
    }
    return parts;
}

/* Letters only make one piece under r50k's pattern, so the encoder's
 * heap merge can be compared with the rescan on random pieces. */
START_TEST(test_heap_matches_rescan)
{
    hm_tokenizer *t = mini("r50k_base");
    uint64_t s = 3;
    static const char alpha[] = "aabbcch";
    for (int rep = 0; rep < 300; rep++) {
        unsigned char p[200];
        size_t n = 1 + test_rand(&s) % 120;
        for (size_t i = 0; i < n; i++)
            p[i] = (unsigned char)alpha[test_rand(&s) % 7];
        int32_t want[200], *ids;
        size_t nw = naive_bpe(t, p, n, want), ng;
        ck_assert_int_eq(hm_tokenizer_encode(t, (const char *)p, n, &ids, &ng,
                                             NULL),
                         HM_OK);
        ck_assert_uint_eq(ng, nw);
        ck_assert_mem_eq(ids, want, nw * sizeof *want);
        hm_tokens_free(ids);
    }
    hm_tokenizer_free(t);
}
END_TEST

/* A long piece with no split point is not quadratic (1 MB in well under
 * a second is checked in the benchmark; here it must simply finish). */
START_TEST(test_long_piece)
{
    hm_tokenizer *t = mini("cl100k_base");
    size_t n = 300000;
    char *p = malloc(n);
    ck_assert_ptr_nonnull(p);
    memset(p, 'a', n);
    int32_t *ids;
    size_t ng;
    ck_assert_int_eq(hm_tokenizer_encode(t, p, n, &ids, &ng, NULL), HM_OK);
    /* the pieces spell the text, and merging happened */
    size_t at = 0;
    for (size_t i = 0; i < ng; i++) {
        const unsigned char *b;
        size_t bl;
        ck_assert_int_eq(hm_tokenizer_piece(t, ids[i], &b, &bl), HM_OK);
        if (at + bl > n || memcmp(b, p + at, bl) != 0)
            ck_abort_msg("piece %zu does not match the text", i);
        at += bl;
    }
    ck_assert_uint_eq(at, n);
    ck_assert_uint_lt(ng, n / 2);
    hm_tokens_free(ids);
    free(p);
    hm_tokenizer_free(t);
}
END_TEST

/* Invalid UTF-8 is tokenized byte-wise and counted. */
START_TEST(test_invalid_utf8)
{
    hm_tokenizer *t = mini("cl100k_base");
    const char text[] = "ab\xff\xfe""ab \xc3";
    int32_t *ids;
    size_t n, invalid;
    ck_assert_int_eq(hm_tokenizer_encode(t, text, sizeof text - 1, &ids, &n,
                                         &invalid),
                     HM_OK);
    ck_assert_uint_eq(invalid, 3);
    int32_t want[] = {256, 255, 254, 256, 32, 195};
    ck_assert_uint_eq(n, 6);
    ck_assert_mem_eq(ids, want, sizeof want);
    hm_tokens_free(ids);
    hm_tokenizer_free(t);
}
END_TEST

static int load_text(const char *text, const char *preset, char *msg)
{
    char path[] = "/tmp/hm-tok-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    hm_tokenizer *t = NULL;
    int rc = hm_tokenizer_load_tiktoken(&t, preset, path, msg,
                                        HM_ERRMSG_SIZE);
    hm_tokenizer_free(t);
    unlink(path);
    return rc;
}

START_TEST(test_bad_files)
{
    char msg[HM_ERRMSG_SIZE];
    ck_assert_int_eq(load_text("YQ== 0\n", "gpt9", msg), HM_EINVAL);
    ck_assert_msg(strstr(msg, "unknown tokenizer preset") != NULL, "%s", msg);
    ck_assert_int_eq(load_text("YQ== 0\nYg==\n", "r50k_base", msg),
                     HM_EFORMAT);
    ck_assert_msg(strstr(msg, ":2: expected") != NULL, "%s", msg);
    ck_assert_int_eq(load_text("YQ== x\n", "r50k_base", msg), HM_EFORMAT);
    ck_assert_msg(strstr(msg, ":1: bad rank") != NULL, "%s", msg);
    ck_assert_int_eq(load_text("Y*== 0\n", "r50k_base", msg), HM_EFORMAT);
    ck_assert_msg(strstr(msg, ":1: bad base64") != NULL, "%s", msg);
    ck_assert_int_eq(load_text("YQ== 0\nYQ== 1\n", "r50k_base", msg),
                     HM_EFORMAT);
    ck_assert_msg(strstr(msg, ":2: the same bytes") != NULL, "%s", msg);
    ck_assert_int_eq(load_text("YQ== 0\nYg== 0\n", "r50k_base", msg),
                     HM_EFORMAT);
    ck_assert_msg(strstr(msg, ":2: rank 0 given twice") != NULL, "%s", msg);
    ck_assert_int_eq(load_text("YQ== 0\n", "r50k_base", msg), HM_EFORMAT);
    ck_assert_msg(strstr(msg, "no token for byte 0x00") != NULL, "%s", msg);
    ck_assert_int_eq(load_text("", "r50k_base", msg), HM_EFORMAT);
    hm_tokenizer *t = NULL;
    ck_assert_int_eq(hm_tokenizer_load_tiktoken(&t, "r50k_base",
                                                "/nonexistent/x", msg,
                                                sizeof msg),
                     HM_EIO);
    ck_assert_msg(strstr(msg, "/nonexistent/x") != NULL, "%s", msg);
    ck_assert_ptr_null(t);
}
END_TEST

static Suite *tokenizer_suite(void)
{
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_known);
    tcase_add_test(tc, test_heap_matches_rescan);
    tcase_add_test(tc, test_long_piece);
    tcase_add_test(tc, test_invalid_utf8);
    tcase_add_test(tc, test_bad_files);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run(tokenizer_suite());
}
