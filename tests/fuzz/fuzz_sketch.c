/*
 * fuzz_sketch.c - fuzz target for the sketch-file parser.  The input is a
 * sketch file without its SHA-256 trailer; the target appends the right
 * trailer, so that mutations reach the header and data checks instead of
 * all failing the checksum.  Every input either loads under the fixed key
 * (then queries and saving work) or fails with a message naming the file.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "hallmark.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static hm_key *key;
    static char path[64];
    if (key == NULL) {
        if (hm_key_from_label(&key, "fuzz-sketch", 0) != HM_OK)
            abort();
        snprintf(path, sizeof path, "/tmp/hm-fuzz-sketch-%ld",
                 (long)getpid());
    }
    unsigned char md[32];
    if (EVP_Digest(data, size, md, NULL, EVP_sha256(), NULL) != 1)
        abort();
    FILE *f = fopen(path, "wb");
    if (f == NULL || (size && fwrite(data, 1, size, f) != size) ||
        fwrite(md, 1, 32, f) != 32)
        abort();
    fclose(f);
    char msg[HM_ERRMSG_SIZE] = "";
    hm_sketch *s = NULL;
    int rc = hm_sketch_load(&s, key, path, msg, sizeof msg);
    if (rc == HM_OK) {
        const int32_t ctx[4] = {1, 2, 3, 4};
        if (s == NULL || hm_sketch_query(s, ctx, 4, 1) < -100)
            abort();
        if (hm_sketch_save(s, path, msg, sizeof msg) != HM_OK)
            abort();
        hm_sketch_free(s);
    } else if (s != NULL || msg[0] == '\0' ||
               strncmp(msg, path, strlen(path)) != 0) {
        abort();
    }
    unlink(path);
    return 0;
}
