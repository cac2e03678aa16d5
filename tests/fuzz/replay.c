/*
 * replay.c - run a fuzz target without libFuzzer: every file named on the
 * command line (or in the directories named), then N seeded mutations of
 * them (HM_FUZZ_MUTATIONS, default 5000), so 'make check' exercises the
 * parser with the corpus every time.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_INPUTS 256
#define MAX_SIZE 8192

static uint8_t *inputs[MAX_INPUTS];
static size_t sizes[MAX_INPUTS];
static int n_inputs;

static void load(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        perror(path);
        exit(2);
    }
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        while (d && (e = readdir(d)) != NULL) {
            char sub[4096];
            if (e->d_name[0] == '.')
                continue;
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            load(sub);
        }
        if (d)
            closedir(d);
        return;
    }
    FILE *f = fopen(path, "rb");
    if (f == NULL || n_inputs == MAX_INPUTS) {
        fprintf(stderr, "replay: cannot load %s\n", path);
        exit(2);
    }
    uint8_t *buf = malloc(MAX_SIZE);
    size_t n = fread(buf, 1, MAX_SIZE, f);
    fclose(f);
    inputs[n_inputs] = buf;
    sizes[n_inputs++] = n;
}

static uint64_t rng = 0x1234567;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

int main(int argc, char **argv)
{
    static uint8_t buf[MAX_SIZE];
    const char *env = getenv("HM_FUZZ_MUTATIONS");
    long mutations = env ? atol(env) : 5000;
    for (int i = 1; i < argc; i++)
        load(argv[i]);
    if (n_inputs == 0) {
        fprintf(stderr, "replay: no inputs\n");
        return 2;
    }
    for (int i = 0; i < n_inputs; i++)
        LLVMFuzzerTestOneInput(inputs[i], sizes[i]);
    for (long m = 0; m < mutations; m++) {
        int i = (int)(next() % (uint64_t)n_inputs);
        size_t n = sizes[i];
        memcpy(buf, inputs[i], n);
        int edits = 1 + (int)(next() % 4);
        for (int e = 0; e < edits; e++) {
            uint64_t r = next();
            size_t pos = n ? (size_t)(r >> 8) % n : 0;
            switch (r % 4) {
            case 0: /* flip a byte */
                if (n)
                    buf[pos] = (uint8_t)next();
                break;
            case 1: /* truncate */
                n = pos;
                break;
            case 2: /* duplicate a slice */
                if (n && n < MAX_SIZE / 2) {
                    size_t len = 1 + (size_t)(next() % n);
                    if (pos + len > n)
                        len = n - pos;
                    memmove(buf + pos + len, buf + pos, n - pos);
                    n += len;
                }
                break;
            default: /* insert an interesting byte */
                if (n < MAX_SIZE - 1) {
                    static const uint8_t pick[] = {0, '\n', ',', '=', ':',
                                                   '+', '#', '9', 0xff, ' '};
                    memmove(buf + pos + 1, buf + pos, n - pos);
                    buf[pos] = pick[next() % sizeof pick];
                    n++;
                }
            }
        }
        LLVMFuzzerTestOneInput(buf, n);
    }
    for (int i = 0; i < n_inputs; i++)
        free(inputs[i]);
    printf("replayed %d inputs and %ld mutations\n", n_inputs, mutations);
    return 0;
}
