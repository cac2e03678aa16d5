/*
 * atomicfile.h - replacing a file atomically: the content goes to a fresh
 * temporary file next to it (mkstemp, so no name is ever shared with
 * another writer and no existing file or link is followed), is flushed to
 * disk (fsync) and renamed over it.  Readers see the old file or the whole
 * new one; a crash or an error leaves no partial file behind.  The eval
 * programs and the hallmark CLI write their outputs this way.
 */
#ifndef HM_ATOMICFILE_H
#define HM_ATOMICFILE_H

#include <stddef.h>
#include <stdio.h>

typedef struct ev_atomic {
    FILE *f; /* where the content goes */
    const char *path;
    char *tmp;
} ev_atomic;

/* Create the temporary file (mode 0644) for path, which must outlive a.
 * 0, or -1 with "PATH: cannot create: REASON" in err. */
int ev_atomic_open(ev_atomic *a, const char *path, char *err, size_t errlen);

/* Close a.  With ok, flush, fsync and rename it over its path: 0, or -1
 * with "PATH: cannot write: REASON" in err.  Without ok (the caller
 * failed, and says why) the temporary file is removed and err is left
 * alone: -1. */
int ev_atomic_close(ev_atomic *a, int ok, char *err, size_t errlen);

/* Open, write len bytes of data and close. */
int ev_write_atomic(const char *path, const void *data, size_t len,
                    char *err, size_t errlen);

#endif
