/*
 * atomicfile.c - replacing a file atomically.  See atomicfile.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomicfile.h"

#define SUFFIX ".tmp-XXXXXX"

int ev_atomic_open(ev_atomic *a, const char *path, char *err, size_t errlen)
{
    size_t n = strlen(path);
    a->f = NULL;
    a->path = path;
    a->tmp = malloc(n + sizeof SUFFIX);
    if (a->tmp == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    memcpy(a->tmp, path, n);
    memcpy(a->tmp + n, SUFFIX, sizeof SUFFIX);
    int fd = mkstemp(a->tmp);
    /* mkstemp makes 0600; the outputs are not secret */
    if (fd >= 0 &&
        (fchmod(fd, 0644) != 0 || (a->f = fdopen(fd, "wb")) == NULL)) {
        int e = errno;
        close(fd);
        unlink(a->tmp);
        errno = e;
        fd = -1;
    }
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        free(a->tmp);
        a->tmp = NULL;
        return -1;
    }
    return 0;
}

int ev_atomic_close(ev_atomic *a, int ok, char *err, size_t errlen)
{
    int e = 0;
    errno = 0;
    if (ok && (fflush(a->f) != 0 || ferror(a->f) || fsync(fileno(a->f)) != 0))
        e = errno ? errno : EIO;
    if (fclose(a->f) != 0 && e == 0)
        e = errno;
    if (ok && e == 0 && rename(a->tmp, a->path) != 0)
        e = errno;
    if (ok && e != 0)
        snprintf(err, errlen, "%s: cannot write: %s", a->path, strerror(e));
    if (!ok || e != 0)
        unlink(a->tmp);
    free(a->tmp);
    a->tmp = NULL;
    a->f = NULL;
    return ok && e == 0 ? 0 : -1;
}

int ev_write_atomic(const char *path, const void *data, size_t len,
                    char *err, size_t errlen)
{
    ev_atomic a;
    if (ev_atomic_open(&a, path, err, errlen) != 0)
        return -1;
    fwrite(data, 1, len, a.f); /* a short write shows in ferror */
    return ev_atomic_close(&a, 1, err, errlen);
}
