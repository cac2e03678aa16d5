/*
 * fuzz_keyfile.c - fuzz target for the key-file parser: any bytes in a
 * 0600 file either load as a key or fail with a message, never crash, and
 * the message never repeats the file's hex text.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hallmark.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    char msg[HM_ERRMSG_SIZE] = "";
    if (path[0] == '\0') {
        snprintf(path, sizeof path, "/tmp/hm-fuzz-key-%ld", (long)getpid());
    }
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        abort();
    if (size && fwrite(data, 1, size, f) != size)
        abort();
    fclose(f);
    if (chmod(path, 0600) != 0)
        abort();
    hm_key *key = NULL;
    int rc = hm_key_load(&key, path, msg, sizeof msg);
    if (rc == HM_OK) {
        char fp[HM_FINGERPRINT_SIZE];
        if (key == NULL || hm_key_fingerprint(key, fp, sizeof fp) != HM_OK)
            abort();
    } else if (key != NULL || msg[0] == '\0' ||
               strncmp(msg, path, strlen(path)) != 0) {
        abort();
    }
    hm_key_free(key);
    unlink(path);
    return 0;
}
