/*
 * tokenizer.c - byte-level BPE exactly as the teacher's tokenizer does it:
 * tiktoken rank files with the presets' patterns and special tokens, and
 * Hugging Face tokenizer.json files (BPE model, ByteLevel, Split).
 *
 * Encoding runs in four stages:
 *   1. added tokens: HF added tokens that are not special are always cut
 *      out of the text (as HF does); special tokens only when the caller
 *      asks (HM_TOKENIZE_SPECIAL).  Leftmost-longest, as HF's and
 *      tiktoken's matchers do for these sets.
 *   2. invalid UTF-8: maximal runs of bytes that are not valid UTF-8 are
 *      taken out and merged byte-wise as one piece, and counted; what is
 *      left is valid UTF-8, so PCRE2 runs without its own checks.
 *   3. pre-tokenization: a list of steps, each run on every piece the
 *      previous one produced: Split (PCRE2, UTF + UCP, JIT; Isolated or
 *      Removed, with invert) and ByteLevel (optional prefix space, optional
 *      GPT-2 pattern).  A tiktoken preset is one Isolated Split.
 *   4. merges: each piece is looked up whole (tiktoken; HF with
 *      ignore_merges), and otherwise merged from its bytes: repeatedly the
 *      adjacent pair with the lowest merge rank, the leftmost on ties.  For
 *      tiktoken a pair's rank is the rank of its concatenation; for HF the
 *      pair must be listed in model.merges, and its rank is its index.  A
 *      heap of candidate pairs with lazy invalidation makes that
 *      O(n log n) in the piece length, where the usual rescan is
 *      quadratic.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <xxhash.h>

#define EMPTY UINT32_MAX
#define MAX_TOKEN_BYTES 4096
#define MAX_STEPS 8
#define MAX_ID (1u << 24) /* ids are below; real vocabularies have < 1M */

/* GPT-2's pattern: ByteLevel's use_regex, and r50k/p50k (tiktoken). */
#define GPT2_PATTERN                                                         \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+"      \
    "|\\s+(?!\\S)|\\s+"
#define CL100K_PATTERN                                                       \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}" \
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define O200K_PATTERN                                                        \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*"            \
    "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"            \
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+"           \
    "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"            \
    "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)" \
    "|\\s+"

/* Special tokens of the presets (tiktoken_ext/openai_public.py; Meta's
 * Llama 3 tokenizer.py).  Llama 3's 256 are generated below. */
typedef struct preset_special {
    const char *text;
    uint32_t id;
} preset_special;

static const preset_special gpt2_specials[] = {{"<|endoftext|>", 50256}};
static const preset_special cl100k_specials[] = {
    {"<|endoftext|>", 100257}, {"<|fim_prefix|>", 100258},
    {"<|fim_middle|>", 100259}, {"<|fim_suffix|>", 100260},
    {"<|endofprompt|>", 100276}};
static const preset_special o200k_specials[] = {{"<|endoftext|>", 199999},
                                                {"<|endofprompt|>", 200018}};

/* The presets: tiktoken's pre-tokenization patterns (pat_str), verbatim. */
static const struct preset {
    const char *name;
    const char *pattern;
    const preset_special *specials;
    size_t n_specials; /* llama3: 0, generated */
} presets[] = {
    {"r50k_base", GPT2_PATTERN, gpt2_specials, 1},
    {"p50k_base", GPT2_PATTERN, gpt2_specials, 1},
    {"cl100k_base", CL100K_PATTERN, cl100k_specials, 5},
    /* Llama 3: tiktoken-style ranks with cl100k's pattern */
    {"llama3", CL100K_PATTERN, NULL, 0},
    {"o200k_base", O200K_PATTERN, o200k_specials, 2},
};

enum { STEP_SPLIT, STEP_BYTELEVEL };

typedef struct pre_step {
    int kind;
    pcre2_code *re;   /* Split: its pattern; ByteLevel: GPT-2's or NULL */
    int keep_match;   /* pieces the pattern matched are kept */
    int keep_gap;     /* pieces between matches are kept */
    int prefix_space; /* ByteLevel add_prefix_space */
} pre_step;

typedef struct added_token {
    uint32_t off, len; /* content, in the arena */
    uint32_t id;
    unsigned char special, lstrip, rstrip, single_word, normalized;
} added_token;

struct hm_tokenizer {
    char name[32];
    char digest[65]; /* SHA-256 of the loaded file, hex */
    pre_step steps[MAX_STEPS];
    size_t n_steps;
    int ignore_merges;  /* whole-piece lookup before merging */
    size_t n_ids;       /* largest id + 1 */
    unsigned char *arena;
    size_t arena_used, arena_cap;
    uint32_t *off;      /* per id: offset in arena (EMPTY: unused id) */
    uint16_t *len;      /* per id: byte length */
    uint32_t *slot;     /* bytes -> id, open addressing (model vocab only) */
    size_t mask;
    uint32_t byte_id[256];
    /* HF merges: (left id, right id) -> (rank, merged id); NULL for
     * tiktoken, where a pair's rank is its concatenation's id */
    uint64_t *pair_key;
    uint32_t *pair_val; /* [2 * i]: rank, [2 * i + 1]: merged id */
    size_t pair_mask;
    added_token *added;
    size_t n_added;
    uint16_t first_lo[257]; /* added tokens sorted by first byte: CSR */
    /* [normalized][special tokens parsed]: how many added tokens a pass of
     * encode_added can match (none: the pass is skipped) */
    size_t n_matchable[2][2];
    pcre2_code *word_re;    /* single_word: a word character */
};

/* ------------------------------------------------------------ lookup */

static uint32_t lookup(const hm_tokenizer *t, const unsigned char *b,
                       size_t n)
{
    if (n == 1)
        return t->byte_id[b[0]];
    if (n > MAX_TOKEN_BYTES)
        return EMPTY;
    size_t i = (size_t)XXH3_64bits(b, n) & t->mask;
    for (uint32_t r; (r = t->slot[i]) != EMPTY; i = (i + 1) & t->mask)
        if (t->len[r] == n && memcmp(t->arena + t->off[r], b, n) == 0)
            return r;
    return EMPTY;
}

static size_t pair_hash(uint64_t key, size_t mask)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 29) & mask;
}

/* HF: the merge of ids a and b, if model.merges lists it. */
static int pair_find(const hm_tokenizer *t, uint32_t a, uint32_t b,
                     uint32_t *rank, uint32_t *id)
{
    uint64_t key = (uint64_t)a << 32 | b;
    for (size_t i = pair_hash(key, t->pair_mask);; i = (i + 1) & t->pair_mask) {
        if (t->pair_key[i] == UINT64_MAX)
            return 0;
        if (t->pair_key[i] == key) {
            *rank = t->pair_val[2 * i];
            *id = t->pair_val[2 * i + 1];
            return 1;
        }
    }
}

/* ----------------------------------------------------------- loading */

static int tok_alloc(hm_tokenizer *t, size_t n_ids, size_t arena_hint)
{
    size_t cap = 16;
    while (cap < 2 * n_ids)
        cap *= 2;
    t->n_ids = n_ids;
    t->mask = cap - 1;
    t->arena_cap = arena_hint + 16;
    t->arena = malloc(t->arena_cap);
    t->off = malloc(n_ids * sizeof *t->off);
    t->len = calloc(n_ids, sizeof *t->len);
    t->slot = malloc(cap * sizeof *t->slot);
    if (!t->arena || !t->off || !t->len || !t->slot)
        return HM_ENOMEM;
    memset(t->off, 0xff, n_ids * sizeof *t->off);
    memset(t->slot, 0xff, cap * sizeof *t->slot);
    for (int b = 0; b < 256; b++)
        t->byte_id[b] = EMPTY;
    return HM_OK;
}

static int arena_put(hm_tokenizer *t, const unsigned char *b, size_t n,
                     uint32_t *off)
{
    if (t->arena_used + n > t->arena_cap) {
        size_t nc = 2 * t->arena_cap + n;
        if (nc > UINT32_MAX)
            return HM_ERANGE;
        unsigned char *na = realloc(t->arena, nc);
        if (na == NULL)
            return HM_ENOMEM;
        t->arena = na;
        t->arena_cap = nc;
    }
    memcpy(t->arena + t->arena_used, b, n);
    *off = (uint32_t)t->arena_used;
    t->arena_used += n;
    return HM_OK;
}

/* Give id the bytes b; hashed: the model's vocabulary, found by bytes.
 * 1: the id is taken; 2: the bytes are taken; < 0: an HM_E code. */
static int set_token(hm_tokenizer *t, uint32_t id, const unsigned char *b,
                     size_t n, int hashed)
{
    if (t->off[id] != EMPTY)
        return 1;
    size_t i = (size_t)XXH3_64bits(b, n) & t->mask;
    if (hashed)
        for (uint32_t r; (r = t->slot[i]) != EMPTY; i = (i + 1) & t->mask)
            if (t->len[r] == n && memcmp(t->arena + t->off[r], b, n) == 0)
                return 2;
    uint32_t off;
    int rc = arena_put(t, b, n, &off);
    if (rc != HM_OK)
        return rc;
    t->off[id] = off;
    t->len[id] = (uint16_t)n;
    if (hashed) {
        t->slot[i] = id;
        if (n == 1)
            t->byte_id[b[0]] = id;
    }
    return 0;
}

static int add_added(hm_tokenizer *t, size_t *cap, const char *text,
                     size_t n, uint32_t id, int special, int lstrip,
                     int rstrip, int single_word, int normalized)
{
    if (t->n_added == *cap) {
        size_t nc = *cap ? 2 * *cap : 16;
        added_token *na = realloc(t->added, nc * sizeof *na);
        if (na == NULL)
            return HM_ENOMEM;
        t->added = na;
        *cap = nc;
    }
    added_token *a = &t->added[t->n_added];
    int rc = arena_put(t, (const unsigned char *)text, n, &a->off);
    if (rc != HM_OK)
        return rc;
    a->len = (uint32_t)n;
    a->id = id;
    a->special = (unsigned char)special;
    a->lstrip = (unsigned char)lstrip;
    a->rstrip = (unsigned char)rstrip;
    a->single_word = (unsigned char)single_word;
    a->normalized = (unsigned char)normalized;
    t->n_added++;
    if (t->off[id] == EMPTY) { /* an id of its own: its piece is its text */
        t->off[id] = a->off;
        t->len[id] = (uint16_t)n;
    }
    return HM_OK;
}

/* Index the added tokens by their first byte (a counting sort). */
static int index_added(hm_tokenizer *t)
{
    if (t->n_added > UINT16_MAX)
        return HM_ERANGE;
    added_token *sorted = malloc((t->n_added + 1) * sizeof *sorted);
    if (sorted == NULL)
        return HM_ENOMEM;
    size_t count[257] = {0};
    for (size_t i = 0; i < t->n_added; i++)
        count[t->arena[t->added[i].off] + 1]++;
    for (int b = 0; b < 256; b++)
        count[b + 1] += count[b];
    for (int b = 0; b <= 256; b++)
        t->first_lo[b] = (uint16_t)count[b];
    for (size_t i = 0; i < t->n_added; i++) {
        const added_token *a = &t->added[i];
        sorted[count[t->arena[a->off]]++] = *a;
        for (int sp = 0; sp < 2; sp++)
            t->n_matchable[a->normalized][sp] += !a->special || sp;
    }
    free(t->added);
    t->added = sorted;
    return HM_OK;
}

/* Unicode White_Space, which is \s for tiktoken's Rust regex and for HF's
 * Oniguruma.  PCRE2's \s (UCP) also takes U+180E (through \h), which
 * Unicode stopped calling a space in 6.3: written out, \s means the same
 * in all three. */
#define WHITE_SPACE                                                          \
    "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}"     \
    "\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

/* The pattern with \s and \S written out (outside \Q...\E); NULL when out
 * of memory. */
static char *rewrite_space(const char *p, size_t n, size_t *outlen)
{
    size_t cap = n * 8 + sizeof WHITE_SPACE * 4 + 16, k = 0;
    char *o = malloc(cap);
    if (o == NULL)
        return NULL;
    int in_class = 0, quoted = 0;
    for (size_t i = 0; i < n; i++) {
        if (k + sizeof WHITE_SPACE + 8 > cap) {
            char *no = realloc(o, cap *= 2);
            if (no == NULL) {
                free(o);
                return NULL;
            }
            o = no;
        }
        char c = p[i];
        if (quoted) {
            if (c == '\\' && i + 1 < n && p[i + 1] == 'E') {
                quoted = 0;
                o[k++] = p[i++];
            }
            o[k++] = p[i];
            continue;
        }
        if (c == '\\' && i + 1 < n) {
            char d = p[++i];
            const char *w = NULL;
            if (d == 's')
                w = in_class ? WHITE_SPACE : "[" WHITE_SPACE "]";
            else if (d == 'S' && !in_class)
                w = "[^" WHITE_SPACE "]";
            if (w != NULL) {
                memcpy(o + k, w, strlen(w));
                k += strlen(w);
                continue;
            }
            if (d == 'Q')
                quoted = 1;
            o[k++] = c;
            o[k++] = d;
            continue;
        }
        if (c == '[' && !in_class) {
            in_class = 1;
            o[k++] = c;
            /* a ']' first in the class is literal */
            if (i + 1 < n && p[i + 1] == '^')
                o[k++] = p[++i];
            if (i + 1 < n && p[i + 1] == ']')
                o[k++] = p[++i];
            continue;
        }
        if (c == '[' && in_class && i + 1 < n && p[i + 1] == ':') {
            const char *e = memchr(p + i, ']', n - i); /* [:alpha:] */
            size_t l = e ? (size_t)(e - (p + i)) + 1 : 1;
            memcpy(o + k, p + i, l);
            k += l;
            i += l - 1;
            continue;
        }
        if (c == ']' && in_class)
            in_class = 0;
        o[k++] = c;
    }
    *outlen = k;
    return o;
}

static pcre2_code *compile(const char *pattern, size_t len, uint32_t opts,
                           char *why, size_t whylen)
{
    int err;
    PCRE2_SIZE at;
    char *rewritten = NULL;
    if ((opts & PCRE2_LITERAL) == 0) {
        if (len == PCRE2_ZERO_TERMINATED)
            len = strlen(pattern);
        if ((rewritten = rewrite_space(pattern, len, &len)) == NULL) {
            snprintf(why, whylen, "out of memory");
            return NULL;
        }
        pattern = rewritten;
        opts |= PCRE2_UCP; /* PCRE2_LITERAL allows no UCP, nor needs it */
    }
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, len, PCRE2_UTF | opts,
                                   &err, &at, NULL);
    free(rewritten);
    if (re == NULL) {
        PCRE2_UCHAR buf[160];
        pcre2_get_error_message(err, buf, sizeof buf);
        snprintf(why, whylen, "(%s)", (const char *)buf);
        return NULL;
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional */
    return re;
}

static int read_file(const char *path, char **text, size_t *size,
                     char *digest, char *errmsg, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        hm_errf(errmsg, errlen, "%s: %s", path, strerror(errno));
        return HM_EIO;
    }
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap + 1);
    int rc = buf ? HM_OK : HM_ENOMEM;
    for (size_t r; rc == HM_OK && (r = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += r;
        if (n == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (nb == NULL)
                rc = HM_ENOMEM;
            else {
                buf = nb;
                cap *= 2;
            }
        }
    }
    if (rc == HM_OK && ferror(f)) {
        hm_errf(errmsg, errlen, "%s: read error", path);
        rc = HM_EIO;
    }
    fclose(f);
    if (rc == HM_OK) {
        unsigned char md[32];
        buf[n] = '\0';
        if (EVP_Digest(buf, n, md, NULL, EVP_sha256(), NULL) != 1)
            rc = HM_ECRYPTO;
        for (int i = 0; i < 32; i++)
            snprintf(digest + 2 * i, 3, "%02x", md[i]);
    }
    if (rc != HM_OK) {
        free(buf);
        return rc;
    }
    *text = buf;
    *size = n;
    return HM_OK;
}

/* ------------------------------------------------- tiktoken rank files */

static int parse_ranks(hm_tokenizer *t, const char *path, char *text,
                       size_t size, size_t min_ids, char *errmsg,
                       size_t errlen)
{
    /* pass 1: count lines, largest rank, arena size */
    size_t lines = 0, arena = 0;
    unsigned long long maxrank = 0;
    for (char *p = text; p < text + size;) {
        char *nl = memchr(p, '\n', (size_t)(text + size - p));
        char *e = nl ? nl : text + size;
        char *sp = memchr(p, ' ', (size_t)(e - p));
        lines++;
        if (e > p && e[-1] == '\r')
            e--;
        if (e == p) { /* blank line */
            p = nl ? nl + 1 : text + size;
            continue;
        }
        if (sp == NULL || sp == p) {
            hm_errf(errmsg, errlen,
                    "%s:%zu: expected '<base64 bytes> <rank>'", path, lines);
            return HM_EFORMAT;
        }
        char *end;
        errno = 0;
        unsigned long long r = strtoull(sp + 1, &end, 10);
        if (errno || end != e || sp[1] < '0' || sp[1] > '9' || r >= MAX_ID) {
            hm_errf(errmsg, errlen, "%s:%zu: bad rank", path, lines);
            return HM_EFORMAT;
        }
        if (r > maxrank)
            maxrank = r;
        arena += (size_t)(sp - p) / 4 * 3 + 3;
        p = nl ? nl + 1 : text + size;
    }
    if (lines == 0) {
        hm_errf(errmsg, errlen, "%s: empty rank file", path);
        return HM_EFORMAT;
    }
    size_t n_ids = (size_t)maxrank + 1 > min_ids ? (size_t)maxrank + 1
                                                 : min_ids;
    int rc = tok_alloc(t, n_ids, arena + 4096);
    if (rc != HM_OK)
        return rc;
    unsigned char *buf = malloc(MAX_TOKEN_BYTES * 2);
    if (buf == NULL)
        return HM_ENOMEM;
    /* pass 2: decode and insert */
    size_t line = 0;
    for (char *p = text; rc == HM_OK && p < text + size;) {
        char *nl = memchr(p, '\n', (size_t)(text + size - p));
        char *e = nl ? nl : text + size;
        line++;
        if (e > p && e[-1] == '\r')
            e--;
        if (e == p) {
            p = nl ? nl + 1 : text + size;
            continue;
        }
        char *sp = memchr(p, ' ', (size_t)(e - p));
        size_t b64 = (size_t)(sp - p);
        uint32_t rank = (uint32_t)strtoull(sp + 1, NULL, 10);
        int n = b64 % 4 == 0 && b64 <= MAX_TOKEN_BYTES * 4 / 3 + 4
                    ? EVP_DecodeBlock(buf, (const unsigned char *)p, (int)b64)
                    : -1;
        if (n < 0) {
            hm_errf(errmsg, errlen, "%s:%zu: bad base64", path, line);
            rc = HM_EFORMAT;
            break;
        }
        /* EVP_DecodeBlock counts the padding as zero bytes */
        if (b64 >= 1 && p[b64 - 1] == '=')
            n--;
        if (b64 >= 2 && p[b64 - 2] == '=')
            n--;
        if (n <= 0 || n > MAX_TOKEN_BYTES) {
            hm_errf(errmsg, errlen, "%s:%zu: token of %d bytes", path, line,
                    n);
            rc = HM_EFORMAT;
            break;
        }
        int s = set_token(t, rank, buf, (size_t)n, 1);
        if (s == 1) {
            hm_errf(errmsg, errlen, "%s:%zu: rank %lu given twice", path,
                    line, (unsigned long)rank);
            rc = HM_EFORMAT;
        } else if (s == 2) {
            hm_errf(errmsg, errlen,
                    "%s:%zu: the same bytes as an earlier rank", path, line);
            rc = HM_EFORMAT;
        } else if (s < 0)
            rc = s;
        p = nl ? nl + 1 : text + size;
    }
    free(buf);
    if (rc != HM_OK)
        return rc;
    for (int b = 0; b < 256; b++)
        if (t->byte_id[b] == EMPTY) {
            hm_errf(errmsg, errlen,
                    "%s: no token for byte 0x%02x: not a byte-level BPE "
                    "vocabulary",
                    path, b);
            return HM_EFORMAT;
        }
    return HM_OK;
}

/* Llama 3's special tokens (Meta's tokenizer.py, Llama 3.0): 128000 on. */
static void llama3_special(uint32_t i, char *buf, size_t len)
{
    static const char *const named[] = {
        "<|begin_of_text|>", "<|end_of_text|>", NULL, NULL, NULL, NULL,
        "<|start_header_id|>", "<|end_header_id|>", NULL, "<|eot_id|>"};
    if (i < 10 && named[i] != NULL)
        snprintf(buf, len, "%s", named[i]);
    else /* reserved 0-3 at 2-5, 4 at 8, 5-250 from 10 */
        snprintf(buf, len, "<|reserved_special_token_%u|>",
                 i < 6 ? i - 2 : i == 8 ? 4 : i - 5);
}

int hm_tokenizer_load_tiktoken(hm_tokenizer **out, const char *preset,
                               const char *path, char *errmsg, size_t errlen)
{
    if (out == NULL || preset == NULL || path == NULL)
        return HM_EINVAL;
    *out = NULL;
    const struct preset *pr = NULL;
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (strcmp(presets[i].name, preset) == 0)
            pr = &presets[i];
    if (pr == NULL) {
        hm_errf(errmsg, errlen,
                "unknown tokenizer preset '%s' (r50k_base, p50k_base, "
                "cl100k_base, o200k_base or llama3)",
                preset);
        return HM_EINVAL;
    }
    int llama = strcmp(pr->name, "llama3") == 0;
    size_t n_special = llama ? 256 : pr->n_specials, min_ids = 0;
    for (size_t i = 0; i < n_special; i++) {
        uint32_t id = llama ? 128000 + (uint32_t)i : pr->specials[i].id;
        if (id + (size_t)1 > min_ids)
            min_ids = id + (size_t)1;
    }
    char *text = NULL;
    size_t size = 0;
    hm_tokenizer *t = calloc(1, sizeof *t);
    if (t == NULL)
        return HM_ENOMEM;
    int rc = read_file(path, &text, &size, t->digest, errmsg, errlen);
    if (rc == HM_OK) {
        snprintf(t->name, sizeof t->name, "%s", pr->name);
        rc = parse_ranks(t, path, text, size, min_ids, errmsg, errlen);
    }
    free(text);
    size_t cap = 0;
    for (size_t i = 0; rc == HM_OK && i < n_special; i++) {
        char buf[64];
        const char *s = buf;
        uint32_t id;
        if (llama) {
            llama3_special((uint32_t)i, buf, sizeof buf);
            id = 128000 + (uint32_t)i;
        } else {
            s = pr->specials[i].text;
            id = pr->specials[i].id;
        }
        if (t->off[id] != EMPTY) {
            hm_errf(errmsg, errlen,
                    "%s: rank %lu is %s's special token %s: not a %s rank "
                    "file",
                    path, (unsigned long)id, pr->name, s, pr->name);
            rc = HM_EFORMAT;
        } else
            rc = add_added(t, &cap, s, strlen(s), id, 1, 0, 0, 0, 0);
    }
    if (rc == HM_OK)
        rc = index_added(t);
    if (rc == HM_OK) {
        char why[200];
        t->steps[0].kind = STEP_SPLIT;
        t->steps[0].keep_match = t->steps[0].keep_gap = 1;
        t->steps[0].re = compile(pr->pattern, PCRE2_ZERO_TERMINATED, 0, why,
                                 sizeof why);
        t->n_steps = 1;
        t->ignore_merges = 1;
        if (t->steps[0].re == NULL) {
            hm_errf(errmsg, errlen, "pattern of %s does not compile: %s",
                    pr->name, why);
            rc = HM_ENOTSUP;
        }
    }
    if (rc != HM_OK) {
        hm_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return HM_OK;
}

/* ----------------------------------------- Hugging Face tokenizer.json */

/* GPT-2's bytes_to_unicode, inverted: code point -> byte (or -1). */
static void byte_level_table(int16_t inv[324])
{
    for (int c = 0; c < 324; c++)
        inv[c] = -1;
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) ||
                        (b >= 0xae && b <= 0xff);
        inv[printable ? b : 256 + n++] = (int16_t)b;
    }
}

/* A vocabulary string in GPT-2's byte-to-character mapping, as bytes.
 * -1 when it is not such a string. */
static int byte_level_decode(const int16_t inv[324], const char *s, size_t n,
                             unsigned char *out, size_t *outn)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        unsigned c = (unsigned char)s[i];
        if (c < 0x80)
            i++;
        else if ((c & 0xe0) == 0xc0 && i + 1 < n) {
            c = (c & 0x1f) << 6 | ((unsigned char)s[i + 1] & 0x3f);
            i += 2;
        } else
            return -1; /* 3- and 4-byte characters are never mapped */
        if (c >= 324 || inv[c] < 0 || k == MAX_TOKEN_BYTES)
            return -1;
        out[k++] = (unsigned char)inv[c];
    }
    *outn = k;
    return 0;
}

typedef struct hf_load {
    hm_tokenizer *t;
    const char *path;
    char *errmsg;
    size_t errlen;
    int have_bytelevel;
} hf_load;

#define HF_FAIL(L, code, ...)                                                 \
    do {                                                                      \
        char m_[HM_ERRMSG_SIZE];                                              \
        snprintf(m_, sizeof m_, __VA_ARGS__);                                 \
        hm_errf((L)->errmsg, (L)->errlen, "%s: %s", (L)->path, m_);           \
        return (code);                                                        \
    } while (0)

static int json_flag(hf_load *L, json_t *obj, const char *where,
                     const char *key, int dflt, int *out)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v))
        *out = dflt;
    else if (json_is_boolean(v))
        *out = json_is_true(v);
    else
        HF_FAIL(L, HM_EFORMAT, "%s.%s: expected true or false", where, key);
    return HM_OK;
}

static int hf_step(hf_load *L, json_t *pt, const char *where)
{
    hm_tokenizer *t = L->t;
    char why[200];
    if (!json_is_object(pt))
        HF_FAIL(L, HM_EFORMAT, "%s: expected an object", where);
    const char *type = json_string_value(json_object_get(pt, "type"));
    if (type == NULL)
        HF_FAIL(L, HM_EFORMAT, "%s.type: missing", where);
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(pt, "pretokenizers");
        if (!json_is_array(list))
            HF_FAIL(L, HM_EFORMAT, "%s.pretokenizers: expected an array",
                    where);
        for (size_t i = 0; i < json_array_size(list); i++) {
            char sub[128];
            snprintf(sub, sizeof sub, "%s.pretokenizers[%zu]", where, i);
            int rc = hf_step(L, json_array_get(list, i), sub);
            if (rc != HM_OK)
                return rc;
        }
        return HM_OK;
    }
    if (L->have_bytelevel)
        HF_FAIL(L, HM_ENOTSUP,
                "%s: a %s step after ByteLevel is not supported", where,
                type);
    if (t->n_steps == MAX_STEPS)
        HF_FAIL(L, HM_ENOTSUP, "%s: more than %d pre-tokenizers", where,
                MAX_STEPS);
    pre_step *st = &t->steps[t->n_steps];
    int rc;
    if (strcmp(type, "ByteLevel") == 0) {
        int use_regex;
        if ((rc = json_flag(L, pt, where, "add_prefix_space", 1,
                            &st->prefix_space)) != HM_OK ||
            (rc = json_flag(L, pt, where, "use_regex", 1, &use_regex)) !=
                HM_OK)
            return rc;
        st->kind = STEP_BYTELEVEL;
        if (use_regex &&
            (st->re = compile(GPT2_PATTERN, PCRE2_ZERO_TERMINATED, 0, why,
                              sizeof why)) == NULL)
            HF_FAIL(L, HM_ENOTSUP, "GPT-2's pattern does not compile: %s",
                    why);
        L->have_bytelevel = 1;
        t->n_steps++;
        return HM_OK;
    }
    if (strcmp(type, "Split") != 0)
        HF_FAIL(L, HM_ENOTSUP,
                "%s.type '%s' is not supported (only Split, ByteLevel and "
                "Sequence)",
                where, type);
    json_t *pat = json_object_get(pt, "pattern");
    json_t *rx = json_object_get(pat, "Regex");
    json_t *str = json_object_get(pat, "String");
    const char *behavior = json_string_value(json_object_get(pt, "behavior"));
    int invert;
    if ((rc = json_flag(L, pt, where, "invert", 0, &invert)) != HM_OK)
        return rc;
    if (!json_is_string(rx) && !json_is_string(str))
        HF_FAIL(L, HM_EFORMAT,
                "%s.pattern: expected {\"Regex\": ...} or {\"String\": ...}",
                where);
    if (behavior == NULL)
        HF_FAIL(L, HM_EFORMAT, "%s.behavior: missing", where);
    st->kind = STEP_SPLIT;
    if (strcmp(behavior, "Isolated") == 0)
        st->keep_match = st->keep_gap = 1;
    else if (strcmp(behavior, "Removed") == 0) {
        st->keep_match = invert;
        st->keep_gap = !invert;
    } else
        HF_FAIL(L, HM_ENOTSUP,
                "%s.behavior '%s' is not supported (only Isolated and "
                "Removed)",
                where, behavior);
    json_t *p = json_is_string(rx) ? rx : str;
    st->re = compile(json_string_value(p), json_string_length(p),
                     json_is_string(rx) ? 0 : PCRE2_LITERAL, why, sizeof why);
    if (st->re == NULL)
        HF_FAIL(L, HM_ENOTSUP, "%s.pattern does not compile in PCRE2 %s",
                where, why);
    t->n_steps++;
    return HM_OK;
}

static int hf_id(json_t *v, uint32_t *id)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) >= (json_int_t)MAX_ID)
        return -1;
    *id = (uint32_t)json_integer_value(v);
    return 0;
}

static int hf_model(hf_load *L, json_t *model, json_t *added)
{
    hm_tokenizer *t = L->t;
    if (!json_is_object(model))
        HF_FAIL(L, HM_EFORMAT, "model: expected an object");
    json_t *type = json_object_get(model, "type");
    if (type != NULL && !(json_is_string(type) &&
                          strcmp(json_string_value(type), "BPE") == 0))
        HF_FAIL(L, HM_ENOTSUP, "model.type '%s' is not supported (only BPE)",
                json_is_string(type) ? json_string_value(type) : "?");
    json_t *v = json_object_get(model, "dropout");
    if (v != NULL && !json_is_null(v) &&
        !(json_is_number(v) && json_number_value(v) == 0))
        HF_FAIL(L, HM_ENOTSUP,
                "model.dropout: BPE dropout is not supported (it is random)");
    static const char *const affixes[] = {"continuing_subword_prefix",
                                          "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        v = json_object_get(model, affixes[i]);
        if (v != NULL && !json_is_null(v) &&
            !(json_is_string(v) && json_string_length(v) == 0))
            HF_FAIL(L, HM_ENOTSUP, "model.%s is not supported", affixes[i]);
    }
    int rc = json_flag(L, model, "model", "ignore_merges", 0,
                       &t->ignore_merges);
    if (rc != HM_OK)
        return rc;
    json_t *vocab = json_object_get(model, "vocab");
    json_t *merges = json_object_get(model, "merges");
    if (!json_is_object(vocab))
        HF_FAIL(L, HM_EFORMAT, "model.vocab: expected an object");
    if (!json_is_array(merges))
        HF_FAIL(L, HM_EFORMAT, "model.merges: expected an array");
    if (added != NULL && !json_is_array(added))
        HF_FAIL(L, HM_EFORMAT, "added_tokens: expected an array");

    /* the id space: vocabulary and added tokens */
    size_t n_ids = 0, arena = 0;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val)
    {
        uint32_t id;
        if (hf_id(val, &id) != 0)
            HF_FAIL(L, HM_EFORMAT, "model.vocab[\"%.60s\"]: bad id", key);
        if (id + (size_t)1 > n_ids)
            n_ids = id + (size_t)1;
        arena += strlen(key);
    }
    for (size_t i = 0; i < json_array_size(added); i++) {
        uint32_t id;
        if (hf_id(json_object_get(json_array_get(added, i), "id"), &id) != 0)
            HF_FAIL(L, HM_EFORMAT, "added_tokens[%zu].id: bad id", i);
        if (id + (size_t)1 > n_ids)
            n_ids = id + (size_t)1;
    }
    if (n_ids == 0)
        HF_FAIL(L, HM_EFORMAT, "model.vocab: empty");
    if ((rc = tok_alloc(t, n_ids, arena)) != HM_OK)
        return rc;

    int16_t inv[324];
    byte_level_table(inv);
    unsigned char buf[MAX_TOKEN_BYTES];
    json_object_foreach(vocab, key, val)
    {
        uint32_t id = (uint32_t)json_integer_value(val);
        size_t n, klen = strlen(key);
        int bl = byte_level_decode(inv, key, klen, buf, &n) == 0 && n > 0;
        if (!bl && (klen == 0 || klen > MAX_TOKEN_BYTES))
            HF_FAIL(L, HM_EFORMAT, "model.vocab[\"%.60s\"]: bad token", key);
        int s = bl ? set_token(t, id, buf, n, 1)
                   : set_token(t, id, (const unsigned char *)key, klen, 0);
        if (s == 1)
            HF_FAIL(L, HM_EFORMAT, "model.vocab: id %lu given twice",
                    (unsigned long)id);
        if (s == 2)
            HF_FAIL(L, HM_EFORMAT,
                    "model.vocab[\"%.60s\"]: the same bytes as another token",
                    key);
        if (s < 0)
            return s;
    }
    for (int b = 0; b < 256; b++)
        if (t->byte_id[b] == EMPTY)
            HF_FAIL(L, HM_ENOTSUP,
                    "model.vocab: no token for byte 0x%02x: not a "
                    "byte-level BPE vocabulary",
                    b);

    /* merges: rank = index; a pair listed twice keeps its last rank, as
     * HF's map does */
    size_t nm = json_array_size(merges), cap = 16;
    while (cap < 2 * nm + 2)
        cap *= 2;
    t->pair_mask = cap - 1;
    t->pair_key = malloc(cap * sizeof *t->pair_key);
    t->pair_val = malloc(2 * cap * sizeof *t->pair_val);
    char *cat = malloc(2 * 4 * MAX_TOKEN_BYTES + 2);
    if (!t->pair_key || !t->pair_val || !cat) {
        free(cat);
        return HM_ENOMEM;
    }
    memset(t->pair_key, 0xff, cap * sizeof *t->pair_key);
    for (size_t i = 0; i < nm; i++) {
        json_t *m = json_array_get(merges, i);
        const char *a = NULL, *b = NULL;
        size_t la = 0, lb = 0;
        if (json_is_string(m)) {
            const char *s = json_string_value(m);
            const char *sp = strchr(s, ' ');
            if (sp != NULL && strchr(sp + 1, ' ') == NULL) {
                a = s;
                la = (size_t)(sp - s);
                b = sp + 1;
                lb = strlen(b);
            }
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1));
            la = strlen(a);
            lb = strlen(b);
        }
        if (a == NULL || la == 0 || lb == 0 || la + lb > 8 * MAX_TOKEN_BYTES) {
            free(cat);
            HF_FAIL(L, HM_EFORMAT,
                    "model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]",
                    i);
        }
        memcpy(cat, a, la);
        cat[la] = '\0';
        json_t *ja = json_object_get(vocab, cat);
        memcpy(cat, b, lb);
        cat[lb] = '\0';
        json_t *jb = json_object_get(vocab, cat);
        memcpy(cat, a, la);
        memcpy(cat + la, b, lb);
        cat[la + lb] = '\0';
        json_t *jm = json_object_get(vocab, cat);
        if (ja == NULL || jb == NULL || jm == NULL) {
            free(cat);
            HF_FAIL(L, HM_EFORMAT,
                    "model.merges[%zu]: %s is not in model.vocab", i,
                    ja == NULL ? "its first token"
                    : jb == NULL ? "its second token"
                                 : "the merged token");
        }
        uint64_t pk = (uint64_t)json_integer_value(ja) << 32 |
                      (uint64_t)json_integer_value(jb);
        size_t j = pair_hash(pk, t->pair_mask);
        while (t->pair_key[j] != UINT64_MAX && t->pair_key[j] != pk)
            j = (j + 1) & t->pair_mask;
        t->pair_key[j] = pk;
        t->pair_val[2 * j] = (uint32_t)i;
        t->pair_val[2 * j + 1] = (uint32_t)json_integer_value(jm);
    }
    free(cat);

    /* added tokens: their content is raw text, not byte-level */
    size_t acap = 0;
    for (size_t i = 0; i < json_array_size(added); i++) {
        json_t *a = json_array_get(added, i);
        json_t *c = json_object_get(a, "content");
        int special, lstrip, rstrip, single, normalized;
        char where[64];
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        if (!json_is_string(c) || json_string_length(c) == 0 ||
            json_string_length(c) > MAX_TOKEN_BYTES)
            HF_FAIL(L, HM_EFORMAT, "%s.content: expected a string", where);
        if ((rc = json_flag(L, a, where, "special", 0, &special)) != HM_OK ||
            (rc = json_flag(L, a, where, "lstrip", 0, &lstrip)) != HM_OK ||
            (rc = json_flag(L, a, where, "rstrip", 0, &rstrip)) != HM_OK ||
            (rc = json_flag(L, a, where, "single_word", 0, &single)) !=
                HM_OK ||
            (rc = json_flag(L, a, where, "normalized", !special,
                            &normalized)) != HM_OK)
            return rc;
        rc = add_added(t, &acap, json_string_value(c), json_string_length(c),
                       (uint32_t)json_integer_value(json_object_get(a, "id")),
                       special, lstrip, rstrip, single, normalized);
        if (rc != HM_OK)
            return rc;
        if (single && t->word_re == NULL) {
            char why[200];
            t->word_re = compile("[\\p{Alphabetic}\\p{N}_]",
                                 PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED, why,
                                 sizeof why);
            if (t->word_re == NULL)
                HF_FAIL(L, HM_ENOTSUP, "word pattern: %s", why);
        }
    }
    return index_added(t);
}

int hm_tokenizer_load_hf(hm_tokenizer **out, const char *path, char *errmsg,
                         size_t errlen)
{
    if (out == NULL || path == NULL)
        return HM_EINVAL;
    *out = NULL;
    hm_tokenizer *t = calloc(1, sizeof *t);
    if (t == NULL)
        return HM_ENOMEM;
    char *text = NULL;
    size_t size = 0;
    int rc = read_file(path, &text, &size, t->digest, errmsg, errlen);
    json_t *root = NULL;
    if (rc == HM_OK) {
        json_error_t e;
        snprintf(t->name, sizeof t->name, "tokenizer.json");
        root = json_loadb(text, size, JSON_REJECT_DUPLICATES, &e);
        if (root == NULL) {
            hm_errf(errmsg, errlen, "%s:%d:%d: %s", path, e.line, e.column,
                    e.text);
            rc = HM_EFORMAT;
        } else if (!json_is_object(root)) {
            hm_errf(errmsg, errlen, "%s: not a tokenizer.json object", path);
            rc = HM_EFORMAT;
        }
    }
    free(text);
    hf_load L = {t, path, errmsg, errlen, 0};
    if (rc == HM_OK) {
        json_t *norm = json_object_get(root, "normalizer");
        if (norm != NULL && !json_is_null(norm)) {
            const char *nt = json_string_value(json_object_get(norm, "type"));
            hm_errf(errmsg, errlen,
                    "%s: normalizer: type '%s' is not supported (only null)",
                    path, nt ? nt : "?");
            rc = HM_ENOTSUP;
        }
    }
    if (rc == HM_OK) {
        json_t *pt = json_object_get(root, "pre_tokenizer");
        if (pt == NULL || json_is_null(pt)) {
            hm_errf(errmsg, errlen,
                    "%s: pre_tokenizer: null is not supported (byte-level "
                    "BPE needs a ByteLevel pre-tokenizer)",
                    path);
            rc = HM_ENOTSUP;
        } else
            rc = hf_step(&L, pt, "pre_tokenizer");
        if (rc == HM_OK && !L.have_bytelevel) {
            hm_errf(errmsg, errlen,
                    "%s: pre_tokenizer: no ByteLevel step: only byte-level "
                    "BPE is supported",
                    path);
            rc = HM_ENOTSUP;
        }
    }
    if (rc == HM_OK)
        rc = hf_model(&L, json_object_get(root, "model"),
                      json_object_get(root, "added_tokens"));
    json_decref(root);
    if (rc != HM_OK) {
        hm_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return HM_OK;
}

void hm_tokenizer_free(hm_tokenizer *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < MAX_STEPS; i++)
        pcre2_code_free(t->steps[i].re);
    pcre2_code_free(t->word_re);
    free(t->arena);
    free(t->off);
    free(t->len);
    free(t->slot);
    free(t->pair_key);
    free(t->pair_val);
    free(t->added);
    free(t);
}

const char *hm_tokenizer_name(const hm_tokenizer *t)
{
    return t ? t->name : NULL;
}

const char *hm_tokenizer_digest(const hm_tokenizer *t)
{
    return t ? t->digest : NULL;
}

size_t hm_tokenizer_vocab(const hm_tokenizer *t)
{
    return t ? t->n_ids : 0;
}

int hm_tokenizer_piece(const hm_tokenizer *t, int32_t id,
                       const unsigned char **bytes, size_t *len)
{
    if (t == NULL || bytes == NULL || len == NULL)
        return HM_EINVAL;
    if (id < 0 || (size_t)id >= t->n_ids || t->off[id] == EMPTY)
        return HM_ERANGE;
    *bytes = t->arena + t->off[id];
    *len = t->len[id];
    return HM_OK;
}

/* ---------------------------------------------------------- encoding */

typedef struct out_buf {
    int32_t *ids;
    size_t n, cap;
} out_buf;

static int emit(out_buf *o, uint32_t r)
{
    if (o->n == o->cap) {
        size_t nc = o->cap ? 2 * o->cap : 1024;
        int32_t *ni = realloc(o->ids, nc * sizeof *ni);
        if (ni == NULL)
            return HM_ENOMEM;
        o->ids = ni;
        o->cap = nc;
    }
    o->ids[o->n++] = (int32_t)r;
    return HM_OK;
}

/* Work space for merging one piece of n bytes: a linked list of symbols
 * (start byte, id) and a heap of candidate merges. */
typedef struct heap_ent {
    uint32_t rank, start, node, ver, id;
} heap_ent;

typedef struct work {
    size_t cap;
    uint32_t *start, *next, *prev, *ver, *id;
    heap_ent *heap;
    size_t nheap;
} work;

static int work_grow(work *w, size_t n)
{
    if (n <= w->cap)
        return HM_OK;
    size_t c = w->cap ? w->cap : 64;
    while (c < n)
        c *= 2;
    uint32_t **arr[] = {&w->start, &w->next, &w->prev, &w->ver, &w->id};
    for (size_t i = 0; i < sizeof arr / sizeof arr[0]; i++) {
        uint32_t *a = realloc(*arr[i], c * sizeof *a);
        if (a == NULL)
            return HM_ENOMEM;
        *arr[i] = a;
    }
    heap_ent *h = realloc(w->heap, 2 * c * sizeof *h);
    if (h == NULL)
        return HM_ENOMEM;
    w->heap = h;
    w->cap = c;
    return HM_OK;
}

static void work_free(work *w)
{
    free(w->start);
    free(w->next);
    free(w->prev);
    free(w->ver);
    free(w->id);
    free(w->heap);
}

static int ent_less(const heap_ent *a, const heap_ent *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->start < b->start);
}

static void heap_push(work *w, heap_ent e)
{
    size_t i = w->nheap++;
    while (i > 0 && ent_less(&e, &w->heap[(i - 1) / 2])) {
        w->heap[i] = w->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->heap[i] = e;
}

static heap_ent heap_pop(work *w)
{
    heap_ent top = w->heap[0], last = w->heap[--w->nheap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const heap_ent *best = &last;
        if (l < w->nheap && ent_less(&w->heap[l], best)) {
            m = l;
            best = &w->heap[l];
        }
        if (r < w->nheap && ent_less(&w->heap[r], best))
            m = r;
        if (m == i)
            break;
        w->heap[i] = w->heap[m];
        i = m;
    }
    if (w->nheap > 0)
        w->heap[i] = last;
    return top;
}

/* Push the merge of node i with its next, if there is one. */
static void push_pair(const hm_tokenizer *t, work *w, const unsigned char *p,
                      size_t n, uint32_t i)
{
    uint32_t j = w->next[i];
    if (j == EMPTY)
        return;
    uint32_t rank, id;
    if (t->pair_key != NULL) {
        if (!pair_find(t, w->id[i], w->id[j], &rank, &id))
            return;
    } else {
        uint32_t k = w->next[j];
        size_t end = k == EMPTY ? n : w->start[k];
        if ((rank = id = lookup(t, p + w->start[i], end - w->start[i])) ==
            EMPTY)
            return;
    }
    heap_push(w, (heap_ent){rank, w->start[i], i, w->ver[i], id});
}

static int encode_piece(const hm_tokenizer *t, work *w, const unsigned char *p,
                        size_t n, out_buf *o)
{
    if (t->ignore_merges) {
        uint32_t whole = lookup(t, p, n);
        if (whole != EMPTY)
            return emit(o, whole);
    }
    if (n > UINT32_MAX - 1)
        return HM_ERANGE;
    int rc = work_grow(w, n);
    if (rc != HM_OK)
        return rc;
    for (size_t i = 0; i < n; i++) {
        w->start[i] = (uint32_t)i;
        w->next[i] = i + 1 < n ? (uint32_t)(i + 1) : EMPTY;
        w->prev[i] = i > 0 ? (uint32_t)(i - 1) : EMPTY;
        w->ver[i] = 0;
        w->id[i] = t->byte_id[p[i]];
    }
    w->nheap = 0;
    for (uint32_t i = 0; i + 1 < n; i++)
        push_pair(t, w, p, n, i);
    while (w->nheap > 0) {
        heap_ent e = heap_pop(w);
        uint32_t i = e.node;
        if (w->ver[i] != e.ver || w->next[i] == EMPTY)
            continue; /* stale: node i or its next changed since */
        uint32_t j = w->next[i], k = w->next[j];
        w->next[i] = k;
        if (k != EMPTY)
            w->prev[k] = i;
        w->ver[j] = UINT32_MAX; /* dead */
        w->ver[i]++;
        w->id[i] = e.id;
        push_pair(t, w, p, n, i);
        uint32_t h = w->prev[i];
        if (h != EMPTY) {
            w->ver[h]++;
            push_pair(t, w, p, n, h);
        }
    }
    for (uint32_t i = 0; i != EMPTY; i = w->next[i])
        if ((rc = emit(o, w->id[i])) != HM_OK)
            return rc;
    return HM_OK;
}

typedef struct enc {
    const hm_tokenizer *t;
    unsigned flags;
    work w;
    out_buf o;
    pcre2_match_data *md[MAX_STEPS];
    unsigned char *tmp;
    size_t tmpcap;
    size_t invalid;
} enc;

/* Length of the UTF-8 character at p (valid text). */
static size_t u8len(unsigned char c)
{
    return c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
}

/* Length of the valid UTF-8 sequence at p, 0 when there is none. */
static size_t u8valid(const unsigned char *p, size_t rem)
{
    unsigned c = p[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return rem >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        unsigned lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        return rem >= 3 && p[1] >= lo && p[1] <= hi && (p[2] & 0xc0) == 0x80
                   ? 3
                   : 0;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        unsigned lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        return rem >= 4 && p[1] >= lo && p[1] <= hi &&
                       (p[2] & 0xc0) == 0x80 && (p[3] & 0xc0) == 0x80
                   ? 4
                   : 0;
    }
    return 0;
}

static int run_steps(enc *e, size_t k, const unsigned char *s, size_t n);

/* Split s by re: matches and the gaps between them, each kept or not, in
 * order, go on to step k + 1.  An empty match yields nothing. */
static int split(enc *e, size_t k, const pcre2_code *re, int keep_match,
                 int keep_gap, const unsigned char *s, size_t n)
{
    size_t prev = 0, pos = 0;
    int rc = HM_OK;
    while (rc == HM_OK && pos < n) {
        int m = pcre2_match(re, s, n, pos, PCRE2_NO_UTF_CHECK, e->md[k],
                            NULL);
        if (m == PCRE2_ERROR_NOMATCH)
            break;
        if (m < 0)
            return HM_ERANGE; /* a match limit: pathological text */
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md[k]);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) {
            if (ms >= n)
                break;
            pos = ms + u8len(s[ms]);
            continue;
        }
        if (ms > prev && keep_gap)
            rc = run_steps(e, k + 1, s + prev, ms - prev);
        if (rc == HM_OK && keep_match)
            rc = run_steps(e, k + 1, s + ms, me - ms);
        prev = pos = me;
    }
    if (rc == HM_OK && prev < n && keep_gap)
        rc = run_steps(e, k + 1, s + prev, n - prev);
    return rc;
}

static int run_steps(enc *e, size_t k, const unsigned char *s, size_t n)
{
    const hm_tokenizer *t = e->t;
    if (n == 0)
        return HM_OK;
    if (k == t->n_steps)
        return encode_piece(t, &e->w, s, n, &e->o);
    const pre_step *st = &t->steps[k];
    if (st->kind == STEP_SPLIT)
        return split(e, k, st->re, st->keep_match, st->keep_gap, s, n);
    /* ByteLevel, the last step: its own buffer is free to use */
    if (st->prefix_space && s[0] != ' ') {
        if (n + 1 > e->tmpcap) {
            unsigned char *nt = realloc(e->tmp, n + 1);
            if (nt == NULL)
                return HM_ENOMEM;
            e->tmp = nt;
            e->tmpcap = n + 1;
        }
        e->tmp[0] = ' ';
        memcpy(e->tmp + 1, s, n);
        s = e->tmp;
        n++;
    }
    if (st->re != NULL)
        return split(e, k, st->re, 1, 1, s, n);
    return run_steps(e, k + 1, s, n);
}

/* Valid UTF-8 goes through the pre-tokenizers; each maximal run of bytes
 * that are not valid UTF-8 is one piece, merged byte-wise, and counted. */
static int encode_text(enc *e, const unsigned char *s, size_t n)
{
    size_t i = 0;
    int rc = HM_OK;
    while (rc == HM_OK && i < n) {
        size_t j = i, l;
        while (j < n && (s[j] < 0x80 || (l = u8valid(s + j, n - j)) != 0))
            j += s[j] < 0x80 ? 1 : l;
        rc = run_steps(e, 0, s + i, j - i);
        for (i = j; j < n && u8valid(s + j, n - j) == 0; j++)
            ;
        if (rc == HM_OK && j > i) {
            e->invalid += j - i;
            rc = encode_piece(e->t, &e->w, s + i, j - i, &e->o);
        }
        i = j;
    }
    return rc;
}

static int is_space(const unsigned char *s, size_t n, size_t *len)
{
    size_t l = u8valid(s, n);
    uint32_t c = s[0];
    if (l == 2)
        c = (c & 0x1f) << 6 | (s[1] & 0x3f);
    else if (l == 3)
        c = (c & 0x0f) << 12 | (uint32_t)(s[1] & 0x3f) << 6 | (s[2] & 0x3f);
    else if (l != 1)
        return 0;
    *len = l;
    return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 ||
           c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
           c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
           c == 0x3000;
}

static int is_word(const hm_tokenizer *t, pcre2_match_data *md,
                   const unsigned char *s, size_t n)
{
    return n > 0 && pcre2_match(t->word_re, s, n, 0, PCRE2_NO_UTF_CHECK, md,
                                NULL) > 0;
}

/* Cut the active added tokens (pass 0: not normalized, pass 1:
 * normalized, as HF's two tries) out of s, leftmost-longest; what is
 * between them goes to the next pass, then to encode_text. */
static int encode_added(enc *e, int pass, const unsigned char *s, size_t n)
{
    const hm_tokenizer *t = e->t;
    if (pass == 2)
        return encode_text(e, s, n);
    if (t->n_matchable[pass][(e->flags & HM_TOKENIZE_SPECIAL) != 0] == 0)
        return encode_added(e, pass + 1, s, n); /* nothing to look for */
    pcre2_match_data *wmd = NULL;
    size_t prev = 0, p = 0;
    int rc = HM_OK;
    while (rc == HM_OK && p < n) {
        const added_token *best = NULL;
        for (size_t i = t->first_lo[s[p]]; i < t->first_lo[s[p] + 1]; i++) {
            const added_token *a = &t->added[i];
            if (a->normalized != pass ||
                (a->special && !(e->flags & HM_TOKENIZE_SPECIAL)))
                continue;
            if (a->len <= n - p && (best == NULL || a->len > best->len) &&
                memcmp(t->arena + a->off, s + p, a->len) == 0)
                best = a;
        }
        if (best == NULL) {
            p++;
            continue;
        }
        size_t start = p, stop = p + best->len, l;
        p = stop;
        if (best->single_word) {
            if (wmd == NULL &&
                (wmd = pcre2_match_data_create(4, NULL)) == NULL) {
                rc = HM_ENOMEM;
                break;
            }
            size_t b = start;
            while (b > 0 && (s[b - 1] & 0xc0) == 0x80)
                b--;
            if (b > 0)
                b--;
            while (b > 0 && (s[b] & 0xc0) == 0x80)
                b--;
            if ((start > 0 && u8valid(s + b, n - b) == start - b &&
                 is_word(t, wmd, s + b, start - b)) ||
                (stop < n && u8valid(s + stop, n - stop) > 0 &&
                 is_word(t, wmd, s + stop, u8valid(s + stop, n - stop))))
                continue; /* not a word of its own: not a match */
        }
        if (best->lstrip)
            while (start > prev) {
                size_t b = start - 1;
                while (b > prev && (s[b] & 0xc0) == 0x80)
                    b--;
                if (!is_space(s + b, n - b, &l) || b + l != start)
                    break;
                start = b;
            }
        if (best->rstrip)
            while (stop < n && is_space(s + stop, n - stop, &l))
                stop += l;
        rc = encode_added(e, pass + 1, s + prev, start - prev);
        if (rc == HM_OK)
            rc = emit(&e->o, best->id);
        prev = p = stop;
    }
    if (rc == HM_OK)
        rc = encode_added(e, pass + 1, s + prev, n - prev);
    pcre2_match_data_free(wmd);
    return rc;
}

int hm_tokenizer_encode(const hm_tokenizer *t, const char *text, size_t len,
                        unsigned flags, int32_t **ids, size_t *n_ids,
                        size_t *invalid)
{
    if (t == NULL || (text == NULL && len > 0) || ids == NULL ||
        n_ids == NULL || (flags & ~HM_TOKENIZE_SPECIAL) != 0)
        return HM_EINVAL;
    *ids = NULL;
    *n_ids = 0;
    if (invalid)
        *invalid = 0;
    enc e = {.t = t, .flags = flags};
    int rc = HM_OK;
    for (size_t k = 0; k < t->n_steps; k++)
        if (t->steps[k].re != NULL &&
            (e.md[k] = pcre2_match_data_create_from_pattern(t->steps[k].re,
                                                            NULL)) == NULL)
            rc = HM_ENOMEM;
    if (rc == HM_OK)
        rc = encode_added(&e, 0, (const unsigned char *)text, len);
    for (size_t k = 0; k < t->n_steps; k++)
        pcre2_match_data_free(e.md[k]);
    work_free(&e.w);
    free(e.tmp);
    if (rc != HM_OK) {
        free(e.o.ids);
        return rc;
    }
    *ids = e.o.ids;
    *n_ids = e.o.n;
    if (invalid)
        *invalid = e.invalid;
    return HM_OK;
}

void hm_tokens_free(int32_t *ids)
{
    free(ids);
}
