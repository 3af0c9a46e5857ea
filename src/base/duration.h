/* duration.h - Go duration syntax ("300ms", "1.5h", "2h45m", "3s"), as kube-apiserver and etcd
 * flags use. Units: ns, us (µs), ms, s, m, h. A bare "0" is allowed. Returns 0 and the value
 * in seconds, or -1 with err naming the text. Negative durations are rejected. */
#ifndef ETCDSEAL_BASE_DURATION_H
#define ETCDSEAL_BASE_DURATION_H

#include "base/error.h"

int duration_parse(const char *text, double *seconds, es_error *err);

#endif
