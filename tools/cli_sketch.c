/*
 * cli_sketch.c - hallmark sketch: build a served-window sketch from the
 * provider's served outputs (JSON Lines or text), merge sketches, or show
 * one.  A server fills its sketch with hm_sketch_add on the serving path;
 * this command is for tests, demonstrations and logs kept as records.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void sketch_usage(FILE *out)
{
    fprintf(out,
            "usage: hallmark sketch --key KEYFILE [OPTIONS] -o SKETCH "
            "SERVED...\n"
            "       hallmark sketch --key KEYFILE --merge -o SKETCH "
            "SKETCH...\n"
            "       hallmark sketch --key KEYFILE --info SKETCH...\n"
            "\n"
            "Record the context windows of the provider's served outputs "
            "(JSON Lines\n"
            "records with 'tokens' and optional 'prompt_tokens', or text "
            "with\n"
            "--tokenizer) in a keyed sketch, for 'hallmark audit --filter "
            "SKETCH'.\n"
            "\n"
            "  -k, --key FILE        master key file (mode 0600)\n"
            "  -t, --tenant ID       tenant label recorded in the sketch\n"
            "  -p, --params SPEC     expected=N,fp=P,windows=W[/W...] "
            "(defaults\n"
            "                        expected=%d,fp=%g,windows=%s)\n"
            "  -s, --scheme SPEC     take the windows from a channel spec "
            "as served\n"
            "      --vocab-size N    reject token ids >= N\n"
            "      --tokenizer SPEC  tokenize text inputs (see hallmark "
            "tokenize)\n"
            "  -m, --merge           OR the sketches given (same key and "
            "parameters)\n"
            "  -i, --info            print each sketch's parameters and "
            "false-positive rate\n"
            "  -o, --output SKETCH   where to write (atomically)\n"
            "  -h, --help            this help\n",
            HM_SKETCH_EXPECTED_DEFAULT, HM_SKETCH_FP_DEFAULT,
            HM_SKETCH_WINDOWS_DEFAULT);
}

static void print_info(const char *name, const hm_sketch *s)
{
    char spec[256], hex[65] = "";
    double v[5];
    static const char *const names[] = {"blocks", "k", "count", "fp_rate",
                                        "bytes"};
    hm_sketch_spec(s, spec, sizeof spec);
    for (int i = 0; i < 5; i++)
        if (hm_sketch_param(s, names[i], &v[i]) != HM_OK)
            v[i] = 0;
    if (hm_sketch_digest(s, hex, sizeof hex) != HM_OK)
        hex[0] = '\0';
    const char *t = hm_sketch_tenant(s);
    printf("%s: %s tenant=%s%s%s blocks=%.0f k=%.0f bytes=%.0f "
           "windows~%.0f fp_rate=%.3g sha256=%s\n",
           name, spec, t[0] == '\0' ? "(default)" : "'", t,
           t[0] == '\0' ? "" : "'", v[0], v[1], v[4], v[2], v[3], hex);
}

/* The widths every channel of spec reads, as "W/W". */
static int windows_of(const hm_key *key, const char *spec, char *out,
                      size_t cap)
{
    hm_ctx *ctx = NULL;
    if (cli_make_ctx(key, spec, NULL, &ctx) != 0)
        return -1;
    unsigned seen = 0;
    out[0] = '\0';
    for (unsigned c = 0; c < hm_ctx_channels(ctx); c++) {
        unsigned w = hm_ctx_channel_window(ctx, c);
        if (w == 0 || (seen & (1u << w)))
            continue;
        seen |= 1u << w;
        snprintf(out + strlen(out), cap - strlen(out), "%s%u",
                 out[0] ? "/" : "", w);
    }
    hm_ctx_free(ctx);
    return 0;
}

int cmd_sketch(int argc, char **argv)
{
    static const struct option opts[] = {
        {"key", required_argument, NULL, 'k'},
        {"tenant", required_argument, NULL, 't'},
        {"params", required_argument, NULL, 'p'},
        {"scheme", required_argument, NULL, 's'},
        {"vocab-size", required_argument, NULL, 'V'},
        {"tokenizer", required_argument, NULL, 'Z'},
        {"merge", no_argument, NULL, 'm'},
        {"info", no_argument, NULL, 'i'},
        {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *keyfile = NULL, *tenant = NULL, *params = NULL,
               *scheme = NULL, *output = NULL, *tokspec = NULL;
    long long vocab = 0;
    int merge = 0, info = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "k:t:p:s:mio:h", opts, NULL)) != -1) {
        switch (c) {
        case 'k':
            keyfile = optarg;
            break;
        case 't':
            tenant = optarg;
            break;
        case 'p':
            params = optarg;
            break;
        case 's':
            scheme = optarg;
            break;
        case 'V':
            if (cli_parse_ll("--vocab-size", optarg, 1, INT32_MAX, &vocab) !=
                0)
                return EXIT_TROUBLE;
            break;
        case 'Z':
            tokspec = optarg;
            break;
        case 'm':
            merge = 1;
            break;
        case 'i':
            info = 1;
            break;
        case 'o':
            output = optarg;
            break;
        case 'h':
            sketch_usage(stdout);
            return 0;
        default:
            sketch_usage(stderr);
            return EXIT_TROUBLE;
        }
    }
    if (keyfile == NULL || optind >= argc || (output == NULL && !info) ||
        (merge && info)) {
        cli_error(keyfile == NULL  ? "sketch: --key KEYFILE is required"
                  : optind >= argc ? "sketch: no input files"
                  : merge && info  ? "sketch: --merge or --info, not both"
                                   : "sketch: -o SKETCH is required");
        sketch_usage(stderr);
        return EXIT_TROUBLE;
    }
    int status = EXIT_TROUBLE;
    hm_key *key = NULL;
    hm_sketch *s = NULL;
    hm_tokenizer *tok = NULL;
    cli_doc doc = {0};
    char msg[HM_ERRMSG_SIZE] = "", full[600];
    if (cli_open_key(keyfile, &key, NULL) != 0 ||
        (tokspec != NULL && cli_open_tokenizer(tokspec, &tok) != 0))
        goto done;

    if (merge || info) {
        for (int i = optind; i < argc; i++) {
            hm_sketch *part = NULL;
            if (hm_sketch_load(&part, key, argv[i], msg, sizeof msg) !=
                HM_OK) {
                cli_error("%s", msg);
                goto done;
            }
            if (info) {
                print_info(argv[i], part);
                hm_sketch_free(part);
            } else if (s == NULL) {
                s = part;
            } else {
                int rc = hm_sketch_merge(s, part, msg, sizeof msg);
                hm_sketch_free(part);
                if (rc != HM_OK) {
                    cli_error("%s: cannot merge: %s", argv[i], msg);
                    goto done;
                }
            }
        }
    } else {
        char windows[64] = "";
        if (scheme != NULL &&
            windows_of(key, scheme, windows, sizeof windows) != 0)
            goto done;
        snprintf(full, sizeof full, "%s%s%s%s", params ? params : "",
                 params && windows[0] ? "," : "",
                 windows[0] ? "windows=" : "", windows);
        if (hm_sketch_new(&s, key, full, tenant, msg, sizeof msg) != HM_OK) {
            cli_error("--params '%s': %s", full, msg);
            goto done;
        }
        unsigned long long tokens = 0;
        for (int i = optind; i < argc; i++) {
            cli_input in;
            int rc;
            if (cli_input_open(&in, argv[i], vocab, tok) != 0)
                goto done;
            while ((rc = cli_input_next(&in, &doc)) == 1 &&
                   (tokens += doc.n_tokens, 1))
                if (hm_sketch_add_doc(s, doc.prompt, doc.n_prompt, doc.tokens,
                                      doc.n_tokens) != HM_OK) {
                    cli_error("%s:%lu: cannot add the record", doc.file,
                              doc.line);
                    rc = -1;
                    break;
                }
            cli_input_close(&in);
            if (rc < 0)
                goto done;
        }
        if (tokens == 0) { /* as audit --filter refuses such a file */
            if (argc - optind == 1)
                cli_error("%s: no tokens, so no window to record",
                          strcmp(argv[optind], "-") == 0 ? "standard input"
                                                         : argv[optind]);
            else
                cli_error("sketch: no tokens in the %d input files, so no "
                          "window to record",
                          argc - optind);
            goto done;
        }
    }
    if (info) {
        status = 0;
        goto done;
    }
    if (hm_sketch_save(s, output, msg, sizeof msg) != HM_OK) {
        cli_error("%s", msg);
        goto done;
    }
    print_info(output, s);
    status = 0;
done:
    cli_doc_free(&doc);
    hm_sketch_free(s);
    hm_tokenizer_free(tok);
    hm_key_free(key);
    return status;
}
