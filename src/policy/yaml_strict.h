/* yaml_strict.h - the strict libyaml helpers the policy loaders share (encryption config, access
 * policy).
 *
 * Contract: a loader reads its file (ys_open_file, ys_read_and_close), fills a ys_ctx (file name
 * for messages, es_error, list item limit, style flags), calls ys_load_document on the bytes
 * (ys_prescan refuses aliases and multi-document input and reports libyaml syntax errors with
 * their position; every scalar event and the parsers' buffers are zeroed before libyaml frees
 * them), walks the tree with ys_map_fields / ys_seq_items, then wipes (if the file holds secrets)
 * and deletes the document itself. Every error goes through ys_fail: one message naming file,
 * setting path and line, returned as -1. Nothing here allocates what the caller must free.
 * Scalars resolve as YAML 1.1 does in go-yaml v2 (sigs.k8s.io/yaml): a plain `123`, `true` or
 * `yes` is not a string.
 */
#ifndef ETCDSEAL_POLICY_YAML_STRICT_H
#define ETCDSEAL_POLICY_YAML_STRICT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

#include <yaml.h>

#include "base/error.h"

enum ys_flags {
    /* "name: path: message (line N)" instead of "name:N: path: message" */
    YS_LINE_SUFFIX = 1u << 0,
    /* null where a mapping is expected is an empty mapping (Go zero value), not an error */
    YS_NULL_MAPPING_EMPTY = 1u << 1,
    /* a null field name is refused ("field names must be strings"), not an unknown field */
    YS_NULL_KEYS_REFUSED = 1u << 2,
    /* wrong-type messages name the scalar's kind ("an integer") instead of "a scalar" */
    YS_SCALAR_KIND_TEXT = 1u << 3,
};

typedef struct ys_ctx {
    yaml_document_t *doc; /* set by the loader once the document is loaded */
    const char *name;     /* file name that starts every message */
    es_error *err;
    long max_items; /* ys_seq_items refuses longer lists */
    unsigned flags; /* enum ys_flags */
} ys_ctx;

enum ys_scalar_kind { YS_NULL, YS_BOOL, YS_INT, YS_FLOAT, YS_STR };

/* Sets c->err to the formatted message with file, path (NULL or "" = none) and n's line (n NULL =
 * no line); returns -1. */
int ys_fail(const ys_ctx *c, const char *path, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* One document at most, no aliases (a small file must not expand into huge lists), libyaml's
 * syntax errors with their position. 0 or -1 (c->err set). */
int ys_prescan(const ys_ctx *c, const char *data, size_t len);

/* ys_prescan, then loads data into *doc and sets c->doc; the parser's buffers are wiped before
 * libyaml frees them. 0: the caller walks the document, then wipes it if it holds secrets and
 * calls yaml_document_delete(doc). -1: c->err set, nothing to free. */
int ys_load_document(ys_ctx *c, const char *data, size_t len, yaml_document_t *doc);

/* Opens path as a regular file of at most max_bytes: the descriptor (st filled in), or -1 with
 * err set ("<path>: cannot open: ...", "<path>: not a regular file", "<path>: file is larger
 * than N bytes"). */
int ys_open_file(const char *path, unsigned max_bytes, struct stat *st, es_error *err);

/* Reads up to len bytes from fd (EINTR retried, stops at end of file or an error), closes fd and
 * returns the byte count read. */
size_t ys_read_and_close(int fd, void *buf, size_t len);

yaml_node_t *ys_node(const ys_ctx *c, int id);

/* YAML 1.1 implicit resolution of a scalar node (quoted scalars are strings). */
enum ys_scalar_kind ys_scalar_kind(const yaml_node_t *n);
/* NULL node or a plain null scalar ("", "~", "null", "Null", "NULL"). */
bool ys_is_null(const yaml_node_t *n);
/* "a mapping", "a list", "null", then "a string"/"an integer"/... or "a scalar" (flags);
 * "nothing" for NULL. */
const char *ys_type_text(const ys_ctx *c, const yaml_node_t *n);

/* Collects the known fields of a mapping into vals[0..nf) (NULL = absent); unknown and
 * duplicate fields and non-mappings are errors. 0 or -1. */
int ys_map_fields(const ys_ctx *c, const yaml_node_t *n, const char *path,
                  const char *const *fields, size_t nf, yaml_node_t **vals);

/* A list (null = empty) of at most c->max_items: the item count with *items, or -1. */
long ys_seq_items(const ys_ctx *c, const yaml_node_t *n, const char *path,
                  yaml_node_item_t **items);

#endif
