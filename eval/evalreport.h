/*
 * evalreport.h - the results folder of the distillation experiment, made
 * from its JSON alone: results.json, results.md (tables), rho.svg (log10 p
 * against rho per scheme) and fpr.svg (false-positive rate against alpha
 * with exact intervals).  Evaluation code, not part of libhallmark.
 */
#ifndef HM_EVAL_EVALREPORT_H
#define HM_EVAL_EVALREPORT_H

#include <stddef.h>

#include <jansson.h>

/* Write the four files into dir (each atomically: temporary + rename).
 * 0, or -1 with a message. */
int ev_report_write(const json_t *results, const char *dir, char *err,
                    size_t errlen);

#endif
