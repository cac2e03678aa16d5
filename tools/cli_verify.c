/*
 * cli_verify.c - hallmark verify (one verdict per document) and
 * hallmark merge (union of tally files).
 */
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"

#define DEFAULT_SPEC "gumbel"

static void verify_usage(FILE *out)
{
    fprintf(out,
            "usage: hallmark verify --key KEYFILE [--scheme SPEC]... "
            "[OPTIONS] FILE...\n"
            "\n"
            "Test each document for the watermark of KEYFILE: one exact "
            "p-value per\n"
            "document and channel.  FILE holds JSON Lines records "
            "{\"tokens\": [ids],\n"
            "\"prompt_tokens\": [ids], \"id\": ...}; '-' is standard "
            "input.\n"
            "\n"
            "  -k, --key FILE        master key file (mode 0600)\n"
            "  -s, --scheme SPEC     channel spec as served, e.g. gumbel, "
            "kgw:h=1;\n"
            "                        repeat or join with '+' for several "
            "(default %s)\n"
            "  -t, --tenant ID       tenant whose subkeys to test "
            "(default: none)\n"
            "  -a, --alpha A         significance level (default 1e-3)\n"
            "      --vocab-size N    reject token ids >= N\n"
            "      --skip-padded     do not score windows reaching before "
            "the document\n"
            "      --tokenizer SPEC  tokenize text: plain text files (one "
            "document each)\n"
            "                        and 'text'/'prompt' fields; see "
            "hallmark tokenize\n"
            "      --parse-special   special tokens in text are special "
            "tokens\n"
            "  -j, --json            JSON Lines output\n"
            "  -h, --help            this help\n"
            "\n"
            "Exit status: 0 no evidence at alpha, 1 watermark detected in "
            "some document,\n"
            "2 error (then nothing is printed on standard output).\n",
            DEFAULT_SPEC);
}

static json_t *result_json(const hm_result *r, unsigned c, int scheme)
{
    return json_pack("{s:I,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:f}",
                     "channel", (json_int_t)c, "scheme",
                     cli_scheme_name(scheme),
                     "tokens", (json_int_t)r->tokens, "padded",
                     (json_int_t)r->padded, "dropped_padded",
                     (json_int_t)r->dropped_padded, "dropped_prompt",
                     (json_int_t)r->dropped_prompt, "dropped_repeat",
                     (json_int_t)r->dropped_repeat, "scored",
                     (json_int_t)r->scored, "score", r->score, "expected",
                     r->expected, "log10_p", r->log10_p);
}

int cmd_verify(int argc, char **argv)
{
    static const struct option opts[] = {
        {"key", required_argument, NULL, 'k'},
        {"scheme", required_argument, NULL, 's'},
        {"tenant", required_argument, NULL, 't'},
        {"alpha", required_argument, NULL, 'a'},
        {"vocab-size", required_argument, NULL, 'V'},
        {"skip-padded", no_argument, NULL, 'P'},
        {"tokenizer", required_argument, NULL, 'Z'},
        {"parse-special", no_argument, NULL, 'Y'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *keyfile = NULL, *tenant = NULL, *tokspec = NULL;
    char spec[1024] = "";
    double alpha = 1e-3;
    long long vocab = 0;
    int json = 0, c;
    unsigned flags = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "k:s:t:a:jh", opts, NULL)) != -1) {
        int r = cli_scoring_option(c, optarg, &alpha, &vocab, &flags,
                                   &tokspec);
        if (r < 0)
            return EXIT_TROUBLE;
        if (r > 0)
            continue;
        switch (c) {
        case 'k':
            keyfile = optarg;
            break;
        case 's':
            if (cli_add_scheme(spec, sizeof spec, optarg) != 0)
                return EXIT_TROUBLE;
            break;
        case 't':
            tenant = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case 'h':
            verify_usage(stdout);
            return 0;
        default:
            verify_usage(stderr);
            return EXIT_TROUBLE;
        }
    }
    if (keyfile == NULL || optind >= argc) {
        cli_error(keyfile ? "verify: no input files"
                          : "verify: --key KEYFILE is required");
        verify_usage(stderr);
        return EXIT_TROUBLE;
    }
    if (spec[0] == '\0')
        strcpy(spec, DEFAULT_SPEC);

    hm_key *key = NULL;
    hm_ctx *ctx = NULL;
    hm_tally *t = NULL;
    hm_tokenizer *tok = NULL;
    char fp[HM_FINGERPRINT_SIZE], canon[1024], msg[HM_ERRMSG_SIZE];
    int status = EXIT_TROUBLE, detected = 0;
    cli_buf out = {0};
    cli_doc doc = {0};
    if (cli_open_key(keyfile, &key, fp) != 0 ||
        cli_make_ctx(key, spec, tenant, &ctx) != 0 ||
        (tokspec != NULL && cli_open_tokenizer(tokspec, &tok) != 0))
        goto done;
    if (hm_tally_new(&t, (const hm_ctx *const *)&ctx, 1, flags, msg,
                     sizeof msg) != HM_OK) {
        cli_error("%s", msg);
        goto done;
    }
    hm_ctx_spec(ctx, canon, sizeof canon);
    unsigned nch = hm_ctx_channels(ctx);
    if (!json) {
        cli_buf_printf(&out,
                       "# hallmark %s, PRF v%u, key %s%s%s, spec %s, alpha "
                       "%g%s%s\n",
                       hm_version_string(), hm_prf_version(), fp,
                       tenant ? ", tenant " : "", tenant ? tenant : "", canon,
                       alpha, tok ? ", tokenizer " : "",
                       tok ? hm_tokenizer_name(tok) : "");
        cli_buf_printf(&out, "%-24s %8s", "document", "tokens");
        for (unsigned ch = 0; ch < nch; ch++) {
            char head[48];
            snprintf(head, sizeof head, "log10 p (%s)",
                     cli_scheme_name(hm_ctx_channel_scheme(ctx, ch)));
            cli_buf_printf(&out, " %8s %18s", "scored", head);
        }
        cli_buf_printf(&out, "  %s\n", "verdict");
    }
    for (int i = optind; i < argc; i++) {
        cli_input in;
        int rc;
        if (cli_input_open(&in, argv[i], vocab, tok) != 0)
            goto done;
        while ((rc = cli_input_next(&in, &doc)) == 1) {
            hm_result r[HM_MAX_CHANNELS];
            double chlp[HM_MAX_CHANNELS] = {0};
            hm_tally_clear(t);
            if (hm_tally_add(t, doc.prompt, doc.n_prompt, doc.tokens,
                             doc.n_tokens) != HM_OK) {
                cli_error("%s:%lu: cannot score the record", doc.file,
                          doc.line);
                rc = -1;
                break;
            }
            for (unsigned ch = 0; ch < nch; ch++) {
                if (hm_tally_result(t, 0, ch, &r[ch]) != HM_OK)
                    rc = -1;
                else
                    chlp[ch] = r[ch].log10_p;
            }
            double lp = cli_channels_log10p(chlp, nch);
            int hit = lp <= log10(alpha);
            detected |= hit;
            if (json) {
                json_t *chs = json_array();
                for (unsigned ch = 0; ch < nch; ch++)
                    json_array_append_new(
                        chs, result_json(&r[ch], ch,
                                         hm_ctx_channel_scheme(ctx, ch)));
                json_t *o = json_pack(
                    "{s:s,s:s,s:I,s:I,s:o,s:f,s:s,s:f,s:b,s:s,s:s,s:s,s:s,"
                    "s:I,s:s?,s:s?,s:b}",
                    "id", doc.id, "file", doc.file, "line",
                    (json_int_t)doc.line, "tokens", (json_int_t)doc.n_tokens,
                    "channels", chs, "log10_p", lp, "correction",
                    nch > 1 ? "bonferroni over channels" : "none", "alpha",
                    alpha, "detected", hit, "key", fp, "tenant",
                    tenant ? tenant : "", "spec", canon, "hallmark_version",
                    hm_version_string(), "prf_version",
                    (json_int_t)hm_prf_version(), "tokenizer",
                    tok ? hm_tokenizer_name(tok) : NULL, "tokenizer_sha256",
                    tok ? hm_tokenizer_digest(tok) : NULL, "parse_special",
                    (cli_tok_flags & HM_TOKENIZE_SPECIAL) != 0);
                char *s = o ? json_dumps(o, JSON_COMPACT |
                                                JSON_REAL_PRECISION(17))
                            : NULL;
                json_decref(o);
                if (s == NULL) {
                    cli_error("out of memory");
                    rc = -1;
                    break;
                }
                cli_buf_printf(&out, "%s\n", s);
                free(s);
            } else {
                cli_buf_printf(&out, "%-24s %8zu", doc.id, doc.n_tokens);
                for (unsigned ch = 0; ch < nch; ch++)
                    cli_buf_printf(&out, " %8llu %18.2f",
                                   (unsigned long long)r[ch].scored,
                                   r[ch].log10_p);
                cli_buf_printf(&out, "  %s\n",
                               hit ? "WATERMARKED" : "no evidence");
            }
        }
        cli_input_close(&in);
        if (rc < 0)
            goto done;
        if (in.invalid_utf8)
            fprintf(stderr, "%s: %zu bytes of invalid UTF-8, tokenized "
                            "byte-wise\n",
                    in.name, in.invalid_utf8);
    }
    fwrite(out.data, 1, out.len, stdout);
    if (fflush(stdout) != 0) {
        cli_error("standard output: write error");
        goto done;
    }
    status = detected ? EXIT_DETECTED : EXIT_NOEVIDENCE;
done:
    cli_buf_free(&out);
    cli_doc_free(&doc);
    hm_tally_free(t);
    hm_ctx_free(ctx);
    hm_key_free(key);
    hm_tokenizer_free(tok);
    return status;
}

/* ------------------------------------------------------------- merge */

static void merge_usage(FILE *out)
{
    fprintf(out,
            "usage: hallmark merge -o OUT PARTIAL...\n"
            "\n"
            "Merge tally files (from 'hallmark audit --save-tally') into "
            "one, exactly:\n"
            "the result equals one audit over all the inputs.  OUT is "
            "written atomically.\n"
            "\n"
            "  -o, --output FILE   the merged tally\n"
            "  -h, --help          this help\n");
}

int cmd_merge(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *output = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            output = optarg;
            break;
        case 'h':
            merge_usage(stdout);
            return 0;
        default:
            merge_usage(stderr);
            return EXIT_TROUBLE;
        }
    }
    if (output == NULL || optind >= argc) {
        cli_error(output ? "merge: no input tallies"
                         : "merge: -o OUT is required");
        merge_usage(stderr);
        return EXIT_TROUBLE;
    }
    hm_tally *acc = NULL;
    char msg[HM_ERRMSG_SIZE] = "";
    int status = EXIT_TROUBLE;
    for (int i = optind; i < argc; i++) {
        hm_tally *t = NULL;
        if (hm_tally_load(&t, argv[i], msg, sizeof msg) != HM_OK) {
            cli_error("%s", msg);
            goto done;
        }
        if (acc == NULL) {
            acc = t;
            continue;
        }
        int rc = hm_tally_merge(acc, t, msg, sizeof msg);
        hm_tally_free(t);
        if (rc != HM_OK) {
            cli_error("%s: cannot merge with %s: %s", argv[i], argv[optind],
                      msg);
            goto done;
        }
    }
    if (hm_tally_save(acc, output, msg, sizeof msg) != HM_OK) {
        cli_error("%s", msg);
        goto done;
    }
    status = 0;
done:
    hm_tally_free(acc);
    return status;
}
