/* policy_yaml_strict_test.c - the strict YAML helpers both policy loaders share: unknown and
 * duplicate fields, wrong types, the list limit, aliases and extra documents refused, in both
 * message styles (line first for the access policy, line suffix for EncryptionConfiguration),
 * and the per-loader flags (null mapping, null field names, scalar kind text).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "policy/yaml_strict.h"
#include "testlib.h"

#define LINE_FIRST 0u
#define EC_FLAGS                                                                                   \
    (YS_LINE_SUFFIX | YS_NULL_MAPPING_EMPTY | YS_NULL_KEYS_REFUSED | YS_SCALAR_KIND_TEXT)

typedef struct loaded {
    yaml_parser_t parser;
    yaml_document_t doc;
    es_error err;
    ys_ctx c;
} loaded;

static void load(loaded *l, const char *yaml, unsigned flags, long max_items)
{
    memset(l, 0, sizeof *l);
    l->c = (ys_ctx){.name = "t.yaml", .err = &l->err, .max_items = max_items, .flags = flags};
    CHECK(yaml_parser_initialize(&l->parser));
    yaml_parser_set_input_string(&l->parser, (const unsigned char *)yaml, strlen(yaml));
    CHECK(yaml_parser_load(&l->parser, &l->doc));
    l->c.doc = &l->doc;
}

static yaml_node_t *root(loaded *l)
{
    return yaml_document_get_root_node(&l->doc);
}

static void unload(loaded *l)
{
    yaml_document_delete(&l->doc);
    yaml_parser_delete(&l->parser);
}

static const char *const ab[] = {"a", "b"};

static void expect_map_error(const char *yaml, unsigned flags, const char *path, const char *want)
{
    loaded l;
    load(&l, yaml, flags, 10);
    yaml_node_t *v[2] = {NULL, NULL};
    CHECK_EQ_INT(ys_map_fields(&l.c, root(&l), path, ab, 2, v), -1);
    CHECK_EQ_STR(l.err.msg, want);
    unload(&l);
}

static void test_known_fields_collected(void)
{
    loaded l;
    load(&l, "b: 2\na: one\n", LINE_FIRST, 10);
    yaml_node_t *v[2];
    CHECK_EQ_INT(ys_map_fields(&l.c, root(&l), "", ab, 2, v), 0);
    CHECK(v[0] && strcmp((const char *)v[0]->data.scalar.value, "one") == 0);
    CHECK(v[1] && ys_scalar_kind(v[1]) == YS_INT);
    unload(&l);
    load(&l, "b: 2\n", LINE_FIRST, 10);
    CHECK_EQ_INT(ys_map_fields(&l.c, root(&l), "", ab, 2, v), 0);
    CHECK(v[0] == NULL && v[1] != NULL);
    unload(&l);
}

static void test_unknown_field(void)
{
    expect_map_error("a: 1\nzz: 2\n", LINE_FIRST, "rules[0]",
                     "t.yaml:2: rules[0]: unknown field \"zz\"");
    expect_map_error("a: 1\nzz: 2\n", EC_FLAGS, "rules[0]",
                     "t.yaml: rules[0]: unknown field \"zz\" (line 2)");
    /* long unknown names are cut at 64 bytes */
    char yaml[200];
    snprintf(yaml, sizeof yaml, "%0100d: 1\n", 7);
    char want[200];
    snprintf(want, sizeof want, "t.yaml:1: unknown field \"%064d\"", 0);
    expect_map_error(yaml, LINE_FIRST, "", want);
}

static void test_duplicate_field(void)
{
    expect_map_error("a: 1\nb: 2\na: 3\n", LINE_FIRST, "", "t.yaml:3: duplicate field \"a\"");
    expect_map_error("a: 1\nb: 2\na: 3\n", EC_FLAGS, "", "t.yaml: duplicate field \"a\" (line 3)");
}

static void test_wrong_type(void)
{
    expect_map_error("- 1\n", LINE_FIRST, "x", "t.yaml:1: x: expected a mapping, got a list");
    expect_map_error("42\n", LINE_FIRST, "x", "t.yaml:1: x: expected a mapping, got a scalar");
    expect_map_error("42\n", EC_FLAGS, "x",
                     "t.yaml: x: expected a mapping, got an integer (line 1)");
    expect_map_error("'42'\n", EC_FLAGS, "x",
                     "t.yaml: x: expected a mapping, got a string (line 1)");
    loaded l;
    load(&l, "yes\n", EC_FLAGS, 10);
    yaml_node_item_t *items;
    CHECK_EQ_INT(ys_seq_items(&l.c, root(&l), "l", &items), -1);
    CHECK_EQ_STR(l.err.msg, "t.yaml: l: expected a list, got a boolean (line 1)");
    unload(&l);
    load(&l, "a: 1\n", LINE_FIRST, 10);
    CHECK_EQ_INT(ys_seq_items(&l.c, root(&l), "l", &items), -1);
    CHECK_EQ_STR(l.err.msg, "t.yaml:1: l: expected a list, got a mapping");
    unload(&l);
}

static void test_null_handling_per_flags(void)
{
    /* a null mapping: empty for EncryptionConfiguration, an error for the access policy */
    loaded l;
    load(&l, "~\n", EC_FLAGS, 10);
    yaml_node_t *v[2] = {NULL, NULL};
    CHECK_EQ_INT(ys_map_fields(&l.c, root(&l), "x", ab, 2, v), 0);
    CHECK(v[0] == NULL && v[1] == NULL);
    unload(&l);
    expect_map_error("~\n", LINE_FIRST, "x", "t.yaml:1: x: expected a mapping, got null");
    /* a null field name */
    expect_map_error("~: 1\n", EC_FLAGS, "", "t.yaml: field names must be strings (line 1)");
    expect_map_error("~: 1\n", LINE_FIRST, "", "t.yaml:1: unknown field \"~\"");
    expect_map_error("[1]: 1\n", LINE_FIRST, "", "t.yaml:1: field names must be strings");
    /* a null list is empty */
    load(&l, "null\n", LINE_FIRST, 10);
    yaml_node_item_t *items = (yaml_node_item_t *)1;
    CHECK_EQ_INT(ys_seq_items(&l.c, root(&l), "l", &items), 0);
    CHECK(items == NULL);
    unload(&l);
}

static void test_list_limit(void)
{
    loaded l;
    load(&l, "[a, b]\n", LINE_FIRST, 2);
    yaml_node_item_t *items;
    CHECK_EQ_INT(ys_seq_items(&l.c, root(&l), "l", &items), 2);
    CHECK(items != NULL);
    unload(&l);
    load(&l, "\n[a, b, c]\n", LINE_FIRST, 2);
    CHECK_EQ_INT(ys_seq_items(&l.c, root(&l), "l", &items), -1);
    CHECK_EQ_STR(l.err.msg, "t.yaml:2: l: too many entries (3, at most 2)");
    unload(&l);
    load(&l, "[a, b, c]\n", EC_FLAGS, 2);
    CHECK_EQ_INT(ys_seq_items(&l.c, root(&l), "l", &items), -1);
    CHECK_EQ_STR(l.err.msg, "t.yaml: l: too many entries (3, at most 2) (line 1)");
    unload(&l);
}

static void expect_prescan(const char *yaml, unsigned flags, const char *want)
{
    es_error err = {0};
    ys_ctx c = {.name = "t.yaml", .err = &err, .max_items = 10, .flags = flags};
    int rc = ys_prescan(&c, yaml, strlen(yaml));
    if (!want) {
        CHECK_MSG(rc == 0, "refused: %s", err.msg);
        return;
    }
    CHECK_EQ_INT(rc, -1);
    CHECK_EQ_STR(err.msg, want);
}

static void test_prescan(void)
{
    expect_prescan("a: 1\nb: [x, y]\n", LINE_FIRST, NULL);
    expect_prescan("", EC_FLAGS, NULL);
    expect_prescan("a: &x [1]\nb: *x\n", LINE_FIRST, "t.yaml:2: YAML aliases are not supported");
    expect_prescan("a: &x [1]\nb: *x\n", EC_FLAGS,
                   "t.yaml: YAML aliases are not supported (line 2)");
    expect_prescan("a: 1\n---\nb: 2\n", LINE_FIRST, "t.yaml:2: more than one YAML document");
    expect_prescan("a: 1\n---\nb: 2\n", EC_FLAGS, "t.yaml: more than one YAML document (line 2)");
    /* libyaml's own message; only the position layout is ours */
    es_error err = {0};
    ys_ctx c = {.name = "t.yaml", .err = &err, .max_items = 10};
    CHECK_EQ_INT(ys_prescan(&c, "a: [1\n", 6), -1);
    CHECK_MSG(strncmp(err.msg, "t.yaml:2: invalid YAML: ", 24) == 0 &&
                  strstr(err.msg, " (column ") != NULL,
              "%s", err.msg);
    c.flags = EC_FLAGS;
    CHECK_EQ_INT(ys_prescan(&c, "a: [1\n", 6), -1);
    CHECK_MSG(strncmp(err.msg, "t.yaml: invalid YAML: ", 22) == 0 &&
                  strstr(err.msg, " at line 2 column ") != NULL,
              "%s", err.msg);
}

static void test_scalar_kinds(void)
{
    static const struct {
        const char *yaml;
        enum ys_scalar_kind kind;
    } cases[] = {{"~", YS_NULL},      {"Null", YS_NULL},  {"'null'", YS_STR}, {"on", YS_BOOL},
                 {"\"on\"", YS_STR},  {"0x1F", YS_INT},   {"-0b10", YS_INT},  {"1_000", YS_INT},
                 {"1.5e3", YS_FLOAT}, {".inf", YS_FLOAT}, {"1e", YS_STR},     {"abc", YS_STR}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        loaded l;
        load(&l, cases[i].yaml, LINE_FIRST, 10);
        CHECK_MSG(ys_scalar_kind(root(&l)) == cases[i].kind, "%s: kind %d", cases[i].yaml,
                  (int)ys_scalar_kind(root(&l)));
        unload(&l);
    }
}

int main(int argc, char **argv)
{
    (void)argc;
    TEST_BEGIN(argv[0]);
    RUN(test_known_fields_collected);
    RUN(test_unknown_field);
    RUN(test_duplicate_field);
    RUN(test_wrong_type);
    RUN(test_null_handling_per_flags);
    RUN(test_list_limit);
    RUN(test_prescan);
    RUN(test_scalar_kinds);
    return TEST_EXIT();
}
