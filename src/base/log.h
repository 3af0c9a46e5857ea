/* log.h - the one logging module: one structured line per event on stderr.
 *
 * Format: `ts=<RFC3339 UTC> level=<lvl> msg="<text>" k=v ...` (logfmt). Thread-safe (one
 * write(2) per line). Library code logs only through here and never logs key material or
 * values; callers pass keys of etcd entries only when needed to diagnose (etcd keys are not
 * secret in kube-apiserver's model either).
 */
#ifndef ETCDSEAL_BASE_LOG_H
#define ETCDSEAL_BASE_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
/* Parses "debug|info|warn|error"; returns -1 on unknown text. */
int log_level_parse(const char *s, enum log_level *out);
/* fmt produces the message text plus optional ` k=v` pairs after a '|' : e.g.
 * log_msg(LOG_INFO, "listening|addr=%s workers=%d", addr, n). */
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
