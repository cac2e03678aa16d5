/*
 * cli.h - shared pieces of the hallmark command-line tool.  The CLI uses
 * only the public API (hallmark.h).
 */
#ifndef HM_CLI_H
#define HM_CLI_H

#include <stdio.h>

#include "hallmark.h"

/* Exit codes, as grep: 0 nothing found, 1 watermark detected, 2 error. */
#define EXIT_NOEVIDENCE 0
#define EXIT_DETECTED 1
#define EXIT_TROUBLE 2

extern const char *hm_progname;

void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

int cmd_keygen(int argc, char **argv);
int cmd_fingerprint(int argc, char **argv);
int cmd_demo(int argc, char **argv);

#endif
