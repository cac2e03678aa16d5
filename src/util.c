/*
 * util.c - version, error strings and message formatting.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static int detect_avx512_vaes(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) /* OSXSAVE */
        return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    if ((lo & 0xe6) != 0xe6) /* XMM, YMM, opmask, ZMM state enabled */
        return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    return (b & (1u << 16)) &&  /* AVX512F */
           (b & (1u << 17)) &&  /* AVX512DQ */
           (c & (1u << 14)) &&  /* AVX512_VPOPCNTDQ */
           (c & (1u << 9));     /* VAES */
}
#else
static int detect_avx512_vaes(void)
{
    return 0;
}
#endif

int hm_cpu_has_avx512_vaes(void)
{
    static int ok = -1; /* a benign race: every thread computes the same */
    if (ok < 0)
        ok = detect_avx512_vaes();
    return ok;
}

/* The run-time checks of GCC and clang (cpuid, and the OS saving YMM and
 * ZMM state), which the loader's choice of target_clones uses too. */
int hm_cpu_has_avx2(void)
{
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

int hm_cpu_has_x86_64_v4(void)
{
#if (defined(__x86_64__) || defined(__i386__)) && !defined(__clang__) &&   \
    __GNUC__ >= 12
    return __builtin_cpu_supports("x86-64-v4"); /* the resolver's test */
#elif defined(__x86_64__) || defined(__i386__)
    return __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512cd") &&
           __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

unsigned hm_version_number(void)
{
    return HM_VERSION_NUMBER;
}

const char *hm_version_string(void)
{
    return HM_VERSION_STRING;
}

unsigned hm_prf_version(void)
{
    return HM_PRF_VERSION;
}

const char *hm_strerror(int code)
{
    switch (code) {
    case HM_OK:
        return "success";
    case HM_EINVAL:
        return "invalid argument";
    case HM_ENOMEM:
        return "out of memory";
    case HM_EIO:
        return "input/output error";
    case HM_EFORMAT:
        return "malformed input";
    case HM_EPERM:
        return "key file is accessible to group or others";
    case HM_EEXIST:
        return "file exists";
    case HM_ECRYPTO:
        return "cryptographic library failure";
    case HM_ERANGE:
        return "value out of range";
    case HM_ENOTSUP:
        return "not supported";
    default:
        return "unknown error";
    }
}

void hm_errf(char *errmsg, size_t errlen, const char *fmt, ...)
{
    if (errmsg == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errmsg, errlen, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------- atomic, digested files */

void hm_out_bytes(hm_out *o, const void *p, size_t n)
{
    if (o->err)
        return;
    if ((o->f != NULL && fwrite(p, 1, n, o->f) != n) ||
        EVP_DigestUpdate(o->md, p, n) != 1)
        o->err = 1;
}

int hm_save_digested(const char *path, int (*body)(const void *obj, hm_out *o),
                     const void *obj, char *errmsg, size_t errlen)
{
    size_t len = strlen(path);
    char *tmp = malloc(len + 16);
    if (tmp == NULL)
        return HM_ENOMEM;
    memcpy(tmp, path, len);
    memcpy(tmp + len, ".tmp-XXXXXX", 12);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        hm_errf(errmsg, errlen, "%s: cannot create: %s", path,
                strerror(errno));
        free(tmp);
        return HM_EIO;
    }
    hm_out o = {fdopen(fd, "wb"), EVP_MD_CTX_new(), 0};
    unsigned char md[32];
    int rc = HM_EIO;
    if (o.f == NULL)
        close(fd);
    else if (o.md == NULL || EVP_DigestInit_ex(o.md, EVP_sha256(), NULL) != 1)
        rc = HM_ECRYPTO;
    else {
        rc = body(obj, &o);
        if (rc == HM_OK && (o.err || EVP_DigestFinal_ex(o.md, md, NULL) != 1 ||
                            fwrite(md, 1, 32, o.f) != 32))
            rc = HM_EIO;
    }
    if (o.f != NULL) {
        if (fflush(o.f) != 0 || fsync(fileno(o.f)) != 0)
            rc = rc == HM_OK ? HM_EIO : rc;
        if (fclose(o.f) != 0)
            rc = rc == HM_OK ? HM_EIO : rc;
    }
    EVP_MD_CTX_free(o.md);
    if (rc == HM_OK && rename(tmp, path) != 0)
        rc = HM_EIO;
    if (rc != HM_OK) {
        hm_errf(errmsg, errlen, "%s: cannot write: %s", path,
                rc == HM_EIO ? strerror(errno) : hm_strerror(rc));
        unlink(tmp);
    }
    free(tmp);
    return rc;
}
