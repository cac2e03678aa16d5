/*
 * hallmark.c - command dispatch for the hallmark CLI.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

const char *hm_progname = "hallmark";

void cli_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", hm_progname);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static const struct command {
    const char *name;
    int (*run)(int, char **);
    const char *summary;
} commands[] = {
    {"keygen", cmd_keygen, "create a master key file (mode 0600)"},
    {"fingerprint", cmd_fingerprint, "print a key file's public fingerprint"},
    {"demo", cmd_demo, "serve, distil a student, audit it: the whole story on real text"},
    {"verify", cmd_verify, "test each document for the watermark (exact p-values)"},
    {"audit", cmd_audit, "corpus-level radioactivity audit with a report"},
    {"merge", cmd_merge, "merge partial audit tallies exactly"},
    {"tokenize", cmd_tokenize, "show how the teacher's tokenizer splits a text"},
    {"probe", cmd_probe, "test a suspect's log-probabilities for the spectral fingerprint"},
    {"sketch", cmd_sketch, "record served windows in a keyed sketch, for audit --filter"},
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: hallmark COMMAND [OPTIONS] [ARGS]\n"
            "\n"
            "Keyed watermarks for served language-model outputs.\n"
            "\n"
            "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(out,
            "\n"
            "Run 'hallmark COMMAND --help' for a command's options, and see "
            "hallmark(1).\n"
            "  --version    print the hallmark and PRF versions\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_TROUBLE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("hallmark %s (PRF v%u)\n", hm_version_string(),
               hm_prf_version());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    cli_error("unknown command '%s' (try 'hallmark --help')", argv[1]);
    return EXIT_TROUBLE;
}
