/* yaml_strict.c - strict libyaml helpers shared by the policy loaders (see yaml_strict.h). */
#include "policy/yaml_strict.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "policy/yaml_wipe.h"

/* line 0 = no line in the message */
static int vfail_at(const ys_ctx *c, const char *path, size_t line, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

static int vfail_at(const ys_ctx *c, const char *path, size_t line, const char *fmt, va_list ap)
{
    char msg[ES_ERROR_MSG_MAX];
    vsnprintf(msg, sizeof msg, fmt, ap);
    bool has_path = path && *path;
    if (c->flags & YS_LINE_SUFFIX) {
        char at[32] = "";
        if (line)
            snprintf(at, sizeof at, " (line %zu)", line);
        if (has_path)
            return es_error_set(c->err, 1, "%s: %s: %s%s", c->name, path, msg, at);
        return es_error_set(c->err, 1, "%s: %s%s", c->name, msg, at);
    }
    if (line && has_path)
        return es_error_set(c->err, 1, "%s:%zu: %s: %s", c->name, line, path, msg);
    if (line)
        return es_error_set(c->err, 1, "%s:%zu: %s", c->name, line, msg);
    if (has_path)
        return es_error_set(c->err, 1, "%s: %s: %s", c->name, path, msg);
    return es_error_set(c->err, 1, "%s: %s", c->name, msg);
}

static int fail_at(const ys_ctx *c, const char *path, size_t line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail_at(const ys_ctx *c, const char *path, size_t line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail_at(c, path, line, fmt, ap);
    va_end(ap);
    return rc;
}

int ys_fail(const ys_ctx *c, const char *path, const yaml_node_t *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail_at(c, path, n ? (size_t)n->start_mark.line + 1 : 0, fmt, ap);
    va_end(ap);
    return rc;
}

int ys_prescan(const ys_ctx *c, const char *data, size_t len)
{
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return ys_fail(c, NULL, NULL, "out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
    int docs = 0, rc = 0;
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            const char *problem = parser.problem ? parser.problem : "syntax error";
            size_t line = (size_t)parser.problem_mark.line + 1;
            size_t column = (size_t)parser.problem_mark.column + 1;
            /* the two message styles place the position differently; both keep their wording */
            if (c->flags & YS_LINE_SUFFIX)
                rc = fail_at(c, NULL, 0, "invalid YAML: %s at line %zu column %zu", problem, line,
                             column);
            else
                rc = fail_at(c, NULL, line, "invalid YAML: %s (column %zu)", problem, column);
            break;
        }
        yaml_event_type_t t = ev.type;
        size_t line = ev.start_mark.line + 1;
        yaml_wipe_event(&ev); /* scalars may be key secrets */
        yaml_event_delete(&ev);
        if (t == YAML_ALIAS_EVENT) {
            rc = fail_at(c, NULL, line, "YAML aliases are not supported");
            break;
        }
        if (t == YAML_DOCUMENT_START_EVENT && ++docs > 1) {
            rc = fail_at(c, NULL, line, "more than one YAML document");
            break;
        }
        if (t == YAML_STREAM_END_EVENT)
            break;
    }
    yaml_wipe_parser(&parser);
    yaml_parser_delete(&parser);
    return rc;
}

int ys_load_document(ys_ctx *c, const char *data, size_t len, yaml_document_t *doc)
{
    if (ys_prescan(c, data, len) != 0)
        return -1;
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return ys_fail(c, NULL, NULL, "out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
    int rc = 0;
    if (yaml_parser_load(&parser, doc))
        c->doc = doc;
    else
        rc = ys_fail(c, NULL, NULL, "invalid YAML: %s", parser.problem ? parser.problem : "error");
    yaml_wipe_parser(&parser); /* its buffers hold copies of the file */
    yaml_parser_delete(&parser);
    return rc;
}

int ys_open_file(const char *path, unsigned max_bytes, struct stat *st, es_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return es_error_set(err, 1, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
        close(fd);
        return es_error_set(err, 1, "%s: not a regular file", path);
    }
    if ((unsigned long long)st->st_size > max_bytes) {
        close(fd);
        return es_error_set(err, 1, "%s: file is larger than %u bytes", path, max_bytes);
    }
    return fd;
}

size_t ys_read_and_close(int fd, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, (char *)buf + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    return got;
}

yaml_node_t *ys_node(const ys_ctx *c, int id)
{
    return yaml_document_get_node(c->doc, id);
}

/* ------------------------------------------------------------------ scalars */

static bool in_list(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(s, *list) == 0)
            return true;
    return false;
}

static bool all_digits(const char *s, const char *set)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!strchr(set, *s))
            return false;
    return true;
}

static bool looks_float(const char *s)
{
    static const char *const special[] = {".inf",  ".Inf",  ".INF",  "+.inf", "+.Inf",
                                          "+.INF", "-.inf", "-.Inf", "-.INF", ".nan",
                                          ".NaN",  ".NAN",  NULL};
    if (in_list(s, special))
        return true;
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    size_t digits = 0;
    while ((*p >= '0' && *p <= '9') || *p == '_') {
        p++;
        digits++;
    }
    if (*p == '.') {
        p++;
        while ((*p >= '0' && *p <= '9') || *p == '_') {
            p++;
            digits++;
        }
    } else if (*p != 'e' && *p != 'E') {
        return false;
    }
    if (!digits)
        return false;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!(*p >= '0' && *p <= '9'))
            return false;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    return *p == '\0';
}

enum ys_scalar_kind ys_scalar_kind(const yaml_node_t *n)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    static const char *const bools[] = {
        "y",    "Y",     "yes",   "Yes",   "YES", "n",  "N",  "no",  "No",  "NO",  "true", "True",
        "TRUE", "false", "False", "FALSE", "on",  "On", "ON", "off", "Off", "OFF", NULL};
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return YS_STR;
    const char *s = (const char *)n->data.scalar.value;
    if (in_list(s, nulls))
        return YS_NULL;
    if (in_list(s, bools))
        return YS_BOOL;
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    if ((p[0] == '0' && (p[1] == 'x' || p[1] == 'X') &&
         all_digits(p + 2, "0123456789abcdefABCDEF_")) ||
        (p[0] == '0' && (p[1] == 'b') && all_digits(p + 2, "01_")) || all_digits(p, "0123456789_"))
        return YS_INT;
    if (looks_float(s))
        return YS_FLOAT;
    return YS_STR;
}

bool ys_is_null(const yaml_node_t *n)
{
    return !n || (n->type == YAML_SCALAR_NODE && ys_scalar_kind(n) == YS_NULL);
}

static const char *kind_text(enum ys_scalar_kind k)
{
    switch (k) {
    case YS_NULL:
        return "null";
    case YS_BOOL:
        return "a boolean";
    case YS_INT:
        return "an integer";
    case YS_FLOAT:
        return "a number";
    default:
        return "a string";
    }
}

const char *ys_type_text(const ys_ctx *c, const yaml_node_t *n)
{
    if (!n)
        return "nothing";
    if (n->type == YAML_MAPPING_NODE)
        return "a mapping";
    if (n->type == YAML_SEQUENCE_NODE)
        return "a list";
    if (c->flags & YS_SCALAR_KIND_TEXT)
        return kind_text(ys_scalar_kind(n));
    return ys_is_null(n) ? "null" : "a scalar";
}

/* ------------------------------------------------------------------ structure */

int ys_map_fields(const ys_ctx *c, const yaml_node_t *n, const char *path,
                  const char *const *fields, size_t nf, yaml_node_t **vals)
{
    for (size_t i = 0; i < nf; i++)
        vals[i] = NULL;
    if ((c->flags & YS_NULL_MAPPING_EMPTY) && ys_is_null(n))
        return 0;
    if (!n || n->type != YAML_MAPPING_NODE)
        return ys_fail(c, path, n, "expected a mapping, got %s", ys_type_text(c, n));
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = ys_node(c, p->key);
        if (!k || k->type != YAML_SCALAR_NODE ||
            ((c->flags & YS_NULL_KEYS_REFUSED) && ys_scalar_kind(k) == YS_NULL))
            return ys_fail(c, path, k, "field names must be strings");
        const char *kn = (const char *)k->data.scalar.value;
        size_t i = 0;
        while (i < nf && strcmp(fields[i], kn) != 0)
            i++;
        if (i == nf)
            return ys_fail(c, path, k, "unknown field \"%.64s\"", kn);
        /* a duplicate is a known field name, always shorter than 64 bytes */
        if (vals[i])
            return ys_fail(c, path, k, "duplicate field \"%.64s\"", kn);
        vals[i] = ys_node(c, p->value);
    }
    return 0;
}

long ys_seq_items(const ys_ctx *c, const yaml_node_t *n, const char *path, yaml_node_item_t **items)
{
    *items = NULL;
    if (ys_is_null(n))
        return 0;
    if (n->type != YAML_SEQUENCE_NODE)
        return ys_fail(c, path, n, "expected a list, got %s", ys_type_text(c, n));
    long count = n->data.sequence.items.top - n->data.sequence.items.start;
    if (count > c->max_items)
        return ys_fail(c, path, n, "too many entries (%ld, at most %ld)", count, c->max_items);
    *items = n->data.sequence.items.start;
    return count;
}
