/*
 * cli_tokenize.c - hallmark tokenize: inspect how the teacher's tokenizer
 * splits a text (ids or pieces), and time it.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

unsigned cli_tok_flags;

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* "PRESET=FILE", "FILE.json" (a Hugging Face tokenizer.json), "FILE"
 * (preset from its name, e.g. cl100k_base.tiktoken) or "PRESET" (FILE from
 * $HALLMARK_TOKENIZERS/PRESET.tiktoken). */
int cli_open_tokenizer(const char *spec, hm_tokenizer **tok)
{
    char preset[64], path[4096], msg[HM_ERRMSG_SIZE] = "";
    const char *eq = strchr(spec, '=');
    if (eq == NULL && has_suffix(spec, ".json")) {
        int rc = hm_tokenizer_load_hf(tok, spec, msg, sizeof msg);
        if (rc != HM_OK) {
            cli_error("--tokenizer %s: %s", spec,
                      msg[0] ? msg : hm_strerror(rc));
            return -1;
        }
        return 0;
    }
    if (eq != NULL) {
        snprintf(preset, sizeof preset, "%.*s", (int)(eq - spec), spec);
        snprintf(path, sizeof path, "%s", eq + 1);
    } else if (strchr(spec, '/') != NULL || strchr(spec, '.') != NULL) {
        const char *base = strrchr(spec, '/');
        base = base ? base + 1 : spec;
        size_t n = strcspn(base, ".");
        snprintf(preset, sizeof preset, "%.*s", (int)n, base);
        snprintf(path, sizeof path, "%s", spec);
    } else {
        const char *dir = getenv("HALLMARK_TOKENIZERS");
        if (dir == NULL || *dir == '\0') {
            cli_error("--tokenizer %s: give PRESET=RANKFILE, or set "
                      "HALLMARK_TOKENIZERS to the directory of %s.tiktoken",
                      spec, spec);
            return -1;
        }
        snprintf(preset, sizeof preset, "%s", spec);
        snprintf(path, sizeof path, "%s/%s.tiktoken", dir, spec);
    }
    int rc = hm_tokenizer_load_tiktoken(tok, preset, path, msg, sizeof msg);
    if (rc != HM_OK) {
        cli_error("--tokenizer %s: %s", spec, msg[0] ? msg : hm_strerror(rc));
        return -1;
    }
    return 0;
}

/* The whole of a file ('-': standard input). */
int cli_read_all(const char *path, char **data, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    size_t cap = 1 << 16, n = 0;
    char *buf = NULL;
    if (f == NULL) {
        cli_error("%s: %s", path, strerror(errno));
        return -1;
    }
    for (;;) {
        if (buf == NULL || n == cap) {
            char *nb = realloc(buf, buf ? cap *= 2 : cap);
            if (nb == NULL) {
                cli_error("%s: out of memory", path);
                free(buf);
                if (f != stdin)
                    fclose(f);
                return -1;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
    }
    int err = ferror(f);
    if (f != stdin)
        fclose(f);
    if (err) {
        cli_error("%s: read error", path);
        free(buf);
        return -1;
    }
    *data = buf;
    *len = n;
    return 0;
}

static void tokenize_usage(FILE *out)
{
    fprintf(out,
            "usage: hallmark tokenize --tokenizer SPEC [--ids | --pieces] "
            "[--parse-special]\n"
            "                         [--bench N] [FILE...]\n"
            "\n"
            "Tokenize each FILE (default: standard input) exactly as the "
            "teacher's\n"
            "tokenizer does, as ordinary text (special tokens are parsed only "
            "with\n"
            "--parse-special).  Each file is one text: one line of ids per "
            "file.\n"
            "\n"
            "  -T, --tokenizer SPEC  PRESET=RANKFILE, a rank file named after "
            "its preset\n"
            "                        (cl100k_base.tiktoken), a Hugging Face "
            "FILE.json,\n"
            "                        or PRESET with the file in "
            "$HALLMARK_TOKENIZERS;\n"
            "                        presets: r50k_base, p50k_base, "
            "cl100k_base,\n"
            "                        o200k_base, llama3\n"
            "      --parse-special   special tokens in the text are special "
            "tokens\n"
            "  -i, --ids             print the ids on one line (default)\n"
            "  -p, --pieces          print 'ID<TAB>PIECE' per token, bytes "
            "escaped\n"
            "                        (an empty line between files)\n"
            "      --bench N         tokenize N times; print MB/s on standard "
            "error\n"
            "  -h, --help            this help\n");
}

int cmd_tokenize(int argc, char **argv)
{
    static const struct option opts[] = {
        {"tokenizer", required_argument, NULL, 'T'},
        {"ids", no_argument, NULL, 'i'},
        {"pieces", no_argument, NULL, 'p'},
        {"bench", required_argument, NULL, 'B'},
        {"parse-special", no_argument, NULL, 'S'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *spec = NULL;
    int pieces = 0, c;
    long long bench = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "T:iph", opts, NULL)) != -1) {
        switch (c) {
        case 'T':
            spec = optarg;
            break;
        case 'i':
            pieces = 0;
            break;
        case 'p':
            pieces = 1;
            break;
        case 'S':
            cli_tok_flags |= HM_TOKENIZE_SPECIAL;
            break;
        case 'B':
            if (cli_parse_ll("--bench", optarg, 1, 100000, &bench) != 0)
                return EXIT_TROUBLE;
            break;
        case 'h':
            tokenize_usage(stdout);
            return 0;
        default:
            tokenize_usage(stderr);
            return EXIT_TROUBLE;
        }
    }
    if (spec == NULL) {
        cli_error("tokenize: --tokenizer is required");
        tokenize_usage(stderr);
        return EXIT_TROUBLE;
    }
    /* Several files: each is tokenized on its own (one text per file, not
     * their concatenation), one line of ids each, or their pieces
     * separated by an empty line; the tokenizer is loaded once. */
    static char *const stdin_only[] = {"-", NULL};
    char *const *paths = optind < argc ? argv + optind : stdin_only;
    int npaths = optind < argc ? argc - optind : 1;
    hm_tokenizer *tok = NULL;
    char *text = NULL;
    size_t len = 0, n = 0, invalid = 0, total_len = 0, total_n = 0;
    int32_t *ids = NULL;
    int status = EXIT_TROUBLE;
    double secs = 0;
    if (cli_open_tokenizer(spec, &tok) != 0)
        goto done;
    for (int fi = 0; fi < npaths; fi++) {
        const char *path = paths[fi];
        free(text);
        text = NULL;
        if (cli_read_all(path, &text, &len) != 0)
            goto done;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (long long r = 0; r < (bench ? bench : 1); r++) {
            hm_tokens_free(ids);
            ids = NULL;
            int rc = hm_tokenizer_encode(tok, text, len, cli_tok_flags, &ids,
                                         &n, &invalid);
            if (rc != HM_OK) {
                cli_error("%s: %s", path, hm_strerror(rc));
                goto done;
            }
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        secs += (double)(t1.tv_sec - t0.tv_sec) +
                1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        total_len += len;
        total_n += n;
        if (invalid)
            fprintf(stderr,
                    "%s: %zu bytes of invalid UTF-8, tokenized byte-wise\n",
                    path, invalid);
        if (pieces && fi > 0)
            putchar('\n');
        for (size_t i = 0; i < n; i++) {
            if (!pieces) {
                printf(i ? " %d" : "%d", (int)ids[i]);
                continue;
            }
            const unsigned char *b;
            size_t bl;
            if (hm_tokenizer_piece(tok, ids[i], &b, &bl) != HM_OK)
                goto done;
            printf("%d\t", (int)ids[i]);
            for (size_t k = 0; k < bl; k++) {
                if (b[k] == '\\')
                    fputs("\\\\", stdout);
                else if (b[k] < 0x20 || b[k] >= 0x7f)
                    printf("\\x%02x", b[k]);
                else
                    putchar(b[k]);
            }
            putchar('\n');
        }
        if (!pieces)
            putchar('\n');
    }
    if (bench)
        fprintf(stderr, "%.2f MB/s (%zu bytes, %zu tokens, %lld runs)\n",
                (double)total_len * (double)bench / secs / 1e6, total_len,
                total_n, bench);
    if (fflush(stdout) != 0) {
        cli_error("standard output: write error");
        goto done;
    }
    status = 0;
done:
    hm_tokens_free(ids);
    free(text);
    hm_tokenizer_free(tok);
    return status;
}
