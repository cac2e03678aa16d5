/*
 * keys.c - master keys: generation, key files, HKDF subkeys, fingerprints.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#define KEYFILE_HEADER "hallmark-key v1"
#define KEYFILE_MAX 4096
#define HKDF_SALT "hallmark-prf-v1"

struct hm_key {
    unsigned char bytes[HM_KEY_BYTES];
};

size_t hm_key_bytes(void)
{
    return HM_KEY_BYTES;
}

static int key_alloc(hm_key **key)
{
    if (key == NULL)
        return HM_EINVAL;
    *key = OPENSSL_secure_zalloc(sizeof **key);
    if (*key == NULL)
        *key = OPENSSL_zalloc(sizeof **key);
    return *key ? HM_OK : HM_ENOMEM;
}

void hm_key_free(hm_key *key)
{
    if (key == NULL)
        return;
    OPENSSL_cleanse(key, sizeof *key);
    if (CRYPTO_secure_allocated(key))
        OPENSSL_secure_free(key);
    else
        OPENSSL_free(key);
}

int hm_key_generate(hm_key **key)
{
    int rc = key_alloc(key);
    if (rc != HM_OK)
        return rc;
    if (RAND_priv_bytes((*key)->bytes, HM_KEY_BYTES) != 1) {
        hm_key_free(*key);
        *key = NULL;
        return HM_ECRYPTO;
    }
    return HM_OK;
}

int hm_key_from_bytes(hm_key **key, const unsigned char *bytes, size_t len)
{
    if (bytes == NULL || len != HM_KEY_BYTES)
        return HM_EINVAL;
    int rc = key_alloc(key);
    if (rc == HM_OK)
        memcpy((*key)->bytes, bytes, HM_KEY_BYTES);
    return rc;
}

int hm_key_derive(const hm_key *key, const char *info, unsigned char *out,
                  size_t len)
{
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    int rc = HM_ECRYPTO;
    if (kctx != NULL) {
        OSSL_PARAM params[5];
        params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
                                                     (char *)"SHA256", 0);
        params[1] = OSSL_PARAM_construct_octet_string(
            OSSL_KDF_PARAM_KEY, (void *)key->bytes, HM_KEY_BYTES);
        params[2] = OSSL_PARAM_construct_octet_string(
            OSSL_KDF_PARAM_SALT, (void *)HKDF_SALT, strlen(HKDF_SALT));
        params[3] = OSSL_PARAM_construct_octet_string(
            OSSL_KDF_PARAM_INFO, (void *)info, strlen(info));
        params[4] = OSSL_PARAM_construct_end();
        if (EVP_KDF_derive(kctx, out, len, params) == 1)
            rc = HM_OK;
    }
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
    return rc;
}

int hm_key_derive_for(const hm_key *key, const char *name, const char *id,
                      const char *tenant, unsigned char *out, size_t len)
{
    char info[64 + 64 + HM_TENANT_MAX];
    int n = snprintf(info, sizeof info, "hallmark/v1/%s/%s/%s", name, id,
                     tenant);
    if (n < 0 || (size_t)n >= sizeof info)
        return HM_ERANGE;
    return hm_key_derive(key, info, out, len);
}

int hm_key_fingerprint(const hm_key *key, char *out, size_t outlen)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char fp[16];
    if (key == NULL || out == NULL || outlen < HM_FINGERPRINT_SIZE)
        return HM_EINVAL;
    int rc = hm_key_derive(key, "hallmark/v1/fingerprint", fp, sizeof fp);
    if (rc != HM_OK)
        return rc;
    memcpy(out, "hmk1-", 5);
    for (int i = 0; i < 16; i++) {
        out[5 + 2 * i] = hex[fp[i] >> 4];
        out[6 + 2 * i] = hex[fp[i] & 15];
    }
    out[37] = '\0';
    return HM_OK;
}

/* ------------------------------------------------------------ key files */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Read at most KEYFILE_MAX bytes of an open key file into buf. */
static int read_all(int fd, char *buf, size_t cap, size_t *len)
{
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return HM_EIO;
        if (r == 0)
            break;
        n += (size_t)r;
        if (n == cap)
            return HM_EFORMAT;
    }
    *len = n;
    return HM_OK;
}

/* Parse the text of a key file.  Messages never quote key material. */
static int parse_keyfile(const char *path, char *text, size_t len,
                         unsigned char out[HM_KEY_BYTES], char *errmsg,
                         size_t errlen)
{
    int state = 0; /* 0: want header, 1: want key, 2: done */
    unsigned line = 0;
    char *p = text, *end = text + len;
    if (memchr(text, '\0', len) != NULL) {
        hm_errf(errmsg, errlen, "%s: not a text file", path);
        return HM_EFORMAT;
    }
    while (p < end) {
        char *ls = p;
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *eol = nl ? nl : end;
        line++;
        char *s = p, *e = eol;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
            e--;
        p = nl ? nl + 1 : end;
        if (s == e || *s == '#')
            continue;
        size_t n = (size_t)(e - s);
        if (state == 0) {
            if (n != strlen(KEYFILE_HEADER) ||
                memcmp(s, KEYFILE_HEADER, n) != 0) {
                hm_errf(errmsg, errlen,
                        "%s:%u: not a hallmark key file (expected '%s')",
                        path, line, KEYFILE_HEADER);
                return HM_EFORMAT;
            }
            state = 1;
        } else if (state == 1) {
            if (n != 2 * HM_KEY_BYTES) {
                hm_errf(errmsg, errlen,
                        "%s:%u: key must be %d hex digits, found %zu "
                        "characters",
                        path, line, 2 * HM_KEY_BYTES, n);
                return HM_EFORMAT;
            }
            for (size_t i = 0; i < HM_KEY_BYTES; i++) {
                int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
                if (hi < 0 || lo < 0) {
                    hm_errf(errmsg, errlen,
                            "%s:%u: key has a non-hex character at column "
                            "%zu",
                            path, line,
                            (size_t)(s - ls) + 2 * i + (hi < 0 ? 1 : 2));
                    OPENSSL_cleanse(out, HM_KEY_BYTES);
                    return HM_EFORMAT;
                }
                out[i] = (unsigned char)(hi << 4 | lo);
            }
            state = 2;
        } else {
            hm_errf(errmsg, errlen, "%s:%u: unexpected text after the key",
                    path, line);
            OPENSSL_cleanse(out, HM_KEY_BYTES);
            return HM_EFORMAT;
        }
    }
    if (state != 2) {
        hm_errf(errmsg, errlen, "%s:%u: %s", path, line,
                state == 0 ? "empty key file" : "missing key line");
        return HM_EFORMAT;
    }
    return HM_OK;
}

int hm_key_load(hm_key **key, const char *path, char *errmsg, size_t errlen)
{
    char buf[KEYFILE_MAX];
    unsigned char bytes[HM_KEY_BYTES];
    struct stat st;
    size_t len = 0;
    int rc;

    if (key == NULL || path == NULL)
        return HM_EINVAL;
    *key = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        hm_errf(errmsg, errlen, "%s: %s", path, strerror(e));
        errno = e;
        return HM_EIO;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        hm_errf(errmsg, errlen, "%s: not a regular file", path);
        close(fd);
        return HM_EFORMAT;
    }
    if ((st.st_mode & 077) != 0) {
        hm_errf(errmsg, errlen,
                "%s: permissions %04o let group or others access the key; "
                "run 'chmod 600 %s'",
                path, (unsigned)(st.st_mode & 07777), path);
        close(fd);
        return HM_EPERM;
    }
    rc = read_all(fd, buf, sizeof buf, &len);
    close(fd);
    if (rc == HM_EIO)
        hm_errf(errmsg, errlen, "%s: %s", path, strerror(errno));
    else if (rc != HM_OK)
        hm_errf(errmsg, errlen, "%s: too large for a key file", path);
    if (rc == HM_OK)
        rc = parse_keyfile(path, buf, len, bytes, errmsg, errlen);
    if (rc == HM_OK)
        rc = hm_key_from_bytes(key, bytes, sizeof bytes);
    OPENSSL_cleanse(buf, sizeof buf);
    OPENSSL_cleanse(bytes, sizeof bytes);
    return rc;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int hm_key_save(const hm_key *key, const char *path, unsigned flags,
                char *errmsg, size_t errlen)
{
    static const char hex[] = "0123456789abcdef";
    char text[256];
    size_t plen;
    int rc = HM_OK;

    if (key == NULL || path == NULL || (flags & ~HM_KEY_SAVE_FORCE) != 0)
        return HM_EINVAL;
    plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (tmp == NULL)
        return HM_ENOMEM;
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", 12);

    int n = snprintf(text, sizeof text,
                     "# hallmark master key: keep secret, never share\n"
                     "%s\n",
                     KEYFILE_HEADER);
    for (int i = 0; i < HM_KEY_BYTES; i++) {
        text[n++] = hex[key->bytes[i] >> 4];
        text[n++] = hex[key->bytes[i] & 15];
    }
    text[n++] = '\n';

    int fd = mkstemp(tmp); /* mode 0600 */
    if (fd < 0) {
        hm_errf(errmsg, errlen, "%s: %s", path, strerror(errno));
        rc = HM_EIO;
        goto out;
    }
    if (fchmod(fd, 0600) != 0 || write_all(fd, text, (size_t)n) != 0 ||
        fsync(fd) != 0) {
        hm_errf(errmsg, errlen, "%s: %s", path, strerror(errno));
        close(fd);
        unlink(tmp);
        rc = HM_EIO;
        goto out;
    }
    close(fd);
    /* link() refuses an existing name atomically; rename() replaces. */
    if (flags & HM_KEY_SAVE_FORCE) {
        if (rename(tmp, path) != 0) {
            hm_errf(errmsg, errlen, "%s: %s", path, strerror(errno));
            unlink(tmp);
            rc = HM_EIO;
        }
    } else {
        if (link(tmp, path) != 0) {
            int e = errno;
            if (e == EEXIST) {
                hm_errf(errmsg, errlen,
                        "%s: file exists; not overwriting a key", path);
                rc = HM_EEXIST;
            } else {
                hm_errf(errmsg, errlen, "%s: %s", path, strerror(e));
                rc = HM_EIO;
            }
        }
        unlink(tmp);
    }
out:
    OPENSSL_cleanse(text, sizeof text);
    free(tmp);
    return rc;
}

/* ------------------------------------------------------ self-check keys */

int hm_key_from_label(hm_key **key, const char *label, uint32_t index)
{
    unsigned char md[32];
    char msg[512];
    if (key == NULL || label == NULL)
        return HM_EINVAL;
    int n = snprintf(msg, sizeof msg, "hallmark/v1/self-check/%s/%lu", label,
                     (unsigned long)index);
    if (n < 0 || (size_t)n >= sizeof msg)
        return HM_ERANGE;
    if (EVP_Digest(msg, (size_t)n, md, NULL, EVP_sha256(), NULL) != 1)
        return HM_ECRYPTO;
    int rc = hm_key_from_bytes(key, md, sizeof md);
    OPENSSL_cleanse(md, sizeof md);
    return rc;
}
