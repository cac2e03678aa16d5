/*
 * evaldata.c - corpora, prompts and detokenization; see evaldata.h.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "evaldata.h"

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0, got;
    char *buf = malloc(cap + 1);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *nb = realloc(buf, 2 * cap + 1);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    if (ferror(f)) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        *len = n;
    }
    return buf;
}

static size_t strip_all(char *s, size_t len, const char *pat)
{
    size_t pl = strlen(pat), o = 0;
    if (pl == 0)
        return len;
    for (size_t i = 0; i < len;)
        if (i + pl <= len && memcmp(s + i, pat, pl) == 0)
            i += pl;
        else
            s[o++] = s[i++];
    s[o] = 0;
    return o;
}

int ev_docs_read_dir(ev_docs *out, const char *dir, const char *suffix,
                     const char *strip, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    memset(out, 0, sizeof *out);
    if (!d) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0, sl = strlen(suffix);
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (e->d_name[0] == '.' || l < sl ||
            strcmp(e->d_name + l - sl, suffix) != 0)
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn)
                goto nomem;
            names = nn;
        }
        if (!(names[n] = strdup(e->d_name)))
            goto nomem;
        n++;
    }
    closedir(d);
    d = NULL;
    qsort(names, n, sizeof *names, cmp_str);
    out->d = calloc(n ? n : 1, sizeof *out->d);
    if (!out->d)
        goto nomem;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
            free(names[i]);
            continue;
        }
        ev_doc *doc = &out->d[out->n];
        if (!(doc->text = read_all(path, &doc->len))) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            for (size_t j = i; j < n; j++)
                free(names[j]);
            free(names);
            ev_docs_free(out);
            return -1;
        }
        if (strip)
            doc->len = strip_all(doc->text, doc->len, strip);
        doc->name = names[i];
        out->n++;
    }
    free(names);
    return 0;
nomem:
    if (d)
        closedir(d);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    snprintf(err, errlen, "%s: out of memory", dir);
    return -1;
}

int ev_docs_tokenize(ev_docs *docs, const hm_tokenizer *tok)
{
    for (size_t i = 0; i < docs->n; i++) {
        ev_doc *d = &docs->d[i];
        int rc = hm_tokenizer_encode(tok, d->text, d->len, 0, &d->ids, &d->n,
                                     NULL);
        if (rc != HM_OK)
            return rc;
    }
    return HM_OK;
}

uint64_t ev_docs_tokens(const ev_docs *docs)
{
    uint64_t s = 0;
    for (size_t i = 0; i < docs->n; i++)
        s += docs->d[i].n;
    return s;
}

void ev_docs_free(ev_docs *docs)
{
    for (size_t i = 0; i < docs->n; i++) {
        free(docs->d[i].name);
        free(docs->d[i].text);
        hm_tokens_free(docs->d[i].ids);
    }
    free(docs->d);
    docs->d = NULL;
    docs->n = 0;
}

static int ends_sentence(const char *w, size_t l)
{
    while (l > 0 && (w[l - 1] == '"' || w[l - 1] == '\'' || w[l - 1] == ')'))
        l--;
    return l > 0 && (w[l - 1] == '.' || w[l - 1] == '!' || w[l - 1] == '?');
}

char **ev_prompts(const ev_docs *docs, size_t words, size_t min_words,
                  size_t *n)
{
    char **out = NULL;
    size_t cnt = 0, cap = 0;
    for (size_t di = 0; di < docs->n; di++) {
        const char *t = docs->d[di].text, *end = t + docs->d[di].len;
        while (t < end) {
            /* one sentence: words up to a sentence end or a line end */
            const char *start = NULL, *cut = NULL;
            size_t nw = 0;
            int done = 0;
            while (t < end && !done) {
                while (t < end && (*t == ' ' || *t == '\t'))
                    t++;
                if (t < end && (*t == '\n' || *t == '\r')) {
                    t++;
                    if (nw)
                        break;
                    continue;
                }
                if (t >= end)
                    break;
                const char *w = t;
                while (t < end && *t != ' ' && *t != '\t' && *t != '\n' &&
                       *t != '\r')
                    t++;
                if (!start)
                    start = w;
                if (++nw == words)
                    cut = t;
                done = ends_sentence(w, (size_t)(t - w));
            }
            if (nw >= min_words && cut) {
                if (cnt == cap) {
                    cap = cap ? 2 * cap : 1024;
                    char **nn = realloc(out, cap * sizeof *nn);
                    if (!nn)
                        goto nomem;
                    out = nn;
                }
                if (!(out[cnt] = strndup(start, (size_t)(cut - start))))
                    goto nomem;
                cnt++;
            }
        }
    }
    *n = cnt;
    return out ? out : calloc(1, sizeof *out);
nomem:
    for (size_t i = 0; i < cnt; i++)
        free(out[i]);
    free(out);
    return NULL;
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 when invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t l;
    unsigned min;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        l = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        l = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        l = 4, min = 0x10000;
    else
        return 0;
    if (n < l)
        return 0;
    unsigned cp = c & (0x7f >> l);
    for (size_t i = 1; i < l; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return l;
}

char *ev_detokenize(const hm_tokenizer *tok, const int32_t *ids, size_t n)
{
    size_t cap = 64, len = 0;
    unsigned char *raw = malloc(cap);
    for (size_t i = 0; raw && i < n; i++) {
        const unsigned char *b;
        size_t bl;
        if (hm_tokenizer_piece(tok, ids[i], &b, &bl) != HM_OK)
            goto fail;
        if (len + bl > cap) {
            while (len + bl > cap)
                cap *= 2;
            unsigned char *nr = realloc(raw, cap);
            if (!nr)
                goto fail;
            raw = nr;
        }
        memcpy(raw + len, b, bl);
        len += bl;
    }
    if (!raw)
        return NULL;
    char *out = malloc(3 * len + 1);
    size_t o = 0;
    if (!out)
        goto fail;
    for (size_t i = 0; i < len;) {
        size_t l = utf8_len(raw + i, len - i);
        if (l == 0) {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, raw + i, l);
            o += l;
            i += l;
        }
    }
    out[o] = 0;
    free(raw);
    return out;
fail:
    free(raw);
    return NULL;
}
