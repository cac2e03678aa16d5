/*
 * evaldata.h - corpora, prompts and token sequences of the distillation
 * experiment: reading text files, tokenizing them with libhallmark's
 * tokenizer, splitting sentences into prompts, decoding ids to text.
 * Evaluation code, not part of libhallmark.
 */
#ifndef HM_EVAL_EVALDATA_H
#define HM_EVAL_EVALDATA_H

#include <stddef.h>
#include <stdint.h>

#include "hallmark.h"

/* A document: its name (file name), text, and token ids. */
typedef struct ev_doc {
    char *name;
    char *text;
    size_t len;
    int32_t *ids;
    size_t n;
} ev_doc;

typedef struct ev_docs {
    ev_doc *d;
    size_t n;
} ev_docs;

/* Read every regular file of dir whose name ends with suffix ("" for all)
 * and does not start with '.', sorted by name (bytewise).  strip, if not
 * NULL, is removed wherever it occurs (SOTU's "(Applause.)").  0, or -1
 * with a message. */
int ev_docs_read_dir(ev_docs *out, const char *dir, const char *suffix,
                     const char *strip, char *err, size_t errlen);
/* Tokenize every document (ordinary text, no special tokens). */
int ev_docs_tokenize(ev_docs *docs, const hm_tokenizer *tok);
uint64_t ev_docs_tokens(const ev_docs *docs);
void ev_docs_free(ev_docs *docs);

/* Sentence prefixes as prompts: every sentence of the documents with at
 * least min_words words contributes its first words words (a sentence ends
 * at a word ending in '.', '!' or '?', possibly followed by quotes or a
 * parenthesis; a line ends one too).  Returned in document order; *n
 * receives their number.  NULL on no memory. */
char **ev_prompts(const ev_docs *docs, size_t words, size_t min_words,
                  size_t *n);

/* The bytes of ids as text, with invalid UTF-8 replaced by U+FFFD (what an
 * API that returns strings hands out).  NUL-terminated; NULL on error. */
char *ev_detokenize(const hm_tokenizer *tok, const int32_t *ids, size_t n);

#endif
