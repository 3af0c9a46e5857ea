/* harden.h - process hardening for commands that hold key material.
 *
 * harden_process() makes the process non-dumpable (prctl PR_SET_DUMPABLE 0: no core file, no
 * ptrace attach by same-uid processes, /proc/<pid>/mem and environ readable by root only) and
 * sets RLIMIT_CORE to 0 (soft and hard), then reads both back. Call it first thing in main,
 * before any key, KEK or plaintext is read. Returns 0, or -1 with err naming what failed (the
 * process keeps running: the caller decides whether that is fatal).
 */
#ifndef ETCDSEAL_BASE_HARDEN_H
#define ETCDSEAL_BASE_HARDEN_H

#include "base/error.h"

int harden_process(es_error *err);

#endif
