/*
 * fuzz_tally.c - fuzz target for the tally-file parser (hm_tally_load),
 * the file an audit split across machines is merged from.  The input is
 * a tally file without its SHA-256 trailer; the target appends the right
 * trailer, so that mutations reach the header and data checks instead of
 * all failing the checksum.  Every input either fails with a message
 * naming the file, or loads; a loaded tally gives a result for every key
 * and channel, saves back to the same bytes, merges into a second copy of
 * itself without changing its results (every tuple is a repeat), or
 * fails to with HM_ERANGE when the counts would wrap.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "hallmark.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int write_file(const char *path, const uint8_t *data, size_t size,
                      const unsigned char *md)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    int bad = (size && fwrite(data, 1, size, f) != size) ||
              (md != NULL && fwrite(md, 1, 32, f) != 32);
    return fclose(f) != 0 || bad ? -1 : 0;
}

static int same_bytes(const char *path, const uint8_t *data, size_t size,
                      const unsigned char *md)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return 0;
    int same = 1;
    for (size_t i = 0; i < size + 32 && same; i++) {
        int c = getc(f);
        same = c == (i < size ? data[i] : md[i - size]);
    }
    same = same && getc(f) == EOF;
    fclose(f);
    return same;
}

static void check_results(const hm_tally *a, const hm_tally *b)
{
    for (size_t k = 0; k < hm_tally_keys(a); k++)
        for (unsigned c = 0; c < hm_tally_channels(a); c++) {
            hm_result ra, rb;
            if (hm_tally_result(a, k, c, &ra) != HM_OK ||
                !(ra.log10_p <= 0) || ra.scored > ra.tokens)
                abort();
            if (b == NULL)
                continue;
            if (hm_tally_result(b, k, c, &rb) != HM_OK ||
                ra.scored != rb.scored || ra.score != rb.score ||
                ra.log10_p != rb.log10_p)
                abort();
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64], copy[64];
    if (path[0] == '\0') {
        snprintf(path, sizeof path, "/tmp/hm-fuzz-tally-%ld", (long)getpid());
        snprintf(copy, sizeof copy, "/tmp/hm-fuzz-tally-%ld.2",
                 (long)getpid());
    }
    unsigned char md[32];
    if (EVP_Digest(data, size, md, NULL, EVP_sha256(), NULL) != 1 ||
        write_file(path, data, size, md) != 0)
        abort();
    char msg[HM_ERRMSG_SIZE] = "";
    hm_tally *t = NULL, *u = NULL;
    int rc = hm_tally_load(&t, path, msg, sizeof msg);
    if (rc != HM_OK) {
        if (t != NULL || msg[0] == '\0' ||
            strncmp(msg, path, strlen(path)) != 0)
            abort();
        unlink(path);
        return 0;
    }
    check_results(t, NULL);
    /* saving gives the file back, byte for byte */
    if (hm_tally_save(t, copy, msg, sizeof msg) != HM_OK ||
        !same_bytes(copy, data, size, md))
        abort();
    /* a second copy merged in: nothing new, or (counts near 2^64 would
     * wrap) an HM_ERANGE that changed nothing */
    if (hm_tally_load(&u, copy, msg, sizeof msg) != HM_OK)
        abort();
    rc = hm_tally_merge(u, t, msg, sizeof msg);
    if (rc != HM_OK && rc != HM_ERANGE)
        abort();
    check_results(t, u);
    hm_tally_free(u);
    hm_tally_free(t);
    unlink(copy);
    unlink(path);
    return 0;
}
