/*
 * fuzz_spec.c - fuzz target for the scheme parameter-string parser.
 * Built as a libFuzzer target with 'make fuzz' (clang), and replayed over
 * the committed corpus plus seeded mutations by 'make check'.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hallmark.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static hm_key *key;
    char spec[2048], canon[2048], msg[HM_ERRMSG_SIZE];
    if (key == NULL) {
        unsigned char b[HM_KEY_BYTES] = {7};
        if (hm_key_from_bytes(&key, b, sizeof b) != HM_OK)
            abort();
    }
    if (size >= sizeof spec)
        size = sizeof spec - 1;
    memcpy(spec, data, size);
    spec[size] = '\0';
    hm_ctx *ctx = NULL;
    int rc = hm_ctx_new(&ctx, key, spec, "t", msg, sizeof msg);
    if (rc == HM_OK) {
        /* The canonical form parses back to itself. */
        hm_ctx *again = NULL;
        size_t n = hm_ctx_spec(ctx, canon, sizeof canon);
        if (n >= sizeof canon ||
            hm_ctx_new(&again, key, canon, "t", NULL, 0) != HM_OK)
            abort();
        char canon2[2048];
        hm_ctx_spec(again, canon2, sizeof canon2);
        if (strcmp(canon, canon2) != 0)
            abort();
        hm_ctx_free(again);
    } else if (rc != HM_EFORMAT && rc != HM_EINVAL) {
        abort();
    }
    hm_ctx_free(ctx);
    return 0;
}
