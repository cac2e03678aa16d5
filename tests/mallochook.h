/*
 * mallochook.h - count the process's allocations, for the tests proving
 * that a hot path allocates nothing.  Include in one file of a test
 * program only: it defines malloc and friends.  HOOK_MALLOC is 0 (and
 * nothing is defined) under AddressSanitizer.
 */
#ifndef HM_MALLOCHOOK_H
#define HM_MALLOCHOOK_H

#include <errno.h>
#include <stddef.h>

/* Under AddressSanitizer the allocator belongs to the sanitizer runtime and
 * cannot be replaced here; the no-allocation test is skipped there and runs
 * in every normal build. */
#if defined(__SANITIZE_ADDRESS__)
#define HOOK_MALLOC 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HOOK_MALLOC 0
#endif
#endif
#ifndef HOOK_MALLOC
#define HOOK_MALLOC 1
#endif

#if HOOK_MALLOC
/* glibc's allocator under its internal names.  The suite links the library
 * statically, so these definitions also catch the library's own calls
 * (and OpenSSL's, which go through malloc). */
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);
extern void *__libc_memalign(size_t align, size_t n);

static int hook_on;              /* counting enabled */
static unsigned long hook_count; /* calls seen while enabled */

static void hook_note(void)
{
    if (__atomic_load_n(&hook_on, __ATOMIC_RELAXED))
        __atomic_add_fetch(&hook_count, 1, __ATOMIC_RELAXED);
}

void *malloc(size_t n)
{
    hook_note();
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    hook_note();
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    hook_note();
    return __libc_realloc(p, n);
}

void free(void *p)
{
    if (p != NULL)
        hook_note();
    __libc_free(p);
}

void *aligned_alloc(size_t align, size_t n)
{
    hook_note();
    return __libc_memalign(align, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    hook_note();
    if (align < sizeof(void *) || (align & (align - 1)) != 0)
        return EINVAL;
    void *p = __libc_memalign(align, n);
    if (p == NULL)
        return ENOMEM;
    *out = p;
    return 0;
}

static void hook_start(void)
{
    __atomic_store_n(&hook_count, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&hook_on, 1, __ATOMIC_SEQ_CST);
}

static unsigned long hook_stop(void)
{
    __atomic_store_n(&hook_on, 0, __ATOMIC_SEQ_CST);
    return __atomic_load_n(&hook_count, __ATOMIC_RELAXED);
}
#endif

#endif /* HM_MALLOCHOOK_H */
