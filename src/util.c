/*
 * util.c - version, error strings and message formatting.
 */
#include "internal.h"

#include <stdio.h>

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
