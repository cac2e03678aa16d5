/*
 * util.c - version, error strings and message formatting.
 */
#include "internal.h"

#include <stdio.h>

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
