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

static void expect_hf(const hm_tokenizer *t, unsigned flags, const char *text,
                      const int32_t *want, size_t n_want)
{
    int32_t *ids;
    size_t n;
    ck_assert_int_eq(hm_tokenizer_encode(t, text, strlen(text), flags, &ids,
                                         &n, NULL),
                     HM_OK);
    ck_assert_msg(n == n_want, "'%s': %zu ids, wanted %zu", text, n, n_want);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(ids[i] == want[i], "'%s': id %zu is %d, wanted %d",
                      text, i, ids[i], want[i]);
    hm_tokens_free(ids);
}

static void expect_ids(const hm_tokenizer *t, const char *text,
                       const int32_t *want, size_t n_want)
{
    expect_hf(t, 0, text, want, n_want);
}

START_TEST(test_known)
{
    hm_tokenizer *t = mini("r50k_base");
    ck_assert_str_eq(hm_tokenizer_name(t), "r50k_base");
    /* 282 ranks, and r50k's special token <|endoftext|> at 50256 */
    ck_assert_uint_eq(hm_tokenizer_vocab(t), 50257);
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
    /* U+180E is not a space (Unicode 6.3 on; tiktoken, HF), though PCRE2's
     * \s takes it: "'s" is not a contraction after it */
    expect_ids(t, "ab\xe1\xa0\x8e's", (int32_t[]){256, 0xe1, 0xa0, 0x8e, 39, 115},
               6);
    /* multi-byte UTF-8 merges */
    expect_ids(t, "caf\xc3\xa9", (int32_t[]){276}, 1);
    const unsigned char *b;
    size_t bl;
    ck_assert_int_eq(hm_tokenizer_piece(t, 276, &b, &bl), HM_OK);
    ck_assert_uint_eq(bl, 5);
    ck_assert_mem_eq(b, "caf\xc3\xa9", 5);
    ck_assert_int_eq(hm_tokenizer_piece(t, 282, &b, &bl), HM_ERANGE);
    ck_assert_int_eq(hm_tokenizer_piece(t, -1, &b, &bl), HM_ERANGE);
    ck_assert_int_eq(hm_tokenizer_piece(t, 50256, &b, &bl), HM_OK);
    ck_assert_mem_eq(b, "<|endoftext|>", bl);
    ck_assert_int_eq(hm_tokenizer_piece(t, 50257, &b, &bl), HM_ERANGE);
    hm_tokenizer_free(t);
}
END_TEST

#define MINI_RANKS 282 /* ranks in tok-mini.tiktoken */

/* tiktoken's rule, the slow way: rescan for the lowest-ranked adjacent
 * pair, leftmost on ties, until none is in the vocabulary. */
static size_t naive_bpe_below(const hm_tokenizer *t, const unsigned char *p,
                              size_t n, int32_t *out, int32_t limit)
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
            for (int32_t r = 0; r < limit; r++) {
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
        for (int32_t r = 0; r < limit; r++) {
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

static size_t naive_bpe(const hm_tokenizer *t, const unsigned char *p,
                        size_t n, int32_t *out)
{
    return naive_bpe_below(t, p, n, out, MINI_RANKS);
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
        ck_assert_int_eq(hm_tokenizer_encode(t, (const char *)p, n, 0, &ids, &ng,
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
    ck_assert_int_eq(hm_tokenizer_encode(t, p, n, 0, &ids, &ng, NULL), HM_OK);
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
    ck_assert_int_eq(hm_tokenizer_encode(t, text, sizeof text - 1, 0, &ids, &n,
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

/* ---------------------------------------------- Hugging Face tokenizer.json */

/* GPT-2's bytes_to_unicode: the character standing for byte b, as UTF-8,
 * JSON-escaped where needed. */
static size_t bl_char(unsigned b, char *out)
{
    unsigned c = b;
    if (!((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || b >= 0xae)) {
        unsigned n = 0;
        for (unsigned x = 0; x < b; x++)
            if (!((x >= '!' && x <= '~') || (x >= 0xa1 && x <= 0xac) ||
                  x >= 0xae))
                n++;
        c = 256 + n;
    }
    if (c == '"' || c == '\\') {
        out[0] = '\\';
        out[1] = (char)c;
        return 2;
    }
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    out[0] = (char)(0xc0 | c >> 6);
    out[1] = (char)(0x80 | (c & 0x3f));
    return 2;
}

static void put_bl(FILE *f, const unsigned char *b, size_t n)
{
    char buf[4];
    for (size_t i = 0; i < n; i++)
        fwrite(buf, 1, bl_char(b[i], buf), f);
}

static char *tmp_path(void)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/hm-tokjson-XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    return path;
}

/* tok-mini.tiktoken as a tokenizer.json: merges derived as HF's converter
 * does (each token's two parts under the ranks below it), in rank order;
 * pairs: ["a","b"] merges, else "a b". */
static hm_tokenizer *mini_as_hf(const char *pre, int ignore_merges,
                                int pairs, const char *added)
{
    hm_tokenizer *m = mini("r50k_base");
    const char *path = tmp_path();
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "{\"version\":\"1.0\",\"normalizer\":null,\"added_tokens\":%s,"
               "\"pre_tokenizer\":%s,\"model\":{\"type\":\"BPE\","
               "\"dropout\":null,\"unk_token\":null,"
               "\"continuing_subword_prefix\":\"\",\"end_of_word_suffix\":"
               "null,\"ignore_merges\":%s,\"vocab\":{",
            added, pre, ignore_merges ? "true" : "false");
    for (int32_t r = 0; r < MINI_RANKS; r++) {
        const unsigned char *b;
        size_t bl;
        ck_assert_int_eq(hm_tokenizer_piece(m, r, &b, &bl), HM_OK);
        fputs(r ? ",\"" : "\"", f);
        put_bl(f, b, bl);
        fprintf(f, "\":%d", (int)r);
    }
    fputs("},\"merges\":[", f);
    for (int32_t r = 256; r < MINI_RANKS; r++) {
        const unsigned char *b, *x;
        size_t bl, xl;
        ck_assert_int_eq(hm_tokenizer_piece(m, r, &b, &bl), HM_OK);
        /* the rescan limited to ranks below r: naive_bpe with a vocabulary
         * cut at r, done here by hand */
        int32_t parts[64];
        size_t np = naive_bpe_below(m, b, bl, parts, r);
        ck_assert_uint_eq(np, 2);
        ck_assert_int_eq(hm_tokenizer_piece(m, parts[0], &x, &xl), HM_OK);
        fputs(r > 256 ? (pairs ? ",[\"" : ",\"") : (pairs ? "[\"" : "\""),
              f);
        put_bl(f, x, xl);
        fputs(pairs ? "\",\"" : " ", f);
        ck_assert_int_eq(hm_tokenizer_piece(m, parts[1], &x, &xl), HM_OK);
        put_bl(f, x, xl);
        fputs(pairs ? "\"]" : "\"", f);
    }
    fputs("]}}\n", f);
    ck_assert_int_eq(fclose(f), 0);
    hm_tokenizer_free(m);
    char msg[HM_ERRMSG_SIZE] = "";
    hm_tokenizer *t = NULL;
    int rc = hm_tokenizer_load_hf(&t, path, msg, sizeof msg);
    unlink(path);
    ck_assert_msg(rc == HM_OK, "load: %s", msg);
    ck_assert_str_eq(hm_tokenizer_name(t), "tokenizer.json");
    return t;
}

/* Random text from pieces that exercise the patterns and the merges. */
static size_t random_text(uint64_t *s, char *out, size_t cap)
{
    static const char *const parts[] = {
        "a", "b", "c", "h", "e", "l", "o", "hello", " hello", "caf\xc3\xa9",
        " ", "  ", "\n", "\n\n", "\r\n", "\t", "1", "12", "1234", "'s", "'S",
        "'ll", "!", "?!", ".", "\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x98\x80",
        "<|endoftext|>", "<|endof", "\xff", "\xc3", "ab", "bab", "aaaa"};
    size_t n = 0, k = 1 + test_rand(s) % 40;
    for (size_t i = 0; i < k; i++) {
        const char *p = parts[test_rand(s) % (sizeof parts / sizeof *parts)];
        size_t l = strlen(p);
        if (n + l >= cap)
            break;
        memcpy(out + n, p, l);
        n += l;
    }
    return n;
}

static void expect_same(const hm_tokenizer *a, const hm_tokenizer *b,
                        unsigned flags, uint64_t seed)
{
    uint64_t s = seed;
    for (int rep = 0; rep < 2000; rep++) {
        char text[512];
        size_t n = random_text(&s, text, sizeof text);
        int32_t *x, *y;
        size_t nx, ny, ix, iy;
        ck_assert_int_eq(hm_tokenizer_encode(a, text, n, flags, &x, &nx, &ix),
                         HM_OK);
        ck_assert_int_eq(hm_tokenizer_encode(b, text, n, flags, &y, &ny, &iy),
                         HM_OK);
        ck_assert_uint_eq(ix, iy);
        ck_assert_msg(nx == ny && memcmp(x, y, nx * sizeof *x) == 0,
                      "'%.*s': %zu ids against %zu", (int)n, text, nx, ny);
        hm_tokens_free(x);
        hm_tokens_free(y);
    }
}

#define CL100K_JSON                                                          \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|"  \
    "\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|" \
    "\\\\s+(?!\\\\S)|\\\\s+"

/* Llama 3's shape (Split Isolated, then ByteLevel without its regex,
 * ignore_merges) and GPT-2's (ByteLevel with its regex, no ignore_merges)
 * give exactly the ids of the same vocabulary as a rank file. */
START_TEST(test_hf_equals_tiktoken)
{
    const char *specials =
        "[{\"id\":100257,\"content\":\"<|endoftext|>\",\"single_word\":false,"
        "\"lstrip\":false,\"rstrip\":false,\"normalized\":false,"
        "\"special\":true}]";
    hm_tokenizer *tk = mini("cl100k_base");
    for (int pairs = 0; pairs < 2; pairs++) {
        hm_tokenizer *hf = mini_as_hf(
            "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\","
            "\"pattern\":{\"Regex\":\"" CL100K_JSON "\"},\"behavior\":"
            "\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\","
            "\"add_prefix_space\":false,\"trim_offsets\":true,"
            "\"use_regex\":false}]}",
            1, pairs, specials);
        expect_same(tk, hf, 0, 11 + (uint64_t)pairs);
        expect_same(tk, hf, HM_TOKENIZE_SPECIAL, 21 + (uint64_t)pairs);
        hm_tokenizer_free(hf);
    }
    hm_tokenizer_free(tk);
    tk = mini("r50k_base");
    hm_tokenizer *hf = mini_as_hf(
        "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
        "\"trim_offsets\":true,\"use_regex\":true}",
        0, 0,
        "[{\"id\":50256,\"content\":\"<|endoftext|>\",\"special\":true}]");
    expect_same(tk, hf, 0, 31);
    expect_same(tk, hf, HM_TOKENIZE_SPECIAL, 32);
    ck_assert_uint_eq(hm_tokenizer_vocab(hf), 50257);
    hm_tokenizer_free(hf);
    hm_tokenizer_free(tk);
}
END_TEST

/* A vocabulary of the 256 bytes (ids = byte values) plus extra tokens,
 * with the given pre-tokenizer, merges and added tokens. */
static int load_hf_text(const char *pre, const char *extra_vocab,
                        const char *merges, const char *model_extra,
                        const char *added, hm_tokenizer **t, char *msg)
{
    const char *path = tmp_path();
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "{\"normalizer\":null,\"pre_tokenizer\":%s,\"added_tokens\":"
               "%s,\"model\":{\"type\":\"BPE\"%s,\"vocab\":{",
            pre, added, model_extra);
    for (unsigned b = 0; b < 256; b++) {
        unsigned char c = (unsigned char)b;
        fputs(b ? ",\"" : "\"", f);
        put_bl(f, &c, 1);
        fprintf(f, "\":%u", b);
    }
    fprintf(f, "%s},\"merges\":%s}}", extra_vocab, merges);
    ck_assert_int_eq(fclose(f), 0);
    *t = NULL;
    msg[0] = '\0';
    int rc = hm_tokenizer_load_hf(t, path, msg, HM_ERRMSG_SIZE);
    unlink(path);
    return rc;
}

#define BYTELEVEL "{\"type\":\"ByteLevel\",\"add_prefix_space\":false," \
                  "\"use_regex\":false}"

static hm_tokenizer *hf_small(const char *pre, const char *extra,
                              const char *merges, const char *model_extra,
                              const char *added)
{
    char msg[HM_ERRMSG_SIZE];
    hm_tokenizer *t;
    int rc = load_hf_text(pre, extra, merges, model_extra, added, &t, msg);
    ck_assert_msg(rc == HM_OK, "load: %s", msg);
    return t;
}


START_TEST(test_hf_features)
{
    /* ignore_merges: "xyz" is in the vocabulary but no merge makes it */
    const char *xyz = ",\"xy\":256,\"xyz\":257";
    hm_tokenizer *t = hf_small(BYTELEVEL, xyz, "[\"x y\"]", "", "[]");
    expect_hf(t, 0, "xyz", (int32_t[]){256, 'z'}, 2);
    hm_tokenizer_free(t);
    t = hf_small(BYTELEVEL, xyz, "[[\"x\",\"y\"]]", ",\"ignore_merges\":true",
                 "[]");
    expect_hf(t, 0, "xyz", (int32_t[]){257}, 1);
    expect_hf(t, 0, "xyzz", (int32_t[]){256, 'z', 'z'}, 3);
    hm_tokenizer_free(t);

    /* Split Removed: the matches go; with invert, only the matches stay */
    t = hf_small("{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":"
                 "\"Split\",\"pattern\":{\"String\":\" \"},\"behavior\":"
                 "\"Removed\",\"invert\":false}," BYTELEVEL "]}",
                 xyz, "[\"x y\"]", ",\"ignore_merges\":true", "[]");
    expect_hf(t, 0, "xyz  xy", (int32_t[]){257, 256}, 2);
    hm_tokenizer_free(t);
    t = hf_small("{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":"
                 "\"Split\",\"pattern\":{\"Regex\":\"\\\\p{L}+\"},"
                 "\"behavior\":\"Removed\",\"invert\":true}," BYTELEVEL "]}",
                 xyz, "[\"x y\"]", ",\"ignore_merges\":true", "[]");
    expect_hf(t, 0, "xyz, 12 xy!", (int32_t[]){257, 256}, 2);
    hm_tokenizer_free(t);

    /* an empty match yields nothing and loses no byte */
    t = hf_small("{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":"
                 "\"Split\",\"pattern\":{\"Regex\":\"y*\"},\"behavior\":"
                 "\"Isolated\",\"invert\":false}," BYTELEVEL "]}",
                 xyz, "[\"x y\"]", ",\"ignore_merges\":true", "[]");
    expect_hf(t, 0, "axyzb", (int32_t[]){'a', 'x', 'y', 'z', 'b'}, 5);
    hm_tokenizer_free(t);

    /* add_prefix_space: a space before each piece that lacks one */
    t = hf_small("{\"type\":\"ByteLevel\",\"add_prefix_space\":true,"
                 "\"use_regex\":true}",
                 "", "[]", "", "[]");
    expect_hf(t, 0, "ab c", (int32_t[]){' ', 'a', 'b', ' ', 'c'}, 5);
    hm_tokenizer_free(t);

    /* added tokens: not special ones always, special ones on request;
     * lstrip/rstrip take the spaces around; single_word needs word
     * boundaries */
    t = hf_small(BYTELEVEL, "", "[]", "",
                 "[{\"id\":300,\"content\":\"<sep>\",\"special\":false,"
                 "\"lstrip\":true,\"rstrip\":true},"
                 "{\"id\":301,\"content\":\"<s>\",\"special\":true},"
                 "{\"id\":302,\"content\":\"ok\",\"single_word\":true},"
                 "{\"id\":303,\"content\":\"<sep><s>\",\"special\":true}]");
    ck_assert_uint_eq(hm_tokenizer_vocab(t), 304);
    expect_hf(t, 0, "a <sep>  b<s>",
              (int32_t[]){'a', 300, 'b', '<', 's', '>'}, 6);
    expect_hf(t, HM_TOKENIZE_SPECIAL, "a <sep>  b<s>",
              (int32_t[]){'a', 300, 'b', 301}, 4);
    /* leftmost-longest: <sep><s> (special) over <sep> */
    expect_hf(t, HM_TOKENIZE_SPECIAL, "<sep><s>", (int32_t[]){303}, 1);
    expect_hf(t, 0, "book ok", (int32_t[]){'b', 'o', 'o', 'k', ' ', 302}, 6);
    const unsigned char *b;
    size_t bl;
    ck_assert_int_eq(hm_tokenizer_piece(t, 300, &b, &bl), HM_OK);
    ck_assert_mem_eq(b, "<sep>", bl);
    hm_tokenizer_free(t);
}
END_TEST

static void expect_hf_error(const char *pre, const char *merges,
                            const char *model_extra, int want_rc,
                            const char *want_msg)
{
    char msg[HM_ERRMSG_SIZE];
    hm_tokenizer *t;
    int rc = load_hf_text(pre, "", merges, model_extra, "[]", &t, msg);
    ck_assert_msg(rc == want_rc, "rc %d, wanted %d (%s)", rc, want_rc, msg);
    ck_assert_msg(strstr(msg, want_msg) != NULL, "'%s' lacks '%s'", msg,
                  want_msg);
    ck_assert_ptr_null(t);
}

START_TEST(test_hf_errors)
{
    expect_hf_error(BYTELEVEL, "[]", ",\"dropout\":0.1", HM_ENOTSUP,
                    "model.dropout");
    expect_hf_error(BYTELEVEL, "[]", ",\"continuing_subword_prefix\":\"##\"",
                    HM_ENOTSUP, "model.continuing_subword_prefix");
    expect_hf_error("{\"type\":\"Metaspace\"}", "[]", "", HM_ENOTSUP,
                    "pre_tokenizer.type 'Metaspace' is not supported");
    expect_hf_error("{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":"
                    "\"Split\",\"pattern\":{\"String\":\" \"},\"behavior\":"
                    "\"MergedWithPrevious\"}," BYTELEVEL "]}",
                    "[]", "", HM_ENOTSUP,
                    "pre_tokenizer.pretokenizers[0].behavior "
                    "'MergedWithPrevious'");
    expect_hf_error("{\"type\":\"Sequence\",\"pretokenizers\":[" BYTELEVEL
                    ",{\"type\":\"Split\",\"pattern\":{\"String\":\" \"},"
                    "\"behavior\":\"Isolated\"}]}",
                    "[]", "", HM_ENOTSUP, "after ByteLevel");
    expect_hf_error("{\"type\":\"Split\",\"pattern\":{\"String\":\" \"},"
                    "\"behavior\":\"Isolated\"}",
                    "[]", "", HM_ENOTSUP, "no ByteLevel");
    expect_hf_error("{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":"
                    "\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":"
                    "\"Isolated\"}," BYTELEVEL "]}",
                    "[]", "", HM_ENOTSUP, "does not compile");
    expect_hf_error(BYTELEVEL, "[\"q zz\"]", "", HM_EFORMAT,
                    "model.merges[0]: its second token is not in");
    expect_hf_error(BYTELEVEL, "[\"q z\"]", "", HM_EFORMAT,
                    "model.merges[0]: the merged token");
    expect_hf_error(BYTELEVEL, "[\"q  z\"]", "", HM_EFORMAT,
                    "model.merges[0]: expected");
    expect_hf_error(BYTELEVEL, "[1]", "", HM_EFORMAT, "model.merges[0]");

    /* whole-file problems: JSON syntax (with line), normalizer, no bytes */
    char msg[HM_ERRMSG_SIZE];
    const char *path = tmp_path();
    static const struct {
        const char *text, *want;
        int rc;
    } bad[] = {
        {"{\"model\":\n{\"type\":}", ":2:", HM_EFORMAT},
        {"[1]", "not a tokenizer.json object", HM_EFORMAT},
        {"{\"pre_tokenizer\":" BYTELEVEL ",\"model\":{\"type\":\"Unigram\","
         "\"vocab\":[]}}",
         "model.type 'Unigram' is not supported (only BPE)", HM_ENOTSUP},
        {"{\"pre_tokenizer\":" BYTELEVEL ",\"model\":{\"type\":\"WordPiece\"}}",
         "model.type 'WordPiece' is not supported", HM_ENOTSUP},
        {"{\"normalizer\":{\"type\":\"NFC\"}}",
         "normalizer: type 'NFC' is not supported", HM_ENOTSUP},
        {"{\"normalizer\":null,\"pre_tokenizer\":null}", "pre_tokenizer: null",
         HM_ENOTSUP},
        {"{\"pre_tokenizer\":" BYTELEVEL ",\"model\":{\"vocab\":{\"a\":0},"
         "\"merges\":[]}}",
         "no token for byte 0x00", HM_ENOTSUP},
        {"{\"pre_tokenizer\":" BYTELEVEL ",\"model\":{\"vocab\":{\"a\":-1},"
         "\"merges\":[]}}",
         "model.vocab[\"a\"]: bad id", HM_EFORMAT},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        FILE *f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        fputs(bad[i].text, f);
        fclose(f);
        hm_tokenizer *t = NULL;
        int rc = hm_tokenizer_load_hf(&t, path, msg, sizeof msg);
        ck_assert_msg(rc == bad[i].rc && strstr(msg, bad[i].want) != NULL,
                      "case %zu: rc %d, '%s'", i, rc, msg);
        ck_assert_msg(strstr(msg, path) != NULL, "no file name in '%s'", msg);
        ck_assert_ptr_null(t);
    }
    unlink(path);
    hm_tokenizer *t = NULL;
    ck_assert_int_eq(hm_tokenizer_load_hf(&t, "/nonexistent/t.json", msg,
                                          sizeof msg),
                     HM_EIO);
}
END_TEST

/* Special tokens of the presets: ordinary text unless asked for. */
START_TEST(test_preset_specials)
{
    hm_tokenizer *t = mini("cl100k_base");
    expect_hf(t, HM_TOKENIZE_SPECIAL, "a<|fim_middle|>b",
              (int32_t[]){'a', 100259, 'b'}, 3);
    expect_hf(t, HM_TOKENIZE_SPECIAL, "<|endofprompt|>", (int32_t[]){100276},
              1);
    int32_t *ids;
    size_t n;
    ck_assert_int_eq(hm_tokenizer_encode(t, "<|endoftext|>", 13, 0, &ids, &n,
                                         NULL),
                     HM_OK);
    ck_assert_uint_gt(n, 1);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_lt(ids[i], MINI_RANKS);
    hm_tokens_free(ids);
    ck_assert_int_eq(hm_tokenizer_encode(t, "a", 1, 0x80, &ids, &n, NULL),
                     HM_EINVAL);
    hm_tokenizer_free(t);
    t = mini("llama3");
    expect_hf(t, HM_TOKENIZE_SPECIAL,
              "<|begin_of_text|><|eot_id|><|reserved_special_token_4|>"
              "<|reserved_special_token_250|>",
              (int32_t[]){128000, 128009, 128008, 128255}, 4);
    ck_assert_uint_eq(hm_tokenizer_vocab(t), 128256);
    hm_tokenizer_free(t);
    t = mini("o200k_base");
    expect_hf(t, HM_TOKENIZE_SPECIAL, "<|endoftext|>", (int32_t[]){199999},
              1);
    hm_tokenizer_free(t);
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
    tcase_add_test(tc, test_hf_equals_tiktoken);
    tcase_add_test(tc, test_hf_features);
    tcase_add_test(tc, test_hf_errors);
    tcase_add_test(tc, test_preset_specials);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run(tokenizer_suite());
}
