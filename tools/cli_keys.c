/*
 * cli_keys.c - hallmark keygen and hallmark fingerprint.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void keygen_usage(FILE *out)
{
    fprintf(out,
            "usage: hallmark keygen -o KEYFILE [--force]\n"
            "\n"
            "Create a random 32-byte master key and write it to KEYFILE with\n"
            "mode 0600.  The key itself is never printed; its public\n"
            "fingerprint is.\n"
            "\n"
            "  -o, --output FILE  where to write the key (required)\n"
            "  -f, --force        replace an existing file (atomically)\n"
            "  -h, --help         show this help\n");
}

int cmd_keygen(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'},
        {"force", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *out = NULL;
    unsigned flags = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:fh", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            out = optarg;
            break;
        case 'f':
            flags |= HM_KEY_SAVE_FORCE;
            break;
        case 'h':
            keygen_usage(stdout);
            return 0;
        default:
            keygen_usage(stderr);
            return EXIT_TROUBLE;
        }
    }
    if (out == NULL || optind != argc) {
        cli_error("keygen: %s", out == NULL ? "-o KEYFILE is required"
                                            : "unexpected argument");
        keygen_usage(stderr);
        return EXIT_TROUBLE;
    }
    if (strcmp(out, "-") == 0) {
        cli_error("keygen: refusing to write a key to standard output");
        return EXIT_TROUBLE;
    }
    hm_key *key = NULL;
    char msg[HM_ERRMSG_SIZE] = "";
    char fp[HM_FINGERPRINT_SIZE];
    int rc = hm_key_generate(&key);
    if (rc == HM_OK)
        rc = hm_key_save(key, out, flags, msg, sizeof msg);
    if (rc == HM_OK)
        rc = hm_key_fingerprint(key, fp, sizeof fp);
    hm_key_free(key);
    if (rc != HM_OK) {
        cli_error("keygen: %s", msg[0] ? msg : hm_strerror(rc));
        return EXIT_TROUBLE;
    }
    printf("%s %s\n", fp, out);
    return 0;
}

static void fingerprint_usage(FILE *out)
{
    fprintf(out,
            "usage: hallmark fingerprint KEYFILE...\n"
            "\n"
            "Print each key's public fingerprint, the one-way name that\n"
            "reports use, followed by the file name.\n"
            "\n"
            "  -h, --help   show this help\n");
}

int cmd_fingerprint(int argc, char **argv)
{
    static const struct option opts[] = {{"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c, status = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'h') {
            fingerprint_usage(stdout);
            return 0;
        }
        fingerprint_usage(stderr);
        return EXIT_TROUBLE;
    }
    if (optind == argc) {
        cli_error("fingerprint: no key file given");
        fingerprint_usage(stderr);
        return EXIT_TROUBLE;
    }
    for (int i = optind; i < argc; i++) {
        hm_key *key = NULL;
        char msg[HM_ERRMSG_SIZE] = "";
        char fp[HM_FINGERPRINT_SIZE];
        int rc = hm_key_load(&key, argv[i], msg, sizeof msg);
        if (rc == HM_OK)
            rc = hm_key_fingerprint(key, fp, sizeof fp);
        hm_key_free(key);
        if (rc != HM_OK) {
            cli_error("%s", msg[0] ? msg : hm_strerror(rc));
            status = EXIT_TROUBLE;
            continue;
        }
        printf("%s %s\n", fp, argv[i]);
    }
    return status;
}
